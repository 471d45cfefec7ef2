package journal

import (
	"slices"
	"strings"
)

// Coalesce returns batch with byte-range writes merged, without changing the
// result of applying it in order to any tree that satisfies the assumption
// below. It does not modify batch's records. Rules:
//
//   - A run is the OpWrite records of one file (account, tree, path) with no
//     record in between that touches that path, an ancestor or a descendant
//     of it, or is a control record of the account. Other files' records in
//     between do not end a run.
//   - A run becomes one OpWrite per maximal contiguous range (overlaps: the
//     later write wins; adjacent ranges merge), placed where the run's last
//     write was, with that write's LSN (so several records may share one LSN
//     and a coalesced batch still covers every raw LSN up to its last). The
//     first carries the run's first PrevSize, later ones PrevSize -1 ("no
//     check"). An output range that is exactly one write's, overlapped by
//     no other write of the run, keeps that write's PrevHash (the range
//     pre-image) — whole if the run is that one write, else only when the
//     range lies within the size before the run; all others carry none.
//   - A run ended by OpReplace or OpUnlink of the file, or by an OpRename onto
//     it, is dropped: the content it wrote is gone. The ending record then
//     carries the run's first PrevSize instead of its own, and no PrevHash.
//   - Writes of an account with an OpLink in the batch are never merged
//     (renames may carry the shared inode to other names; Cyrus links only
//     message files, which are never written in place).
//
// Assumption (the master's fs layer guarantees it for Cyrus's files): a file
// written in place is not hard-linked to another path written in the same
// batch, except through an OpLink in that batch.
func Coalesce(batch []Record) []Record {
	type key struct{ account, tree, path string }
	type run struct {
		k        key
		idx      []int
		ranges   []wrange
		prevSize int64
		prevHash [32]byte
	}
	// An OpWrite's PrevHash is the pre-image of its own range: it survives
	// only a run of exactly one write, whose range is unchanged.
	rangeHash := func(ru *run) [32]byte {
		if len(ru.idx) == 1 {
			return ru.prevHash
		}
		return [32]byte{}
	}
	emit := make([][]Record, len(batch))
	open := map[key]*run{}
	linked := map[string]bool{} // accounts with an OpLink in the batch
	writes := 0
	for _, r := range batch {
		if r.Op == OpWrite {
			writes++
		}
		if r.Op == OpLink {
			linked[r.Account] = true
		}
	}
	if writes < 2 {
		return slices.Clone(batch)
	}
	flush := func(ru *run) {
		last := batch[ru.idx[len(ru.idx)-1]]
		if len(ru.ranges) == 0 { // only empty writes: keep the last, a no-op holding its LSN
			last.PrevSize, last.PrevHash = ru.prevSize, rangeHash(ru)
			emit[ru.idx[len(ru.idx)-1]] = []Record{last}
			delete(open, ru.k)
			return
		}
		var out []Record
		for i, w := range ru.ranges {
			r := last
			r.Offset, r.Data = w.off, w.data
			r.PrevSize, r.PrevHash = -1, [32]byte{}
			if i == 0 {
				r.PrevSize = ru.prevSize
			}
			// A range that is one write's, untouched, keeps its pre-image:
			// whole when the run is that write, else only if it lies within
			// the size before the run (then the pre-image is the full range
			// whatever the replica's size when the output is applied).
			if w.ok && (len(ru.idx) == 1 || ru.prevSize >= 0 && w.off+int64(len(w.data)) <= ru.prevSize) {
				r.PrevHash = w.pre
			}
			out = append(out, r)
		}
		emit[ru.idx[len(ru.idx)-1]] = out
		delete(open, ru.k)
	}
	for i := range batch {
		r := batch[i]
		k := key{r.Account, r.Tree, r.Path}
		if r.Op == OpWrite && !linked[r.Account] {
			ru := open[k]
			if ru == nil {
				ru = &run{k: k, prevSize: r.PrevSize, prevHash: r.PrevHash}
				open[k] = ru
			}
			ru.idx = append(ru.idx, i)
			ru.ranges = addRange(ru.ranges, r.Offset, r.Data, r.PrevHash)
			continue
		}
		for _, ru := range open {
			if ru.k.account != r.Account {
				if r.Op == OpCheckpoint {
					flush(ru)
				}
				continue
			}
			switch {
			case r.Op == OpEpoch || r.Op == OpBarrier || r.Op == OpDirty:
				flush(ru)
			case ru.k.tree != r.Tree:
			case (r.Op == OpReplace || r.Op == OpUnlink) && r.Path == ru.k.path,
				r.Op == OpRename && r.NewPath == ru.k.path && r.Path != r.NewPath:
				// The run's size before it still holds; its range pre-image
				// says nothing of the whole file (OpReplace's PrevHash).
				r.PrevSize, r.PrevHash = ru.prevSize, [32]byte{}
				delete(open, ru.k)
			case related(r.Path, ru.k.path) || related(r.NewPath, ru.k.path):
				flush(ru)
			}
		}
		emit[i] = []Record{r}
	}
	for _, ru := range open {
		flush(ru)
	}
	out := make([]Record, 0, len(batch))
	for _, e := range emit {
		out = append(out, e...)
	}
	return out
}

// related: a and b are the same path or one is inside the other.
func related(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	return a == b || strings.HasPrefix(b, a+"/") || strings.HasPrefix(a, b+"/")
}

// wrange is written bytes at an offset; a run keeps them sorted, disjoint and
// non-adjacent.
type wrange struct {
	off  int64
	data []byte
	// pre is the source write's PrevHash; ok says the range is exactly that
	// one write's, untouched by any other write of the run (so pre still
	// describes what the replica holds there before the run).
	pre [32]byte
	ok  bool
}

// addRange lays data at off over rs (the new bytes win) and merges
// neighbours. rs's byte slices are never modified in place.
func addRange(rs []wrange, off int64, data []byte, pre [32]byte) []wrange {
	if len(data) == 0 {
		return rs
	}
	end := off + int64(len(data))
	var out []wrange
	overlapped := false
	for _, w := range rs {
		wend := w.off + int64(len(w.data))
		if wend <= off || w.off >= end {
			out = append(out, w)
			continue
		}
		overlapped = true
		if w.off < off {
			out = append(out, wrange{off: w.off, data: w.data[:off-w.off]})
		}
		if wend > end {
			out = append(out, wrange{off: end, data: w.data[end-w.off:]})
		}
	}
	out = append(out, wrange{off: off, data: data, pre: pre, ok: !overlapped && pre != [32]byte{}})
	slices.SortFunc(out, func(a, b wrange) int {
		switch {
		case a.off < b.off:
			return -1
		case a.off > b.off:
			return 1
		}
		return 0
	})
	merged := out[:0:0]
	for _, w := range out {
		if n := len(merged); n > 0 && merged[n-1].off+int64(len(merged[n-1].data)) == w.off {
			m := &merged[n-1]
			m.data = append(slices.Clip(slices.Clone(m.data)), w.data...)
			m.ok = false
			continue
		}
		merged = append(merged, w)
	}
	return merged
}

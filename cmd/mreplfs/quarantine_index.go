package main

import (
	"encoding/binary"
	"path"
	"sort"
	"strconv"
	"strings"

	"mreplfs/journal"
)

// Messages whose index record is in the unreplicated tail.
//
// Cyrus writes a message file, then appends its 112-byte record to the
// mailbox's cyrus.index (CYRUS.md E3), a few milliseconds apart. A crash
// can fall between the two on the replica's side: the new master applied
// the message file but not the index record, so over IMAP the message is
// not there, yet its file is not in the tail. The quarantine keeps such a
// message too: its UID is in an index record the tail appended, at an
// offset at or beyond the size the new master's cyrus.index has (the first
// tail write's PrevSize, or 0 when the tail created the file).

// Cyrus 3.6 cyrus.index header fields (mailbox.h OFFSET_START_OFFSET,
// OFFSET_RECORD_SIZE); a record starts with its UID.
const (
	indexStartOffset = 12
	indexRecordSize  = 16
	indexHeaderMin   = 20
)

// msgRef is a message file named by an appended index record.
type msgRef struct {
	Tree, Path string
}

// indexAppends returns the message files (spool tree, "UID.") whose index
// records the tail appended, in recs order of mailbox then UID. header
// reads the first bytes of an index file as this node has it now (nil if
// gone); a tail write of the header is used when it covers the fields.
func indexAppends(recs []journal.Record, header func(tree, p string) []byte) []msgRef {
	type idx struct {
		base    int64 // the new master's size; -1: unknown
		done    bool  // replaced or truncated in the tail: later offsets mean another file
		writes  []journal.Record
		hdrData []byte
	}
	files := map[[2]string]*idx{}
	var order [][2]string
	for _, r := range recs {
		for _, p := range []string{r.Path, r.NewPath} {
			if p == "" || path.Base(p) != "cyrus.index" {
				continue
			}
			k := [2]string{r.Tree, p}
			f := files[k]
			if f == nil {
				f = &idx{base: -1}
				files[k] = f
				order = append(order, k)
				switch {
				case p == r.Path && r.Op == journal.OpWrite:
					f.base = r.PrevSize // -1 ("no check") stays unknown
				case p == r.Path && r.Op == journal.OpCreate:
					f.base = 0 // the new master has no such file
				}
			}
			if f.done {
				continue
			}
			if p == r.Path && r.Op == journal.OpWrite {
				f.writes = append(f.writes, r)
				if r.Offset == 0 && len(r.Data) >= indexHeaderMin {
					f.hdrData = r.Data
				}
				continue
			}
			if r.Op != journal.OpCreate {
				f.done = true // replaced, truncated, renamed, unlinked
			}
		}
	}
	var out []msgRef
	for _, k := range order {
		f := files[k]
		if f.base < 0 || len(f.writes) == 0 {
			continue
		}
		hdr := f.hdrData
		if hdr == nil {
			hdr = header(k[0], k[1])
		}
		if len(hdr) < indexHeaderMin {
			continue
		}
		start := int64(binary.BigEndian.Uint32(hdr[indexStartOffset:]))
		size := int64(binary.BigEndian.Uint32(hdr[indexRecordSize:]))
		if start < indexHeaderMin || size < 4 {
			continue
		}
		uids := map[uint32]bool{}
		for _, w := range f.writes {
			end := w.Offset + int64(len(w.Data))
			// every whole record inside this write at or beyond base
			first := max(w.Offset, f.base, start)
			if rem := (first - start) % size; rem != 0 {
				first += size - rem
			}
			for o := first; o+size <= end; o += size {
				if uid := binary.BigEndian.Uint32(w.Data[o-w.Offset:]); uid != 0 {
					uids[uid] = true
				}
			}
		}
		tree := spoolTreeOf(k[0])
		dir := path.Dir(k[1])
		sorted := make([]int, 0, len(uids))
		for u := range uids {
			sorted = append(sorted, int(u))
		}
		sort.Ints(sorted)
		for _, u := range sorted {
			out = append(out, msgRef{Tree: tree, Path: path.Join(dir, strconv.Itoa(u)+".")})
		}
	}
	return out
}

// spoolTreeOf names the tree holding the message files of a mailbox whose
// cyrus.index is in tree: a metapartition's ("meta", "meta-x") spool
// partition ("spool", "spool-x"); any other tree holds both.
func spoolTreeOf(tree string) string {
	if rest, ok := strings.CutPrefix(tree, "meta"); ok && (rest == "" || rest[0] == '-') {
		return "spool" + rest
	}
	return tree
}

package journal_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"mreplfs/journal"
	"mreplfs/journal/journaltest"
)

// opGen makes random but valid op sequences for one account over a small
// tree, tracking which names exist so that every raw record applies.
type opGen struct {
	rnd   *rand.Rand
	links bool
	files map[string]bool
	dirs  map[string]bool
	ino   map[string]int // hard links share a number
	nino  int
	lsn   journal.LSN
}

var genDirs = []string{"d0", "d1", "d2"}

func (g *opGen) fileNames() []string {
	var out []string
	for _, d := range append([]string{""}, genDirs...) {
		if d != "" && !g.dirs[d] {
			continue
		}
		for i := 0; i < 3; i++ {
			out = append(out, strings.TrimPrefix(d+"/f"+fmt.Sprint(i), "/"))
		}
	}
	return out
}

func (g *opGen) pick(want bool) (string, bool) {
	var c []string
	for _, f := range g.fileNames() {
		if g.files[f] == want {
			c = append(c, f)
		}
	}
	if len(c) == 0 {
		return "", false
	}
	return c[g.rnd.IntN(len(c))], true
}

func (g *opGen) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + g.rnd.IntN(26))
	}
	return b
}

func (g *opGen) next() journal.Record {
	for {
		g.lsn++
		r := journal.Record{LSN: g.lsn, Account: "alice", Epoch: 1, Tree: "spool", PrevSize: -1}
		switch k := g.rnd.IntN(26); {
		case k < 9 || k >= 20: // writes dominate, as for cyrus.index and cyrus.cache
			p, ok := g.pick(true)
			if !ok {
				continue
			}
			r.Op, r.Path, r.Offset, r.Data = journal.OpWrite, p, int64(g.rnd.IntN(48)), g.bytes(g.rnd.IntN(13))
		case k == 9:
			p, ok := g.pick(true)
			if !ok {
				continue
			}
			r.Op, r.Path, r.Size = journal.OpTruncate, p, int64(g.rnd.IntN(60))
		case k == 10:
			p, _ := g.pick(g.rnd.IntN(2) == 0)
			if p == "" {
				continue
			}
			r.Op, r.Path, r.Mode, r.Data = journal.OpReplace, p, 0o100600, g.bytes(g.rnd.IntN(30))
			g.files[p] = true
			g.nino++
			g.ino[p] = g.nino
		case k == 11:
			p, ok := g.pick(false)
			if !ok {
				continue
			}
			r.Op, r.Path, r.Mode = journal.OpCreate, p, 0o100644
			if g.rnd.IntN(2) == 0 {
				r.Op, r.Data = journal.OpMessage, g.bytes(20)
			}
			g.files[p] = true
			g.nino++
			g.ino[p] = g.nino
		case k == 12:
			p, ok := g.pick(true)
			if !ok {
				continue
			}
			r.Op, r.Path = journal.OpUnlink, p
			g.files[p] = false
		case k == 13:
			p, ok := g.pick(true)
			q, ok2 := g.pick(g.rnd.IntN(2) == 0)
			if !ok || !ok2 || p == q || (g.files[q] && g.ino[p] == g.ino[q]) {
				continue // rename between links of one inode does nothing (POSIX)
			}
			g.ino[q] = g.ino[p]
			r.Op, r.Path, r.NewPath = journal.OpRename, p, q
			g.files[p], g.files[q] = false, true
		case k == 14:
			if !g.links {
				continue
			}
			p, ok := g.pick(true)
			q, ok2 := g.pick(false)
			if !ok || !ok2 {
				continue
			}
			r.Op, r.Path, r.NewPath = journal.OpLink, p, q
			g.files[q] = true
			g.ino[q] = g.ino[p]
		case k == 15:
			d := genDirs[g.rnd.IntN(len(genDirs))]
			if g.dirs[d] {
				continue
			}
			r.Op, r.Path, r.Mode = journal.OpMkdir, d, 0o40755
			g.dirs[d] = true
		case k == 16:
			d := genDirs[g.rnd.IntN(len(genDirs))]
			if !g.dirs[d] || g.dirHasFiles(d) {
				continue
			}
			r.Op, r.Path = journal.OpRmdir, d
			g.dirs[d] = false
		case k == 17:
			d, e := genDirs[g.rnd.IntN(len(genDirs))], genDirs[g.rnd.IntN(len(genDirs))]
			if !g.dirs[d] || g.dirs[e] {
				continue
			}
			r.Op, r.Path, r.NewPath = journal.OpRename, d, e
			g.dirs[d], g.dirs[e] = false, true
			for f, ok := range g.files {
				if ok && strings.HasPrefix(f, d+"/") {
					g.files[f] = false
					g.files[e+strings.TrimPrefix(f, d)] = true
					g.ino[e+strings.TrimPrefix(f, d)] = g.ino[f]
				}
			}
		case k == 18:
			p, ok := g.pick(true)
			if !ok {
				continue
			}
			r.Op, r.Path, r.Flags, r.Mode = journal.OpSetattr, p, journal.SetMode, uint32(0o600+g.rnd.IntN(2)*0o44)
		default:
			r.Op = journal.OpBarrier
		}
		return r
	}
}

func (g *opGen) dirHasFiles(d string) bool {
	for f, ok := range g.files {
		if ok && strings.HasPrefix(f, d+"/") {
			return true
		}
	}
	return false
}

func applyAll(t *testing.T, root string, recs []journal.Record) {
	t.Helper()
	for _, r := range recs {
		if err := journaltest.ApplyToDir(root, r, nil); err != nil {
			out, _ := exec.Command("find", root).CombinedOutput()
			t.Errorf("apply: %v\n%s", err, out)
			return
		}
	}
}

// TestCoalesceProperty: applying coalesced batches and the raw records to two
// copies of a tree gives identical trees, for random op sequences; with
// links in one batch, and without links in random batch splits.
func TestCoalesceProperty(t *testing.T) {
	raw, merged := 0, 0
	for seed := uint64(0); seed < 200; seed++ {
		links := seed%2 == 0
		g := &opGen{rnd: rand.New(rand.NewPCG(seed, 7)), links: links, files: map[string]bool{}, dirs: map[string]bool{}, ino: map[string]int{}}
		recs := make([]journal.Record, 30+g.rnd.IntN(60))
		for i := range recs {
			recs[i] = g.next()
		}
		a, b := t.TempDir(), t.TempDir()
		os.Mkdir(filepath.Join(a, "spool"), 0o755)
		os.Mkdir(filepath.Join(b, "spool"), 0o755)
		if t.Failed() {
			return
		}
		defer func() {
			if t.Failed() {
				for _, r := range recs {
					t.Logf("seed %d: %d op=%d %s %s off=%d size=%d data=%q", seed, r.LSN, r.Op, r.Path, r.NewPath, r.Offset, r.Size, r.Data)
				}
			}
		}()
		applyAll(t, a, recs)
		var batches [][]journal.Record
		if links {
			batches = [][]journal.Record{recs}
		} else {
			for rest := recs; len(rest) > 0; {
				n := 1 + g.rnd.IntN(len(rest))
				batches, rest = append(batches, rest[:n]), rest[n:]
			}
		}
		for _, batch := range batches {
			orig := slices.Clone(batch)
			c := journal.Coalesce(batch)
			for i := range batch {
				if batch[i].LSN != orig[i].LSN || batch[i].PrevSize != orig[i].PrevSize {
					t.Fatalf("seed %d: Coalesce modified its input", seed)
				}
			}
			if len(c) > 0 && c[len(c)-1].LSN != batch[len(batch)-1].LSN {
				t.Fatalf("seed %d: coalesced batch ends at LSN %d, raw at %d", seed, c[len(c)-1].LSN, batch[len(batch)-1].LSN)
			}
			if !links {
				raw += len(batch)
				merged += len(c)
			}
			applyAll(t, b, c)
		}
		diffs, err := journaltest.DiffTrees(a, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(diffs) > 0 {
			for _, r := range recs {
				t.Logf("%d op=%d %s %s off=%d size=%d data=%q", r.LSN, r.Op, r.Path, r.NewPath, r.Offset, r.Size, r.Data)
			}
			t.Fatalf("seed %d: trees differ:\n%s", seed, strings.Join(diffs, "\n"))
		}
	}
	t.Logf("without links: %d raw records became %d", raw, merged)
	if merged >= raw*8/10 {
		t.Fatalf("coalescing barely merged anything (%d of %d): the property test would prove little", merged, raw)
	}
}

func TestCoalesceRules(t *testing.T) {
	w := func(lsn journal.LSN, path string, off int64, data string, prev int64) journal.Record {
		return journal.Record{LSN: lsn, Op: journal.OpWrite, Account: "a", Tree: "m", Path: path, Offset: off, Data: []byte(data), PrevSize: prev}
	}
	got := journal.Coalesce([]journal.Record{
		w(1, "i", 0, "aaaa", 10),
		w(2, "c", 0, "x", 5),
		w(3, "i", 2, "bbbb", 11), // overlaps: later wins
		w(4, "i", 6, "cc", 12),   // adjacent: merges
		w(5, "i", 20, "z", 13),   // separate range
		{LSN: 6, Op: journal.OpUnlink, Account: "a", Tree: "m", Path: "c", PrevSize: 99},
	})
	want := []struct {
		lsn  journal.LSN
		op   journal.Op
		off  int64
		data string
		prev int64
	}{
		{5, journal.OpWrite, 0, "aabbbbcc", 10},
		{5, journal.OpWrite, 20, "z", -1},
		{6, journal.OpUnlink, 0, "", 5}, // c's write dropped; its pre-state moves to the unlink
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.LSN != w.lsn || g.Op != w.op || g.Offset != w.off || string(g.Data) != w.data || g.PrevSize != w.prev {
			t.Errorf("record %d: got LSN %d op %d off %d data %q prev %d, want %+v", i, g.LSN, g.Op, g.Offset, g.Data, g.PrevSize, w)
		}
	}
}

// TestCoalesceRangePreimage: a write's PrevHash describes its own range, so
// it survives coalescing only when the run is that one write.
func TestCoalesceRangePreimage(t *testing.T) {
	h := [32]byte{1}
	w := func(lsn journal.LSN, off int64, data string, path string) journal.Record {
		return journal.Record{LSN: lsn, Op: journal.OpWrite, Account: "a", Tree: "meta", Path: path, Offset: off, Data: []byte(data), PrevSize: 100, PrevHash: h}
	}
	out := journal.Coalesce([]journal.Record{w(1, 0, "aa", "x"), w(2, 2, "bb", "x"), w(3, 0, "cc", "y")})
	if len(out) != 2 {
		t.Fatalf("got %d records, want 2", len(out))
	}
	for _, r := range out {
		switch r.Path {
		case "x":
			if r.PrevHash != ([32]byte{}) || r.PrevSize != 100 {
				t.Errorf("merged run: PrevHash %x PrevSize %d; want no hash, size 100", r.PrevHash[:2], r.PrevSize)
			}
		case "y":
			if r.PrevHash != h {
				t.Errorf("single write lost its range pre-image")
			}
		}
	}
	// Disjoint ranges within the size before the run keep their own
	// pre-images; a range another write overlapped keeps none.
	h2 := [32]byte{2}
	w2 := w(2, 50, "zz", "x")
	w2.PrevHash = h2
	out = journal.Coalesce([]journal.Record{w(1, 0, "aa", "x"), w2, w(3, 1, "q", "x")})
	got := map[int64][32]byte{}
	for _, r := range out {
		got[r.Offset] = r.PrevHash
	}
	if got[50] != h2 {
		t.Errorf("untouched disjoint range lost its pre-image")
	}
	if got[0] != ([32]byte{}) {
		t.Errorf("overlapped range kept a pre-image")
	}
	// A run ended by a replace: the replace gets the run's size, no hash.
	out = journal.Coalesce([]journal.Record{w(1, 0, "aa", "x"), w(2, 0, "b", "y"), w(3, 0, "c", "y"), {LSN: 4, Op: journal.OpReplace, Account: "a", Tree: "meta", Path: "x", PrevHash: [32]byte{9}}})
	for _, r := range out {
		if r.Op == journal.OpReplace && (r.PrevHash != ([32]byte{}) || r.PrevSize != 100) {
			t.Errorf("replace ending a run: PrevHash %x PrevSize %d", r.PrevHash[:2], r.PrevSize)
		}
	}
}

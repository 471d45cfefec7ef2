package journal_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"mreplfs/journal"
	"mreplfs/journal/journaltest"
)

func crashRecord(i int) journal.Record {
	acct := fmt.Sprintf("acct%d", i%3)
	r := journal.Record{Op: journal.OpWrite, Account: acct, Epoch: 1, Tree: "meta",
		Path: acct + "/cyrus.index", Offset: int64(i), PrevSize: -1, Data: []byte(fmt.Sprintf("record-%d", i))}
	if i%5 == 4 { // compressible: exercises zstd frames
		r.Op, r.Data = journal.OpReplace, []byte(strings.Repeat(fmt.Sprintf("line %d\n", i), 30))
	}
	return r
}

// buildJournal writes n crash records into a fresh journal, closes it and
// returns the dir and the end offset of each frame in the (single) segment.
func buildJournal(t *testing.T, n int) (string, []int64) {
	t.Helper()
	dir := t.TempDir()
	l, err := journal.Open(dir, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var sizes []int64
	for i := 0; i < n; i++ {
		r := crashRecord(i)
		lsn, err := l.Append(ctx, &r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := journal.AppendFrame(nil, &r)
		if lsn != journal.LSN(i+1) {
			t.Fatalf("LSN %d, want %d", lsn, i+1)
		}
		sizes = append(sizes, int64(len(b)))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(journaltest.LastSegment(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, s := range sizes {
		total += s
	}
	ends := make([]int64, n+1)
	ends[0] = fi.Size() - total // the segment header
	for i, s := range sizes {
		ends[i+1] = ends[i] + s
	}
	return dir, ends
}

// readBack opens dir and returns every record.
func readBack(t *testing.T, l *journal.Log) []journal.Record {
	t.Helper()
	rd, err := l.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var out []journal.Record
	for rd.Position() <= l.Durable() {
		r, err := rd.Next(context.Background())
		if err != nil {
			t.Fatalf("Next %d: %v", rd.Position(), err)
		}
		out = append(out, r)
	}
	return out
}

func wantPrefix(t *testing.T, got []journal.Record, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d records, want %d", len(got), n)
	}
	for i, r := range got {
		w := crashRecord(i)
		w.LSN = journal.LSN(i + 1)
		if !reflect.DeepEqual(r, w) {
			t.Fatalf("record %d: got %+v, want %+v", i+1, r, w)
		}
	}
}

func hasEvidence(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*.broken*"))
	return len(m) > 0
}

// TestTruncateAtEveryOffset: a cut anywhere yields exactly the whole records
// before it, keeps evidence when it cut a frame, and the log takes appends
// afterwards that read back cleanly.
func TestTruncateAtEveryOffset(t *testing.T) {
	src, ends := buildJournal(t, 8)
	size := ends[len(ends)-1]
	ctx := context.Background()
	for off := int64(0); off <= size; off++ {
		dir := journaltest.CopyDir(t, src)
		os.Remove(filepath.Join(dir, "clean")) // as after a crash
		journaltest.Truncate(t, journaltest.LastSegment(t, dir), off)
		whole := 0
		for whole < len(ends)-1 && ends[whole+1] <= off {
			whole++
		}
		l, err := journal.Open(dir, journal.Options{})
		if err != nil {
			t.Fatalf("cut at %d: Open: %v", off, err)
		}
		wantPrefix(t, readBack(t, l), whole)
		atBoundary := off == ends[whole]
		if got := hasEvidence(dir); got == atBoundary && off != 0 {
			t.Fatalf("cut at %d: evidence kept %v, want %v", off, got, !atBoundary)
		}
		r := crashRecord(whole)
		lsn, err := l.Append(ctx, &r)
		if err != nil || lsn != journal.LSN(whole+1) {
			t.Fatalf("cut at %d: Append after repair: %d, %v, want LSN %d", off, lsn, err, whole+1)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l, err = journal.Open(dir, journal.Options{})
		if err != nil {
			t.Fatalf("cut at %d: reopen: %v", off, err)
		}
		wantPrefix(t, readBack(t, l), whole+1)
		l.Close()
	}
}

// TestFlipEachByte: any flipped byte is reported as corruption (segment and
// offset named), never returned as data; Repair then keeps evidence and the
// records before the damaged frame.
func TestFlipEachByte(t *testing.T) {
	src, ends := buildJournal(t, 8)
	size := ends[len(ends)-1]
	for off := int64(0); off < size; off++ {
		dir := journaltest.CopyDir(t, src)
		seg := journaltest.LastSegment(t, dir)
		journaltest.FlipByte(t, seg, off)
		l, err := journal.Open(dir, journal.Options{})
		var ce *journal.CorruptError
		if err == nil || !errors.Is(err, journal.ErrCorrupt) || !errors.As(err, &ce) {
			if l != nil {
				l.Close()
			}
			t.Fatalf("flip at %d: Open: got %v, want a *CorruptError wrapping ErrCorrupt", off, err)
		}
		if ce.Segment != filepath.Base(seg) {
			t.Fatalf("flip at %d: error names segment %q, want %q", off, ce.Segment, filepath.Base(seg))
		}
		if off%3 != 0 {
			continue // Repair is slower (fsyncs): check a third of the offsets
		}
		if err := journal.Repair(dir, journal.Options{}); err != nil {
			t.Fatalf("flip at %d: Repair: %v", off, err)
		}
		if !hasEvidence(dir) {
			t.Fatalf("flip at %d: Repair kept no evidence", off)
		}
		l, err = journal.Open(dir, journal.Options{})
		if err != nil {
			t.Fatalf("flip at %d: Open after Repair: %v", off, err)
		}
		damaged := 0
		for damaged < len(ends)-1 && ends[damaged+1] <= off {
			damaged++
		}
		wantPrefix(t, readBack(t, l), damaged)
		l.Close()
	}
}

// TestZeroedSector: a zeroed sector inside the last segment is a torn write:
// the log ends before the first frame it touches, and appends continue.
func TestZeroedSector(t *testing.T) {
	src, ends := buildJournal(t, 60)
	if ends[len(ends)-1] < 2048 {
		t.Fatalf("journal too small (%d bytes) for the test", ends[len(ends)-1])
	}
	dir := journaltest.CopyDir(t, src)
	journaltest.ZeroRange(t, journaltest.LastSegment(t, dir), 1024, 512)
	whole := 0
	for ends[whole+1] <= 1024 {
		whole++
	}
	l, err := journal.Open(dir, journal.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	wantPrefix(t, readBack(t, l), whole)
	if !hasEvidence(dir) {
		t.Error("no evidence kept")
	}
	r := crashRecord(whole)
	if lsn, err := l.Append(context.Background(), &r); err != nil || lsn != journal.LSN(whole+1) {
		t.Fatalf("Append: %d, %v", lsn, err)
	}
	l.Close()
	l, _ = journal.Open(dir, journal.Options{})
	wantPrefix(t, readBack(t, l), whole+1)
	l.Close()
}

// TestLengthPastEnd: a frame header (valid checksum) announcing more bytes
// than the file holds is a torn write, read without allocating its length.
func TestLengthPastEnd(t *testing.T) {
	src, ends := buildJournal(t, 5)
	dir := journaltest.CopyDir(t, src)
	seg := journaltest.LastSegment(t, dir)
	// Re-frame record 5 as a header claiming 60 MiB, then cut the file.
	r := crashRecord(4)
	r.LSN = 5
	frame, _ := journal.AppendFrame(nil, &r)
	hdr := forgeLength(frame[:24], 60<<20)
	journaltest.WriteAt(t, seg, ends[4], hdr)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l, err := journal.Open(dir, journal.Options{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer l.Close()
	wantPrefix(t, readBack(t, l), 4)
	if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
		t.Errorf("Open allocated %d bytes for a 60 MiB length past the end", d)
	}
	// The pure decoder says the same, without allocating.
	allocs := testing.AllocsPerRun(10, func() {
		if _, _, err := journal.DecodeFrame(append(hdr, 1, 2, 3)); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("DecodeFrame: got %v, want ErrUnexpectedEOF", err)
		}
	})
	if allocs > 2 {
		t.Errorf("DecodeFrame allocated %v times", allocs)
	}
}

// TestMidLogCorruption: damage in a segment before the last is never treated
// as a torn tail: Open refuses it, naming the segment; Repair cuts the log
// there and keeps the damaged and later segments as evidence.
func TestMidLogCorruption(t *testing.T) {
	dir := t.TempDir()
	l, err := journal.Open(dir, journal.Options{SegmentSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 40; i++ {
		r := crashRecord(i)
		l.Append(ctx, &r)
	}
	l.Close()
	segs := journaltest.Segments(t, dir)
	if len(segs) < 3 {
		t.Fatalf("only %d segments", len(segs))
	}
	// Zeroing the tail of a middle segment would look torn in the last one;
	// here it must be corruption.
	fi, _ := os.Stat(segs[1])
	journaltest.ZeroRange(t, segs[1], fi.Size()-10, 10)
	_, err = journal.Open(dir, journal.Options{})
	var ce *journal.CorruptError
	if !errors.As(err, &ce) || ce.Segment != filepath.Base(segs[1]) {
		t.Fatalf("Open: got %v, want a *CorruptError in %s", err, filepath.Base(segs[1]))
	}
	if err := journal.Repair(dir, journal.Options{}); err != nil {
		t.Fatal(err)
	}
	l, err = journal.Open(dir, journal.Options{})
	if err != nil {
		t.Fatalf("Open after Repair: %v", err)
	}
	defer l.Close()
	got := readBack(t, l)
	if len(got) == 0 || len(got) >= 40 {
		t.Fatalf("after Repair: %d records", len(got))
	}
	wantPrefix(t, got, len(got))
	for _, s := range segs[2:] {
		if _, err := os.Stat(s + ".broken"); err != nil {
			t.Errorf("later segment %s not kept as evidence: %v", filepath.Base(s), err)
		}
	}
}

package journal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// testLogger sends the journal's log lines to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func openT(t testing.TB, dir string, o Options) *Log {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

// testRecord is record i of a deterministic sequence, with varied sizes.
func testRecord(i int) Record {
	acct := fmt.Sprintf("user%d", i%5)
	switch i % 4 {
	case 0:
		return Record{Op: OpWrite, Account: acct, Tree: "meta", Path: acct + "/cyrus.index", Offset: int64(i * 10), Data: []byte(strings.Repeat(fmt.Sprint(i), i%37+1))}
	case 1:
		return Record{Op: OpMkdir, Account: acct, Tree: "spool", Path: fmt.Sprintf("%s/d%d", acct, i), Mode: 0o40700}
	case 2:
		return Record{Op: OpReplace, Account: acct, Tree: "conf", Path: acct + ".seen", Data: []byte(strings.Repeat("seen state ", i%50+1))}
	}
	return Record{Op: OpUnlink, Account: acct, Tree: "spool", Path: fmt.Sprintf("%s/%d.", acct, i), PrevSize: -1}
}

func appendN(t testing.TB, l *Log, from, n int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < from+n; i++ {
		r := testRecord(i)
		if _, err := l.Append(ctx, &r); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
}

// readAll reads every durable record from the start.
func readAll(t testing.TB, l *Log) []Record {
	t.Helper()
	rd, err := l.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var out []Record
	for rd.Position() <= l.Durable() {
		r, err := rd.Next(context.Background())
		if err != nil {
			t.Fatalf("Next at %d: %v", rd.Position(), err)
		}
		out = append(out, r)
	}
	return out
}

func checkRecords(t testing.TB, got []Record, firstLSN LSN, fromIdx, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d records, want %d", len(got), n)
	}
	for i, r := range got {
		want := testRecord(fromIdx + i)
		want.LSN = firstLSN + LSN(i)
		if !reflect.DeepEqual(r, want) {
			t.Fatalf("record %d: got %+v, want %+v", i, r, want)
		}
	}
}

func TestAppendSyncReopen(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentSize: 4096})
	ctx := context.Background()
	appendN(t, l, 0, 300)
	if err := l.Sync(ctx, 300); err != nil {
		t.Fatal(err)
	}
	if got := l.Durable(); got != 300 {
		t.Fatalf("Durable: got %d, want 300", got)
	}
	checkRecords(t, readAll(t, l), 1, 0, 300)
	if st := l.Stats(); st.Segments < 3 {
		t.Errorf("Segments: got %d, want several at SegmentSize 4096", st.Segments)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, &Record{Op: OpCheckpoint}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: got %v, want ErrClosed", err)
	}
	l = openT(t, dir, Options{SegmentSize: 4096})
	defer l.Close()
	if got := l.UncleanAccounts(); len(got) != 0 {
		t.Errorf("UncleanAccounts after a clean Close: got %v", got)
	}
	checkRecords(t, readAll(t, l), 1, 0, 300)
	appendN(t, l, 300, 10)
	if err := l.Sync(ctx, 310); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, readAll(t, l), 1, 0, 310)
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	defer l.Close()
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: got %v, want ErrLocked", err)
	}
}

// TestSyncEvery: records nobody waits for become durable within a cycle.
func TestSyncEvery(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SyncEvery: 20 * time.Millisecond})
	defer l.Close()
	appendN(t, l, 0, 5)
	rd, _ := l.NewReader(1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 5; i++ {
		if _, err := rd.Next(ctx); err != nil {
			t.Fatalf("Next %d: %v (durable %d)", i, err, l.Durable())
		}
	}
}

func TestGroupCommitConcurrent(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SegmentSize: 64 << 10})
	defer l.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				r := testRecord(i)
				lsn, err := l.Append(ctx, &r)
				if err != nil {
					t.Error(err)
					return
				}
				if err := l.Sync(ctx, lsn); err != nil {
					t.Error(err)
					return
				}
				if l.Durable() < lsn {
					t.Errorf("Sync(%d) returned with durable %d", lsn, l.Durable())
				}
			}
		}()
	}
	wg.Wait()
	if got := len(readAll(t, l)); got != 800 {
		t.Fatalf("records: got %d, want 800", got)
	}
}

// TestReaderTails: a reader blocks at the end, wakes on new durable records,
// and honours ctx.
func TestReaderTails(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SegmentSize: 2048})
	ctx := context.Background()
	rd, err := l.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	if _, err := rd.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on empty log: got %v, want DeadlineExceeded", err)
	}
	cancel()
	got := make(chan []Record)
	go func() {
		var out []Record
		for len(out) < 100 {
			r, err := rd.Next(ctx)
			if err != nil {
				t.Error(err)
				break
			}
			out = append(out, r)
		}
		got <- out
	}()
	for i := 0; i < 100; i += 10 {
		appendN(t, l, i, 10)
		l.Sync(ctx, LSN(i+10))
	}
	checkRecords(t, <-got, 1, 0, 100)
	done := make(chan error)
	go func() { _, err := rd.Next(ctx); done <- err }()
	time.Sleep(10 * time.Millisecond)
	l.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next across Close: got %v, want ErrClosed", err)
	}
	if _, err := l.NewReader(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewReader after Close: got %v", err)
	}
}

// TestReaderOnlyDurable: appended but unsynced records are not returned.
func TestReaderOnlyDurable(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SyncEvery: time.Hour})
	defer l.Close()
	appendN(t, l, 0, 3)
	rd, _ := l.NewReader(1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if r, err := rd.Next(ctx); err == nil {
		t.Fatalf("Next returned non-durable record %+v", r)
	}
	l.Sync(context.Background(), 3)
	if r, err := rd.Next(context.Background()); err != nil || r.LSN != 1 {
		t.Fatalf("Next after Sync: got %d, %v", r.LSN, err)
	}
}

func TestConsumersRetention(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentSize: 2048})
	ctx := context.Background()
	appendN(t, l, 0, 200)
	l.Sync(ctx, 200)
	segs0 := l.Stats().Segments
	if err := l.SetAcked("peer-b", 0); err != nil {
		t.Fatal(err)
	}
	if err := l.SetAcked("backup", 150); err != nil {
		t.Fatal(err)
	}
	if l.Stats().Segments != segs0 {
		t.Fatalf("segments removed although peer-b acked nothing")
	}
	if err := l.SetAcked("peer-b", 500); !errors.Is(err, ErrFuture) {
		t.Fatalf("ack beyond durable: got %v, want ErrFuture", err)
	}
	if err := l.SetAcked("bad name/", 1); !errors.Is(err, ErrBadConsumer) {
		t.Fatalf("bad name: got %v", err)
	}
	if err := l.SetAcked("peer-b", 100); err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	if st.Segments >= segs0 || st.First > 101 || st.First < 2 {
		t.Fatalf("after acks to 100: %d segments (was %d), first %d", st.Segments, segs0, st.First)
	}
	if _, err := l.NewReader(1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("NewReader(1) after removal: got %v, want ErrCompacted", err)
	}
	rd, err := l.NewReader(101)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := rd.Next(ctx); err != nil || r.LSN != 101 {
		t.Fatalf("Next from 101: got %d, %v", r.LSN, err)
	}
	l.Close()
	l = openT(t, dir, Options{SegmentSize: 2048})
	defer l.Close()
	if got, ok := l.Acked("peer-b"); !ok || got != 100 {
		t.Fatalf("Acked(peer-b) after reopen: got %d, %v", got, ok)
	}
	if got := l.Consumers(); !reflect.DeepEqual(got, []string{"backup", "peer-b"}) {
		t.Fatalf("Consumers: got %v", got)
	}
	if l.Stats().First != st.First {
		t.Fatalf("first after reopen: got %d, want %d", l.Stats().First, st.First)
	}
	// Everything acked: all but the active segment go; LSNs continue.
	l.SetAcked("peer-b", 200)
	l.SetAcked("backup", 200)
	if got := l.Stats().Segments; got != 1 {
		t.Fatalf("segments after acking all: got %d, want 1", got)
	}
	r := Record{Op: OpCheckpoint}
	if lsn, _ := l.Append(ctx, &r); lsn != 201 {
		t.Fatalf("next LSN: got %d, want 201", lsn)
	}
}

func TestBlobs(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentSize: 1024})
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "1.")
	os.WriteFile(src, []byte("message body"), 0o600)
	h := [32]byte{0xab}
	if err := l.PutBlob(ctx, h, src); err != nil {
		t.Fatal(err)
	}
	r := Record{Op: OpMessage, Account: "a", Tree: "spool", Path: "1.", Hash: h, Size: 12}
	lsn, _ := l.Append(ctx, &r)
	// A second delivery of the same body: PutBlob is idempotent.
	if err := l.PutBlob(ctx, h, src); err != nil {
		t.Fatal(err)
	}
	r2 := Record{Op: OpMessage, Account: "b", Tree: "spool", Path: "7.", Hash: h, Size: 12}
	lsn, _ = l.Append(ctx, &r2)
	l.Sync(ctx, lsn)
	f, err := l.OpenBlob(h)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, _ := f.Read(b)
	f.Close()
	if string(b[:n]) != "message body" {
		t.Fatalf("blob: got %q", b[:n])
	}
	// An orphan (PutBlob without a record) is removed at the next open.
	orphan := [32]byte{0xcd}
	l.PutBlob(ctx, orphan, src)
	appendN(t, l, 0, 40) // several segments
	l.Sync(ctx, 1000)
	l.Close()
	l = openT(t, dir, Options{SegmentSize: 1024})
	defer l.Close()
	if _, err := l.OpenBlob(orphan); err == nil {
		t.Error("orphan blob survived reopen")
	}
	if _, err := l.OpenBlob(h); err != nil {
		t.Fatalf("referenced blob gone: %v", err)
	}
	// Once its record's segment is removed, the blob goes too.
	l.SetAcked("p", l.Durable())
	if _, err := l.OpenBlob(h); err == nil {
		t.Error("blob survived the removal of the only segment referring to it")
	}
}

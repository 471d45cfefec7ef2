package journal

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func openFollowerT(t testing.TB, dir string) *Follower {
	t.Helper()
	f, err := OpenFollower(dir, FollowerOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("OpenFollower: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestFollowerTailsLog: a Follower sees exactly what the Log made durable,
// across segments, blocking at the tail; blobs and consumers are shared.
func TestFollowerTailsLog(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentSize: 2048})
	defer l.Close()
	f := openFollowerT(t, dir)
	ctx := context.Background()
	rd, err := f.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got := make(chan []Record)
	go func() {
		var out []Record
		for len(out) < 300 {
			r, err := rd.Next(ctx)
			if err != nil {
				t.Errorf("Next: %v", err)
				break
			}
			if r.LSN > f.Durable() {
				t.Errorf("record %d beyond the follower's durable %d", r.LSN, f.Durable())
			}
			out = append(out, r)
		}
		got <- out
	}()
	for i := 0; i < 300; i += 30 {
		appendN(t, l, i, 30)
		if err := l.Sync(ctx, LSN(i+30)); err != nil {
			t.Fatal(err)
		}
	}
	checkRecords(t, <-got, 1, 0, 300)
	if f.Durable() != l.Durable() {
		t.Fatalf("follower durable %d, writer %d", f.Durable(), l.Durable())
	}
	if _, err := f.NewReader(302); !errors.Is(err, ErrFuture) {
		t.Fatalf("NewReader(302): got %v, want ErrFuture", err)
	}
	if err := f.SetAcked("peer", 301); !errors.Is(err, ErrFuture) {
		t.Fatalf("SetAcked beyond durable: got %v, want ErrFuture", err)
	}
	if err := f.SetAcked("bad/name", 1); !errors.Is(err, ErrBadConsumer) {
		t.Fatalf("SetAcked bad name: got %v, want ErrBadConsumer", err)
	}

	// Acks from either side land in the same place.
	if err := f.SetAcked("peer", 120); err != nil {
		t.Fatal(err)
	}
	if v, ok := l.Acked("peer"); !ok || v != 120 {
		t.Fatalf("writer sees Acked(peer) = %d, %v; want 120", v, ok)
	}
	if err := l.SetAcked("peer", 150); err != nil {
		t.Fatal(err)
	}
	if err := f.SetAcked("peer", 140); err != nil { // backwards: ignored
		t.Fatal(err)
	}
	if v, ok := f.Acked("peer"); !ok || v != 150 {
		t.Fatalf("follower sees Acked(peer) = %d, %v; want 150", v, ok)
	}
	if _, ok := f.Acked("nobody"); ok {
		t.Fatal("Acked(nobody) registered")
	}
	if st := l.Stats(); st.First < 2 || st.First > 151 {
		t.Fatalf("after acks to 150, first retained %d", st.First)
	}
	if _, err := f.NewReader(1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("follower NewReader(1) after removal: got %v, want ErrCompacted", err)
	}

	// Blobs.
	src := filepath.Join(t.TempDir(), "1.")
	os.WriteFile(src, []byte("message body"), 0o600)
	h := [32]byte{0xab}
	if err := l.PutBlob(ctx, h, src); err != nil {
		t.Fatal(err)
	}
	br, err := f.OpenBlob(h)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(br)
	br.Close()
	if string(b) != "message body" {
		t.Fatalf("blob via follower: %q", b)
	}
	if _, err := f.OpenBlob([32]byte{1}); err == nil {
		t.Fatal("OpenBlob of a missing blob succeeded")
	}

	// Close wakes a blocked reader.
	tail, err := f.NewReader(f.Durable() + 1)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := tail.Next(ctx); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	f.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: got %v, want ErrClosed", err)
	}
}

// writeRawFrames appends records 'from'... to the active segment by hand, as
// a committer that died before its fdatasync (or in the middle of its
// write) leaves them; cut > 0 keeps only that many bytes of the last frame.
func writeRawFrames(t *testing.T, dir string, first, from LSN, recs []Record, cut int) {
	t.Helper()
	file, err := os.OpenFile(filepath.Join(dir, segName(first)), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var buf []byte
	for i, r := range recs {
		typ, body, err := encodeBody(&r, nil)
		if err != nil {
			t.Fatal(err)
		}
		h := make([]byte, frameHeader)
		putFrameHeader(h, typ, from+LSN(i), body)
		frame := append(h, body...)
		if i == len(recs)-1 && cut > 0 {
			frame = frame[:cut]
		}
		buf = append(buf, frame...)
	}
	if _, err := file.Write(buf); err != nil {
		t.Fatal(err)
	}
}

// TestFollowerNeverBeyondDurable: bytes in the segment past the published
// durable LSN (a whole frame and a torn one) are never returned; after the
// writer restarts, cuts the torn frame and writes other records at those
// LSNs, the Follower returns the new records, not stale buffered bytes.
func TestFollowerNeverBeyondDurable(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	ctx := context.Background()
	appendN(t, l, 0, 10)
	l.Sync(ctx, 10)
	f := openFollowerT(t, dir)
	rd, err := f.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	writeRawFrames(t, dir, 1, 11, []Record{testRecord(100), testRecord(101)}, 30)
	var got []Record
	for i := 0; i < 10; i++ {
		r, err := rd.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	checkRecords(t, got, 1, 0, 10)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	r, err := rd.Next(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next past durable: got %+v, %v; want a timeout", r, err)
	}
	if f.Durable() != 10 {
		t.Fatalf("follower durable %d, want 10", f.Durable())
	}

	// Writer restart: it keeps the whole frame 11 (it survived), cuts the
	// torn 12, and appends new records from 12.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openT(t, dir, Options{})
	defer l.Close()
	if l.Durable() != 11 {
		t.Fatalf("writer durable after reopen %d, want 11", l.Durable())
	}
	appendN(t, l, 200, 5)
	l.Sync(ctx, 16)
	got = got[:0]
	for i := 0; i < 6; i++ {
		r, err := rd.Next(ctx)
		if err != nil {
			t.Fatalf("Next %d after writer restart: %v", rd.Position(), err)
		}
		got = append(got, r)
	}
	want := []Record{testRecord(100), testRecord(200), testRecord(201), testRecord(202), testRecord(203), testRecord(204)}
	for i := range want {
		want[i].LSN = 11 + LSN(i)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after restart: got %+v\nwant %+v", got, want)
	}
}

// TestFollowerPollOnly: without inotify the Follower still follows, by
// polling the durable file.
func TestFollowerPollOnly(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentSize: 1024})
	defer l.Close()
	f, err := openFollower(dir, FollowerOptions{Logger: testLogger(t), Poll: 5 * time.Millisecond}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := f.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []Record
	for i := 0; i < 50; i += 10 {
		appendN(t, l, i, 10)
		l.Sync(ctx, LSN(i+10))
		for rd.Position() <= LSN(i+10) {
			r, err := rd.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, r)
		}
	}
	checkRecords(t, got, 1, 0, 50)
}

// TestFollowerNoDurableFile: a journal whose writer has not published yet
// (the file is missing) is followed from the moment it appears.
func TestFollowerNoDurableFile(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	appendN(t, l, 0, 3)
	l.Close()
	os.Remove(filepath.Join(dir, durableFile))
	f := openFollowerT(t, dir)
	if f.Durable() != 0 {
		t.Fatalf("durable without the file: %d", f.Durable())
	}
	rd, err := f.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	l = openT(t, dir, Options{}) // publishes 3
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		r, err := rd.Next(ctx)
		if err != nil || r.LSN != LSN(i) {
			t.Fatalf("Next: %d, %v", r.LSN, err)
		}
	}
}

func TestFollowerNotJournal(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o600)
	for _, d := range []string{dir, filepath.Join(dir, "x")} {
		if _, err := OpenFollower(d, FollowerOptions{}); !errors.Is(err, ErrNotJournal) {
			t.Errorf("OpenFollower(%s): got %v, want ErrNotJournal", d, err)
		}
	}
	if _, err := OpenFollower(filepath.Join(dir, "missing"), FollowerOptions{}); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenFollower(missing): got %v, want a not-exist error", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "LOCK"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFollower(dir, FollowerOptions{}); !errors.Is(err, ErrNotJournal) {
		t.Errorf("OpenFollower(LOCK, no segments): got %v, want ErrNotJournal", err)
	}
	if _, err := os.Stat(filepath.Join(dir, consumersDir)); err == nil {
		t.Error("OpenFollower created consumers.d")
	}
}

// TestConsumersMigrated: the single consumers file of the older layout is
// moved into consumers.d at Open, and still holds segments back.
func TestConsumersMigrated(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentSize: 1024})
	appendN(t, l, 0, 100)
	l.Sync(context.Background(), 100)
	l.Close()
	if err := writeListFile(dir, consumersFile, []string{`"old-peer" 0`, `"backup" 60`}); err != nil {
		t.Fatal(err)
	}
	l = openT(t, dir, Options{SegmentSize: 1024})
	defer l.Close()
	if _, err := os.Stat(filepath.Join(dir, consumersFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old consumers file still there: %v", err)
	}
	if got := l.Consumers(); !reflect.DeepEqual(got, []string{"backup", "old-peer"}) {
		t.Fatalf("Consumers: %v", got)
	}
	if v, ok := l.Acked("backup"); !ok || v != 60 {
		t.Fatalf("Acked(backup) = %d, %v", v, ok)
	}
	if l.Stats().First != 1 {
		t.Fatalf("segments removed although old-peer acked nothing: first %d", l.Stats().First)
	}
	if err := l.RemoveConsumer("old-peer"); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.First < 2 || st.First > 61 {
		t.Fatalf("after removing old-peer: first %d", st.First)
	}
}

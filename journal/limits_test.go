package journal

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// TestBoundedSize: soft limit → alarm; hard limit → only one OpDirty per
// changed account, Append never fails; acks shrink the journal and detail
// returns; DirtyAccounts lists the accounts until consumers ack past them.
func TestBoundedSize(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SegmentSize: 4096, SoftLimit: 8 << 10, HardLimit: 16 << 10})
	defer l.Close()
	ctx := context.Background()
	if err := l.SetAcked("peer", 0); err != nil {
		t.Fatal(err)
	}
	i := 0
	for !l.Stats().Alarm {
		appendN(t, l, i, 1)
		i++
	}
	if l.Stats().Overflow {
		t.Fatal("overflow already at the soft limit")
	}
	if !l.Alarm() {
		t.Fatal("Alarm() false above the soft limit")
	}
	for !l.Stats().Overflow {
		appendN(t, l, i, 1)
		i++
	}
	overflowAt := l.Stats().Next
	sizeAt := l.Stats().Size
	// In overflow: records of an account collapse into one OpDirty.
	var lsns []LSN
	for j := 0; j < 50; j++ {
		r := testRecord(j)
		r.Account = fmt.Sprintf("acct%d", j%3)
		lsn, err := l.Append(ctx, &r)
		if err != nil {
			t.Fatalf("Append in overflow: %v", err)
		}
		if r.LSN != lsn {
			t.Fatalf("r.LSN %d, returned %d", r.LSN, lsn)
		}
		lsns = append(lsns, lsn)
	}
	for j := 3; j < 50; j++ {
		if lsns[j] != lsns[j%3] {
			t.Fatalf("account acct%d got LSNs %d and %d in one overflow episode", j%3, lsns[j%3], lsns[j])
		}
	}
	ctl := Record{Op: OpEpoch, Account: "acct0", Epoch: 9}
	ctlLSN, _ := l.Append(ctx, &ctl)
	if err := l.Sync(ctx, ctlLSN); err != nil {
		t.Fatal(err)
	}
	if grew := l.Stats().Size - sizeAt; grew > 4*200 {
		t.Fatalf("journal grew %d bytes in overflow for 3 accounts", grew)
	}
	// The append that reached the hard limit was already degraded.
	want := []string{"acct0", "acct1", "acct2", testRecord(i - 1).Account}
	if got := l.DirtyAccounts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("DirtyAccounts: got %v, want %v", got, want)
	}
	rd, _ := l.NewReader(overflowAt)
	var ops []Op
	for rd.Position() <= l.Durable() {
		r, err := rd.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, r.Op)
		if r.Op == OpDirty && r.Account == "" {
			t.Fatal("OpDirty without account")
		}
	}
	if want := []Op{OpDirty, OpDirty, OpDirty, OpEpoch}; !reflect.DeepEqual(ops, want) {
		t.Fatalf("records stored in overflow: got %v, want %v", ops, want)
	}
	// The consumer catches up: segments go, the episode ends, detail returns.
	if err := l.SetAcked("peer", l.Durable()); err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	if st.Overflow || st.Alarm {
		t.Fatalf("after acking everything: %+v", st)
	}
	r := testRecord(1)
	r.Account = "acct0"
	lsn, _ := l.Append(ctx, &r)
	l.Sync(ctx, lsn)
	rd, _ = l.NewReader(lsn)
	if got, err := rd.Next(ctx); err != nil || got.Op != r.Op {
		t.Fatalf("after overflow: stored %v, %v, want op %v", got.Op, err, r.Op)
	}
	// OpDirty records in removed segments no longer list their accounts.
	for l.Stats().Segments < 2 {
		appendN(t, l, 0, 1)
	}
	l.Sync(ctx, 1<<62)
	l.SetAcked("peer", l.Durable())
	if got := l.DirtyAccounts(); len(got) != 0 {
		t.Fatalf("DirtyAccounts after every consumer acked past them: %v", got)
	}
}

// TestUncleanMarker: a copy of a live journal is what a crash leaves; the
// accounts active in it are listed as unclean, persistently, until cleared.
func TestUncleanMarker(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	ctx := context.Background()
	if err := l.Activate(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	r := Record{Op: OpWrite, Account: "bob", Tree: "meta", Path: "x", Data: []byte("1")}
	lsn, _ := l.Append(ctx, &r) // bob: activity noted at this commit
	l.Sync(ctx, lsn)
	crash := t.TempDir()
	for _, n := range []string{segName(1), activeFile} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(crash, n), b, 0o600)
	}
	l.Close()
	l = openT(t, crash, Options{})
	if got, want := l.UncleanAccounts(), []string{"alice", "bob"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("UncleanAccounts: got %v, want %v", got, want)
	}
	l.Close()
	l = openT(t, crash, Options{}) // still listed after a clean stop
	if got := l.UncleanAccounts(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("UncleanAccounts after clean reopen: got %v", got)
	}
	if err := l.ClearUnclean("alice"); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = openT(t, crash, Options{})
	defer l.Close()
	if got := l.UncleanAccounts(); !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("UncleanAccounts after ClearUnclean(alice): got %v", got)
	}
	// The reopened clean journal holds no activity until new records come.
	if _, err := os.Stat(filepath.Join(crash, activeFile)); err == nil {
		t.Error("activity log survived a clean open")
	}
}

func TestNextBatchCoalesces(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	defer l.Close()
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		r := Record{Op: OpWrite, Account: "a", Tree: "meta", Path: "cyrus.index", Offset: int64(i * 4), Data: []byte("abcd")}
		l.Append(ctx, &r)
	}
	r := Record{Op: OpMkdir, Account: "b", Tree: "spool", Path: "x"}
	last, _ := l.Append(ctx, &r)
	l.Sync(ctx, last)
	rd, _ := l.NewReader(1)
	b, err := rd.NextBatch(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 2 || b[0].Offset != 0 || len(b[0].Data) != 40 || b[0].LSN != 10 || b[1].Op != OpMkdir {
		t.Fatalf("NextBatch: got %+v", b)
	}
	if rd.Position() != last+1 {
		t.Fatalf("Position: got %d, want %d", rd.Position(), last+1)
	}
	rd2, _ := l.NewReader(1)
	if b, _ := rd2.NextBatch(ctx, 3); len(b) != 1 || rd2.Position() != 4 {
		t.Fatalf("NextBatch(max 3): got %d records, position %d", len(b), rd2.Position())
	}
}

package peer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"mreplfs/journal"
)

// crash applies batch with the receiver dying right after the record at
// crashLSN, and restarts it.
func (f *fixture) crash(t *testing.T, batch []journal.Record, crashLSN journal.LSN) {
	t.Helper()
	f.a.crashAfter = crashLSN
	if _, err := f.a.ApplyBatch(context.Background(), batch, nil); !errors.Is(err, errSimulatedCrash) {
		t.Fatalf("crash hook: got %v", err)
	}
	f.a.Close()
	f.open(t)
}

// crashAndReplay is crash, then the batch applied again.
func (f *fixture) crashAndReplay(t *testing.T, batch []journal.Record, crashLSN journal.LSN) {
	t.Helper()
	f.crash(t, batch, crashLSN)
	if res := f.apply(t, batch, nil); len(res.Errors) != 0 {
		t.Fatalf("replay: %v", res.Errors)
	}
}

func (f *fixture) absent(t *testing.T, rel string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(f.root, rel)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: %v, want it absent", rel, err)
	}
}

// TestRenameReplayNameReused: a later record of the batch writes a new file
// at a rename's source name (a message, or a file under a renamed
// directory). The rename must stay checkpointed after it, or the replay
// would move the new file onto the destination.
func TestRenameReplayNameReused(t *testing.T) {
	f := newFixture(t)
	setup := []journal.Record{
		f.rec(msg("alice", "alice/A", []byte("old A"), true)),
		f.rec(journal.Record{Op: journal.OpMkdir, Account: "alice", Path: "alice/D", Mode: 0o755}),
		f.rec(msg("alice", "alice/D/1.", []byte("old D/1."), true)),
	}
	if res := f.apply(t, setup, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	batch := []journal.Record{
		f.rec(journal.Record{Op: journal.OpRename, Account: "alice", Path: "alice/A", NewPath: "alice/B"}),
		f.rec(msg("alice", "alice/A", []byte("new A"), true)),
		f.rec(journal.Record{Op: journal.OpRename, Account: "alice", Path: "alice/D", NewPath: "alice/E"}),
		f.rec(journal.Record{Op: journal.OpMkdir, Account: "alice", Path: "alice/D", Mode: 0o755}),
		f.rec(msg("alice", "alice/D/1.", []byte("new D/1."), true)),
	}
	f.crashAndReplay(t, batch, batch[len(batch)-1].LSN)
	for rel, want := range map[string]string{"spool/alice/B": "old A", "spool/alice/A": "new A",
		"spool/alice/E/1.": "old D/1.", "spool/alice/D/1.": "new D/1."} {
		if got := f.read(t, rel); got != want {
			t.Errorf("%s: got %q, want %q (the replay moved the wrong file)", rel, got, want)
		}
	}
}

// TestRenameReplayTemporaryNames: the small-file pattern (written under a
// temporary name, then renamed), whose renames need no checkpoint after
// them, is replayed correctly after a crash at the end of the batch.
func TestRenameReplayTemporaryNames(t *testing.T) {
	f := newFixture(t)
	var batch []journal.Record
	for _, n := range []string{"1", "2", "3"} {
		batch = append(batch,
			f.rec(msg("alice", "alice/tmp"+n, []byte("body "+n), true)),
			f.rec(journal.Record{Op: journal.OpRename, Account: "alice", Path: "alice/tmp" + n, NewPath: "alice/" + n + "."}))
	}
	f.crashAndReplay(t, batch, batch[len(batch)-1].LSN)
	for _, n := range []string{"1", "2", "3"} {
		if got := f.read(t, "spool/alice/"+n+"."); got != "body "+n {
			t.Errorf("%s.: got %q", n, got)
		}
		f.absent(t, "spool/alice/tmp"+n)
	}
	if p, err := f.a.Position("alice"); err != nil || p.Applied != batch[len(batch)-1].LSN || p.Inflight != 0 {
		t.Errorf("position %+v, %v; want applied %d, nothing in flight", p, err, batch[len(batch)-1].LSN)
	}
}

// TestRenameCheckpointCommits: a checkpoint that has nothing new costs no
// commit, and a rename whose source name no later record uses needs no
// checkpoint after it. Each state commit is two fsyncs; in sync mode they
// are what an fsync on the master waits for.
func TestRenameCheckpointCommits(t *testing.T) {
	f := newFixture(t)
	commits := func(recs []journal.Record) int64 {
		t.Helper()
		n := f.a.st.commits.Load()
		if res := f.apply(t, recs, nil); len(res.Errors) != 0 {
			t.Fatal(res.Errors)
		}
		return f.a.st.commits.Load() - n
	}
	// Batch start, the checkpoint before the rename (the message), the end.
	if n := commits([]journal.Record{
		f.rec(msg("alice", "alice/tmp1", []byte("one"), true)),
		f.rec(journal.Record{Op: journal.OpRename, Account: "alice", Path: "alice/tmp1", NewPath: "alice/1."}),
	}); n != 3 {
		t.Errorf("message + rename: %d commits, want 3", n)
	}
	// A rename first in its batch: nothing to checkpoint before it.
	if n := commits([]journal.Record{
		f.rec(journal.Record{Op: journal.OpRename, Account: "alice", Path: "alice/1.", NewPath: "alice/2."}),
		f.rec(msg("alice", "alice/tmp3", []byte("three"), true)),
	}); n != 2 {
		t.Errorf("rename + message: %d commits, want 2", n)
	}
	// The source name used again: checkpointed after the rename.
	if n := commits([]journal.Record{
		f.rec(journal.Record{Op: journal.OpRename, Account: "alice", Path: "alice/2.", NewPath: "alice/3."}),
		f.rec(msg("alice", "alice/2.", []byte("two again"), true)),
	}); n != 3 {
		t.Errorf("rename + reuse of its source: %d commits, want 3", n)
	}
	if got := f.read(t, "spool/alice/3."); got != "one" {
		t.Errorf("3.: got %q, want %q", got, "one")
	}
}

// TestFlushSyncsEachDirectoryOnce: 20 messages delivered into one mailbox
// in one batch cost 20 file fsyncs and one of their directory.
func TestFlushSyncsEachDirectoryOnce(t *testing.T) {
	f := newFixture(t)
	if res := f.apply(t, []journal.Record{f.rec(journal.Record{Op: journal.OpMkdir, Account: "alice", Path: "alice/INBOX", Mode: 0o755})}, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	var batch []journal.Record
	for i := range 20 {
		batch = append(batch, f.rec(msg("alice", fmt.Sprintf("alice/INBOX/%d.", i+1), []byte(fmt.Sprintf("body %d", i)), true)))
	}
	n := f.a.fsyncs.Load()
	if res := f.apply(t, batch, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	if got := f.a.fsyncs.Load() - n; got != 21 {
		t.Errorf("%d fsyncs for 20 messages in one directory, want 21", got)
	}
	for i := range 20 {
		if got := f.read(t, fmt.Sprintf("spool/alice/INBOX/%d.", i+1)); got != fmt.Sprintf("body %d", i) {
			t.Errorf("%d.: got %q", i+1, got)
		}
	}
}

// TestRenameReplayTwoCrashes: a crash after "rename A→B, U", then, while
// the replay batch (with a backlog: "rename A→B, U, message A, X") is
// applied, another crash after the new A. The second replay must not move
// the new A onto B: renames are checkpointed in a replay too.
func TestRenameReplayTwoCrashes(t *testing.T) {
	f := newFixture(t)
	if res := f.apply(t, []journal.Record{f.rec(msg("alice", "alice/A", []byte("old A"), true))}, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	rn := f.rec(journal.Record{Op: journal.OpRename, Account: "alice", Path: "alice/A", NewPath: "alice/B"})
	u := f.rec(msg("alice", "alice/U", []byte("u"), true))
	m := f.rec(msg("alice", "alice/A", []byte("new A"), true))
	x := f.rec(msg("alice", "alice/X", []byte("x"), true))
	f.crash(t, []journal.Record{rn, u}, u.LSN)
	f.crash(t, []journal.Record{rn, u, m, x}, m.LSN)
	if res := f.apply(t, []journal.Record{rn, u, m, x}, nil); len(res.Errors) != 0 {
		t.Fatalf("replay: %v", res.Errors)
	}
	for rel, want := range map[string]string{"spool/alice/B": "old A", "spool/alice/A": "new A", "spool/alice/X": "x"} {
		if got := f.read(t, rel); got != want {
			t.Errorf("%s: got %q, want %q", rel, got, want)
		}
	}
}

// TestAlreadyThereIsFlushed: a message or replaced file found already in
// place (an earlier try wrote it, and its flush never ran) is fsynced with
// the batch that finds it, before that batch's position is persisted.
func TestAlreadyThereIsFlushed(t *testing.T) {
	f := newFixture(t)
	if res := f.apply(t, []journal.Record{f.rec(journal.Record{Op: journal.OpMkdir, Account: "alice", Path: "alice/INBOX", Mode: 0o755})}, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	// what an earlier, unflushed try left
	body := []byte("body")
	if err := os.WriteFile(filepath.Join(f.root, "spool/alice/INBOX/1."), body, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.root, "spool/alice/INBOX/quota"), body, 0o600); err != nil {
		t.Fatal(err)
	}
	rp := msg("alice", "alice/INBOX/quota", body, true)
	rp.Op = journal.OpReplace
	n := f.a.fsyncs.Load()
	if res := f.apply(t, []journal.Record{f.rec(msg("alice", "alice/INBOX/1.", body, true)), f.rec(rp)}, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	if got := f.a.fsyncs.Load() - n; got != 3 {
		t.Errorf("%d fsyncs for two files already in one directory, want 3", got)
	}
}

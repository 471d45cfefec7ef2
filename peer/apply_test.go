package peer

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"mreplfs/journal"
)

type fixture struct {
	root  string // holds the trees spool/ and meta/
	state string
	a     *DirApplier
	lsn   journal.LSN
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{root: t.TempDir(), state: t.TempDir()}
	for _, tr := range []string{"spool", "meta"} {
		if err := os.MkdirAll(filepath.Join(f.root, tr), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.open(t)
	return f
}

func (f *fixture) open(t *testing.T) {
	t.Helper()
	a, err := OpenDirApplier(ApplierOptions{
		Trees:    map[string]string{"spool": filepath.Join(f.root, "spool"), "meta": filepath.Join(f.root, "meta")},
		StateDir: f.state,
		// The test's ownership rule: <tree>/<account>/... belongs to <account>.
		CheckPath: func(account, tree, rel string) error {
			if strings.SplitN(rel, "/", 2)[0] != account {
				return errors.New("not this account's")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.a = a
	t.Cleanup(func() { a.Close() })
}

// rec makes a record with the next LSN.
func (f *fixture) rec(r journal.Record) journal.Record {
	f.lsn++
	r.LSN = f.lsn
	if r.Tree == "" {
		r.Tree = "spool"
	}
	if r.Epoch == 0 {
		r.Epoch = 1
	}
	if r.PrevSize == 0 && r.Op != journal.OpWrite && r.Op != journal.OpTruncate {
		r.PrevSize = -1
	}
	r.UID, r.GID = uint32(os.Getuid()), uint32(os.Getgid())
	return r
}

func msg(account, path string, body []byte, inline bool) journal.Record {
	r := journal.Record{Op: journal.OpMessage, Account: account, Path: path, Size: int64(len(body)), Mode: 0o600,
		Hash: sha256.Sum256(body), MTime: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC).UnixNano()}
	if inline {
		r.Data = body
	}
	return r
}

func (f *fixture) apply(t *testing.T, recs []journal.Record, fetch BlobFetcher) BatchResult {
	t.Helper()
	res, err := f.a.ApplyBatch(context.Background(), recs, fetch)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (f *fixture) read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func nlink(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Nlink
}

func TestApplyCyrusShapedSequence(t *testing.T) {
	f := newFixture(t)
	body := []byte("Return-Path: <a@x>\r\nSubject: hi\r\n\r\nbody\r\n")
	recs := []journal.Record{
		f.rec(journal.Record{Op: journal.OpMkdir, Account: "alice", Path: "alice/INBOX", Mode: 0o700}),
		f.rec(journal.Record{Op: journal.OpCreate, Account: "alice", Tree: "meta", Path: "alice/INBOX/cyrus.index", Mode: 0o600}),
		f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Tree: "meta", Path: "alice/INBOX/cyrus.index", Offset: 0, Data: []byte("HEADER--"), PrevSize: 0}),
		f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Tree: "meta", Path: "alice/INBOX/cyrus.index", Offset: 8, Data: []byte("record1"), PrevSize: 8}),
		f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Tree: "meta", Path: "alice/INBOX/cyrus.index", Offset: 0, Data: []byte("HEADER-2"), PrevSize: 15}),
		f.rec(msg("alice", "alice/INBOX/1.", body, true)),
		// The second recipient's copy crosses by reference (no data).
		f.rec(msg("alice", "alice/Archive/1.", body, false)),
		f.rec(journal.Record{Op: journal.OpLink, Account: "alice", Path: "alice/INBOX/1.", NewPath: "alice/INBOX/2."}),
		f.rec(journal.Record{Op: journal.OpCreate, Account: "alice", Tree: "meta", Path: "alice/INBOX/cyrus.header.NEW", Mode: 0o600}),
		f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Tree: "meta", Path: "alice/INBOX/cyrus.header.NEW", Data: []byte("hdr v2"), PrevSize: 0}),
		f.rec(journal.Record{Op: journal.OpRename, Account: "alice", Tree: "meta", Path: "alice/INBOX/cyrus.header.NEW", NewPath: "alice/INBOX/cyrus.header"}),
		f.rec(journal.Record{Op: journal.OpReplace, Account: "alice", Tree: "meta", Path: "alice/quota", Data: []byte("%(S (2380 100000))\n"), Size: 19, Hash: sha256.Sum256([]byte("%(S (2380 100000))\n")), Mode: 0o600}),
		f.rec(journal.Record{Op: journal.OpSetattr, Account: "alice", Path: "alice/INBOX/1.", Flags: journal.SetMTime, MTime: time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano()}),
		f.rec(journal.Record{Op: journal.OpSymlink, Account: "alice", NewPath: "alice/defaultbc", Data: []byte("alice.bc")}),
	}
	fetched := 0
	res := f.apply(t, recs, func(ctx context.Context, h [32]byte) ([]byte, error) {
		fetched++
		return nil, errors.New("unexpected fetch")
	})
	if len(res.Errors) != 0 {
		t.Fatalf("errors: %v", res.Errors)
	}
	if got := res.Positions["alice"].Applied; got != f.lsn {
		t.Fatalf("applied: got %d, want %d", got, f.lsn)
	}
	if got := f.read(t, "meta/alice/INBOX/cyrus.index"); got != "HEADER-2record1" {
		t.Fatalf("cyrus.index: got %q", got)
	}
	if got := f.read(t, "meta/alice/INBOX/cyrus.header"); got != "hdr v2" {
		t.Fatalf("cyrus.header: got %q", got)
	}
	if got := f.read(t, "spool/alice/Archive/1."); got != string(body) {
		t.Fatalf("by-reference copy: got %q", got)
	}
	if fetched != 0 {
		t.Fatalf("fetched %d bodies; the replica had it", fetched)
	}
	// One body, three names (INBOX/1., INBOX/2. by link, Archive/1. by reference): one inode.
	if n := nlink(t, filepath.Join(f.root, "spool/alice/INBOX/1.")); n != 3 {
		t.Fatalf("nlink: got %d, want 3", n)
	}
	fi, _ := os.Stat(filepath.Join(f.root, "spool/alice/INBOX/1."))
	if want := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC); !fi.ModTime().Equal(want) {
		t.Fatalf("mtime: got %v, want %v", fi.ModTime(), want)
	}
	if target, _ := os.Readlink(filepath.Join(f.root, "spool/alice/defaultbc")); target != "alice.bc" {
		t.Fatalf("symlink: got %q", target)
	}

	// Idempotence: the same batch again changes nothing and errs nothing.
	res = f.apply(t, recs, nil)
	if len(res.Errors) != 0 || res.Positions["alice"].Applied != f.lsn {
		t.Fatalf("re-apply: %v %v", res.Errors, res.Positions)
	}
	if got := f.read(t, "meta/alice/INBOX/cyrus.index"); got != "HEADER-2record1" {
		t.Fatalf("cyrus.index after re-apply: got %q", got)
	}

	// Positions survive a restart.
	f.a.Close()
	f.open(t)
	if p, _ := f.a.Position("alice"); p.Applied != f.lsn || p.State != StateOK {
		t.Fatalf("after reopen: %+v", p)
	}
	// ...and so does the content index: a new recipient by reference.
	res = f.apply(t, []journal.Record{f.rec(msg("alice", "alice/Sent/1.", body, false))}, nil)
	if len(res.Errors) != 0 {
		t.Fatalf("by reference after restart: %v", res.Errors)
	}
}

func TestApplyFetchesMissingBody(t *testing.T) {
	f := newFixture(t)
	body := []byte("a body the replica never saw")
	r := f.rec(msg("bob", "bob/INBOX/1.", body, false))
	var asked [][32]byte
	res := f.apply(t, []journal.Record{r}, func(ctx context.Context, h [32]byte) ([]byte, error) {
		asked = append(asked, h)
		return body, nil
	})
	if len(res.Errors) != 0 || len(asked) != 1 || asked[0] != r.Hash {
		t.Fatalf("errors %v, asked %x", res.Errors, asked)
	}
	if got := f.read(t, "spool/bob/INBOX/1."); got != string(body) {
		t.Fatalf("got %q", got)
	}
	// A sender that answers with the wrong bytes: not applied, not quarantined, retried later.
	r2 := f.rec(msg("bob", "bob/INBOX/2.", []byte("other"), false))
	res = f.apply(t, []journal.Record{r2}, func(ctx context.Context, h [32]byte) ([]byte, error) { return []byte("evil"), nil })
	if res.Errors["bob"] == nil || res.Positions["bob"].State != StateOK || res.Positions["bob"].Applied != r.LSN {
		t.Fatalf("wrong fetched body: %v %+v", res.Errors, res.Positions["bob"])
	}
	if _, err := os.Stat(filepath.Join(f.root, "spool/bob/INBOX/2.")); !os.IsNotExist(err) {
		t.Fatalf("a body with the wrong hash was written: %v", err)
	}
}

// TestConfinement: hostile paths never reach outside the tree; the account
// is quarantined and the others keep replicating.
func TestConfinement(t *testing.T) {
	f := newFixture(t)
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	os.WriteFile(victim, []byte("precious"), 0o644)
	// A symlink planted inside the replica tree that points outside.
	if err := os.MkdirAll(filepath.Join(f.root, "spool/mallory"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(f.root, "spool/mallory/evil")); err != nil {
		t.Fatal(err)
	}
	hostile := map[string]journal.Record{
		"dotdot":         {Op: journal.OpWrite, Account: "mallory", Path: "mallory/../../../" + strings.TrimPrefix(victim, "/"), Data: []byte("pwned"), PrevSize: -1},
		"absolute":       {Op: journal.OpWrite, Account: "mallory", Path: victim, Data: []byte("pwned"), PrevSize: -1},
		"symlink write":  {Op: journal.OpWrite, Account: "mallory", Path: "mallory/evil/victim", Data: []byte("pwned"), PrevSize: -1},
		"symlink create": {Op: journal.OpCreate, Account: "mallory", Path: "mallory/evil/new"},
		"symlink unlink": {Op: journal.OpUnlink, Account: "mallory", Path: "mallory/evil/victim"},
		"symlink rename": {Op: journal.OpRename, Account: "mallory", Path: "mallory/evil/victim", NewPath: "mallory/stolen"},
		"message escape": msg("mallory", "mallory/evil/1.", []byte("x"), true),
		"other account":  {Op: journal.OpUnlink, Account: "mallory", Path: "alice/INBOX/1."},
		"unknown tree":   {Op: journal.OpUnlink, Account: "mallory", Tree: "etc", Path: "mallory/passwd"},
	}
	for name, h := range hostile {
		t.Run(name, func(t *testing.T) {
			f.a.SetState("mallory", StateOK, "")
			good := f.rec(journal.Record{Op: journal.OpMkdir, Account: "carol", Path: "carol/" + strings.ReplaceAll(name, " ", "_"), Mode: 0o700})
			res := f.apply(t, []journal.Record{f.rec(h), good}, nil)
			if res.Positions["mallory"].State != StateQuarantine {
				t.Fatalf("hostile record not refused: state %v, errors %v", res.Positions["mallory"].State, res.Errors)
			}
			if res.Errors["carol"] != nil || res.Positions["carol"].Applied != good.LSN {
				t.Fatalf("another account was held up: %v %+v", res.Errors["carol"], res.Positions["carol"])
			}
			if b, _ := os.ReadFile(victim); string(b) != "precious" {
				t.Fatalf("outside file changed: %q", b)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 1 {
				t.Fatalf("outside dir changed: %v", ents)
			}
		})
	}
}

// TestDivergenceQuarantines: a replica file changed behind replication's
// back stops that account (persisted) while others go on; the master's data
// is never overwritten onto a diverged copy.
func TestDivergenceQuarantines(t *testing.T) {
	f := newFixture(t)
	setup := []journal.Record{
		f.rec(journal.Record{Op: journal.OpCreate, Account: "alice", Path: "alice/cyrus.index"}),
		f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Path: "alice/cyrus.index", Data: []byte("0123456789"), PrevSize: 0}),
		f.rec(msg("alice", "alice/1.", []byte("one"), true)),
		f.rec(journal.Record{Op: journal.OpCreate, Account: "bob", Path: "bob/cyrus.index"}),
	}
	if res := f.apply(t, setup, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	// Someone appends to alice's replica index directly.
	p := filepath.Join(f.root, "spool/alice/cyrus.index")
	os.WriteFile(p, []byte("0123456789LOCAL"), 0o600)

	w := f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Path: "alice/cyrus.index", Offset: 10, Data: []byte("MASTER"), PrevSize: 10})
	later := f.rec(msg("alice", "alice/2.", []byte("two"), true))
	bobw := f.rec(journal.Record{Op: journal.OpWrite, Account: "bob", Path: "bob/cyrus.index", Data: []byte("bob"), PrevSize: 0})
	res := f.apply(t, []journal.Record{w, later, bobw}, nil)
	if !errors.Is(res.Errors["alice"], ErrDiverged) || res.Positions["alice"].State != StateQuarantine {
		t.Fatalf("alice: %v %+v", res.Errors["alice"], res.Positions["alice"])
	}
	if got := f.read(t, "spool/alice/cyrus.index"); got != "0123456789LOCAL" {
		t.Fatalf("diverged file was written over: %q", got)
	}
	if _, err := os.Stat(filepath.Join(f.root, "spool/alice/2.")); !os.IsNotExist(err) {
		t.Fatal("a record after the divergence was applied")
	}
	if res.Errors["bob"] != nil || f.read(t, "spool/bob/cyrus.index") != "bob" {
		t.Fatalf("bob held up: %v", res.Errors["bob"])
	}
	// The quarantine is persistent.
	f.a.Close()
	f.open(t)
	res = f.apply(t, []journal.Record{later}, nil)
	if !errors.Is(res.Errors["alice"], ErrQuarantined) {
		t.Fatalf("after restart: %v", res.Errors["alice"])
	}
	// A message file that exists with other content is divergence too.
	f.a.SetState("alice", StateOK, "")
	os.WriteFile(filepath.Join(f.root, "spool/alice/3."), []byte("not the master's"), 0o600)
	res = f.apply(t, []journal.Record{f.rec(msg("alice", "alice/3.", []byte("three"), true))}, nil)
	if !errors.Is(res.Errors["alice"], ErrDiverged) {
		t.Fatalf("existing message file: %v", res.Errors["alice"])
	}
}

// TestReplayAfterCrash: a batch that was in flight when the receiver died
// is applied again without a false divergence.
func TestReplayAfterCrash(t *testing.T) {
	f := newFixture(t)
	batch := []journal.Record{
		f.rec(journal.Record{Op: journal.OpCreate, Account: "alice", Path: "alice/x.NEW"}),
		f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Path: "alice/x.NEW", Data: []byte("new"), PrevSize: 0}),
		f.rec(journal.Record{Op: journal.OpRename, Account: "alice", Path: "alice/x.NEW", NewPath: "alice/x"}),
		f.rec(journal.Record{Op: journal.OpCreate, Account: "alice", Path: "alice/idx"}),
		f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Path: "alice/idx", Data: []byte("abcdef"), PrevSize: 0}),
		f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Path: "alice/idx", Offset: 6, Data: []byte("gh"), PrevSize: 6}),
	}
	if res := f.apply(t, batch, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	// Simulate the crash: the files are there, but the position was not persisted.
	f.a.st.update(func(get func(string) AccountPos, put func(string, AccountPos)) {
		p := get("alice")
		p.Applied, p.Inflight = 0, f.lsn
		put("alice", p)
	})
	res := f.apply(t, batch, nil)
	if len(res.Errors) != 0 || res.Positions["alice"].Applied != f.lsn || res.Positions["alice"].State != StateOK {
		t.Fatalf("replay: %v %+v", res.Errors, res.Positions["alice"])
	}
	if f.read(t, "spool/alice/x") != "new" || f.read(t, "spool/alice/idx") != "abcdefgh" {
		t.Fatal("replay changed the result")
	}
}

func TestStaleEpochRefused(t *testing.T) {
	f := newFixture(t)
	r := f.rec(journal.Record{Op: journal.OpMkdir, Account: "alice", Path: "alice/a", Epoch: 5})
	if res := f.apply(t, []journal.Record{r}, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	old := f.rec(journal.Record{Op: journal.OpMkdir, Account: "alice", Path: "alice/b", Epoch: 4})
	res := f.apply(t, []journal.Record{old}, nil)
	if !errors.Is(res.Errors["alice"], ErrStaleEpoch) {
		t.Fatalf("got %v, want ErrStaleEpoch", res.Errors["alice"])
	}
	if _, err := os.Stat(filepath.Join(f.root, "spool/alice/b")); !os.IsNotExist(err) {
		t.Fatal("stale-epoch record applied")
	}
}

// TestFlippedByteQuarantines: a replica byte changed behind replication's
// back (same size) is caught by the next write's range pre-image there.
func TestFlippedByteQuarantines(t *testing.T) {
	f := newFixture(t)
	hdr := []byte("HEADER-v1-0123456789")
	setup := []journal.Record{
		f.rec(journal.Record{Op: journal.OpCreate, Account: "alice", Tree: "meta", Path: "alice/cyrus.index"}),
		f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Tree: "meta", Path: "alice/cyrus.index", Data: hdr, PrevSize: 0}),
	}
	if res := f.apply(t, setup, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	p := filepath.Join(f.root, "meta/alice/cyrus.index")
	b, _ := os.ReadFile(p)
	b[3] ^= 0x20 // flip one bit, same size
	os.WriteFile(p, b, 0o600)
	next := f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Tree: "meta", Path: "alice/cyrus.index",
		Data: []byte("HEADER-v2"), PrevSize: int64(len(hdr)), PrevHash: sha256.Sum256(hdr[:9])})
	res := f.apply(t, []journal.Record{next}, nil)
	if !errors.Is(res.Errors["alice"], ErrDiverged) || res.Positions["alice"].State != StateQuarantine {
		t.Fatalf("flipped byte not caught: %v %+v", res.Errors["alice"], res.Positions["alice"])
	}
	if got, _ := os.ReadFile(p); string(got) != string(b) {
		t.Fatal("the diverged replica file was written over")
	}
}

// TestIndexRebuiltIfLost: with state.db gone, the replica's message files
// are indexed again, so a body it holds still crosses by reference.
func TestIndexRebuiltIfLost(t *testing.T) {
	f := newFixture(t)
	body := []byte("a message the replica already holds")
	if res := f.apply(t, []journal.Record{f.rec(msg("alice", "alice/INBOX/1.", body, true))}, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	f.a.Close()
	f.state = t.TempDir() // the state (and its index) is lost
	f.open(t)
	f.a.rebuilding.Wait()
	fetched := 0
	res := f.apply(t, []journal.Record{f.rec(msg("alice", "alice/Sent/1.", body, false))},
		func(ctx context.Context, h [32]byte) ([]byte, error) { fetched++; return body, nil })
	if len(res.Errors) != 0 || fetched != 0 {
		t.Fatalf("errors %v, fetched %d; want the body found by the rebuilt index", res.Errors, fetched)
	}
	if n := nlink(t, filepath.Join(f.root, "spool/alice/Sent/1.")); n != 2 {
		t.Fatalf("nlink %d, want 2 (hard-linked from the indexed copy)", n)
	}
}

// TestRenameReplayAfterCrash: the receiver dies after applying
// "rename A→B, rename C→A" but before persisting the batch; replaying it
// must not move C's content (now at A) onto B. Checkpoints around each
// rename leave at most one rename in doubt.
func TestRenameReplayAfterCrash(t *testing.T) {
	f := newFixture(t)
	setup := []journal.Record{
		f.rec(journal.Record{Op: journal.OpCreate, Account: "alice", Path: "alice/A"}),
		f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Path: "alice/A", Data: []byte("aaa"), PrevSize: 0}),
		f.rec(journal.Record{Op: journal.OpCreate, Account: "alice", Path: "alice/C"}),
		f.rec(journal.Record{Op: journal.OpWrite, Account: "alice", Path: "alice/C", Data: []byte("ccc"), PrevSize: 0}),
	}
	if res := f.apply(t, setup, nil); len(res.Errors) != 0 {
		t.Fatal(res.Errors)
	}
	batch := []journal.Record{
		f.rec(journal.Record{Op: journal.OpRename, Account: "alice", Path: "alice/A", NewPath: "alice/B"}),
		f.rec(journal.Record{Op: journal.OpRename, Account: "alice", Path: "alice/C", NewPath: "alice/A"}),
	}
	f.a.crashAfter = batch[1].LSN
	if _, err := f.a.ApplyBatch(context.Background(), batch, nil); !errors.Is(err, errSimulatedCrash) {
		t.Fatalf("crash hook: got %v", err)
	}
	f.a.Close()
	f.open(t) // restart
	if res := f.apply(t, batch, nil); len(res.Errors) != 0 {
		t.Fatalf("replay: %v", res.Errors)
	}
	if got := f.read(t, "spool/alice/B"); got != "aaa" {
		t.Errorf("B: got %q, want %q (the replay moved the wrong file)", got, "aaa")
	}
	if got := f.read(t, "spool/alice/A"); got != "ccc" {
		t.Errorf("A: got %q, want %q", got, "ccc")
	}
}

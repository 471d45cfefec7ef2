// Package mounttest mounts mreplfs trees for tests: a backing dir, a mount
// point and an in-memory journal under t.TempDir(), unmounted in t.Cleanup.
// It also holds the fakes the fs tests use: a path classifier by path shape,
// a role table and a journal recorder.
package mounttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"mreplfs/fs"
	"mreplfs/journal"
	"mreplfs/rolemap"
)

// RequireRoot makes the test fail (CI=true) or skip (otherwise) when it
// cannot mount: not root or no /dev/fuse.
func RequireRoot(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("mount test needs root and /dev/fuse under CI: %s", why)
	}
	t.Skipf("mount test needs root and /dev/fuse: %s", why)
}

// Options of Mount. Zero values give one tree "spool", a Recorder journal,
// the fake classifier and an empty role table.
type Options struct {
	Tree      string      // tree name (default "spool")
	Journal   fs.Appender // default: a new Recorder (Env.Rec)
	NoJournal bool        // mount with no journal at all
	// FS holds the other fs options. Roles and Classifier, when set, replace
	// the fakes (Env.Roles, Env.Class are then unused).
	FS fs.Options
	// Dir holds backing/ and mnt/ (default: t.TempDir()).
	Dir string
}

// Env is one mounted tree and its fakes.
type Env struct {
	FS      *fs.FS
	Tree    *fs.Tree
	Backing string
	Mnt     string
	Rec     *Recorder
	Roles   *Roles
	Class   *Classifier
}

// Mount mounts a fresh tree and registers its unmount with t.Cleanup (the
// test fails if the unmount fails).
func Mount(t testing.TB, o Options) *Env {
	t.Helper()
	RequireRoot(t)
	if o.Tree == "" {
		o.Tree = "spool"
	}
	dir := o.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	e := &Env{Backing: filepath.Join(dir, "backing"), Mnt: filepath.Join(dir, "mnt"),
		Roles: NewRoles(), Class: NewClassifier()}
	for _, d := range []string{e.Backing, e.Mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fo := o.FS
	if fo.Roles == nil {
		fo.Roles = e.Roles
	}
	if fo.Classifier == nil {
		fo.Classifier = e.Class
	}
	if fo.Logger == nil {
		fo.Logger = TestLogger(t)
	}
	switch {
	case o.NoJournal:
	case o.Journal != nil:
		fo.Journal = o.Journal
	default:
		e.Rec = NewRecorder()
		fo.Journal = e.Rec
	}
	f, err := fs.New(fo)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := f.Mount(o.Tree, e.Backing, e.Mnt)
	if err != nil {
		t.Fatal(err)
	}
	e.FS, e.Tree = f, tr
	t.Cleanup(func() {
		if err := tr.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return e
}

// TestLogger returns a slog logger writing to t.Log until the test ends.
func TestLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Roles is a role table (fs.RoleSource).
type Roles struct {
	mu sync.Mutex
	m  map[string]rolemap.Entry
}

func NewRoles() *Roles { return &Roles{m: map[string]rolemap.Entry{}} }

// Set gives account role (epoch 1).
func (r *Roles) Set(account string, role rolemap.Role) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[account] = rolemap.Entry{Role: role, Epoch: 1}
}

func (r *Roles) Lookup(account string) (rolemap.Entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[account]
	return e, ok
}

// AllRoles gives every account the same role (epoch 1).
type AllRoles rolemap.Role

func (a AllRoles) Lookup(string) (rolemap.Entry, bool) {
	return rolemap.Entry{Role: rolemap.Role(a), Epoch: 1}, true
}

// Classifier classifies by path shape, within any tree:
//
//	<tree>/acct/<account>/...   → account <account> (the dir acct/<account> itself too)
//	<tree>/pend/<id>/...        → pending mailbox <id>, until NoteHeader(id, "owner=<account>")
//	<tree>/unres/...            → unresolved
//	anything else               → not an account
type Classifier struct {
	mu     sync.Mutex
	owners map[string]string
}

func NewClassifier() *Classifier { return &Classifier{owners: map[string]string{}} }

func (c *Classifier) Classify(p string) fs.Class {
	parts := strings.Split(p, "/")
	if len(parts) < 3 {
		return fs.Class{}
	}
	switch parts[1] {
	case "acct":
		return fs.Class{Kind: fs.KindAccount, Account: parts[2]}
	case "pend":
		c.mu.Lock()
		owner, ok := c.owners[parts[2]]
		c.mu.Unlock()
		if ok {
			return fs.Class{Kind: fs.KindAccount, Account: owner, MailboxID: parts[2]}
		}
		return fs.Class{Kind: fs.KindPending, MailboxID: parts[2]}
	case "unres":
		return fs.Class{Kind: fs.KindUnresolved}
	}
	return fs.Class{}
}

func (c *Classifier) NoteHeader(id string, hdr []byte) error {
	owner, ok := bytes.CutPrefix(bytes.TrimSpace(hdr), []byte("owner="))
	if !ok || len(owner) == 0 {
		return fmt.Errorf("mounttest: header %q has no owner= line", hdr)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.owners[id] = string(owner)
	return nil
}

// Recorder is an in-memory journal (fs.Appender). PutBlob checks that the
// file's content matches the hash it is given.
type Recorder struct {
	mu        sync.Mutex
	recs      []journal.Record
	last      journal.LSN
	synced    journal.LSN
	syncCalls int
	blobs     map[[32]byte][]byte
	err       error // when set, Append fails with it
}

// SetErr makes every later Append fail with err (nil: succeed again).
func (r *Recorder) SetErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

func NewRecorder() *Recorder { return &Recorder{blobs: map[[32]byte][]byte{}} }

func (r *Recorder) Append(ctx context.Context, rec *journal.Record) (journal.LSN, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return 0, r.err
	}
	c := *rec
	c.Data = append([]byte(nil), rec.Data...)
	if rec.Data == nil {
		c.Data = nil
	}
	r.last++
	c.LSN = r.last
	r.recs = append(r.recs, c)
	return c.LSN, nil
}

func (r *Recorder) Sync(ctx context.Context, upTo journal.LSN) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncCalls++
	// As journal.Log.Sync: an upTo past the end means everything appended.
	upTo = min(upTo, r.last)
	r.synced = max(r.synced, upTo)
	return nil
}

func (r *Recorder) PutBlob(ctx context.Context, hash [32]byte, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if sha256.Sum256(b) != hash {
		return fmt.Errorf("mounttest: blob %s: content does not match hash %x", src, hash[:4])
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blobs[hash] = b
	return nil
}

// Records returns a copy of the records so far.
func (r *Recorder) Records() []journal.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]journal.Record(nil), r.recs...)
}

// Reset forgets the records (LSNs continue).
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = r.recs[:0:0]
	r.synced = 0
}

// Synced returns the highest LSN Sync was asked for and the number of Sync calls.
func (r *Recorder) Synced() (journal.LSN, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.synced, r.syncCalls
}

// Blob returns the content stored under hash.
func (r *Recorder) Blob(hash [32]byte) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.blobs[hash]
	return b, ok
}

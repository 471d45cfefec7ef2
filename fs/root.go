package fs

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options configure a filesystem (one set of trees served by one process).
type Options struct {
	// Roles says which accounts are master, replica or local here.
	Roles RoleSource
	// Classifier maps paths to accounts.
	Classifier Classifier
	// Journal receives the records of master-account mutations. Nil means
	// no journal: nothing is recorded and fsync does not wait (tests and
	// the "journal off" benchmark; a real mount always has one).
	Journal Appender
	// Logger (nil: discard).
	Logger *slog.Logger

	// EntryTimeout and AttrTimeout are the kernel's dentry and attribute
	// cache lifetimes (default 1 s; FUSE.md §3). Negative lookups are never
	// cached, so files the receiver creates in the backing tree appear at
	// once; changes to existing names and bytes are pushed with Forget.
	EntryTimeout time.Duration
	AttrTimeout  time.Duration
	// AllowOther lets users other than the mounting one (Cyrus runs as
	// user cyrus) use the mount.
	AllowOther bool
	// Debug logs the FUSE protocol (to Logger at debug level).
	Debug bool
	// RefusalLogInterval is how often a refusal is logged per account
	// (default one minute).
	RefusalLogInterval time.Duration
	// InlineLimit: a replaced file (X.NEW -> X) up to this size travels in
	// the record; a larger one goes to the blob store by hash (default 1 MiB).
	InlineLimit int64
}

// FS is the state shared by every tree of one mount process: the guard, the
// journal and the refusal log limiter.
type FS struct {
	roles    RoleSource
	classify Classifier
	journal  Appender
	log      *slog.Logger
	opts     Options

	refusedMu sync.Mutex
	refused   map[string]time.Time // account -> last refusal logged

	// nsMu orders journaled namespace operations with their records.
	nsMu sync.Mutex

	treesMu sync.Mutex
	trees   map[string]*Tree

	// repl: per-account replication positions and sync mode (syncrepl.go).
	repl    replState
	started time.Time

	gates sync.Map // account → *gate (freeze.go)

	rootCreates atomic.Int64 // creations that fell back to root (owner.go)
}

// New checks o and returns a filesystem ready to Mount trees.
func New(o Options) (*FS, error) {
	if o.Roles == nil {
		return nil, errors.New("fs: Options.Roles is nil")
	}
	if o.Classifier == nil {
		return nil, errors.New("fs: Options.Classifier is nil")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.EntryTimeout == 0 {
		o.EntryTimeout = time.Second
	}
	if o.AttrTimeout == 0 {
		o.AttrTimeout = time.Second
	}
	if o.RefusalLogInterval == 0 {
		o.RefusalLogInterval = time.Minute
	}
	if o.InlineLimit == 0 {
		o.InlineLimit = 1 << 20
	}
	return &FS{roles: o.Roles, classify: o.Classifier, journal: o.Journal, log: o.Logger, opts: o, started: time.Now(),
		refused: map[string]time.Time{}, trees: map[string]*Tree{}}, nil
}

// Tree is one mounted tree: backing directory Backing served at Mountpoint,
// named Name in records and classifier paths.
type Tree struct {
	Name       string
	Backing    string
	Mountpoint string

	fs     *FS
	root   *Node
	server *fuse.Server
	done   chan struct{} // closed when the serve loop has ended
	conn   uint32        // the FUSE connection's id (the mount's device minor), 0 if unknown

	mu        sync.Mutex
	unmounted bool
}

// ErrBusyMount is returned by Mount when the mount point is already a
// mount (live or stale); the error text says what to run.
var ErrBusyMount = errors.New("fs: mount point is busy or a stale mount")

// Mount serves the backing directory backing at mountpoint as tree name. The
// tree is unmounted by Tree.Unmount (or FS.Unmount).
func (f *FS) Mount(name, backing, mountpoint string) (*Tree, error) {
	if name == "" || filepath.IsAbs(name) || filepath.Clean(name) != name {
		return nil, fmt.Errorf("fs: bad tree name %q", name)
	}
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("fs: backing dir: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, fmt.Errorf("fs: backing dir %s: %w", backing, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, fmt.Errorf("fs: backing %s is not a directory", backing)
	}
	if err := checkMountpoint(mountpoint); err != nil {
		return nil, err
	}
	f.treesMu.Lock()
	if _, dup := f.trees[name]; dup {
		f.treesMu.Unlock()
		return nil, fmt.Errorf("fs: tree %q mounted twice", name)
	}
	f.treesMu.Unlock()

	t := &Tree{Name: name, Backing: backing, Mountpoint: mountpoint, fs: f}
	lr := &fusefs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev)}
	t.root = &Node{LoopbackNode: &fusefs.LoopbackNode{RootData: lr}, tree: t}
	lr.RootNode = t.root

	entry, attr, neg := f.opts.EntryTimeout, f.opts.AttrTimeout, time.Duration(0)
	fo := &fusefs.Options{
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		Logger:          log.New(slogWriter{f.log}, "", 0),
		MountOptions:    mountOptions(f.opts, name),
	}
	fo.MountOptions.Logger = fo.Logger
	server, err := fuse.NewServer(fusefs.NewNodeFS(t.root, fo), mountpoint, &fo.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("fs: mount %s on %s: %w", name, mountpoint, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		server.Unmount()
		return nil, fmt.Errorf("fs: mount %s on %s: %w", name, mountpoint, err)
	}
	t.server = server
	var mst syscall.Stat_t
	if syscall.Stat(mountpoint, &mst) == nil {
		t.conn = unix.Minor(uint64(mst.Dev))
	}
	t.done = make(chan struct{})
	go func() { server.Wait(); close(t.done) }()
	f.treesMu.Lock()
	f.trees[name] = t
	f.treesMu.Unlock()
	f.log.Info("mounted", "tree", name, "backing", backing, "mountpoint", mountpoint)
	return t, nil
}

// mountOptions is the measured option set of FUSE.md §3 with the team's
// corrections: no passthrough (writes must reach us), no EnableLocks (the
// kernel keeps POSIX lock semantics), no writeback cache, no direct_io,
// xattrs kept.
func mountOptions(o Options, name string) fuse.MountOptions {
	mo := fuse.MountOptions{
		AllowOther:           o.AllowOther,
		FsName:               "mreplfs-" + name,
		Name:                 "mreplfs",
		MaxWrite:             1 << 20,
		MaxBackground:        64,
		DisabledCapabilities: fuse.CAP_PASSTHROUGH | fuse.CAP_WRITEBACK_CACHE,
		Debug:                o.Debug,
		// The kernel checks permissions against the caller (the daemon
		// itself runs as root): without it any user could write anything
		// through an allow_other mount.
		Options: []string{"default_permissions"},
	}
	if os.Geteuid() == 0 {
		mo.DirectMount = true
		mo.DirectMountStrict = true
	}
	return mo
}

// Unmount unmounts the tree (go-fuse retries briefly while the kernel
// still holds it busy) and waits for its serve loop to end. It may be
// called again after an error.
func (t *Tree) Unmount() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.unmounted || t.server == nil {
		return nil
	}
	select {
	case <-t.done: // unmounted from outside (umount, umount -l)
	default:
		uerr := make(chan error, 1)
		go func() { uerr <- t.server.Unmount() }()
		var err error
		select {
		case err = <-uerr:
		case <-time.After(unmountGrace):
			// Unmounted here, yet the kernel keeps the connection: a copy
			// of the mount in another mount namespace (a process that
			// unshared its mounts while we were mounted) holds it, and the
			// serve loop would wait forever. End the connection.
			t.fs.log.Warn("unmount: the FUSE connection is still held elsewhere (a copy of the mount in another mount namespace?); aborting it",
				"tree", t.Name, "mountpoint", t.Mountpoint, "connection", t.conn)
			if aerr := abortConnection(t.conn); aerr != nil {
				// Keep waiting: returning would leave the serve loop
				// running (and the journal closed under it).
				t.fs.log.Error("unmount: cannot abort the FUSE connection; waiting for it to end", "tree", t.Name, "err", aerr)
			}
			err = <-uerr
		}
		if err != nil {
			return fmt.Errorf("fs: unmount %s: %w", t.Mountpoint, err)
		}
		<-t.done
	}
	t.unmounted = true
	t.fs.treesMu.Lock()
	delete(t.fs.trees, t.Name)
	t.fs.treesMu.Unlock()
	t.fs.log.Info("unmounted", "tree", t.Name, "mountpoint", t.Mountpoint)
	return nil
}

// Wait blocks until the tree's serve loop ends (after an unmount from
// outside, e.g. umount -l).
func (t *Tree) Wait() { <-t.done }

// Trees returns the mounted trees.
func (f *FS) Trees() []*Tree {
	f.treesMu.Lock()
	defer f.treesMu.Unlock()
	out := make([]*Tree, 0, len(f.trees))
	for _, t := range f.trees {
		out = append(out, t)
	}
	return out
}

// Tree returns the mounted tree called name, or nil.
func (f *FS) Tree(name string) *Tree {
	f.treesMu.Lock()
	defer f.treesMu.Unlock()
	return f.trees[name]
}

// Unmount unmounts every tree; it returns the first error.
func (f *FS) Unmount() error {
	var first error
	for _, t := range f.Trees() {
		if err := t.Unmount(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// checkMountpoint refuses a mount point that is itself a mount (a live
// mount, or a stale FUSE mount whose daemon died: stat gives ENOTCONN).
func checkMountpoint(dir string) error {
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(dir, &sfs); err != nil && (errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)) {
		// statfs is never answered from the kernel's caches.
		return fmt.Errorf("%w: %s: %v (a stale FUSE mount; fix: umount -l %s)", ErrBusyMount, dir, err, dir)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		if errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) {
			return fmt.Errorf("%w: %s: %v (a stale FUSE mount; fix: umount -l %s)", ErrBusyMount, dir, err, dir)
		}
		return fmt.Errorf("fs: mount point %s: %w", dir, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return fmt.Errorf("fs: mount point %s is not a directory", dir)
	}
	var pst syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, ".."), &pst); err == nil && pst.Dev != st.Dev {
		return fmt.Errorf("%w: %s is already a mount point (fix: umount -l %s)", ErrBusyMount, dir, dir)
	}
	return nil
}

// slogWriter adapts go-fuse's *log.Logger output to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := string(p)
	if n := len(msg); n > 0 && msg[n-1] == '\n' {
		msg = msg[:n-1]
	}
	w.l.Debug(msg, "src", "go-fuse")
	return len(p), nil
}

// unmountGrace is how long Unmount waits for the kernel to end the FUSE
// connection before aborting it.
const unmountGrace = 5 * time.Second

// abortConnection ends FUSE connection id through fusectl (mounting it at
// /sys/fs/fuse/connections if needed): every request on it, in every mount
// namespace, then fails with ENOTCONN.
func abortConnection(id uint32) error {
	if id == 0 {
		return errors.New("fs: FUSE connection id unknown")
	}
	const ctl = "/sys/fs/fuse/connections"
	p := fmt.Sprintf("%s/%d/abort", ctl, id)
	if _, err := os.Stat(p); err != nil {
		if merr := unix.Mount("fusectl", ctl, "fusectl", 0, ""); merr != nil && !errors.Is(merr, unix.EBUSY) {
			return fmt.Errorf("fs: mount fusectl: %w", merr)
		}
	}
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		return fmt.Errorf("fs: abort FUSE connection %d: %w", id, err)
	}
	return nil
}

package fs

import (
	"context"
	"math"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"mreplfs/journal"
	"mreplfs/rolemap"
)

// Node is one inode of a tree. It embeds go-fuse's loopback node (every
// read-only operation is the loopback's) and overrides every mutating one
// (node_mutate.go) to guard and journal it. WrapChild makes every child the
// loopback creates a Node too.
type Node struct {
	*fusefs.LoopbackNode
	tree *Tree

	// lastLSN is the LSN of the last record that changed this inode (for a
	// directory: its entries). fsync/fsyncdir wait until it is durable.
	lastLSN atomic.Uint64

	// mu orders data mutations of this inode with their records, so the
	// journal holds them in the order the backing file saw them.
	mu sync.Mutex

	hashMu sync.Mutex
	hash   hashCache
}

// WrapChild wraps each new loopback child in a Node of the same tree.
func (n *Node) WrapChild(ctx context.Context, ops fusefs.InodeEmbedder) fusefs.InodeEmbedder {
	return &Node{LoopbackNode: ops.(*fusefs.LoopbackNode), tree: n.tree}
}

// fs returns the filesystem the node belongs to.
func (n *Node) fs() *FS { return n.tree.fs }

// rel returns the node's path relative to its tree root; ok is false for an
// inode no longer reachable by name (unlinked while open).
func (n *Node) rel() (string, bool) {
	var segs []string
	in := n.EmbeddedInode()
	root := n.tree.root.EmbeddedInode()
	for in != root {
		name, parent := in.Parent()
		if parent == nil {
			return "", false
		}
		segs = append(segs, name)
		in = parent
	}
	for i, j := 0, len(segs)-1; i < j; i, j = i+1, j-1 {
		segs[i], segs[j] = segs[j], segs[i]
	}
	return strings.Join(segs, "/"), true
}

// childRel is the tree-relative path of the entry name in directory n.
func (n *Node) childRel(name string) string {
	r, _ := n.rel()
	if r == "" {
		return name
	}
	return r + "/" + name
}

// backing returns the backing path of a tree-relative path.
func (t *Tree) backing(rel string) string {
	if rel == "" {
		return t.Backing
	}
	return t.Backing + "/" + rel
}

// noteLSN records that lsn changed n (keeps the maximum).
func (n *Node) noteLSN(lsn journal.LSN) {
	if n == nil || lsn == 0 {
		return
	}
	for {
		cur := n.lastLSN.Load()
		if uint64(lsn) <= cur || n.lastLSN.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// syncJournal waits until n's records are durable (DESIGN.md invariant 3)
// and, for an account in sync mode, applied by the replica (syncrepl.go).
func (n *Node) syncJournal(ctx context.Context) syscall.Errno {
	f := n.fs()
	lsn := journal.LSN(n.lastLSN.Load())
	if f.journal == nil {
		return 0
	}
	if lsn == 0 {
		// A node the kernel forgot and looked up again knows no LSN, yet its
		// inode may have records in the unsynced window: for a master (or
		// pending) account's path, wait for everything appended so far (one
		// group commit; the journal clamps the position).
		if !n.mayHaveRecords() {
			return 0
		}
		lsn = journal.LSN(math.MaxInt64)
	}
	if err := f.journal.Sync(ctx, lsn); err != nil {
		rel, _ := n.rel()
		f.log.Error("journal sync failed", "tree", n.tree.Name, "path", rel, "lsn", lsn, "err", err)
		return errnoOf(ctx, err)
	}
	// Sync mode: and the replica has applied the account's records.
	if rel, named := n.rel(); named {
		return f.waitReplica(ctx, n.tree.Name, rel)
	}
	return 0
}

// Open guards write opens (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC) at open
// time and wraps the loopback file so that every write reaches us.
func (n *Node) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	rel, named := n.rel()
	var tg target
	write := isWriteOpen(flags) && named
	if write {
		var e syscall.Errno
		if tg, e = n.fs().guard(ctx, "open", n.tree.Name, rel); e != 0 {
			return nil, 0, e
		}
		defer tg.done()
	}
	trunc := write && flags&syscall.O_TRUNC != 0 && tg.journal && n.fs().journal != nil
	prev := int64(-1)
	if trunc {
		n.mu.Lock()
		defer n.mu.Unlock()
		var st syscall.Stat_t
		if syscall.Lstat(n.tree.backing(rel), &st) == nil {
			prev = st.Size
		}
	}
	fh, fl, e := n.LoopbackNode.Open(ctx, flags)
	if e != 0 {
		return nil, 0, e
	}
	lf, ok := fh.(*fusefs.LoopbackFile)
	if !ok {
		fh.(fusefs.FileReleaser).Release(ctx)
		return nil, 0, syscall.EIO
	}
	f := newFile(n, lf, flags)
	if write && tg.journal && isMessage(rel) {
		// A message file rewritten in place is journaled whole (OpMessage).
		f.message = true
		if flags&syscall.O_TRUNC != 0 {
			f.dirty.Store(true)
		}
		return f, fl, 0
	}
	if trunc && prev != 0 && !isScratch(rel) {
		r := newRecord(journal.OpTruncate, rel)
		r.PrevSize = prev
		if e := n.fs().emit(ctx, tg, r, n); e != 0 {
			f.Release(ctx)
			return nil, 0, e
		}
	}
	return f, fl, 0
}

// Create guards and journals O_CREAT of a new name. A message file
// ("<uid>.") is journaled as one OpMessage when its content is complete
// (fsync or close); a scratch file ("X.NEW") not at all (its rename over X
// is journaled as OpReplace); anything else as OpCreate.
func (n *Node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	f := n.fs()
	rel := n.childRel(name)
	tg, e := f.guard(ctx, "create", n.tree.Name, rel)
	if e != 0 {
		return nil, nil, 0, e
	}
	defer tg.done()
	defer f.lockNS(tg.journal)()
	prev := int64(-1)
	existed := false
	if tg.journal {
		var st syscall.Stat_t
		if syscall.Lstat(n.tree.backing(rel), &st) == nil {
			existed, prev = true, st.Size
		}
	}
	var ch *fusefs.Inode
	var fh fusefs.FileHandle
	var fl uint32
	e = n.makeAsCaller(ctx, name, func(retry bool) (e syscall.Errno) {
		of := flags
		if retry {
			of |= syscall.O_EXCL // never another user's file, truncated and chowned
		}
		ch, fh, fl, e = n.LoopbackNode.Create(ctx, name, of, mode, out)
		return e
	})
	if e != 0 {
		return nil, nil, 0, e
	}
	lf := fh.(*fusefs.LoopbackFile)
	child := ch.Operations().(*Node)
	file := newFile(child, lf, flags)
	if !tg.journal {
		return ch, file, fl, 0
	}
	switch {
	case isMessage(rel):
		file.message = true
		file.dirty.Store(true)
	case isScratch(rel):
	case !existed:
		r := newRecord(journal.OpCreate, rel)
		r.Mode = out.Attr.Mode
		r.UID, r.GID = out.Attr.Uid, out.Attr.Gid
		if e := f.emit(ctx, tg, r, n, child); e != 0 {
			file.Release(ctx)
			return nil, nil, 0, e
		}
	case flags&syscall.O_TRUNC != 0 && prev != 0:
		r := newRecord(journal.OpTruncate, rel)
		r.PrevSize = prev
		if e := f.emit(ctx, tg, r, child); e != 0 {
			file.Release(ctx)
			return nil, nil, 0, e
		}
	}
	return ch, file, fl, 0
}

// Tmpfile (O_TMPFILE) makes a nameless file: guarded like a create in the
// directory; nothing is journaled (it has no name, and linking it into the
// tree fails with EXDEV in go-fuse's loopback).
func (n *Node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	rel, _ := n.rel()
	tg, e := n.fs().guard(ctx, "tmpfile", n.tree.Name, path.Join(rel, ".tmpfile"))
	if e != 0 {
		return nil, nil, 0, e
	}
	defer tg.done()
	ch, fh, fl, e := n.LoopbackNode.Tmpfile(ctx, flags, mode, out)
	if e != 0 {
		return nil, nil, 0, e
	}
	lf, ok := fh.(*fusefs.LoopbackFile)
	if !ok {
		fh.(fusefs.FileReleaser).Release(ctx)
		return nil, nil, 0, syscall.EIO
	}
	return ch, newFile(ch.Operations().(*Node), lf, flags), fl, 0
}

// OpendirHandle wraps the loopback directory stream (no Ioctl; fsyncdir
// waits for the directory's records).
func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	fh, fl, e := n.LoopbackNode.OpendirHandle(ctx, flags)
	if e != 0 {
		return nil, 0, e
	}
	return &dirHandle{node: n, ds: fh}, fl, 0
}

// isMessage reports whether rel names a Cyrus message file "<uid>.".
func isMessage(rel string) bool {
	b := path.Base(rel)
	if len(b) < 2 || b[len(b)-1] != '.' {
		return false
	}
	for _, c := range b[:len(b)-1] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isScratch reports whether rel names a file Cyrus writes and then renames
// over its final name ("X.NEW").
func isScratch(rel string) bool { return strings.HasSuffix(rel, ".NEW") }

// mayHaveRecords reports whether n's path belongs to a journaled account
// (master, or a pending mailbox), whose records may not be durable yet.
func (n *Node) mayHaveRecords() bool {
	rel, ok := n.rel()
	if !ok {
		return true // unlinked or unknown: be safe
	}
	f := n.fs()
	c := f.classify.Classify(classPath(n.tree.Name, rel))
	switch c.Kind {
	case KindPending:
		return true
	case KindAccount:
		e, _ := f.roles.Lookup(c.Account)
		return e.Role == rolemap.Master
	}
	return false
}

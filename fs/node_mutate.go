package fs

import (
	"context"
	"os"
	"path"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"mreplfs/journal"
)

// lockNS takes the namespace lock when tg is journaled, so records of
// concurrent namespace operations are in the order the backing tree saw
// them. It returns the unlock function.
func (f *FS) lockNS(journaled bool) func() {
	if !journaled || f.journal == nil {
		return func() {}
	}
	f.nsMu.Lock()
	return f.nsMu.Unlock
}

func (n *Node) child(name string) *Node {
	ch := n.EmbeddedInode().GetChild(name)
	if ch == nil {
		return nil
	}
	c, _ := ch.Operations().(*Node)
	return c
}

// childOp runs a namespace operation on the child name: the role guard, the
// namespace lock, the loopback call do, then the journal record rec makes of
// it (with the nodes whose last LSN it sets; a nil record: nothing to
// journal). Mkdir, Mknod, Symlink, Unlink and Rmdir are all this shape.
func (n *Node) childOp(ctx context.Context, op, name string, do func() (*fusefs.Inode, syscall.Errno),
	rec func(rel string, ch *fusefs.Inode) (*journal.Record, []*Node)) (*fusefs.Inode, syscall.Errno) {
	f := n.fs()
	rel := n.childRel(name)
	tg, e := f.guard(ctx, op, n.tree.Name, rel)
	if e != 0 {
		return nil, e
	}
	defer tg.done()
	defer f.lockNS(tg.journal)()
	ch, e := do()
	if e != 0 {
		return nil, e
	}
	r, nodes := rec(rel, ch)
	if r == nil {
		return ch, 0
	}
	if e := f.emit(ctx, tg, r, nodes...); e != 0 {
		return nil, e
	}
	return ch, 0
}

// created is the record of a new directory or node, with its attributes.
func (n *Node) created(op journal.Op, out *fuse.EntryOut) func(string, *fusefs.Inode) (*journal.Record, []*Node) {
	return func(rel string, ch *fusefs.Inode) (*journal.Record, []*Node) {
		r := newRecord(op, rel)
		r.Mode, r.UID, r.GID = out.Attr.Mode, out.Attr.Uid, out.Attr.Gid
		return r, []*Node{n, ch.Operations().(*Node)}
	}
}

func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return n.childOp(ctx, "mkdir", name, func() (*fusefs.Inode, syscall.Errno) {
		var ch *fusefs.Inode
		e := n.makeAsCaller(ctx, name, func(bool) (e syscall.Errno) { ch, e = n.LoopbackNode.Mkdir(ctx, name, mode, out); return e })
		return ch, e
	}, n.created(journal.OpMkdir, out))
}

func (n *Node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return n.childOp(ctx, "mknod", name, func() (*fusefs.Inode, syscall.Errno) {
		var ch *fusefs.Inode
		e := n.makeAsCaller(ctx, name, func(bool) (e syscall.Errno) { ch, e = n.LoopbackNode.Mknod(ctx, name, mode, rdev, out); return e })
		return ch, e
	}, n.created(journal.OpCreate, out))
}

func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return n.childOp(ctx, "symlink", name, func() (*fusefs.Inode, syscall.Errno) {
		var ch *fusefs.Inode
		e := n.makeAsCaller(ctx, name, func(bool) (e syscall.Errno) { ch, e = n.LoopbackNode.Symlink(ctx, target, name, out); return e })
		return ch, e
	}, func(rel string, _ *fusefs.Inode) (*journal.Record, []*Node) {
		r := newRecord(journal.OpSymlink, rel)
		r.NewPath, r.Data = rel, []byte(target)
		return r, []*Node{n}
	})
}

func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	_, e := n.childOp(ctx, "unlink", name, func() (*fusefs.Inode, syscall.Errno) {
		return nil, n.LoopbackNode.Unlink(ctx, name)
	}, func(rel string, _ *fusefs.Inode) (*journal.Record, []*Node) {
		if isScratch(rel) {
			return nil, nil // X.NEW files are never journaled
		}
		return newRecord(journal.OpUnlink, rel), []*Node{n}
	})
	return e
}

func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	_, e := n.childOp(ctx, "rmdir", name, func() (*fusefs.Inode, syscall.Errno) {
		return nil, n.LoopbackNode.Rmdir(ctx, name)
	}, func(rel string, _ *fusefs.Inode) (*journal.Record, []*Node) {
		return newRecord(journal.OpRmdir, rel), []*Node{n}
	})
	return e
}

// sameStream reports whether two targets journal into the same account
// stream (so a rename or link between them can be one record).
func sameStream(a, b target) bool {
	return a.journal && b.journal && a.account == b.account
}

// Rename guards both names. Within one account stream it is one OpRename,
// except that renaming a scratch file ("X.NEW") over X is one OpReplace
// carrying X's new bytes. Across streams (stage./ → mailbox, account →
// account) the source side is an OpUnlink and the destination side an
// OpMessage or OpReplace. A directory cannot change stream (EXDEV: Cyrus
// never renames directories; mv falls back to copying).
func (n *Node) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	f := n.fs()
	np, ok := newParent.(*Node)
	if !ok || np.tree != n.tree {
		return syscall.EXDEV
	}
	rel1, rel2 := n.childRel(name), np.childRel(newName)
	t1, t2, e := f.guard2(ctx, "rename", n.tree.Name, rel1, rel2)
	if e != 0 {
		return e
	}
	defer t1.done()
	defer t2.done()
	journaled := (t1.journal || t2.journal) && f.journal != nil
	defer f.lockNS(journaled)()

	var sst, dst syscall.Stat_t
	srcOK := syscall.Lstat(n.tree.backing(rel1), &sst) == nil
	dstExists := syscall.Lstat(n.tree.backing(rel2), &dst) == nil
	isDir := srcOK && sst.Mode&syscall.S_IFMT == syscall.S_IFDIR
	exchange := flags&unix.RENAME_EXCHANGE != 0
	if journaled && !sameStream(t1, t2) && (isDir || exchange ||
		dstExists && dst.Mode&syscall.S_IFMT == syscall.S_IFDIR) {
		return syscall.EXDEV
	}
	moved := n.child(name)
	if e := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags); e != 0 {
		return e
	}
	if !journaled {
		return 0
	}
	prev := int64(-1)
	if dstExists {
		prev = dst.Size
	}
	if path.Base(rel2) == "cyrus.header" {
		f.noteHeader(n.tree, rel2)
		t2b, e := f.guard(ctx, "rename", n.tree.Name, rel2)
		if e != 0 {
			return 0 // already logged as a divergence; the rename is done
		}
		defer t2b.done()
		t2 = t2b
	}
	scratch := isScratch(rel1) && !isDir
	if sameStream(t1, t2) && !scratch {
		r := newRecord(journal.OpRename, rel1)
		r.NewPath, r.Flags = rel2, flags
		return f.emit(ctx, t1, r, n, np, moved)
	}
	if t1.journal && !scratch && !sameStream(t1, t2) {
		if e := f.emit(ctx, t1, newRecord(journal.OpUnlink, rel1), n); e != 0 {
			return e
		}
	}
	if !t2.journal || isScratch(rel2) {
		return 0
	}
	if isMessage(rel2) {
		return f.emitMessage(ctx, t2, n.tree, moved, np, prev)
	}
	return f.emitReplace(ctx, t2, n.tree, moved, np, prev)
}

// Link: a message file linked into a mailbox (single-instance delivery from
// stage./, COPY) is an OpMessage by content hash; another file linked
// within one account stream is an OpLink; across streams an OpReplace.
func (n *Node) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	f := n.fs()
	tn, ok := target.(*Node)
	if !ok || tn.tree != n.tree {
		return nil, syscall.EXDEV
	}
	rel2 := n.childRel(name)
	t2, e := f.guard(ctx, "link", n.tree.Name, rel2)
	if e != 0 {
		return nil, e
	}
	defer t2.done()
	defer f.lockNS(t2.journal)()
	ch, e := n.LoopbackNode.Link(ctx, target, name, out)
	if e != 0 {
		return nil, e
	}
	if !t2.journal || f.journal == nil {
		return ch, 0
	}
	if isMessage(rel2) {
		if e := f.emitMessage(ctx, t2, n.tree, tn, n, -1); e != 0 {
			return nil, e
		}
		return ch, 0
	}
	rel1, named := tn.rel()
	if named {
		c1 := f.classify.Classify(classPath(n.tree.Name, rel1))
		same := c1.Kind == KindAccount && c1.Account == t2.account ||
			c1.Kind == KindPending && PendingAccount(c1.MailboxID) == t2.account
		if same {
			r := newRecord(journal.OpLink, rel1)
			r.NewPath = rel2
			if e := f.emit(ctx, t2, r, n, tn); e != 0 {
				return nil, e
			}
			return ch, 0
		}
	}
	if e := f.emitReplace(ctx, t2, n.tree, tn, n, -1); e != 0 {
		return nil, e
	}
	return ch, 0
}

// Setattr guards truncate, chmod, chown and utimens (utimensat on message
// files sets their internal date) and journals them with the values the
// backing file ended up with.
func (n *Node) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := n.fs()
	rel, named := n.rel()
	var tg target
	if named {
		var e syscall.Errno
		if tg, e = f.guard(ctx, "setattr", n.tree.Name, rel); e != 0 {
			return e
		}
		defer tg.done()
	}
	if fh != nil {
		if file, ok := fh.(*File); ok {
			fh = file // File implements FileSetattrer/FileGetattrer on its fd
		}
	}
	if !named || !tg.journal || f.journal == nil || isScratch(rel) {
		return n.LoopbackNode.Setattr(ctx, fh, in, out)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	prev := int64(-1)
	var st syscall.Stat_t
	if syscall.Lstat(n.tree.backing(rel), &st) == nil {
		prev = st.Size
	}
	if e := n.LoopbackNode.Setattr(ctx, fh, in, out); e != 0 {
		return e
	}
	if sz, ok := in.GetSize(); ok {
		if isMessage(rel) {
			if e := f.emitMessage(ctx, tg, n.tree, n, parentNode(n), prev); e != 0 {
				return e
			}
		} else if int64(sz) != prev || prev < 0 {
			r := newRecord(journal.OpTruncate, rel)
			r.Size, r.PrevSize = int64(sz), prev
			if e := f.emit(ctx, tg, r, n); e != 0 {
				return e
			}
		}
	}
	var flags uint32
	r := newRecord(journal.OpSetattr, rel)
	if _, ok := in.GetMode(); ok {
		flags |= journal.SetMode
		r.Mode = out.Attr.Mode
	}
	_, uok := in.GetUID()
	_, gok := in.GetGID()
	if uok || gok {
		flags |= journal.SetOwner
		r.UID, r.GID = out.Attr.Uid, out.Attr.Gid
	}
	if _, ok := in.GetMTime(); ok || in.Valid&fuse.FATTR_MTIME_NOW != 0 {
		flags |= journal.SetMTime
		r.MTime = int64(out.Attr.Mtime)*1e9 + int64(out.Attr.Mtimensec)
	}
	if _, ok := in.GetATime(); ok || in.Valid&fuse.FATTR_ATIME_NOW != 0 {
		flags |= journal.SetATime
		r.ATime = int64(out.Attr.Atime)*1e9 + int64(out.Attr.Atimensec)
	}
	if flags == 0 {
		return 0
	}
	r.Flags = flags
	return f.emit(ctx, tg, r, n)
}

// Setxattr and Removexattr are guarded; on a journaled path they mark it
// dirty (records carry no xattrs; Cyrus uses none).
func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.xattrOp(ctx, "setxattr", func() syscall.Errno { return n.LoopbackNode.Setxattr(ctx, attr, data, flags) })
}

func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.xattrOp(ctx, "removexattr", func() syscall.Errno { return n.LoopbackNode.Removexattr(ctx, attr) })
}

func (n *Node) xattrOp(ctx context.Context, op string, do func() syscall.Errno) syscall.Errno {
	f := n.fs()
	rel, named := n.rel()
	if !named {
		return do()
	}
	tg, e := f.guard(ctx, op, n.tree.Name, rel)
	if e != 0 {
		return e
	}
	defer tg.done()
	if e := do(); e != 0 {
		return e
	}
	return f.emit(ctx, tg, dirtyRecord(rel), n)
}

// CopyFileRange unwraps our handles for the loopback (which needs its own
// file type) and journals the destination range as a write.
func (n *Node) CopyFileRange(ctx context.Context, fhIn fusefs.FileHandle, offIn uint64, out *fusefs.Inode,
	fhOut fusefs.FileHandle, offOut uint64, size uint64, flags uint64) (uint32, syscall.Errno) {
	fin, ok1 := fhIn.(*File)
	fout, ok2 := fhOut.(*File)
	if !ok1 || !ok2 {
		return 0, syscall.ENOTSUP
	}
	tg, named, e := fout.writeTarget(ctx, "copy_file_range")
	if e != 0 {
		return 0, e
	}
	defer tg.done()
	if !named || !fout.inPlace(tg) || n.fs().journal == nil {
		cnt, e := n.LoopbackNode.CopyFileRange(ctx, fin.lf, offIn, out, fout.lf, offOut, size, flags)
		if cnt > 0 {
			fout.dirty.Store(true)
		}
		return cnt, e
	}
	fout.node.mu.Lock()
	defer fout.node.mu.Unlock()
	prev := int64(-1)
	var st syscall.Stat_t
	if syscall.Fstat(fout.fd(), &st) == nil {
		prev = st.Size
	}
	cnt, e := n.LoopbackNode.CopyFileRange(ctx, fin.lf, offIn, out, fout.lf, offOut, size, flags)
	if cnt == 0 {
		return cnt, e
	}
	f := n.fs()
	if int64(cnt) > f.opts.InlineLimit {
		return cnt, f.emit(ctx, tg, dirtyRecord(tg.rel), fout.node)
	}
	// The destination may be write-only: read the range back by path.
	data := make([]byte, cnt)
	rf, err := os.Open(fout.node.tree.backing(tg.rel))
	if err != nil {
		return 0, errnoOf(ctx, err)
	}
	got, err := rf.ReadAt(data, int64(offOut))
	rf.Close()
	if err != nil && got != len(data) {
		return 0, errnoOf(ctx, err)
	}
	r := newRecord(journal.OpWrite, tg.rel)
	r.Offset, r.PrevSize, r.Data = int64(offOut), prev, data[:got]
	if je := f.emit(ctx, tg, r, fout.node); je != 0 {
		return 0, je
	}
	return cnt, e
}

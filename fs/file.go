package fs

import (
	"context"
	"crypto/sha256"
	"path"
	"sync/atomic"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"mreplfs/journal"
)

// File is an open file. It keeps go-fuse's loopback file in a named field —
// never embedded, so that neither PassthroughFd (the kernel would then write
// behind our back) nor Ioctl is promoted — and forwards each operation,
// journaling the mutating ones.
type File struct {
	node  *Node
	lf    *fusefs.LoopbackFile
	flags uint32

	// message: a "<uid>." file created through this handle; its content
	// is journaled as one OpMessage at fsync or close.
	message bool
	// dirty: written since the last OpMessage (message files) or since
	// the last NoteHeader (cyrus.header).
	dirty atomic.Bool
	// closed uncounts the handle from its account's open handles (a
	// freeze needs none open; freeze.go); nil for non-account paths.
	closed func()
}

func newFile(n *Node, lf *fusefs.LoopbackFile, flags uint32) *File {
	f := &File{node: n, lf: lf, flags: flags}
	if rel, ok := n.rel(); ok {
		fsys := n.fs()
		if c := fsys.classify.Classify(classPath(n.tree.Name, rel)); c.Kind == KindAccount {
			f.closed = fsys.openHandle(c.Account)
		}
	}
	return f
}

// PassthroughFd refuses kernel passthrough: every READ and WRITE must come
// to this process (STYLE.md rule 2).
func (f *File) PassthroughFd() (int, bool) { return -1, false }

// fd returns the backing descriptor, valid until Release.
func (f *File) fd() int {
	fd, _ := f.lf.PassthroughFd()
	return fd
}

func (f *File) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.lf.Read(ctx, buf, off)
}

func (f *File) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Getattr(ctx, out)
}

func (f *File) Statx(ctx context.Context, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return f.lf.Statx(ctx, flags, mask, out)
}

func (f *File) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.lf.Lseek(ctx, off, whence)
}

// writeTarget guards a data mutation through this handle. The role is
// checked again on every write (a promote/demote may have happened since
// open). ok is false when the inode has no name any more (unlinked while
// open): its bytes can never reach a replica, so nothing is journaled.
func (f *File) writeTarget(ctx context.Context, op string) (tg target, named bool, e syscall.Errno) {
	rel, named := f.node.rel()
	if !named {
		return target{}, false, 0
	}
	tg, e = f.node.fs().guard(ctx, op, f.node.tree.Name, rel)
	return tg, true, e
}

// inPlace reports whether writes through f are journaled byte by byte.
func (f *File) inPlace(tg target) bool {
	return tg.journal && !f.message && !isScratch(tg.rel) && !isMessage(tg.rel)
}

func (f *File) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	return f.write(ctx, [][]byte{data}, off)
}

func (f *File) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	return f.write(ctx, data, off)
}

func (f *File) write(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	tg, named, e := f.writeTarget(ctx, "write")
	if e != 0 {
		return 0, e
	}
	defer tg.done()
	doWrite := func() (uint32, syscall.Errno) {
		if len(data) == 1 {
			return f.lf.Write(ctx, data[0], off)
		}
		return f.lf.Writev(ctx, data, off)
	}
	if !named || !f.inPlace(tg) {
		n, e := doWrite()
		if n > 0 {
			f.dirty.Store(true)
		}
		return n, e
	}
	f.node.mu.Lock()
	defer f.node.mu.Unlock()
	prev := int64(-1)
	var st syscall.Stat_t
	if syscall.Fstat(f.fd(), &st) == nil {
		prev = st.Size
	}
	// The bytes this write overwrites (within the old size): their SHA-256
	// lets the replica catch a byte changed behind replication's back
	// (journal.Record.PrevHash). Small and in the page cache: Cyrus
	// rewrites 112- and 160-byte index regions; appends read nothing.
	var pre []byte
	if prev > off {
		total := 0
		for _, d := range data {
			total += len(d)
		}
		pre = make([]byte, min(int64(total), prev-off))
		if k, err := syscall.Pread(f.fd(), pre, off); err != nil || k != len(pre) {
			pre = nil // a write-only fd: no pre-image, no check
		}
	}
	n, e := doWrite()
	if n == 0 {
		return n, e
	}
	f.dirty.Store(true)
	r := newRecord(journal.OpWrite, tg.rel)
	r.Offset = off
	r.PrevSize = prev
	if pre != nil {
		r.PrevHash = sha256.Sum256(pre[:min(len(pre), int(n))])
	}
	r.Data = gather(data, int(n))
	if je := f.node.fs().emit(ctx, tg, r, f.node); je != 0 {
		return 0, je
	}
	return n, e
}

// gather copies the first n bytes of data (go-fuse reuses its buffers).
func gather(data [][]byte, n int) []byte {
	out := make([]byte, 0, n)
	for _, d := range data {
		if len(out)+len(d) > n {
			d = d[:n-len(out)]
		}
		out = append(out, d...)
	}
	return out
}

// finish journals what this handle wrote that is journaled as a whole: a
// new message file's content (OpMessage), and tells the classifier about a
// cyrus.header written in place.
func (f *File) finish(ctx context.Context) syscall.Errno {
	if !f.dirty.Load() {
		return 0
	}
	rel, named := f.node.rel()
	if !named {
		return 0
	}
	fsys := f.node.fs()
	if path.Base(rel) == "cyrus.header" {
		fsys.noteHeader(f.node.tree, rel)
	}
	if !f.message {
		f.dirty.Store(false)
		return 0
	}
	tg, e := fsys.guard(ctx, "write", f.node.tree.Name, rel)
	if e != 0 {
		return e
	}
	defer tg.done()
	if !tg.journal {
		return 0
	}
	f.dirty.Store(false)
	return fsys.emitMessage(ctx, tg, f.node.tree, f.node, parentNode(f.node), -1)
}

func (f *File) Flush(ctx context.Context) syscall.Errno {
	if e := f.finish(ctx); e != 0 {
		f.lf.Flush(ctx)
		return e
	}
	return f.lf.Flush(ctx)
}

// Fsync syncs the backing file, then waits until the journal records of
// every mutation of this inode are durable (DESIGN.md invariant 3). It
// works on read-only handles too (Cyrus fsyncs messages via O_RDONLY fds).
func (f *File) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if e := f.finish(ctx); e != 0 {
		return e
	}
	// The journal's group commit and the backing fsync run at once: the
	// reply waits for both.
	if f.node.fs().journal == nil {
		return f.lf.Fsync(ctx, flags)
	}
	jerr := make(chan syscall.Errno, 1)
	go func() { jerr <- f.node.syncJournal(ctx) }()
	e := f.lf.Fsync(ctx, flags)
	if je := <-jerr; e == 0 {
		e = je
	}
	return e
}

func (f *File) Release(ctx context.Context) syscall.Errno {
	if f.closed != nil {
		f.closed()
	}
	return f.lf.Release(ctx)
}

// Setattr is reached through Node.Setattr (which guards and journals); it
// uses the descriptor, so it works on unlinked open files too.
func (f *File) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Setattr(ctx, in, out)
}

// Allocate (fallocate): a size change is journaled as a truncate, a
// punched or zeroed range as a write of zeros.
func (f *File) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	tg, named, e := f.writeTarget(ctx, "fallocate")
	if e != 0 {
		return e
	}
	defer tg.done()
	if !named || !f.inPlace(tg) {
		e := f.lf.Allocate(ctx, off, size, mode)
		if e == 0 {
			f.dirty.Store(true)
		}
		return e
	}
	f.node.mu.Lock()
	defer f.node.mu.Unlock()
	var before, after syscall.Stat_t
	if err := syscall.Fstat(f.fd(), &before); err != nil {
		return fusefs.ToErrno(err)
	}
	if e := f.lf.Allocate(ctx, off, size, mode); e != 0 {
		return e
	}
	if err := syscall.Fstat(f.fd(), &after); err != nil {
		return fusefs.ToErrno(err)
	}
	fsys := f.node.fs()
	const punch, zero = 0x02, 0x10 // FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
	if mode&(punch|zero) != 0 {
		end := min(int64(off+size), after.Size)
		if end > int64(off) {
			if end-int64(off) > fsys.opts.InlineLimit {
				return fsys.emit(ctx, tg, dirtyRecord(tg.rel), f.node)
			}
			r := newRecord(journal.OpWrite, tg.rel)
			r.Offset, r.PrevSize, r.Data = int64(off), before.Size, make([]byte, end-int64(off))
			if e := fsys.emit(ctx, tg, r, f.node); e != 0 {
				return e
			}
		}
	}
	if after.Size != before.Size {
		r := newRecord(journal.OpTruncate, tg.rel)
		r.Size, r.PrevSize = after.Size, before.Size
		return fsys.emit(ctx, tg, r, f.node)
	}
	return 0
}

// dirHandle is an open directory: the loopback stream in a named field
// (its Ioctl is not promoted) and Fsyncdir that waits for the directory's
// records.
type dirHandle struct {
	node *Node
	ds   fusefs.FileHandle
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.ds.(fusefs.FileReaddirenter).Readdirent(ctx)
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.ds.(fusefs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.ds.(fusefs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	jerr := make(chan syscall.Errno, 1)
	go func() { jerr <- d.node.syncJournal(ctx) }()
	var e syscall.Errno
	if s, ok := d.ds.(fusefs.FileFsyncdirer); ok {
		e = s.Fsyncdir(ctx, flags)
	}
	if je := <-jerr; e == 0 {
		e = je
	}
	return e
}

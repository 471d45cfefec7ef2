package fs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"syscall"

	"mreplfs/journal"
)

// newRecord returns a record of op for rel with "no pre-state check"
// (PrevSize -1) preset.
func newRecord(op journal.Op, rel string) *journal.Record {
	return &journal.Record{Op: op, Path: rel, PrevSize: -1}
}

// dirtyRecord marks a path as changed without detail (the peer resyncs it).
func dirtyRecord(rel string) *journal.Record { return newRecord(journal.OpDirty, rel) }

// emit appends r on behalf of tg (filling Account, Epoch and Tree) and notes
// its LSN on nodes. Non-journaled targets and a nil journal record nothing.
// A journal failure is EIO (EINTR when ctx was cancelled), logged with the
// account and path: the backing change has happened but is not journaled.
func (f *FS) emit(ctx context.Context, tg target, r *journal.Record, nodes ...*Node) syscall.Errno {
	if !tg.journal || f.journal == nil {
		return 0
	}
	r.Account, r.Epoch, r.Tree = tg.account, tg.epoch, tg.tree
	lsn, err := f.journal.Append(ctx, r)
	if err != nil {
		f.log.Error("journal append failed", "account", tg.account, "tree", tg.tree, "path", r.Path,
			"op", r.Op, "err", err)
		return errnoOf(ctx, err)
	}
	for _, n := range nodes {
		n.noteLSN(lsn)
	}
	f.repl.noteAppended(tg.account, uint64(lsn))
	return 0
}

// errnoOf maps an internal error to the FUSE boundary (STYLE.md rule 4).
func errnoOf(ctx context.Context, err error) syscall.Errno {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	return syscall.EIO
}

// hashCache remembers a file's SHA-256 for one (size, mtime, ctime), so a
// message linked into N mailboxes is read once.
type hashCache struct {
	valid        bool
	size         int64
	mtime, ctime syscall.Timespec
	sum          [32]byte
}

// contentHash returns the SHA-256 and stat of the backing file p; cache (the
// file's node, may be nil) remembers it.
func contentHash(p string, cache *Node) ([32]byte, syscall.Stat_t, error) {
	var st syscall.Stat_t
	fh, err := os.Open(p)
	if err != nil {
		return [32]byte{}, st, err
	}
	defer fh.Close()
	if err := syscall.Fstat(int(fh.Fd()), &st); err != nil {
		return [32]byte{}, st, err
	}
	if cache != nil {
		cache.hashMu.Lock()
		c := cache.hash
		cache.hashMu.Unlock()
		if c.valid && c.size == st.Size && c.mtime == st.Mtim && c.ctime == st.Ctim {
			return c.sum, st, nil
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return [32]byte{}, st, err
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if cache != nil {
		cache.hashMu.Lock()
		cache.hash = hashCache{valid: true, size: st.Size, mtime: st.Mtim, ctime: st.Ctim, sum: sum}
		cache.hashMu.Unlock()
	}
	return sum, st, nil
}

// emitMessage journals the message file at tg.rel as an OpMessage: content
// hash, size, mode, mtime; the bytes go to the blob store by hard link.
// file (may be nil) and dir are the nodes whose fsync must wait for it;
// prevSize is the size of what it replaced (-1: nothing/unknown).
func (f *FS) emitMessage(ctx context.Context, tg target, t *Tree, file, dir *Node, prevSize int64) syscall.Errno {
	if !tg.journal || f.journal == nil {
		return 0
	}
	p := t.backing(tg.rel)
	sum, st, err := contentHash(p, file)
	if err != nil {
		f.log.Error("hash message", "path", tg.rel, "err", err)
		return errnoOf(ctx, err)
	}
	if err := f.journal.PutBlob(ctx, sum, p); err != nil {
		f.log.Error("journal blob failed", "account", tg.account, "path", tg.rel, "err", err)
		return errnoOf(ctx, err)
	}
	r := newRecord(journal.OpMessage, tg.rel)
	r.Hash, r.Size, r.Mode, r.MTime = sum, st.Size, st.Mode, timespecNs(st.Mtim)
	r.UID, r.GID = st.Uid, st.Gid
	r.PrevSize = prevSize
	return f.emit(ctx, tg, r, file, dir)
}

// emitReplace journals "tg.rel now has exactly these bytes" (OpReplace):
// inline up to InlineLimit, by blob hash above.
func (f *FS) emitReplace(ctx context.Context, tg target, t *Tree, file, dir *Node, prevSize int64) syscall.Errno {
	if !tg.journal || f.journal == nil {
		return 0
	}
	p := t.backing(tg.rel)
	fh, err := os.Open(p)
	if err != nil {
		return errnoOf(ctx, fmt.Errorf("open replaced file: %w", err))
	}
	defer fh.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fh.Fd()), &st); err != nil {
		return errnoOf(ctx, err)
	}
	r := newRecord(journal.OpReplace, tg.rel)
	r.Size, r.Mode, r.MTime, r.UID, r.GID = st.Size, st.Mode, timespecNs(st.Mtim), st.Uid, st.Gid
	r.PrevSize = prevSize
	if st.Size <= f.opts.InlineLimit {
		data, err := io.ReadAll(io.LimitReader(fh, f.opts.InlineLimit+1))
		if err != nil {
			return errnoOf(ctx, err)
		}
		r.Data, r.Size, r.Hash = data, int64(len(data)), sha256.Sum256(data)
	} else {
		sum, _, err := contentHash(p, file)
		if err != nil {
			return errnoOf(ctx, err)
		}
		if err := f.journal.PutBlob(ctx, sum, p); err != nil {
			f.log.Error("journal blob failed", "account", tg.account, "path", tg.rel, "err", err)
			return errnoOf(ctx, err)
		}
		r.Hash = sum
	}
	return f.emit(ctx, tg, r, file, dir)
}

// parentNode returns the directory node holding node (nil if none).
func parentNode(node *Node) *Node {
	if node == nil {
		return nil
	}
	_, p := node.EmbeddedInode().Parent()
	if p == nil {
		return nil
	}
	pn, _ := p.Operations().(*Node)
	return pn
}

// noteHeader hands a cyrus.header that was just put in place to the
// classifier, so the (pending) mailbox gets its owner.
func (f *FS) noteHeader(t *Tree, rel string) {
	c := f.classify.Classify(classPath(t.Name, path.Dir(rel)))
	id := c.MailboxID
	if id == "" {
		return
	}
	hdr, err := os.ReadFile(t.backing(rel))
	if err != nil {
		f.log.Warn("read cyrus.header", "tree", t.Name, "path", rel, "err", err)
		return
	}
	if err := f.classify.NoteHeader(id, hdr); err != nil {
		f.log.Warn("classifier refused cyrus.header", "tree", t.Name, "path", rel, "err", err)
		return
	}
	if c.Kind == KindPending {
		after := f.classify.Classify(classPath(t.Name, rel))
		if after.Kind == KindAccount {
			if e, ok := f.roles.Lookup(after.Account); !ok || !e.Role.Writable() {
				f.log.Error("divergence: pending mailbox turned out to belong to a non-writable account",
					"account", after.Account, "mailbox", id, "tree", t.Name, "path", rel)
			}
		}
	}
}

func timespecNs(ts syscall.Timespec) int64 { return ts.Sec*1e9 + ts.Nsec }

package fs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"mreplfs/internal/fsident"
)

// asCaller runs a creating loopback op (create, mkdir, mknod, symlink) with
// the calling process's file system identity, so what it makes is born the
// caller's. go-fuse's loopback makes it as the mount's user (root) and chowns
// it after: in between, another Cyrus process could meet a directory such as
// meta/u/DELETED/user owned by root and fail to create in it ("Permission
// denied", an IMAP NO). The kernel has checked the caller's permission
// already (default_permissions); if the op is refused with the narrower
// identity (fsident sets the primary group, not the caller's supplementary
// ones), op runs again as root with retry set, and go-fuse's chown follows.
// A retry must not take over what another user made meanwhile (Create:
// O_EXCL); if it finds the name taken, the caller's own refusal stands.
func asCaller(ctx context.Context, op func(retry bool) syscall.Errno) (e syscall.Errno, asRoot bool) {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return op(false), false
	}
	fsident.As(int(c.Uid), int(c.Gid), func() error { e = op(false); return nil })
	if e == syscall.EACCES || e == syscall.EPERM {
		if e2 := op(true); e2 != syscall.EEXIST {
			return e2, e2 == 0
		}
	}
	return e, false
}

// makeAsCaller runs a creating op of n's child name through asCaller and counts
// (status: root_creates) and logs, once, a creation that had to fall back
// to root: the window asCaller closes is open again for it.
func (n *Node) makeAsCaller(ctx context.Context, name string, op func(retry bool) syscall.Errno) syscall.Errno {
	e, asRoot := asCaller(ctx, op)
	if asRoot {
		f := n.fs()
		if f.rootCreates.Add(1) == 1 {
			f.log.Warn("a create refused with the caller's own identity was made as root, then chowned (a backing directory the caller reaches only through a supplementary group, or a 0700 parent of the backing tree): Cyrus may meet such files root-owned for a moment; counted in status as root_creates",
				"tree", n.tree.Name, "path", n.childRel(name))
		}
	}
	return e
}

// RootCreates is how many creations fell back to root since the mount.
func (f *FS) RootCreates() int64 { return f.rootCreates.Load() }

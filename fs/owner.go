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
func asCaller(ctx context.Context, op func(retry bool) syscall.Errno) syscall.Errno {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return op(false)
	}
	var e syscall.Errno
	fsident.As(int(c.Uid), int(c.Gid), func() error { e = op(false); return nil })
	if e == syscall.EACCES || e == syscall.EPERM {
		if e2 := op(true); e2 != syscall.EEXIST {
			return e2
		}
	}
	return e
}

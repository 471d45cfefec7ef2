package fsident

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// As runs fn with the file system identity uid:gid. Without the privilege to
// change identity (not root) the kernel keeps the process's own and fn runs
// with it: callers that need the owner then chown as before.
func As(uid, gid int, fn func() error) error {
	if uid == os.Geteuid() && gid == os.Getegid() {
		return fn()
	}
	runtime.LockOSThread()
	// Each call returns the previous identity; -1 changes nothing and
	// returns the current one.
	ogid, _ := unix.SetfsgidRetGid(gid)
	ouid, _ := unix.SetfsuidRetUid(uid)
	err := fn()
	unix.SetfsuidRetUid(ouid)
	unix.SetfsgidRetGid(ogid)
	if u, _ := unix.SetfsuidRetUid(-1); u == ouid {
		if g, _ := unix.SetfsgidRetGid(-1); g == ogid {
			runtime.UnlockOSThread()
		}
	}
	return err
}

package fsident

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Fatal ends the process when a thread's identity cannot be restored (it
// never could be observed: a root process may always set its fsuid back).
// Carrying on would run later file system calls of whatever goroutine
// keeps the thread — a FUSE server's request loop — with a stranger's
// identity, and a panic would be recovered by such a loop. A variable for
// tests.
var Fatal = func(msg string) {
	fmt.Fprintln(os.Stderr, "fsident: "+msg)
	os.Exit(70)
}

// The process's own identity (it never changes): a call with it changes
// nothing, at no cost on the mount's create path.
var euid, egid = os.Geteuid(), os.Getegid()

// As runs fn with the file system identity uid:gid. Without the privilege to
// change identity (not root) the kernel keeps the process's own and fn runs
// with it: callers that need the owner then chown as before. The identity
// is restored even when fn panics.
func As(uid, gid int, fn func() error) error {
	if uid == euid && gid == egid {
		return fn()
	}
	runtime.LockOSThread()
	// Each call returns the previous identity; -1 changes nothing and
	// returns the current one.
	ogid, _ := unix.SetfsgidRetGid(gid)
	ouid, _ := unix.SetfsuidRetUid(uid)
	defer func() {
		unix.SetfsuidRetUid(ouid)
		unix.SetfsgidRetGid(ogid)
		u, _ := unix.SetfsuidRetUid(-1)
		g, _ := unix.SetfsgidRetGid(-1)
		if u != ouid || g != ogid {
			Fatal(fmt.Sprintf("could not restore this thread's file system identity %d:%d (it is %d:%d)", ouid, ogid, u, g))
			return // the thread stays locked: it ends with its goroutine
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

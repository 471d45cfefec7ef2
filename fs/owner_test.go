package fs_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"mreplfs/fs"
	"mreplfs/fs/mounttest"
	"mreplfs/internal/testroot"
)

// TestCreatedOwnedByCaller: what a non-root process creates through the
// mount (directory, file, symlink, node) is its own in the backing tree,
// both when its own identity may create there (made with it: asCaller) and
// when only a supplementary group lets it (made as root and chowned).
func TestCreatedOwnedByCaller(t *testing.T) {
	e := mounttest.Mount(t, mounttest.Options{NoJournal: true, FS: fs.Options{AllowOther: true}})
	// the caller must reach the mount point (t.TempDir makes 0700 parents)
	for d := filepath.Dir(e.Mnt); d != "/tmp" && d != "/" && d != "."; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	own := filepath.Join(e.Backing, "own")
	grp := filepath.Join(e.Backing, "grp")
	for _, d := range []string{own, grp} {
		if err := os.Mkdir(d, 0o770); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o770) // past the umask
	}
	os.Chown(own, 1234, 5678)
	os.Chown(grp, 0, 4321) // writable for 1234 through its group 4321 only
	run := func(groups []uint32, name string, args ...string) {
		t.Helper()
		c := exec.Command(name, args...)
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1234, Gid: 5678, Groups: groups}}
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s %v as 1234: %v: %s", name, args, err, out)
		}
	}
	for _, d := range []string{"own", "grp"} {
		m := filepath.Join(e.Mnt, d)
		groups := []uint32{4321}
		run(groups, "mkdir", filepath.Join(m, "dir"))
		run(groups, "sh", "-c", ": > "+filepath.Join(m, "dir", "file"))
		run(groups, "ln", "-s", "file", filepath.Join(m, "dir", "link"))
		run(groups, "mkfifo", filepath.Join(m, "dir", "fifo"))
		for _, p := range []string{"dir", "dir/file", "dir/link", "dir/fifo"} {
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(e.Backing, d, p), &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != 1234 || st.Gid != 5678 {
				t.Errorf("%s/%s owned by %d:%d, want 1234:5678", d, p, st.Uid, st.Gid)
			}
		}
	}
	// Only the supplementary-group directory fell back to root: 4 creations.
	if n := e.FS.RootCreates(); n != 4 {
		t.Errorf("%d creations fell back to root, want 4 (those in grp)", n)
	}
	// The mount's own identity is root again: a file root makes is root's.
	p := filepath.Join(e.Mnt, "own", "rootfile")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Lstat(filepath.Join(e.Backing, "own", "rootfile"), &st)
	if st.Uid != 0 {
		t.Errorf("root's file owned by %d", st.Uid)
	}
}

// TestAsCallerBornOwned: asCaller's op runs with the FUSE caller's
// identity: a directory it makes (no chown anywhere) is the caller's; and a
// retry as root never takes a name someone made meanwhile.
func TestAsCallerBornOwned(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // the caller must reach it
	os.Chmod(dir, 0o777)
	ctx := fuse.NewContext(context.Background(), &fuse.Caller{Owner: fuse.Owner{Uid: 1234, Gid: 5678}})
	d := filepath.Join(dir, "d")
	if e := fs.AsCaller(ctx, func(bool) syscall.Errno { return fusefs.ToErrno(os.Mkdir(d, 0o700)) }); e != 0 {
		t.Fatal(e)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(d, &st); err != nil || st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("made by asCaller: %d:%d (%v), want 1234:5678", st.Uid, st.Gid, err)
	}
	// refused as the caller, the name taken meanwhile: the refusal stands
	tries := 0
	e := fs.AsCaller(ctx, func(retry bool) syscall.Errno {
		tries++
		if !retry {
			return syscall.EACCES
		}
		return syscall.EEXIST
	})
	if e != syscall.EACCES || tries != 2 {
		t.Errorf("retry finding the name taken: %v after %d tries, want EACCES after 2", e, tries)
	}
}

package fs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"mreplfs/fs/mounttest"
	"mreplfs/rolemap"
)

// TestReceiverWriteAndForget: the receiver's write path (doc.go) — it
// changes a replica account straight in the backing dir, then asks the
// mount to forget those paths; readers through the mount (an already-open
// fd, an existing mmap, a new open, directory listings) see the new state.
func TestReceiverWriteAndForget(t *testing.T) {
	e := mounttest.Mount(t, mounttest.Options{})
	e.Roles.Set("r", rolemap.Replica)
	bdir := filepath.Join(e.Backing, "acct/r/INBOX")
	must(t, os.MkdirAll(bdir, 0o755))
	must(t, os.WriteFile(bdir+"/cyrus.index", bytes.Repeat([]byte("o"), 4096), 0o600))
	must(t, os.WriteFile(bdir+"/1.", []byte("msg one"), 0o600))
	mdir := filepath.Join(e.Mnt, "acct/r/INBOX")

	fd, err := unix.Open(mdir+"/cyrus.index", unix.O_RDONLY, 0)
	must(t, err)
	defer unix.Close(fd)
	m := startMmapReader(t, mdir+"/cyrus.index", 4096)
	m.read(t, 0, 4)
	buf := make([]byte, 4)
	_, err = unix.Pread(fd, buf, 0)
	must(t, err)
	if _, err := os.Stat(mdir + "/1."); err != nil {
		t.Fatal(err)
	}

	// The receiver: same-size in-place change, a new message, an unlink.
	wf, err := os.OpenFile(bdir+"/cyrus.index", os.O_WRONLY, 0)
	must(t, err)
	_, err = wf.WriteAt([]byte("NEW!"), 0)
	must(t, err)
	wf.Close()
	must(t, os.WriteFile(bdir+"/2.", []byte("msg two"), 0o600))
	must(t, os.Remove(bdir+"/1."))

	_, err = unix.Pread(fd, buf, 0)
	must(t, err)
	t.Logf("before forget: open fd reads %q, mmap %q", buf, m.read(t, 0, 4))

	n, err := e.FS.Forget("spool", []string{"acct/r/INBOX/cyrus.index", "acct/r/INBOX/1.", "acct/r/INBOX/2."})
	must(t, err)
	if n == 0 {
		t.Errorf("forget touched nothing")
	}
	_, err = unix.Pread(fd, buf, 0)
	must(t, err)
	if string(buf) != "NEW!" {
		t.Errorf("open fd after forget reads %q, want NEW!", buf)
	}
	if got := m.read(t, 0, 4); got != "NEW!" {
		t.Errorf("mmap after forget reads %q, want NEW!", got)
	}
	b, err := os.ReadFile(mdir + "/cyrus.index")
	must(t, err)
	if string(b[:4]) != "NEW!" {
		t.Errorf("new open reads %q", b[:4])
	}
	if _, err := os.Stat(mdir + "/1."); !os.IsNotExist(err) {
		t.Errorf("unlinked 1. still visible: %v", err)
	}
	b, err = os.ReadFile(mdir + "/2.")
	if err != nil || string(b) != "msg two" {
		t.Errorf("new 2.: %q %v", b, err)
	}
	// The replica stays read-only for everybody else.
	if err := os.WriteFile(mdir+"/3.", nil, 0o600); !errorsIs(err, unix.EROFS) {
		t.Errorf("write to replica: %v, want EROFS", err)
	}
	if len(e.Rec.Records()) != 0 {
		t.Errorf("records for a replica account: %v", e.Rec.Records())
	}
}

// TestForgetAccount: forgetting a whole account refreshes every cached
// path of it (used after a promote, or a large receiver batch).
func TestForgetAccount(t *testing.T) {
	e := mounttest.Mount(t, mounttest.Options{})
	e.Roles.Set("r", rolemap.Replica)
	bdir := filepath.Join(e.Backing, "acct/r/INBOX")
	must(t, os.MkdirAll(bdir, 0o755))
	must(t, os.WriteFile(bdir+"/cyrus.header", []byte("aaaa"), 0o600))
	fd, err := unix.Open(filepath.Join(e.Mnt, "acct/r/INBOX/cyrus.header"), unix.O_RDONLY, 0)
	must(t, err)
	defer unix.Close(fd)
	buf := make([]byte, 4)
	_, err = unix.Pread(fd, buf, 0)
	must(t, err)
	wf, err := os.OpenFile(bdir+"/cyrus.header", os.O_WRONLY, 0)
	must(t, err)
	_, err = wf.WriteAt([]byte("bbbb"), 0)
	must(t, err)
	wf.Close()
	if n := e.FS.ForgetAccount("r"); n == 0 {
		t.Errorf("ForgetAccount touched nothing")
	}
	_, err = unix.Pread(fd, buf, 0)
	must(t, err)
	if string(buf) != "bbbb" {
		t.Errorf("after ForgetAccount: %q, want bbbb", buf)
	}
}

// TestForgetLearnsReplicatedHeader: a mailbox the receiver made in the
// backing tree (the mount never saw it created) is pending — writable —
// until the receiver's forget of its cyrus.header names the owner; then a
// local write into it (a misrouted delivery) is refused.
func TestForgetLearnsReplicatedHeader(t *testing.T) {
	e := mounttest.Mount(t, mounttest.Options{})
	e.Roles.Set("rob", rolemap.Replica)
	bdir := filepath.Join(e.Backing, "pend/id3")
	must(t, os.MkdirAll(bdir, 0o755))
	must(t, os.WriteFile(bdir+"/cyrus.index", make([]byte, 160), 0o600))
	must(t, os.WriteFile(bdir+"/cyrus.header", []byte("owner=rob\n"), 0o600))
	if _, err := e.FS.Forget("spool", []string{"pend/id3", "pend/id3/cyrus.index", "pend/id3/cyrus.header"}); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(filepath.Join(e.Mnt, "pend/id3/1."), []byte("x"), 0o600)
	if !errorsIs(err, unix.EROFS) {
		t.Fatalf("write into a replicated replica mailbox: %v, want EROFS", err)
	}
	if _, err := os.Stat(bdir + "/1."); !os.IsNotExist(err) {
		t.Fatal("the refused write reached the backing tree")
	}
}

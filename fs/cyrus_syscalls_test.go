package fs_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/fs/mounttest"
	"mreplfs/journal"
	"mreplfs/rolemap"
)

// masterEnv mounts a tree where acct/a, acct/b and acct/c are master
// accounts and stage./ exists.
func masterEnv(t *testing.T) *mounttest.Env {
	t.Helper()
	e := mounttest.Mount(t, mounttest.Options{})
	for _, a := range []string{"a", "b", "c"} {
		e.Roles.Set(a, rolemap.Master)
		must(t, os.MkdirAll(filepath.Join(e.Backing, "acct", a, "INBOX"), 0o755))
	}
	must(t, os.MkdirAll(filepath.Join(e.Backing, "stage."), 0o755))
	return e
}

func fstatNlink(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Fstat(fd, &st))
	return st.Nlink
}

// TestSingleInstanceDelivery: the lmtpd pattern — stage file, link into 3
// mailboxes of 3 accounts (nlink across directories), fsync each link via an
// O_RDONLY fd, utimensat, unlink the stage file.
func TestSingleInstanceDelivery(t *testing.T) {
	e := masterEnv(t)
	stage := filepath.Join(e.Mnt, "stage./123-456-1")
	body := []byte("Return-Path: <x>\r\n\r\nhello\r\n")
	must(t, os.WriteFile(stage, body, 0o600))
	early, err := unix.Open(stage, unix.O_RDONLY, 0)
	must(t, err)
	defer unix.Close(early)
	for i, a := range []string{"a", "b", "c"} {
		dst := filepath.Join(e.Mnt, "acct", a, "INBOX", "1.")
		must(t, unix.Link(stage, dst))
		if got, want := fstatNlink(t, early), uint64(i+2); got != want {
			t.Fatalf("after link %d: nlink %d, want %d", i+1, got, want)
		}
		fd, err := unix.Open(dst, unix.O_RDONLY, 0)
		must(t, err)
		recs := e.Rec.Records()
		last := recs[len(recs)-1].LSN
		must(t, unix.Fsync(fd))
		if synced, _ := e.Rec.Synced(); synced < last {
			t.Errorf("fsync on O_RDONLY fd of %s returned before the journal synced LSN %d (synced %d)", dst, last, synced)
		}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, dst, []unix.Timespec{{Sec: 1700000000}, {Sec: 1700000000}}, 0))
		unix.Close(fd)
	}
	must(t, unix.Unlink(stage))
	if got, want := fstatNlink(t, early), uint64(3); got != want {
		t.Errorf("after unlinking the stage file: nlink %d, want %d", got, want)
	}
	var msgs, setattrs int
	var hash [32]byte
	for _, r := range e.Rec.Records() {
		switch r.Op {
		case journal.OpMessage:
			msgs++
			if msgs > 1 && r.Hash != hash {
				t.Errorf("message %s: hash differs from the first recipient's", r.Path)
			}
			hash = r.Hash
			if r.Size != int64(len(body)) {
				t.Errorf("message %s: size %d, want %d", r.Path, r.Size, len(body))
			}
		case journal.OpSetattr:
			setattrs++
			if r.MTime != 1700000000*1e9 {
				t.Errorf("setattr %s: mtime %d, want %d", r.Path, r.MTime, int64(1700000000*1e9))
			}
		default:
			t.Errorf("unexpected record %s (stage./ is not an account)", recString(r))
		}
	}
	if msgs != 3 || setattrs != 3 {
		t.Errorf("got %d message and %d setattr records, want 3 and 3", msgs, setattrs)
	}
	if b, ok := e.Rec.Blob(hash); !ok || !bytes.Equal(b, body) {
		t.Errorf("blob: got %q, want the body", b)
	}
}

// TestFsyncWaitsForJournal: fsync and fdatasync of a written file and
// fsync of a directory fd wait for that inode's records (invariant 3).
func TestFsyncWaitsForJournal(t *testing.T) {
	e := masterEnv(t)
	dir := filepath.Join(e.Mnt, "acct/a/INBOX")
	fd, err := unix.Open(dir+"/cyrus.index", unix.O_RDWR|unix.O_CREAT, 0o600)
	must(t, err)
	defer unix.Close(fd)
	_, err = unix.Pwrite(fd, make([]byte, 160), 0)
	must(t, err)
	recs := e.Rec.Records()
	must(t, unix.Fdatasync(fd))
	if synced, _ := e.Rec.Synced(); synced < recs[len(recs)-1].LSN {
		t.Errorf("fdatasync returned with synced %d < %d", synced, recs[len(recs)-1].LSN)
	}
	// A directory fsync covers the entries changed in it.
	must(t, os.WriteFile(filepath.Join(e.Backing, "acct/a/INBOX/2."), []byte("x"), 0o600))
	must(t, unix.Unlink(dir+"/2."))
	recs = e.Rec.Records()
	if r := recs[len(recs)-1]; r.Op != journal.OpUnlink {
		t.Fatalf("last record %s, want unlink", recString(r))
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(dfd)
	must(t, unix.Fsync(dfd))
	if synced, _ := e.Rec.Synced(); synced < recs[len(recs)-1].LSN {
		t.Errorf("fsync(dir) returned with synced %d < %d", synced, recs[len(recs)-1].LSN)
	}
	// fsync of a read-only fd of an untouched file works and needs no sync.
	rfd, err := unix.Open(dir+"/cyrus.index", unix.O_RDONLY, 0)
	must(t, err)
	must(t, unix.Fsync(rfd))
	unix.Close(rfd)
}

// TestJournalFailureIsEIO: a failing journal turns the write into EIO.
func TestJournalFailureIsEIO(t *testing.T) {
	e := masterEnv(t)
	p := filepath.Join(e.Mnt, "acct/a/INBOX/cyrus.cache")
	must(t, os.WriteFile(p, []byte("x"), 0o600))
	e.Rec.SetErr(fmt.Errorf("disk full"))
	err := os.WriteFile(p, []byte("y"), 0o600)
	if !errorsIs(err, syscall.EIO) {
		t.Errorf("got %v, want EIO", err)
	}
}

func errorsIs(err error, target error) bool {
	for err != nil {
		if err == target {
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// TestRenameOverOpenLockedFile: the quota pattern — the live file is open
// and write-locked while X.NEW is renamed over it.
func TestRenameOverOpenLockedFile(t *testing.T) {
	e := masterEnv(t)
	dir := filepath.Join(e.Mnt, "acct/a")
	must(t, os.WriteFile(dir+"/quota", []byte("old"), 0o600))
	fd, err := unix.Open(dir+"/quota", unix.O_RDWR, 0)
	must(t, err)
	defer unix.Close(fd)
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	must(t, unix.FcntlFlock(uintptr(fd), unix.F_SETLKW, &lk))
	must(t, os.WriteFile(dir+"/quota.NEW", []byte("new quota"), 0o600))
	must(t, unix.Rename(dir+"/quota.NEW", dir+"/quota"))
	buf := make([]byte, 16)
	n, err := unix.Pread(fd, buf, 0)
	must(t, err)
	if got := string(buf[:n]); got != "old" {
		t.Errorf("old fd reads %q, want old", got)
	}
	b, err := os.ReadFile(dir + "/quota")
	must(t, err)
	if string(b) != "new quota" {
		t.Errorf("new open reads %q", b)
	}
	recs := e.Rec.Records()
	last := recs[len(recs)-1]
	if got, want := recString(last), `replace acct/a/quota "new quota" prev=3`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestUnlinkOpenFile: writes through an fd of an unlinked file work and
// are not journaled (the file has no name any more).
func TestUnlinkOpenFile(t *testing.T) {
	e := masterEnv(t)
	p := filepath.Join(e.Mnt, "acct/a/INBOX/cyrus.header")
	must(t, os.WriteFile(p, []byte("hdr"), 0o600))
	fd, err := unix.Open(p, unix.O_RDWR, 0)
	must(t, err)
	defer unix.Close(fd)
	must(t, unix.Unlink(p))
	n0 := len(e.Rec.Records())
	_, err = unix.Pwrite(fd, []byte("more"), 3)
	must(t, err)
	must(t, unix.Fsync(fd))
	must(t, unix.Ftruncate(fd, 2))
	if got := fstatNlink(t, fd); got != 0 {
		t.Errorf("nlink %d, want 0", got)
	}
	if got := len(e.Rec.Records()); got != n0 {
		t.Errorf("%d records for an unlinked file, want none", got-n0)
	}
	if _, err := os.Stat(filepath.Join(e.Backing, "acct/a/INBOX/cyrus.header")); !os.IsNotExist(err) {
		t.Errorf("backing still has the name: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(e.Backing, "acct/a/INBOX"))
	for _, de := range ents {
		if strings.HasPrefix(de.Name(), ".fuse_hidden") {
			t.Errorf("hidden file %s left in backing", de.Name())
		}
	}
}

// TestMmapCoherence: a PROT_READ MAP_SHARED reader (another process, as
// in Cyrus) sees a write() at once (no stale page cache, no direct_io).
func TestMmapCoherence(t *testing.T) {
	e := masterEnv(t)
	p := filepath.Join(e.Mnt, "acct/a/INBOX/cyrus.index")
	must(t, os.WriteFile(p, bytes.Repeat([]byte("a"), 8192), 0o600))
	r := startMmapReader(t, p, 8192)
	if got := r.read(t, 100, 3); got != "aaa" {
		t.Fatalf("mapped %q", got)
	}
	wfd, err := unix.Open(p, unix.O_RDWR, 0)
	must(t, err)
	defer unix.Close(wfd)
	_, err = unix.Pwrite(wfd, []byte("XYZ"), 100)
	must(t, err)
	if got := r.read(t, 100, 3); got != "XYZ" {
		t.Errorf("mmap reader sees %q after write(), want XYZ", got)
	}
}

// TestFcntlLocksBetweenProcesses: whole-file and byte-range fcntl locks
// between two processes; a second fd of the same process does not
// conflict (POSIX semantics, EnableLocks off).
func TestFcntlLocksBetweenProcesses(t *testing.T) {
	e := masterEnv(t)
	p := filepath.Join(e.Mnt, "acct/a/INBOX/cyrus.index")
	must(t, os.WriteFile(p, make([]byte, 200), 0o600))
	for _, tc := range []struct {
		name       string
		start, len int64
	}{{"whole", 0, 0}, {"range", 100, 10}} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "MREPLFS_LOCK_HELPER="+p, fmt.Sprintf("MREPLFS_LOCK_RANGE=%d:%d", tc.start, tc.len))
			stdin, err := cmd.StdinPipe()
			must(t, err)
			stdout, err := cmd.StdoutPipe()
			must(t, err)
			must(t, cmd.Start())
			defer cmd.Wait()
			defer stdin.Close()
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "locked") {
				t.Fatalf("helper: %q %v", line, err)
			}
			fd, err := unix.Open(p, unix.O_RDWR, 0)
			must(t, err)
			defer unix.Close(fd)
			lk := unix.Flock_t{Type: unix.F_WRLCK, Start: tc.start, Len: tc.len}
			if err := unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk); err != unix.EAGAIN && err != unix.EACCES {
				t.Fatalf("F_SETLK while the helper holds the lock: got %v, want EAGAIN", err)
			}
			get := unix.Flock_t{Type: unix.F_WRLCK, Start: tc.start, Len: tc.len}
			must(t, unix.FcntlFlock(uintptr(fd), unix.F_GETLK, &get))
			if get.Pid != int32(cmd.Process.Pid) {
				t.Errorf("F_GETLK pid %d, want the helper's %d", get.Pid, cmd.Process.Pid)
			}
			if tc.len != 0 {
				other := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 50}
				must(t, unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &other))
			}
			done := make(chan error, 1)
			go func() {
				lk := unix.Flock_t{Type: unix.F_WRLCK, Start: tc.start, Len: tc.len}
				done <- unix.FcntlFlock(uintptr(fd), unix.F_SETLKW, &lk)
			}()
			select {
			case err := <-done:
				t.Fatalf("F_SETLKW returned %v while the helper holds the lock", err)
			case <-time.After(200 * time.Millisecond):
			}
			stdin.Close()
			if err := <-done; err != nil {
				t.Fatalf("F_SETLKW after the helper released: %v", err)
			}
			// Same process, second fd: no conflict under POSIX semantics.
			fd2, err := unix.Open(p, unix.O_RDWR, 0)
			must(t, err)
			defer unix.Close(fd2)
			lk2 := unix.Flock_t{Type: unix.F_WRLCK, Start: tc.start, Len: tc.len}
			if err := unix.FcntlFlock(uintptr(fd2), unix.F_SETLK, &lk2); err != nil {
				t.Errorf("second fd of the same process: %v, want no conflict", err)
			}
		})
	}
}

// lockHelper is the subprocess of TestFcntlLocksBetweenProcesses (started
// by TestMain when MREPLFS_LOCK_HELPER is set): it locks the range, says
// "locked" and holds the lock until its stdin closes.
func lockHelper(p string) {
	var start, l int64
	fmt.Sscanf(os.Getenv("MREPLFS_LOCK_RANGE"), "%d:%d", &start, &l)
	fd, err := unix.Open(p, unix.O_RDWR, 0)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: start, Len: l}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_SETLKW, &lk); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	buf := make([]byte, 1)
	os.Stdin.Read(buf)
	os.Exit(0)
}

// mmapHelper maps p (PROT_READ, MAP_SHARED) and answers each stdin line
// "OFF LEN" with the mapped bytes, quoted. Mapped FUSE memory is never
// touched by the test process itself: a page fault there needs the
// in-process FUSE server, and a garbage-collector stop-the-world waiting for
// the faulting thread would deadlock it (FUSE.md G13).
func mmapHelper(p string) {
	var size int
	fmt.Sscanf(os.Getenv("MREPLFS_MMAP_SIZE"), "%d", &size)
	fd, err := unix.Open(p, unix.O_RDONLY, 0)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	m, err := unix.Mmap(fd, 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("mapped")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var off, n int
		fmt.Sscanf(sc.Text(), "%d %d", &off, &n)
		fmt.Printf("%q\n", m[off:off+n])
	}
	os.Exit(0)
}

// mmapReader is a subprocess holding a shared read-only mapping of a file.
type mmapReader struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startMmapReader(t *testing.T, p string, size int) *mmapReader {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MREPLFS_MMAP_HELPER="+p, fmt.Sprintf("MREPLFS_MMAP_SIZE=%d", size))
	in, err := cmd.StdinPipe()
	must(t, err)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	r := &mmapReader{cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	if line, err := r.out.ReadString('\n'); err != nil || line != "mapped\n" {
		t.Fatalf("mmap helper: %q %v", line, err)
	}
	return r
}

// read returns the mapped bytes [off, off+n).
func (r *mmapReader) read(t *testing.T, off, n int) string {
	t.Helper()
	fmt.Fprintf(r.in, "%d %d\n", off, n)
	line, err := r.out.ReadString('\n')
	must(t, err)
	s, err := strconv.Unquote(strings.TrimSpace(line))
	must(t, err)
	return s
}

func TestMain(m *testing.M) {
	if p := os.Getenv("MREPLFS_LOCK_HELPER"); p != "" {
		lockHelper(p)
	}
	if p := os.Getenv("MREPLFS_MMAP_HELPER"); p != "" {
		mmapHelper(p)
	}
	os.Exit(m.Run())
}

// TestSocketStatfsXattrExcl: AF_UNIX bind + chmod in the tree (Cyrus's
// conf/socket/idle.<pid>), statfs, xattrs, O_EXCL race, lazy mkdir.
func TestSocketStatfsXattrExcl(t *testing.T) {
	e := masterEnv(t)
	must(t, os.MkdirAll(filepath.Join(e.Backing, "socket"), 0o755))
	sock := filepath.Join(e.Mnt, "socket/idle.123")
	l, err := net.Listen("unix", sock)
	must(t, err)
	defer l.Close()
	must(t, os.Chmod(sock, 0o777))
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", sock)
	must(t, err)
	buf := make([]byte, 2)
	_, err = c.Read(buf)
	must(t, err)
	c.Close()
	if string(buf) != "hi" {
		t.Errorf("socket read %q", buf)
	}

	var sm, sb unix.Statfs_t
	must(t, unix.Statfs(e.Mnt, &sm))
	must(t, unix.Statfs(e.Backing, &sb))
	if sm.Blocks != sb.Blocks || sm.Bsize != sb.Bsize {
		t.Errorf("statfs: mount blocks %d bsize %d, backing %d %d", sm.Blocks, sm.Bsize, sb.Blocks, sb.Bsize)
	}

	p := filepath.Join(e.Mnt, "acct/a/INBOX/cyrus.annotations")
	must(t, os.WriteFile(p, nil, 0o600))
	must(t, unix.Setxattr(p, "user.test", []byte("v1"), 0))
	if err := unix.Setxattr(p, "user.test", []byte("v2"), unix.XATTR_CREATE); err != unix.EEXIST {
		t.Errorf("XATTR_CREATE on existing: %v, want EEXIST", err)
	}
	vb := make([]byte, 16)
	n, err := unix.Getxattr(filepath.Join(e.Backing, "acct/a/INBOX/cyrus.annotations"), "user.test", vb)
	must(t, err)
	if string(vb[:n]) != "v1" {
		t.Errorf("backing xattr %q", vb[:n])
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fd, err := unix.Open(filepath.Join(e.Mnt, "acct/a/INBOX/excl"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o600)
			if err == nil {
				unix.Close(fd)
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("O_EXCL race: %d winners, want 1", wins)
	}

	// Lazy mkdir: link fails with ENOENT, mkdir, retry.
	stage := filepath.Join(e.Mnt, "stage./9-9-9")
	must(t, os.WriteFile(stage, []byte("m"), 0o600))
	dst := filepath.Join(e.Mnt, "acct/b/Sent/1.")
	if err := unix.Link(stage, dst); err != unix.ENOENT {
		t.Fatalf("link into a missing dir: %v, want ENOENT", err)
	}
	must(t, unix.Mkdir(filepath.Dir(dst), 0o700))
	must(t, unix.Link(stage, dst))
}

// TestPendingMailbox: a new uuid-style mailbox dir is writable before its
// cyrus.header exists, journaled under "pending:<id>", then attributed to
// the owner named by the header.
func TestPendingMailbox(t *testing.T) {
	e := mounttest.Mount(t, mounttest.Options{})
	e.Roles.Set("alice", rolemap.Master)
	e.Roles.Set("rob", rolemap.Replica)
	must(t, os.MkdirAll(filepath.Join(e.Backing, "pend"), 0o755))
	dir := filepath.Join(e.Mnt, "pend/id1")
	must(t, unix.Mkdir(dir, 0o700))
	must(t, os.WriteFile(dir+"/cyrus.index", make([]byte, 160), 0o600))
	must(t, os.WriteFile(dir+"/cyrus.header.NEW", []byte("owner=alice\n"), 0o600))
	must(t, unix.Rename(dir+"/cyrus.header.NEW", dir+"/cyrus.header"))
	f, err := os.OpenFile(dir+"/cyrus.index", os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt([]byte("R"), 160)
	must(t, err)
	f.Close()
	var got []string
	for _, r := range e.Rec.Records() {
		got = append(got, r.Account+": "+recString(r))
	}
	want := []string{
		"pending:id1: mkdir pend/id1",
		"pending:id1: create pend/id1/cyrus.index",
		`pending:id1: write pend/id1/cyrus.index @0 "` + strings.Repeat(`\x00`, 160) + `" prev=0`,
		`alice: replace pend/id1/cyrus.header "owner=alice\n" prev=-1`,
		`alice: write pend/id1/cyrus.index @160 "R" prev=160`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("records:\ngot  %q\nwant %q", got, want)
	}

	// A pending mailbox that turns out to be a replica account's: the
	// header is journaled for nobody and later writes are refused.
	e.Rec.Reset()
	dir2 := filepath.Join(e.Mnt, "pend/id2")
	must(t, unix.Mkdir(dir2, 0o700))
	must(t, os.WriteFile(dir2+"/cyrus.header.NEW", []byte("owner=rob\n"), 0o600))
	must(t, unix.Rename(dir2+"/cyrus.header.NEW", dir2+"/cyrus.header"))
	if err := os.WriteFile(dir2+"/cyrus.index", nil, 0o600); !errorsIs(err, syscall.EROFS) {
		t.Errorf("write into a mailbox now known as a replica's: %v, want EROFS", err)
	}
	for _, r := range e.Rec.Records() {
		if r.Account == "rob" {
			t.Errorf("record for replica account: %s", recString(r))
		}
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/fs"
	"mreplfs/fs/mounttest"
	"mreplfs/journal"
)

func TestMountConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "mreplfs.conf")
	os.WriteFile(conf, []byte("# comment\ntree: conf=/b/conf:/m/conf\ntree: spool=/b/spool:/m/spool\nroles: /r.cdb\njournal: /j\nentry_timeout: 5s\n"), 0o644)
	file, err := readMountConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	c, err := buildMountConfig(file, map[string][]string{"entry_timeout": {"2s"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.trees) != 2 || c.trees[1] != (treeSpec{"spool", "/b/spool", "/m/spool"}) {
		t.Errorf("trees %+v", c.trees)
	}
	if c.entryTimeout != 2*time.Second || c.attrTimeout != time.Second || !c.allowOther || c.control != "/j/control.sock" {
		t.Errorf("config %+v", c)
	}

	bad := []struct {
		file, want string
	}{
		{"tree x\n", "want 'key: value'"},
		{"nosuch: 1\n", "unknown setting"},
	}
	for _, b := range bad {
		os.WriteFile(conf, []byte(b.file), 0o644)
		if _, err := readMountConfig(conf); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("config %q: got %v, want %q", b.file, err, b.want)
		}
	}
	for _, tc := range []struct {
		flags map[string][]string
		want  string
	}{
		{map[string][]string{}, "no tree"},
		{map[string][]string{"tree": {"x"}}, "NAME=BACKING:MOUNTPOINT"},
		{map[string][]string{"tree": {"a=b:c"}}, "no role map"},
		{map[string][]string{"tree": {"a=b:c"}, "roles": {"r"}}, "no journal"},
		{map[string][]string{"tree": {"a=b:c"}, "roles_all": {"replica"}, "journal": {"none"}}, "not master or local"},
		{map[string][]string{"tree": {"a=b:c"}, "roles": {"r"}, "journal": {"j"}, "attr_timeout": {"-1s"}}, "positive duration"},
		{map[string][]string{"tree": {"a=b:c"}, "roles": {"r"}, "journal": {"j"}, "allow_other": {"maybe"}}, "yes or no"},
	} {
		if _, err := buildMountConfig(nil, tc.flags); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.flags, err, tc.want)
		}
	}

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"mount", "-h"}, nil, &stdout, &stderr); code != ExitOK {
		t.Errorf("mount -h: exit %d", code)
	}
	for _, s := range mountSettings {
		if !strings.Contains(stderr.String(), s.key) {
			t.Errorf("mount -h does not list %q:\n%s", s.key, stderr.String())
		}
	}
	stderr.Reset()
	if code := run(context.Background(), []string{"mount", "-tree", "a=b:c"}, nil, &stdout, &stderr); code != ExitUsage ||
		!strings.Contains(stderr.String(), "Try:") {
		t.Errorf("mount without roles: exit %d, %q", code, stderr.String())
	}
}

// mountArgs returns args for a one-tree "conf" mount with a journal, and
// the backing, mount point and journal dirs.
func mountArgs(t *testing.T) (args []string, backing, mnt, jdir string) {
	dir := t.TempDir()
	backing, mnt, jdir = filepath.Join(dir, "b"), filepath.Join(dir, "m"), filepath.Join(dir, "j")
	for _, d := range []string{backing, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(backing, "quota/a"), 0o755)
	return []string{"mount", "-tree", "conf=" + backing + ":" + mnt, "-roles-all", "master", "-journal", jdir}, backing, mnt, jdir
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func isMounted(t *testing.T, dir string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == dir {
			return true
		}
	}
	return false
}

// TestMountLifecycle runs "mreplfs mount" in-process twice: readiness on a
// pipe, a journaled write, control socket, clean unmount on cancel (the
// signal path), and no goroutine or descriptor left behind.
func TestMountLifecycle(t *testing.T) {
	mounttest.RequireRoot(t)
	fds0, gor0 := openFDs(t), runtime.NumGoroutine()
	for round := range 2 {
		args, backing, mnt, jdir := mountArgs(t)
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		// mount closes the ready fd: give it its own descriptor.
		rfd, err := unix.Dup(int(pw.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		pw.Close()
		args = append(args, "-ready-fd", fmt.Sprint(rfd))
		ctx, cancel := context.WithCancel(context.Background())
		var stderr bytes.Buffer
		done := make(chan int, 1)
		go func() { done <- run(ctx, args, nil, &bytes.Buffer{}, &stderr) }()
		line := make([]byte, 6)
		pr.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := pr.Read(line); err != nil || string(line) != "ready\n" {
			cancel()
			t.Fatalf("round %d: readiness %q %v; stderr:\n%s", round, line, err, stderr.String())
		}
		pr.Close()
		if !isMounted(t, mnt) {
			t.Fatalf("not mounted after ready")
		}
		q := filepath.Join(mnt, "quota/a/user.alice")
		if err := os.WriteFile(q+".NEW", []byte("%(S (1 2))\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(q+".NEW", q); err != nil {
			t.Fatal(err)
		}
		rep, err := fs.ControlCall(ctx, filepath.Join(jdir, "control.sock"), fs.ControlRequest{Cmd: "status"})
		if err != nil || !rep.OK || len(rep.Status.Trees) != 1 {
			t.Errorf("status: %+v %v", rep, err)
		}
		var out, serr bytes.Buffer
		if code := run(ctx, []string{"status", "-control", filepath.Join(jdir, "control.sock")}, nil, &out, &serr); code != ExitOK ||
			!strings.Contains(out.String(), mnt) {
			t.Errorf("mreplfs status: exit %d, %q %q", code, out.String(), serr.String())
		}
		out.Reset()
		if code := run(ctx, []string{"status", "-control", filepath.Join(jdir, "control.sock"), "-forget-account", "alice"}, nil, &out, &serr); code != ExitOK {
			t.Errorf("mreplfs status -forget-account: exit %d, %q", code, serr.String())
		}
		if code := run(ctx, []string{"status", "-control", filepath.Join(jdir, "control.sock"), "-reload"}, nil, &out, &serr); code != ExitFailure ||
			!strings.Contains(serr.String(), "no reloadable role map") {
			t.Errorf("mreplfs status -reload with roles_all: exit %d, %q", code, serr.String())
		}
		cancel()
		select {
		case code := <-done:
			if code != ExitOK {
				t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("mount did not stop on cancel")
		}
		if isMounted(t, mnt) {
			t.Errorf("still mounted after stop")
		}
		b, _ := os.ReadFile(filepath.Join(backing, "quota/a/user.alice"))
		if string(b) != "%(S (1 2))\n" {
			t.Errorf("backing %q", b)
		}
		// The record reached the real journal.
		lg, err := journal.Open(jdir, journal.Options{})
		if err != nil {
			t.Fatal(err)
		}
		rd, err := lg.NewReader(1)
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := rd.Next(rctx)
		rcancel()
		rd.Close()
		lg.Close()
		if err != nil {
			t.Fatalf("journal read: %v", err)
		}
		if r.Op != journal.OpReplace || r.Account != "alice" || r.Tree != "conf" || r.Path != "quota/a/user.alice" || string(r.Data) != "%(S (1 2))\n" {
			t.Errorf("journal record %+v", r)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > gor0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > gor0 {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Errorf("goroutines: %d before, %d after\n%s", gor0, g, buf[:n])
	}
	if f := openFDs(t); f != fds0 {
		t.Errorf("open fds: %d before, %d after", fds0, f)
	}
}

// TestMountHelperProcess is not a test: it is "mreplfs mount" run as a
// subprocess by TestMountSignals and TestMountStale.
func TestMountHelperProcess(t *testing.T) {
	if os.Getenv("MREPLFS_MOUNT_HELPER") != "1" {
		return
	}
	args := strings.Split(os.Getenv("MREPLFS_MOUNT_ARGS"), "\x1f")
	ctx, stop := signalContext()
	code := run(ctx, args, nil, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// startMountProcess starts "mreplfs mount args" as a subprocess and waits
// for its readiness line.
func startMountProcess(t *testing.T, args []string) *exec.Cmd {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMountHelperProcess$")
	cmd.Env = append(os.Environ(), "MREPLFS_MOUNT_HELPER=1",
		"MREPLFS_MOUNT_ARGS="+strings.Join(append(args, "-ready-fd", "3"), "\x1f"))
	cmd.ExtraFiles = []*os.File{pw}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	line := make([]byte, 6)
	pr.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = pr.Read(line)
	pr.Close()
	if string(line) != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("subprocess not ready: %q %v\n%s", line, err, stderr.String())
	}
	return cmd
}

// TestMountSignals: SIGTERM and SIGINT unmount cleanly and exit 0.
func TestMountSignals(t *testing.T) {
	mounttest.RequireRoot(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		args, _, mnt, _ := mountArgs(t)
		cmd := startMountProcess(t, args)
		if !isMounted(t, mnt) {
			t.Fatalf("not mounted")
		}
		cmd.Process.Signal(sig)
		err := cmd.Wait()
		if err != nil {
			t.Errorf("%v: exit %v", sig, err)
		}
		if isMounted(t, mnt) {
			t.Errorf("%v: still mounted", sig)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	}
}

// TestMountStale: a mount point left by a killed daemon (ENOTCONN) or still
// mounted gives exit code 4 and the command to fix it.
func TestMountStale(t *testing.T) {
	mounttest.RequireRoot(t)
	args, _, mnt, _ := mountArgs(t)
	cmd := startMountProcess(t, args)
	t.Cleanup(func() {
		if isMounted(t, mnt) {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})

	// Live mount: busy.
	args2, _, _, _ := mountArgs(t)
	args2[2] = strings.Replace(args2[2], args2[2][strings.Index(args2[2], ":")+1:], mnt, 1)
	var stderr bytes.Buffer
	code := run(context.Background(), args2, nil, &bytes.Buffer{}, &stderr)
	if code != ExitMount || !strings.Contains(stderr.String(), "umount -l "+mnt) {
		t.Errorf("busy mount point: exit %d, %q", code, stderr.String())
	}

	cmd.Process.Kill()
	cmd.Wait()
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after kill -9: statfs %v, want ENOTCONN", err)
	}
	stderr.Reset()
	code = run(context.Background(), args2, nil, &bytes.Buffer{}, &stderr)
	if code != ExitMount || !strings.Contains(stderr.String(), "umount -l "+mnt) || !strings.Contains(stderr.String(), "stale") {
		t.Errorf("stale mount point: exit %d, %q", code, stderr.String())
	}
	if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
		t.Fatalf("umount -l: %v", err)
	}
	// After the fix, mounting works again.
	cmd = startMountProcess(t, args2[:len(args2)])
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("remount after fix: %v", err)
	}
}

// TestMountRoles: a mount with a real CDB role map: master alice is
// journaled, replica bob refused, and a rebuilt map is picked up by
// "status -reload".
func TestMountRoles(t *testing.T) {
	mounttest.RequireRoot(t)
	args, backing, mnt, jdir := mountArgs(t)
	dir := filepath.Dir(backing)
	src, cdb := filepath.Join(dir, "roles.txt"), filepath.Join(dir, "roles.cdb")
	build := func(text string) {
		t.Helper()
		os.WriteFile(src, []byte(text), 0o644)
		var serr bytes.Buffer
		if code := run(context.Background(), []string{"rolemap", "build", src, cdb}, nil, &bytes.Buffer{}, &serr); code != 0 {
			t.Fatalf("rolemap build: %d %s", code, serr.String())
		}
	}
	build("alice master peer:1 1\nbob replica peer:1 1\n")
	args[3], args[4] = "-roles", cdb
	args = append(args, "-control", filepath.Join(dir, "ctl.sock"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := startMountProcess(t, args)
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("mount exit: %v", err)
		}
	}()
	write := func(user string) error {
		return os.WriteFile(filepath.Join(mnt, "quota/a", "user."+user), []byte("q\n"), 0o600)
	}
	if err := write("alice"); err != nil {
		t.Errorf("master alice: %v", err)
	}
	if err := write("bob"); !errors.Is(err, syscall.EROFS) {
		t.Errorf("replica bob: %v, want EROFS", err)
	}
	build("alice master peer:1 1\nbob master peer:1 2\n")
	var serr bytes.Buffer
	if code := run(ctx, []string{"status", "-control", filepath.Join(dir, "ctl.sock"), "-reload"}, nil, &bytes.Buffer{}, &serr); code != 0 {
		t.Fatalf("status -reload: %d %s", code, serr.String())
	}
	if err := write("bob"); err != nil {
		t.Errorf("bob after promotion to master: %v", err)
	}
	_ = jdir
}

// TestMountNotifyPID: -notify-pid gets SIGUSR1 once the mount is ready.
func TestMountNotifyPID(t *testing.T) {
	mounttest.RequireRoot(t)
	args, _, mnt, _ := mountArgs(t)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, append(args, "-notify-pid", fmt.Sprint(os.Getpid())), nil, &bytes.Buffer{}, &stderr)
	}()
	select {
	case <-usr1:
	case code := <-done:
		cancel()
		t.Fatalf("mount exited %d before notifying: %s", code, stderr.String())
	case <-time.After(20 * time.Second):
		cancel()
		<-done
		t.Fatalf("no SIGUSR1; stderr:\n%s", stderr.String())
	}
	if !isMounted(t, mnt) {
		t.Errorf("SIGUSR1 before the mount was up")
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
}

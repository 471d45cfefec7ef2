package fs_test

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"mreplfs/fs"
	"mreplfs/fs/mounttest"
	"mreplfs/rolemap"
)

// TestUnmountWithCopyInOtherNamespace: a process that unshares its mount
// namespace while we are mounted holds a copy of our mount, and the kernel
// keeps the FUSE connection after our unmount. Unmount must still end (it
// aborts the connection) instead of waiting forever for the serve loop.
func TestUnmountWithCopyInOtherNamespace(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("unshare (util-linux) is needed")
		}
		t.Skip("no unshare")
	}
	dir := t.TempDir()
	f, err := fs.New(fs.Options{Roles: mounttest.AllRoles(rolemap.Master), Classifier: mounttest.NewClassifier(), Logger: mounttest.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	mounttest.RequireRoot(t)
	for _, d := range []string{dir + "/b", dir + "/m"} {
		must(t, os.Mkdir(d, 0o755))
	}
	tr, err := f.Mount("spool", dir+"/b", dir+"/m")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mi, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/mountinfo")
		if strings.Contains(string(mi), dir+"/m") && strings.Contains(cmdComm(cmd.Process.Pid), "sleep") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the unshared process never showed a copy of the mount")
		}
	}
	done := make(chan error, 1)
	go func() { done <- tr.Unmount() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("unmount: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Unmount still waiting after 60 s: the copy in the other namespace holds the connection")
	}
}

func cmdComm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return string(b)
}

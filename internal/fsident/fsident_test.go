package fsident

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mreplfs/internal/testroot"
)

func owner(t *testing.T, p string) (uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// TestAsBornOwned: what fn makes is the identity's from its birth (no chown
// anywhere), and the goroutine is root again afterwards.
func TestAsBornOwned(t *testing.T) {
	testroot.Require(t)
	base := t.TempDir()
	os.Chmod(filepath.Dir(base), 0o755)
	os.Chmod(base, 0o777)
	d := filepath.Join(base, "d")
	if err := As(1234, 5678, func() error { return os.Mkdir(d, 0o700) }); err != nil {
		t.Fatal(err)
	}
	// a root-owned 0700 directory would refuse uid 1234 here
	f := filepath.Join(d, "f")
	if err := As(1234, 5678, func() error { return os.WriteFile(f, nil, 0o600) }); err != nil {
		t.Fatalf("the owner cannot create in its new directory: %v", err)
	}
	for _, p := range []string{d, f} {
		if u, g := owner(t, p); u != 1234 || g != 5678 {
			t.Errorf("%s owned by %d:%d, want 1234:5678", p, u, g)
		}
	}
	after := filepath.Join(base, "after")
	if err := os.WriteFile(after, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if u, g := owner(t, after); u != 0 || g != 0 {
		t.Errorf("a file made after As is owned by %d:%d, want root", u, g)
	}
}

// TestAsKeepsTheCallersError: fn's error comes back as it is, and the
// identity is restored after it too.
func TestAsKeepsTheCallersError(t *testing.T) {
	testroot.Require(t)
	base := t.TempDir() // 0700 root: uid 1234 may not enter it
	err := As(1234, 5678, func() error { return os.Mkdir(filepath.Join(base, "x"), 0o700) })
	if !os.IsPermission(err) {
		t.Fatalf("mkdir in root's 0700 directory as 1234: %v, want permission denied", err)
	}
	if err := os.Mkdir(filepath.Join(base, "y"), 0o700); err != nil {
		t.Fatalf("root afterwards: %v", err)
	}
}

// TestAsRestoresEveryThread: after many concurrent As calls, one of which
// panics, no thread of the process keeps another file system identity.
func TestAsRestoresEveryThread(t *testing.T) {
	testroot.Require(t)
	var wg sync.WaitGroup
	hold := make(chan struct{}) // the goroutines live on, as a FUSE request loop does
	defer close(hold)
	for i := range 50 {
		wg.Add(1)
		go func() {
			func() {
				defer func() { recover() }()
				As(1000+i, 2000+i, func() error {
					if i == 7 {
						panic("in fn")
					}
					time.Sleep(time.Millisecond)
					return nil
				})
			}()
			wg.Done()
			<-hold
		}()
	}
	wg.Wait()
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads: %v %v", tasks, err)
	}
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended
		}
		for _, l := range strings.Split(string(b), "\n") {
			// Uid: real effective saved fs
			if f := strings.Fields(l); len(f) == 5 && (f[0] == "Uid:" || f[0] == "Gid:") && f[4] != "0" {
				t.Errorf("%s: %s", p, l)
			}
		}
	}
}

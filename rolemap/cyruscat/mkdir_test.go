package cyruscat

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"mreplfs/internal/testroot"
)

// TestMkdirOwned: every directory mkdirOwned makes is the owner's (born so:
// see package fsident's tests), and the caller is root again afterwards.
func TestMkdirOwned(t *testing.T) {
	testroot.Require(t)
	base := t.TempDir()
	os.Chmod(filepath.Dir(base), 0o755) // the owner must reach base
	os.Chmod(base, 0o777)
	dir := filepath.Join(base, "user", "h")
	if err := mkdirOwned(dir, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(dir), dir} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("%s owned by %d:%d, want 1234:5678", d, st.Uid, st.Gid)
		}
	}
	f := filepath.Join(base, "after")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(f); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("a file made after mkdirOwned is owned by %d, want root", fi.Sys().(*syscall.Stat_t).Uid)
	}
}

package cyruscat

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestMkdirOwnedNeverRootOwned: the directories are made with the owner's
// identity (not made by root, then chowned: Cyrus could meet them in
// between), and the calling thread gets its identity back.
func TestMkdirOwnedNeverRootOwned(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root, and CI runs as root")
		}
		t.Skip("needs root")
	}
	base := t.TempDir()
	os.Chmod(filepath.Dir(base), 0o755) // the owner must reach base
	os.Chmod(base, 0o777)
	dir := filepath.Join(base, "user", "h")
	if err := mkdirOwned(filepath.Dir(dir), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	// No chown after it: the directory is born the owner's.
	if err := mkdirAs(dir, 0o750, 1234, 5678); err != nil {
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
	// Still root afterwards: a file made now is root's.
	f := filepath.Join(base, "after")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(f); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("a file made after mkdirOwned is owned by %d, want root", fi.Sys().(*syscall.Stat_t).Uid)
	}
}

package peer

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"mreplfs/internal/testroot"
)

// TestMkdirAllOwnedLikeParent: the structure directories the receiver makes
// (meta/u/DELETED/user, which the local Cyrus makes too) belong to their
// parent's owner, made with that identity (package fsident), so the local
// Cyrus never meets one owned by root.
func TestMkdirAllOwnedLikeParent(t *testing.T) {
	testroot.Require(t)
	root := t.TempDir()
	if err := os.Chown(root, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(root), 0o755)
	tr, err := openTree("meta", root)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	if err := tr.mkdirAll("u/DELETED/user"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"u", "u/DELETED", "u/DELETED/user"} {
		fi, err := os.Stat(filepath.Join(root, d))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 1234 || st.Gid != 5678 || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %d:%d %v, want 1234:5678 0700", d, st.Uid, st.Gid, fi.Mode().Perm())
		}
	}
	// The caller is root again afterwards.
	f := filepath.Join(root, "u/DELETED/user/bob")
	if err := os.Mkdir(f, 0o700); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(f); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the caller is not root after mkdirAll")
	}
}

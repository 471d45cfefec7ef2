package durable

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"mreplfs/internal/testroot"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state")
	for _, s := range []string{"one", "two, longer"} {
		if err := WriteFile(p, []byte(s)); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != s {
			t.Fatalf("read back %q, %v; want %q", b, err, s)
		}
	}
	if _, err := os.Stat(p + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
	// A directory that does not exist: an error, nothing written.
	if err := WriteFile(filepath.Join(dir, "missing", "state"), []byte("x")); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	if err := SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("SyncDir of a missing directory succeeded")
	}
}

// TestReplace: a named temporary file, and the owner set before the rename.
func TestReplace(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "sidecar")
	if err := Replace(p, p+".NEW", []byte("x"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("owner %d:%d, want 1234:5678", st.Uid, st.Gid)
	}
	if _, err := os.Stat(p + ".NEW"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

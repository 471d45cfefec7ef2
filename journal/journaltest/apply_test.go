package journaltest

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"mreplfs/journal"
)

func TestApplyToDir(t *testing.T) {
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "spool"), 0o700)
	body := []byte("From: a\r\n\r\nhi\r\n")
	h := [32]byte{7}
	blobs := func(hash [32]byte) (io.ReadCloser, error) {
		if hash != h {
			t.Fatalf("asked for blob %x", hash)
		}
		return io.NopCloser(bytes.NewReader(body)), nil
	}
	for _, r := range []journal.Record{
		{Op: journal.OpMkdir, Tree: "spool", Path: "u", Mode: 0o40750},
		{Op: journal.OpMessage, Tree: "spool", Path: "u/1.", Hash: h, Size: int64(len(body)), Mode: 0o100600},
		{Op: journal.OpLink, Tree: "spool", Path: "u/1.", NewPath: "u/2."},
		{Op: journal.OpCreate, Tree: "spool", Path: "u/idx", Mode: 0o100644},
		{Op: journal.OpWrite, Tree: "spool", Path: "u/idx", Offset: 3, Data: []byte("xyz")},
		{Op: journal.OpTruncate, Tree: "spool", Path: "u/idx", Size: 5},
		{Op: journal.OpSymlink, Tree: "spool", NewPath: "u/l", Data: []byte("1.")},
		{Op: journal.OpSetattr, Tree: "spool", Path: "u/idx", Flags: journal.SetMode, Mode: 0o600},
		{Op: journal.OpRename, Tree: "spool", Path: "u/idx", NewPath: "u/index"},
		{Op: journal.OpUnlink, Tree: "spool", Path: "u/1."},
		{Op: journal.OpCheckpoint},
	} {
		if err := ApplyToDir(root, r, blobs); err != nil {
			t.Fatal(err)
		}
	}
	want := t.TempDir()
	os.MkdirAll(filepath.Join(want, "spool", "u"), 0o750)
	os.Chmod(filepath.Join(want, "spool", "u"), 0o750)
	os.WriteFile(filepath.Join(want, "spool", "u", "2."), body, 0o600)
	os.WriteFile(filepath.Join(want, "spool", "u", "index"), []byte{0, 0, 0, 'x', 'y'}, 0o600)
	os.Symlink("1.", filepath.Join(want, "spool", "u", "l"))
	os.Chmod(filepath.Join(want, "spool"), 0o700)
	diffs, err := DiffTrees(root, want)
	if err != nil || len(diffs) > 0 {
		t.Fatalf("trees differ: %v %v", diffs, err)
	}
	if err := ApplyToDir(root, journal.Record{Op: journal.OpUnlink, Tree: "spool", Path: "../x"}, nil); err == nil {
		t.Fatal("a path leaving the root was applied")
	}
}

package journaltest

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// Segments returns the paths of dir's segment files in log order.
func Segments(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// LastSegment returns the path of dir's last segment.
func LastSegment(t testing.TB, dir string) string {
	t.Helper()
	s := Segments(t, dir)
	if len(s) == 0 {
		t.Fatalf("no segment in %s", dir)
	}
	return s[len(s)-1]
}

// CopyDir copies the regular files of src (not subdirectories) into a new
// temporary directory and returns it.
func CopyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Truncate cuts the file at off, as a crash in the middle of a write does.
func Truncate(t testing.TB, path string, off int64) {
	t.Helper()
	if err := os.Truncate(path, off); err != nil {
		t.Fatal(err)
	}
}

// FlipByte inverts the bits of the byte at off (bit rot).
func FlipByte(t testing.TB, path string, off int64) {
	t.Helper()
	edit(t, path, off, 1, func(b []byte) { b[0] ^= 0xff })
}

// ZeroRange writes n zero bytes at off (a sector the disk never wrote).
func ZeroRange(t testing.TB, path string, off, n int64) {
	t.Helper()
	edit(t, path, off, n, func(b []byte) { clear(b) })
}

// WriteAt overwrites bytes at off.
func WriteAt(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	edit(t, path, off, int64(len(b)), func(d []byte) { copy(d, b) })
}

func edit(t testing.TB, path string, off, n int64, f func([]byte)) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, n)
	if _, err := fh.ReadAt(b, off); err != nil {
		t.Fatal(fmt.Errorf("journaltest: read %s at %d: %w", path, off, err))
	}
	f(b)
	if _, err := fh.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

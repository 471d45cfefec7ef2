package cdb

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Open maps the CDB file at path read-only. The file is closed on return;
// the mapping lives until Close.
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cdb: %w", err)
	}
	defer f.Close()
	return OpenFile(f)
}

// OpenFile maps the open file f read-only. The caller may close f as soon as
// OpenFile returns; the mapping lives until the Reader's Close.
func OpenFile(f *os.File) (*Reader, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cdb: %w", err)
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cdb: %s: not a regular file", f.Name())
	}
	if size < HeaderSize {
		return nil, fmt.Errorf("%w: %s: %d bytes, shorter than the %d-byte header", ErrCorrupt, f.Name(), size, HeaderSize)
	}
	if size > MaxSize {
		return nil, fmt.Errorf("%w: %s: %d bytes, larger than the format's limit of %d", ErrCorrupt, f.Name(), size, int64(MaxSize))
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("cdb: mmap %s: %w", f.Name(), err)
	}
	r, err := NewReader(data)
	if err != nil {
		_ = unix.Munmap(data)
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	r.unmap = unix.Munmap
	return r, nil
}

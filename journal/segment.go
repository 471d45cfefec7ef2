package journal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

const (
	segSuffix  = ".seg"
	sectorSize = 512
)

func segName(first LSN) string { return fmt.Sprintf("%016x%s", uint64(first), segSuffix) }

// parseSegName returns the first LSN a segment file name announces.
func parseSegName(name string) (LSN, bool) {
	hex, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	v, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return 0, false
	}
	return LSN(v), true
}

// listSegments returns the segment names in dir in log order.
func listSegments(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("journal: list %s: %w", dir, err)
	}
	var names []string
	for _, e := range ents {
		if _, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// segScan reads the frames of one segment in order.
type segScan struct {
	f     *os.File
	br    *bufio.Reader
	name  string
	size  int64 // file size as last seen
	off   int64 // offset of the next frame
	first LSN
	next  LSN // LSN the next frame must carry
	hdr   [frameHeader]byte
	body  []byte
}

func openSegScan(dir, name string) (*segScan, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("journal: open segment: %w", err)
	}
	s := &segScan{f: f, br: bufio.NewReaderSize(f, 256<<10), name: name}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("journal: stat segment %s: %w", name, err)
	}
	s.size = fi.Size()
	h := make([]byte, segHeaderSize)
	if _, err := io.ReadFull(s.br, h); err != nil {
		f.Close()
		return nil, &CorruptError{Segment: name, Err: fmt.Errorf("short segment header: %w", errTorn)}
	}
	_, first, err := parseSegHeader(h)
	if err != nil && allZero(h) {
		err = fmt.Errorf("zeroed segment header: %w", errTorn)
	}
	if err != nil {
		f.Close()
		return nil, &CorruptError{Segment: name, Err: err}
	}
	if want, _ := parseSegName(name); want != first {
		f.Close()
		return nil, &CorruptError{Segment: name, Err: fmt.Errorf("%w: header says first LSN %d", ErrCorrupt, first)}
	}
	s.first, s.next, s.off = first, first, segHeaderSize
	return s, nil
}

func (s *segScan) Close() error { return s.f.Close() }

// refresh re-reads the file size (a tailing reader's segment grows).
func (s *segScan) refresh() {
	if fi, err := s.f.Stat(); err == nil {
		s.size = fi.Size()
	}
}

// nextRecord decodes the next frame into r. It returns io.EOF at a clean end
// of the segment, and a *CorruptError wrapping ErrCorrupt (damage) or
// io.ErrUnexpectedEOF (a torn write) otherwise. After an error the scan is
// positioned at the damaged frame (s.off).
func (s *segScan) nextRecord(r *Record) error {
	if s.size-s.off < frameHeader {
		s.refresh()
	}
	rem := s.size - s.off
	if rem == 0 {
		return io.EOF
	}
	if rem < frameHeader {
		return s.damage(errTorn, 0)
	}
	if _, err := io.ReadFull(s.br, s.hdr[:]); err != nil {
		return s.damage(fmt.Errorf("read: %w", err), 0)
	}
	f, err := parseFrameHeader(s.hdr[:])
	if err != nil {
		return s.damage(err, frameHeader)
	}
	if int64(f.n) > rem-frameHeader {
		s.refresh()
		if int64(f.n) > s.size-s.off-frameHeader {
			return s.damage(fmt.Errorf("frame of %d bytes past the end of the file: %w", f.n, errTorn), 0)
		}
	}
	if cap(s.body) < int(f.n) {
		s.body = make([]byte, f.n)
	}
	body := s.body[:f.n]
	if _, err := io.ReadFull(s.br, body); err != nil {
		return s.damage(fmt.Errorf("read: %w", err), 0)
	}
	if err := decodeBody(f, body, r); err != nil {
		return s.damage(err, frameHeader+int64(f.n))
	}
	if f.lsn != s.next {
		return s.damage(fmt.Errorf("%w: frame LSN %d, want %d", ErrCorrupt, f.lsn, s.next), 0)
	}
	s.off += frameHeader + int64(f.n)
	s.next++
	return nil
}

// damage wraps err with the position. A checksum failure over a span that
// contains an all-zero sector is a torn write (the disk never wrote that
// sector), not corruption.
func (s *segScan) damage(err error, span int64) error {
	if span > 0 && errors.Is(err, ErrCorrupt) && s.zeroSector(s.off, s.off+span) {
		err = fmt.Errorf("zeroed sector (%w) under: %v", errTorn, err)
	}
	return &CorruptError{Segment: s.name, Offset: s.off, Err: err}
}

// zeroSector reports whether a 512-byte-aligned sector overlapping
// [start,end), clipped to the file, is all zeros.
func (s *segScan) zeroSector(start, end int64) bool {
	if end > s.size {
		end = s.size
	}
	buf := make([]byte, sectorSize)
	for sec := start / sectorSize * sectorSize; sec < end; sec += sectorSize {
		lo, hi := max(sec, 0), min(sec+sectorSize, s.size)
		if hi <= lo {
			break
		}
		b := buf[:hi-lo]
		if _, err := s.f.ReadAt(b, lo); err != nil {
			return false
		}
		if allZero(b) {
			return true
		}
	}
	return false
}

// createSegment creates the segment for first durably: header into a temp
// file, fsync, rename into place, fsync the directory. It returns the file
// opened for writing, positioned after the header.
func createSegment(dir string, first LSN) (*os.File, error) {
	name := segName(first)
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: create segment: %w", err)
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("journal: create segment %s: %w", name, err)
	}
	if _, err := f.Write(segHeader(Version, first)); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fail(err)
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("journal: sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("journal: sync dir %s: %w", dir, err)
	}
	return nil
}

// keepEvidence copies dir/name to dir/name.broken (or .broken.N when that
// exists), durably, before a repair changes the segment.
func keepEvidence(dir, name string) (string, error) {
	src, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("journal: keep evidence: %w", err)
	}
	defer src.Close()
	ev := name + ".broken"
	for i := 1; ; i++ {
		if _, err := os.Lstat(filepath.Join(dir, ev)); errors.Is(err, os.ErrNotExist) {
			break
		}
		ev = fmt.Sprintf("%s.broken.%d", name, i)
	}
	dst, err := os.OpenFile(filepath.Join(dir, ev), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("journal: keep evidence: %w", err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return "", fmt.Errorf("journal: keep evidence %s: %w", ev, err)
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return "", fmt.Errorf("journal: keep evidence %s: %w", ev, err)
	}
	if err := dst.Close(); err != nil {
		return "", fmt.Errorf("journal: keep evidence %s: %w", ev, err)
	}
	return ev, syncDir(dir)
}

// truncateSegment cuts dir/name at off and fsyncs it.
func truncateSegment(dir, name string, off int64) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("journal: repair: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(off); err != nil {
		return fmt.Errorf("journal: repair %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("journal: repair %s: %w", name, err)
	}
	return nil
}

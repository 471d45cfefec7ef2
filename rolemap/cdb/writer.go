package cdb

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge is returned by Writer.Add when the file would pass MaxSize.
var ErrTooLarge = errors.New("cdb: file would exceed 4 GiB")

// Writer builds a CDB file. Records are added with Add and the file is
// finished with Close; until then the header is a placeholder and the file is
// not a valid CDB.
type Writer struct {
	ws    io.WriteSeeker
	bw    *bufio.Writer
	base  int64  // offset of the file's start within ws
	pos   uint64 // next record's position
	slots []slot // one per record, in order
	limit uint64 // MaxSize; smaller in tests
	err   error  // sticky: once a write failed, the Writer is dead
	done  bool
}

type slot struct{ h, pos uint32 }

// NewWriter starts a CDB at ws's current offset by writing the placeholder
// header.
func NewWriter(ws io.WriteSeeker) (*Writer, error) {
	base, err := ws.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, fmt.Errorf("cdb: %w", err)
	}
	w := &Writer{ws: ws, bw: bufio.NewWriterSize(ws, 64<<10), base: base, pos: HeaderSize, limit: MaxSize}
	if _, err := w.bw.Write(make([]byte, HeaderSize)); err != nil {
		return nil, fmt.Errorf("cdb: write header: %w", err)
	}
	return w, nil
}

// Add appends a record. Keys may repeat; readers return the values in the
// order they were added. Add refuses a record that would make the finished
// file (records plus hash tables) larger than MaxSize, and then the Writer
// stays usable for smaller records.
func (w *Writer) Add(key, value []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return errors.New("cdb: Add after Close")
	}
	recLen := 8 + uint64(len(key)) + uint64(len(value))
	// Each record also costs two 8-byte slots in the tables written by Close.
	if w.pos+recLen+16*uint64(len(w.slots)+1) > w.limit {
		return fmt.Errorf("%w: adding a %d-byte record at %d", ErrTooLarge, recLen, w.pos)
	}
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[0:], uint32(len(key)))
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(value)))
	if err := w.write(hdr[:], key, value); err != nil {
		return err
	}
	w.slots = append(w.slots, slot{h: Hash(key), pos: uint32(w.pos)})
	w.pos += recLen
	return nil
}

func (w *Writer) write(bufs ...[]byte) error {
	for _, b := range bufs {
		if _, err := w.bw.Write(b); err != nil {
			w.err = fmt.Errorf("cdb: write: %w", err)
			return w.err
		}
	}
	return nil
}

// Close writes the hash tables and the header. It does not close the
// underlying writer (nor fsync it: that is the caller's job). After Close
// the Writer accepts nothing more.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return nil
	}
	w.done = true

	// Group the records by table, keeping their order within a table so
	// that duplicates are probed in insertion order.
	var count [256]int
	for _, s := range w.slots {
		count[s.h&255]++
	}
	var start [257]int
	for i := range 256 {
		start[i+1] = start[i] + count[i]
	}
	byTable := make([]slot, len(w.slots))
	next := start
	for _, s := range w.slots {
		t := s.h & 255
		byTable[next[t]] = s
		next[t]++
	}

	var header [HeaderSize]byte
	var table []slot
	var buf []byte
	for i := range 256 {
		n := uint32(2 * count[i])
		binary.LittleEndian.PutUint32(header[i*8:], uint32(w.pos))
		binary.LittleEndian.PutUint32(header[i*8+4:], n)
		if n == 0 {
			continue
		}
		if cap(table) < int(n) {
			table = make([]slot, n)
		} else {
			table = table[:n]
			clear(table)
		}
		for _, s := range byTable[start[i]:start[i+1]] {
			j := (s.h >> 8) % n
			for table[j].pos != 0 {
				if j++; j == n {
					j = 0
				}
			}
			table[j] = s
		}
		buf = buf[:0]
		for _, s := range table {
			buf = binary.LittleEndian.AppendUint32(buf, s.h)
			buf = binary.LittleEndian.AppendUint32(buf, s.pos)
		}
		if err := w.write(buf); err != nil {
			return err
		}
		w.pos += uint64(n) * 8
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("cdb: write: %w", err)
		return w.err
	}
	if _, err := w.ws.Seek(w.base, io.SeekStart); err != nil {
		w.err = fmt.Errorf("cdb: seek to header: %w", err)
		return w.err
	}
	if _, err := w.ws.Write(header[:]); err != nil {
		w.err = fmt.Errorf("cdb: write header: %w", err)
		return w.err
	}
	if _, err := w.ws.Seek(w.base+int64(w.pos), io.SeekStart); err != nil {
		w.err = fmt.Errorf("cdb: seek to end: %w", err)
		return w.err
	}
	return nil
}

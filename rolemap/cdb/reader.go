package cdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"unsafe"
)

// HeaderSize is the size of the table of hash-table positions that starts
// every CDB file.
const HeaderSize = 2048

// MaxSize is the largest CDB file: every position is a 32-bit number.
const MaxSize = 1<<32 - 1

// ErrCorrupt is wrapped by every error about a malformed or truncated file.
var ErrCorrupt = errors.New("cdb: corrupt file")

var errClosed = errors.New("cdb: reader is closed")

// Record is one key/value pair of a file.
type Record struct {
	Key, Value []byte
}

// Reader looks keys up in one CDB file held in memory or mapped from disk.
type Reader struct {
	data   []byte
	end    uint32 // first byte after the records (start of the hash tables)
	unmap  func([]byte) error
	closed bool
}

// NewReader reads a CDB held in data, which the Reader uses in place and
// must not change. It checks the header against len(data).
func NewReader(data []byte) (*Reader, error) {
	if len(data) < HeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrCorrupt, len(data), HeaderSize)
	}
	if uint64(len(data)) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, larger than the format's limit of %d", ErrCorrupt, len(data), uint64(MaxSize))
	}
	size := uint64(len(data))
	end := size
	for i := range 256 {
		pos := uint64(le32(data, i*8))
		n := uint64(le32(data, i*8+4))
		if n > 0 && (pos < HeaderSize || pos+n*8 > size) {
			return nil, fmt.Errorf("%w: hash table %d (%d slots at %d) is outside the file's %d bytes",
				ErrCorrupt, i, n, pos, size)
		}
		// The records end where the first table starts. Writers put even
		// empty tables there; a stray position is ignored.
		if pos >= HeaderSize && pos < end {
			end = pos
		}
	}
	return &Reader{data: data, end: uint32(end)}, nil
}

// Size returns the file's size in bytes.
func (r *Reader) Size() int { return len(r.data) }

// Close releases the file's mapping, if any. Slices returned earlier become
// invalid. Close must not be called while another goroutine uses r.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	data := r.data
	r.data = nil
	if r.unmap != nil {
		if err := r.unmap(data); err != nil {
			return fmt.Errorf("cdb: unmap: %w", err)
		}
	}
	return nil
}

// Get returns the value of the first record whose key is key. ok is false
// and err nil when there is none; err is non-nil only for a corrupt file.
// The value aliases the file (see the package doc).
func (r *Reader) Get(key []byte) (value []byte, ok bool, err error) {
	// The string header only lives for this call and is never stored.
	return r.GetString(unsafe.String(unsafe.SliceData(key), len(key)))
}

// GetString is Get for a string key. It allocates nothing.
func (r *Reader) GetString(key string) (value []byte, ok bool, err error) {
	var f finder
	f.init(r, key)
	return f.next()
}

// FindAll yields the values of every record whose key is key, in the order
// they were added. On a corrupt file it yields (nil, err) and stops.
func (r *Reader) FindAll(key []byte) iter.Seq2[[]byte, error] {
	k := string(key)
	return func(yield func([]byte, error) bool) {
		var f finder
		f.init(r, k)
		for {
			v, ok, err := f.next()
			if err != nil {
				yield(nil, err)
				return
			}
			if !ok || !yield(v, nil) {
				return
			}
		}
	}
}

// Records yields every record in file order (the order they were added). On a
// malformed record it yields the error and stops.
func (r *Reader) Records() iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		if r.closed {
			yield(Record{}, errClosed)
			return
		}
		pos := uint64(HeaderSize)
		for pos < uint64(r.end) {
			k, v, next, err := r.record(pos, uint64(r.end))
			if err != nil {
				yield(Record{}, err)
				return
			}
			if !yield(Record{Key: k, Value: v}, nil) {
				return
			}
			pos = next
		}
	}
}

// record decodes the record at pos, which must end at or before limit.
func (r *Reader) record(pos, limit uint64) (key, value []byte, next uint64, err error) {
	if pos+8 > limit {
		return nil, nil, 0, fmt.Errorf("%w: record at %d: header runs past %d", ErrCorrupt, pos, limit)
	}
	klen := uint64(le32(r.data, int(pos)))
	vlen := uint64(le32(r.data, int(pos)+4))
	kstart := pos + 8
	vstart := kstart + klen
	next = vstart + vlen
	if next > limit {
		return nil, nil, 0, fmt.Errorf("%w: record at %d: %d-byte key and %d-byte value run past %d",
			ErrCorrupt, pos, klen, vlen, limit)
	}
	return r.data[kstart:vstart:vstart], r.data[vstart:next:next], next, nil
}

// finder walks the probe sequence of one key.
type finder struct {
	r    *Reader
	key  string
	h    uint32
	tpos uint32 // table start
	tlen uint32 // table slots
	slot uint32 // next slot to visit
	left uint32 // slots not yet visited: a probe never loops
}

func (f *finder) init(r *Reader, key string) {
	f.r, f.key = r, key
	if r.closed {
		return
	}
	f.h = hashString(key)
	t := int(f.h&255) * 8
	f.tpos = le32(r.data, t)
	f.tlen = le32(r.data, t+4)
	if f.tlen > 0 {
		f.slot = (f.h >> 8) % f.tlen
	}
	f.left = f.tlen
}

func (f *finder) next() ([]byte, bool, error) {
	if f.r.closed {
		return nil, false, errClosed
	}
	d := f.r.data
	for f.left > 0 {
		f.left--
		off := int(f.tpos) + int(f.slot)*8 // inside the file: checked by NewReader
		h := le32(d, off)
		pos := le32(d, off+4)
		f.slot++
		if f.slot == f.tlen {
			f.slot = 0
		}
		if pos == 0 {
			f.left = 0
			return nil, false, nil
		}
		if h != f.h {
			continue
		}
		k, v, _, err := f.r.record(uint64(pos), uint64(len(d)))
		if err != nil {
			f.left = 0
			return nil, false, err
		}
		if string(k) == f.key {
			return v, true, nil
		}
	}
	return nil, false, nil
}

func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off : off+4]) }

// hashString is the CDB hash: h = 5381; h = ((h << 5) + h) ^ c.
func hashString(s string) uint32 {
	h := uint32(5381)
	for i := 0; i < len(s); i++ {
		h = ((h << 5) + h) ^ uint32(s[i])
	}
	return h
}

// Hash returns the CDB hash of key.
func Hash(key []byte) uint32 {
	h := uint32(5381)
	for _, c := range key {
		h = ((h << 5) + h) ^ uint32(c)
	}
	return h
}

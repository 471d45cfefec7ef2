package rolemap

import (
	"fmt"
	"iter"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"mreplfs/rolemap/cdb"
)

// Map is an open role map file. Lookups are safe for concurrent use and
// allocate nothing; Close may run concurrently with them (see Close).
type Map struct {
	r        *cdb.Reader
	partners []string
	accounts int
	id       fileID

	// refs counts lookups in progress; closing adds closedBit, making it
	// negative. The file is unmapped when it is closed and no lookup is in
	// progress, by whichever of Close or the last lookup sees that first.
	refs      atomic.Int64
	closing   atomic.Bool
	unmapOnce sync.Once
	unmapErr  error
}

const closedBit = math.MinInt64

// fileID identifies a version of the file at a path: a rename over it
// changes the inode, a rewrite in place the size or mtime.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64 // ns
}

func fileIDOf(fi os.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
	}
	return id
}

// Open maps the role map at path and checks all of it: the header record,
// every account name and value. A file that is not a complete, valid role
// map gives an error (wrapping ErrCorrupt or ErrVersion for a bad content).
func Open(path string) (*Map, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("rolemap: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("rolemap: %w", err)
	}
	r, err := cdb.OpenFile(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	m, err := newMap(r, fileIDOf(fi))
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// newMap checks r and makes it a Map.
func newMap(r *cdb.Reader, id fileID) (*Map, error) {
	m := &Map{r: r, id: id}
	if err := m.check(); err != nil {
		return nil, err
	}
	return m, nil
}

// check reads the header and decodes every record.
func (m *Map) check() error {
	v, ok, err := m.r.GetString(headerKey)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if !ok {
		return fmt.Errorf("%w: no header record (not a role map built by mreplfs)", ErrCorrupt)
	}
	h, err := decodeHeader(v)
	if err != nil {
		return err
	}
	m.partners = h.partners
	var n uint64
	headers := 0
	for rec, err := range m.r.Records() {
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if len(rec.Key) == 0 {
			headers++
			continue
		}
		// The name is only read during the call: no copy needed.
		if err := ValidateAccount(unsafe.String(unsafe.SliceData(rec.Key), len(rec.Key))); err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if _, err := decodeValue(rec.Value, m.partners); err != nil {
			return fmt.Errorf("account %q: %w", rec.Key, err)
		}
		n++
	}
	if headers != 1 {
		return fmt.Errorf("%w: %d header records", ErrCorrupt, headers)
	}
	if n != h.accounts {
		return fmt.Errorf("%w: header says %d accounts, file has %d", ErrCorrupt, h.accounts, n)
	}
	m.accounts = int(n)
	return nil
}

// Len returns the number of accounts.
func (m *Map) Len() int { return m.accounts }

// Lookup returns the account's entry. An account that is not in the map
// gives (Entry{Role: Unknown}, false): it is not ours. So does any lookup on
// a closed map, or on a record that cannot be read (use Get to see why).
func (m *Map) Lookup(account string) (Entry, bool) {
	e, ok, _, _ := m.get(account)
	return e, ok
}

// Get is Lookup that reports a corrupt record or a closed map as an error.
func (m *Map) Get(account string) (Entry, bool, error) {
	e, ok, open, err := m.get(account)
	if !open {
		return Entry{}, false, fmt.Errorf("rolemap: map is closed")
	}
	return e, ok, err
}

// get looks account up; open is false when the map was closed.
func (m *Map) get(account string) (e Entry, ok, open bool, err error) {
	if m.refs.Add(1) < 0 {
		m.release()
		return Entry{}, false, false, nil
	}
	defer m.release()
	if account == headerKey {
		return Entry{}, false, true, nil
	}
	v, found, err := m.r.GetString(account)
	if err != nil || !found {
		return Entry{}, false, true, err
	}
	e, err = decodeValue(v, m.partners)
	if err != nil {
		return Entry{}, false, true, err
	}
	return e, true, true, nil
}

func (m *Map) release() {
	if m.refs.Add(-1) == closedBit {
		m.unmap()
	}
}

func (m *Map) unmap() {
	m.unmapOnce.Do(func() { m.unmapErr = m.r.Close() })
}

// Close closes the map. Lookups in progress finish on the old mapping, which
// is released when the last of them returns; lookups that start after Close
// find nothing. Close does not wait for them.
func (m *Map) Close() error {
	if !m.closing.CompareAndSwap(false, true) {
		return nil
	}
	if m.refs.Add(closedBit) == closedBit {
		m.unmap()
		return m.unmapErr
	}
	return nil
}

// All yields every account in file order (the order Build got them). On a
// corrupt record, or if the map is closed, it yields the error and stops.
func (m *Map) All() iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		if m.refs.Add(1) < 0 {
			m.release()
			yield(Record{}, fmt.Errorf("rolemap: map is closed"))
			return
		}
		defer m.release()
		for rec, err := range m.r.Records() {
			if err != nil {
				yield(Record{}, fmt.Errorf("%w: %w", ErrCorrupt, err))
				return
			}
			if len(rec.Key) == 0 {
				continue
			}
			e, err := decodeValue(rec.Value, m.partners)
			if err != nil {
				yield(Record{}, fmt.Errorf("account %q: %w", rec.Key, err))
				return
			}
			if !yield(Record{Account: string(rec.Key), Entry: e}, nil) {
				return
			}
		}
	}
}

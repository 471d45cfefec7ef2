package peer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"mreplfs/journal"
)

// The receiver's durable state lives in one bbolt file (state.db): per
// account its applied position, the batch in flight, the epoch it follows and
// its state (ok, quarantined, needs resync) with the reason; and the content
// index, SHA-256 → a file of the replica tree holding those bytes, which lets
// a message body cross the wire by reference.

var (
	bucketAccounts = []byte("accounts")
	bucketHashes   = []byte("hashes")
)

// AccountPos is the receiver's persisted view of one account.
type AccountPos struct {
	Applied  journal.LSN  // last record applied and made durable
	Inflight journal.LSN  // a batch up to here was being applied (replay mode on restart)
	Epoch    uint64       // the epoch of the last record applied
	State    AccountState // ok, quarantined, needs resync
	Reason   string       // why it is not ok
	Since    time.Time    // when State last changed
}

type stateStore struct {
	db      *bolt.DB
	commits atomic.Int64 // transactions committed (tests, benchmarks)
}

func openState(dir string) (*stateStore, error) {
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open receiver state: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAccounts, bucketHashes} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init receiver state: %w", err)
	}
	return &stateStore{db: db}, nil
}

func (s *stateStore) close() error { return s.db.Close() }

func (s *stateStore) get(account string) (AccountPos, error) {
	var p AccountPos
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAccounts).Get([]byte(account))
		if v == nil {
			return nil
		}
		return json.Unmarshal(v, &p)
	})
	return p, err
}

func (s *stateStore) all() (map[string]AccountPos, error) {
	out := map[string]AccountPos{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).ForEach(func(k, v []byte) error {
			var p AccountPos
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("account %q: %w", k, err)
			}
			out[string(k)] = p
			return nil
		})
	})
	return out, err
}

// update changes several accounts in one durable transaction.
func (s *stateStore) update(fn func(get func(string) AccountPos, put func(string, AccountPos))) error {
	return s.updateWithHashes(nil, fn)
}

// updateWithHashes is update that also adds content index entries in the
// same transaction (one commit, one pair of fsyncs). A failed index entry
// is logged, never fails the positions.
//
// A transaction that changes nothing is rolled back instead of committed: a
// commit costs two fsyncs, and a rename's checkpoint often has nothing new.
func (s *stateStore) updateWithHashes(refs map[[32]byte]hashRef, fn func(get func(string) AccountPos, put func(string, AccountPos))) error {
	wrote := len(refs) > 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		if len(refs) > 0 {
			hb := tx.Bucket(bucketHashes)
			for h, r := range refs {
				// A 32-byte key and a short value: Put fails only on a
				// read-only transaction. The index is a cache (re-verified
				// before use), never worth failing the positions for.
				_ = hb.Put(h[:], encodeRef(r))
			}
		}
		b := tx.Bucket(bucketAccounts)
		var perr error
		get := func(a string) AccountPos {
			var p AccountPos
			if v := b.Get([]byte(a)); v != nil {
				if err := json.Unmarshal(v, &p); err != nil && perr == nil {
					perr = err
				}
			}
			return p
		}
		put := func(a string, p AccountPos) {
			v, err := json.Marshal(p)
			if err == nil && bytes.Equal(v, b.Get([]byte(a))) {
				return // unchanged
			}
			if err == nil {
				err = b.Put([]byte(a), v)
				wrote = true
			}
			if err != nil && perr == nil {
				perr = err
			}
		}
		fn(get, put)
		if perr == nil && !wrote {
			return errUnchanged
		}
		return perr
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	if err == nil {
		s.commits.Add(1)
	}
	return err
}

// errUnchanged rolls back a transaction that wrote nothing.
var errUnchanged = errors.New("peer: state unchanged")

// hashRef is where a content hash can be found on the replica.
type hashRef struct{ tree, rel string }

func encodeRef(r hashRef) []byte {
	b := binary.AppendUvarint(nil, uint64(len(r.tree)))
	b = append(b, r.tree...)
	return append(b, r.rel...)
}

func decodeRef(b []byte) (hashRef, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return hashRef{}, errors.New("peer: corrupt content index entry")
	}
	return hashRef{tree: string(b[k : k+int(n)]), rel: string(b[k+int(n):])}, nil
}

func (s *stateStore) lookupHash(h [32]byte) (hashRef, bool) {
	var ref hashRef
	var ok bool
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketHashes).Get(h[:]); v != nil {
			r, err := decodeRef(v)
			ref, ok = r, err == nil
		}
		return nil
	})
	return ref, ok
}

func (s *stateStore) putHashes(refs map[[32]byte]hashRef) error {
	if len(refs) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHashes)
		for h, r := range refs {
			if err := b.Put(h[:], encodeRef(r)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *stateStore) dropHash(h [32]byte) {
	s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketHashes).Delete(h[:]) })
}

func (s *stateStore) hashCount() int {
	n := 0
	s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketHashes).Stats().KeyN; return nil })
	return n
}

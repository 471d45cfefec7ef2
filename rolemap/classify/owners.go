package classify

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// ErrBadMailboxID is returned for a mailbox id that is not 24 [0-9a-z].
var ErrBadMailboxID = errors.New("classify: bad mailbox id")

const ownerShards = 32

// ownerMap is the mailbox id → owner account map, sharded to keep the read
// lock of the hot path uncontended. Account strings are interned: an
// account's many mailboxes share one string.
type ownerMap struct {
	shards [ownerShards]struct {
		mu sync.RWMutex
		m  map[[24]byte]string
	}
	imu    sync.Mutex
	intern map[string]string
}

func (m *ownerMap) init() {
	for i := range m.shards {
		m.shards[i].m = make(map[[24]byte]string)
	}
	m.intern = make(map[string]string)
}

func idKey(id string) (k [24]byte) {
	copy(k[:], id)
	return k
}

func shardOf(id string) int { return int(id[len(id)-1]) % ownerShards }

func (m *ownerMap) get(id string) (string, bool) {
	s := &m.shards[shardOf(id)]
	s.mu.RLock()
	a, ok := s.m[idKey(id)]
	s.mu.RUnlock()
	return a, ok
}

// set records id → account and returns the previous owner ("" if none).
func (m *ownerMap) set(id, account string) string {
	m.imu.Lock()
	if a, ok := m.intern[account]; ok {
		account = a
	} else {
		m.intern[account] = account
	}
	m.imu.Unlock()
	s := &m.shards[shardOf(id)]
	s.mu.Lock()
	prev := s.m[idKey(id)]
	s.m[idKey(id)] = account
	s.mu.Unlock()
	return prev
}

func (m *ownerMap) del(id string) {
	s := &m.shards[shardOf(id)]
	s.mu.Lock()
	delete(s.m, idKey(id))
	s.mu.Unlock()
}

func (m *ownerMap) len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// NoteHeader records the owner named by a cyrus.header that was just
// written (or renamed into place) for the uuid-layout mailbox mailboxID
// (Result.MailboxID of the header's path). The header's I must equal
// mailboxID. For a legacy-layout path mailboxID is "": the header is only
// checked, because legacy owners come from the path (after a legacy rename
// the header's N keeps the old name; CYRUS.md §7.4).
func (c *Classifier) NoteHeader(mailboxID string, header []byte) error {
	h, err := ParseHeader(header)
	if err != nil {
		return err
	}
	if mailboxID == "" {
		return nil
	}
	if !isMailboxID(mailboxID) {
		return fmt.Errorf("%w: %q", ErrBadMailboxID, mailboxID)
	}
	if h.UniqueID != mailboxID {
		return fmt.Errorf("%w: header of mailbox %s names mailbox id %q", ErrBadHeader, mailboxID, h.UniqueID)
	}
	account, ok := AccountFromMailboxName(h.Name)
	if !ok {
		return fmt.Errorf("%w: mailbox %s: name %q names no account", ErrBadHeader, mailboxID, h.Name)
	}
	if prev := c.owners.set(mailboxID, account); prev != account {
		c.log.Debug("mailbox owner", "mailbox", mailboxID, "account", account, "previous", prev, "name", h.Name)
	}
	return nil
}

// Forget drops a mailbox id from the owner map (its directory was removed).
func (c *Classifier) Forget(mailboxID string) {
	if isMailboxID(mailboxID) {
		c.owners.del(mailboxID)
	}
}

// Owner returns the account owning a uuid-layout mailbox id.
func (c *Classifier) Owner(mailboxID string) (account string, ok bool) {
	if !isMailboxID(mailboxID) {
		return "", false
	}
	return c.owners.get(mailboxID)
}

// Mailboxes returns how many mailbox ids have a known owner.
func (c *Classifier) Mailboxes() int { return c.owners.len() }

// MailboxIDs returns the ids of the uuid-layout mailboxes owned by account,
// sorted (for tools that walk one account's trees: verify, promote). It
// scans the whole map: not for the hot path.
func (c *Classifier) MailboxIDs(account string) []string {
	var out []string
	for i := range c.owners.shards {
		s := &c.owners.shards[i]
		s.mu.RLock()
		for k, a := range s.m {
			if a == account {
				out = append(out, string(k[:]))
			}
		}
		s.mu.RUnlock()
	}
	slices.Sort(out)
	return out
}

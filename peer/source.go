package peer

import (
	"context"
	"os"
	"sync"

	"mreplfs/journal"
)

// Journal is what a JournalSource needs of a journal: *journal.Log in the
// writing process, or a read-only follower in the peer process.
type Journal interface {
	NewReader(from journal.LSN) (*journal.Reader, error)
	OpenBlob(hash [32]byte) (*os.File, error)
	Acked(consumer string) (journal.LSN, bool)
	SetAcked(consumer string, lsn journal.LSN) error
	Durable() journal.LSN
}

// JournalSource is a Source over a journal, for one consumer (one
// partner: consumer name "peer:<node>").
type JournalSource struct {
	Log      Journal
	Consumer string

	mu sync.Mutex
	r  *journal.Reader
}

// Records implements Source. It keeps one Reader and reopens it only when
// asked for another position (a reconnect).
func (j *JournalSource) Records(ctx context.Context, from journal.LSN, max int) ([]journal.Record, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.r == nil || j.r.Position() != from {
		if j.r != nil {
			j.r.Close()
		}
		r, err := j.Log.NewReader(from)
		if err != nil {
			j.r = nil
			return nil, err
		}
		j.r = r
	}
	// Raw records: the sender drops what the partner already applied and
	// only then coalesces (journal.Coalesce), so a merged write never spans
	// records on both sides of an account's applied position.
	first, err := j.r.Next(ctx)
	if err != nil {
		return nil, err
	}
	out := []journal.Record{first}
	size := len(first.Data)
	done, cancel := context.WithCancel(ctx)
	cancel() // what is durable now, without waiting for more
	for len(out) < max && size < 4<<20 {
		r, err := j.r.Next(done)
		if err != nil {
			break
		}
		out = append(out, r)
		size += len(r.Data)
	}
	return out, nil
}

// OpenBlob implements Source.
func (j *JournalSource) OpenBlob(h [32]byte) (*os.File, error) { return j.Log.OpenBlob(h) }

// Acked implements Source.
func (j *JournalSource) Acked() journal.LSN {
	l, _ := j.Log.Acked(j.Consumer)
	return l
}

// Durable implements Source.
func (j *JournalSource) Durable() journal.LSN { return j.Log.Durable() }

// SetAcked implements Source.
func (j *JournalSource) SetAcked(l journal.LSN) error { return j.Log.SetAcked(j.Consumer, l) }

// Close releases the reader.
func (j *JournalSource) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.r != nil {
		return j.r.Close()
	}
	return nil
}

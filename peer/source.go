package peer

import (
	"context"
	"os"
	"sync"

	"mreplfs/journal"
)

// JournalSource is a Source over an open journal, for one consumer (one
// partner: consumer name "peer:<node>").
type JournalSource struct {
	Log      *journal.Log
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
	return j.r.NextBatch(ctx, max)
}

// OpenBlob implements Source.
func (j *JournalSource) OpenBlob(h [32]byte) (*os.File, error) { return j.Log.OpenBlob(h) }

// Acked implements Source.
func (j *JournalSource) Acked() journal.LSN {
	l, _ := j.Log.Acked(j.Consumer)
	return l
}

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

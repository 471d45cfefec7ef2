package journaltest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"

	"mreplfs/journal"
)

// Recorder is an in-memory stand-in for *journal.Log's writer side. It
// assigns LSNs from 1, keeps a deep copy of every appended record, and keeps
// blob contents in memory. Safe for concurrent use.
//
// Hooks run first when set; a non-nil error is returned to the caller and
// nothing is recorded (for Sync: nothing becomes durable).
type Recorder struct {
	OnAppend  func(ctx context.Context, r *journal.Record) error
	OnSync    func(ctx context.Context, upTo journal.LSN) error
	OnPutBlob func(ctx context.Context, hash [32]byte, srcPath string) error

	mu      sync.Mutex
	records []journal.Record
	durable journal.LSN
	syncs   int
	blobs   map[[32]byte][]byte
}

// Append records a copy of r and sets r.LSN, like journal.Log.Append.
func (rec *Recorder) Append(ctx context.Context, r *journal.Record) (journal.LSN, error) {
	if rec.OnAppend != nil {
		if err := rec.OnAppend(ctx, r); err != nil {
			return 0, err
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	r.LSN = journal.LSN(len(rec.records) + 1)
	c := *r
	c.Data = slices.Clone(r.Data)
	rec.records = append(rec.records, c)
	return r.LSN, nil
}

// Sync marks every record ≤ upTo durable (upTo is clamped to the last LSN).
func (rec *Recorder) Sync(ctx context.Context, upTo journal.LSN) error {
	if rec.OnSync != nil {
		if err := rec.OnSync(ctx, upTo); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.syncs++
	upTo = min(upTo, journal.LSN(len(rec.records)))
	rec.durable = max(rec.durable, upTo)
	return nil
}

// PutBlob reads srcPath into memory under hash. Idempotent.
func (rec *Recorder) PutBlob(ctx context.Context, hash [32]byte, srcPath string) error {
	if rec.OnPutBlob != nil {
		if err := rec.OnPutBlob(ctx, hash, srcPath); err != nil {
			return err
		}
	}
	b, err := os.ReadFile(srcPath)
	if err != nil {
		return fmt.Errorf("journaltest: put blob: %w", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.blobs == nil {
		rec.blobs = make(map[[32]byte][]byte)
	}
	rec.blobs[hash] = b
	return nil
}

// Records returns copies of the records appended so far, in LSN order.
func (rec *Recorder) Records() []journal.Record {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	out := make([]journal.Record, len(rec.records))
	for i, r := range rec.records {
		r.Data = slices.Clone(r.Data)
		out[i] = r
	}
	return out
}

// Durable returns the highest LSN a Sync made durable.
func (rec *Recorder) Durable() journal.LSN {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.durable
}

// Syncs returns how many Sync calls succeeded.
func (rec *Recorder) Syncs() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.syncs
}

// Blob returns the content PutBlob stored under hash.
func (rec *Recorder) Blob(hash [32]byte) ([]byte, bool) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	b, ok := rec.blobs[hash]
	return slices.Clone(b), ok
}

// Reset forgets every record, blob and sync (hooks are kept).
func (rec *Recorder) Reset() {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.records, rec.durable, rec.syncs, rec.blobs = nil, 0, 0, nil
}

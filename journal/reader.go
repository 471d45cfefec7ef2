package journal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
)

// Reader returns durable records in LSN order from a start position, and
// blocks at the end until more become durable. Not safe for concurrent use;
// any number of Readers may run at once.
type Reader struct {
	l    view
	next LSN
	scan *segScan
}

// view is what a Reader needs of a journal: the writer's Log, or a Follower
// in another process.
type view interface {
	Durable() LSN
	// waitCh returns a channel closed when Durable may have advanced, or
	// an error when it never will (closed).
	waitCh() (<-chan struct{}, error)
	// segmentFor names the segment holding lsn (ErrCompacted when removed).
	segmentFor(lsn LSN) (string, error)
	directory() string
}

func (l *Log) directory() string { return l.dir }

func (l *Log) segmentFor(lsn LSN) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	segs := l.segs
	i := sort.Search(len(segs), func(i int) bool { return segs[i].first > lsn }) - 1
	if i < 0 {
		return "", fmt.Errorf("%w: LSN %d", ErrCompacted, lsn)
	}
	return segName(segs[i].first), nil
}

// NewReader returns a Reader whose first record is from (0 means the oldest
// retained record). from may be the next LSN to be appended (a tail reader).
// It fails with ErrCompacted when from was removed, ErrFuture when it lies
// beyond the next LSN.
func (l *Log) NewReader(from LSN) (*Reader, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	first := l.segs[0].first
	if from == 0 {
		from = first
	}
	if from < first {
		return nil, fmt.Errorf("%w: LSN %d (oldest retained %d)", ErrCompacted, from, first)
	}
	if from > l.next {
		return nil, fmt.Errorf("%w: LSN %d (next %d)", ErrFuture, from, l.next)
	}
	return &Reader{l: l, next: from}, nil
}

// Position is the LSN of the next record the Reader reads. After a batch is
// applied, Position()-1 is what to acknowledge.
func (r *Reader) Position() LSN { return r.next }

// Close releases the Reader's open segment.
func (r *Reader) Close() error {
	if r.scan != nil {
		err := r.scan.Close()
		r.scan = nil
		return err
	}
	return nil
}

// Next returns the next durable record, waiting for one at the end of the
// log until ctx is done (ctx.Err is returned, wrapped) or the Log is closed
// (ErrClosed). Damage gives a *CorruptError.
func (r *Reader) Next(ctx context.Context) (Record, error) {
	for r.next > r.l.Durable() {
		ch, err := r.l.waitCh()
		if err != nil {
			return Record{}, err
		}
		if r.next <= r.l.Durable() {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Record{}, fmt.Errorf("journal: read: %w", ctx.Err())
		}
	}
	return r.read()
}

// read decodes record r.next, which is durable.
func (r *Reader) read() (Record, error) {
	for attempt := 0; ; attempt++ {
		if r.scan == nil || r.scan.next != r.next {
			if err := r.open(); err != nil {
				return Record{}, err
			}
		}
		var rec Record
		err := r.scan.nextRecord(&rec)
		if err == nil {
			r.next++
			return rec, nil
		}
		name, off := r.scan.name, r.scan.off
		r.scan.Close()
		r.scan = nil
		if attempt == 0 && (err == io.EOF || errors.As(err, new(*CorruptError))) {
			// EOF: r.next is durable but not here, it starts the next
			// segment. Damage: read once more from a fresh open, for a
			// Follower may have buffered bytes past the durable end that a
			// restarted writer has since cut (a torn tail) and rewritten;
			// real damage is found again.
			continue
		}
		if err == io.EOF {
			err = &CorruptError{Segment: name, Offset: off,
				Err: fmt.Errorf("%w: durable LSN %d missing", ErrCorrupt, r.next)}
		}
		return Record{}, err
	}
}

// open positions the Reader at r.next: the segment holding it, scanned up
// to it.
func (r *Reader) open() error {
	if r.scan != nil {
		r.scan.Close()
		r.scan = nil
	}
	name, err := r.l.segmentFor(r.next)
	if err != nil {
		return err
	}
	s, err := openSegScan(r.l.directory(), name)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: LSN %d", ErrCompacted, r.next)
	}
	if err != nil {
		return err
	}
	var rec Record
	for s.next < r.next {
		if err := s.nextRecord(&rec); err != nil {
			s.Close()
			if err == io.EOF {
				return fmt.Errorf("%w: LSN %d not in %s", ErrCorrupt, r.next, name)
			}
			return err
		}
	}
	r.scan = s
	return nil
}

// NextBatch waits like Next for at least one record, then takes up to max
// durable records (and about 4 MiB) without waiting more, and returns them
// coalesced (Coalesce). The batch covers every record before Position().
func (r *Reader) NextBatch(ctx context.Context, max int) ([]Record, error) {
	if max <= 0 {
		max = 1
	}
	first, err := r.Next(ctx)
	if err != nil {
		return nil, err
	}
	batch := []Record{first}
	size := len(first.Data)
	for len(batch) < max && size < 4<<20 && r.next <= r.l.Durable() {
		rec, err := r.read()
		if err != nil {
			break // the records so far are good; the next call reports the damage
		}
		batch = append(batch, rec)
		size += len(rec.Data)
	}
	return Coalesce(batch), nil
}

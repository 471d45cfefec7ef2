package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

const consumersFile = "consumers"

// validConsumer: 1..128 bytes of [A-Za-z0-9._@:-].
func validConsumer(name string) bool {
	if name == "" || len(name) > 128 {
		return false
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '@' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

func (l *Log) loadConsumers() error {
	lines, err := readListFile(l.dir, consumersFile)
	if err != nil {
		return err
	}
	for _, ln := range lines {
		name, num, err := parseEntry(ln)
		if err != nil {
			return err
		}
		v, err := strconv.ParseUint(num, 10, 64)
		if err != nil || !validConsumer(name) {
			return fmt.Errorf("%w: bad consumer entry %q", ErrCorrupt, ln)
		}
		l.acked[name] = LSN(v)
	}
	return nil
}

func (l *Log) consumerLinesLocked() []string {
	out := make([]string, 0, len(l.acked))
	for n, v := range l.acked {
		out = append(out, fmt.Sprintf("%s %d", strconv.Quote(n), v))
	}
	slices.Sort(out)
	return out
}

// SetAcked records, durably, that consumer has everything ≤ lsn (registering
// consumer if new: SetAcked(name, 0) registers it with nothing acked). Acked
// positions only move forward. Segments every consumer has acked entirely are
// then removed, with the blobs no retained record refers to.
func (l *Log) SetAcked(consumer string, lsn LSN) error {
	if !validConsumer(consumer) {
		return fmt.Errorf("%w: %q", ErrBadConsumer, consumer)
	}
	l.ackMu.Lock()
	defer l.ackMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if lsn > l.Durable() {
		d := l.Durable()
		l.mu.Unlock()
		return fmt.Errorf("%w: ack %d, durable %d", ErrFuture, lsn, d)
	}
	cur, ok := l.acked[consumer]
	if ok && lsn <= cur {
		l.mu.Unlock()
		return nil
	}
	l.acked[consumer] = lsn
	lines := l.consumerLinesLocked()
	l.mu.Unlock()
	if err := writeListFile(l.dir, consumersFile, lines); err != nil {
		return err
	}
	return l.compact()
}

// Acked returns consumer's acked LSN and whether it is registered.
func (l *Log) Acked(consumer string) (LSN, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.acked[consumer]
	return v, ok
}

// Consumers returns the registered consumers, sorted.
func (l *Log) Consumers() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return sortedKeys(l.acked)
}

// RemoveConsumer forgets consumer (e.g. a decommissioned peer), so it no
// longer holds segments back.
func (l *Log) RemoveConsumer(consumer string) error {
	l.ackMu.Lock()
	defer l.ackMu.Unlock()
	l.mu.Lock()
	delete(l.acked, consumer)
	lines := l.consumerLinesLocked()
	l.mu.Unlock()
	if err := writeListFile(l.dir, consumersFile, lines); err != nil {
		return err
	}
	return l.compact()
}

// compact removes the segments every consumer has acked entirely. The active
// segment is never removed, nor one whose successor holds no durable record
// yet (so the next LSN always survives in a file name).
func (l *Log) compact() error {
	l.mu.Lock()
	if len(l.acked) == 0 {
		l.mu.Unlock()
		return nil
	}
	minAck := LSN(1<<64 - 1)
	for _, v := range l.acked {
		minAck = min(minAck, v)
	}
	d := l.Durable()
	n := 0
	for n < len(l.segs)-1 && l.segs[n].last <= minAck && l.segs[n+1].first <= d {
		n++
	}
	if n == 0 {
		l.mu.Unlock()
		return nil
	}
	gone := slices.Clone(l.segs[:n])
	l.segs = slices.Delete(l.segs, 0, n)
	through := gone[n-1].last
	for _, s := range gone {
		l.total -= s.size
	}
	l.mu.Unlock()

	for _, s := range gone {
		if err := os.Remove(filepath.Join(l.dir, segName(s.first))); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("journal: remove segment: %w", err)
		}
	}
	if err := syncDir(l.dir); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Blobs only after the segments that referred to them are gone for good.
	l.gcBlobsLocked(through)
	for a, v := range l.dirty {
		if v <= through {
			delete(l.dirty, a)
		}
	}
	l.sizeChangedLocked()
	l.log.Debug("journal segments removed", "count", n, "through", through)
	return nil
}

package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Consumers are kept one file per consumer, so that a Follower in another
// process can register and ack without the writer (doc.go, "Consumers and
// retention").
const (
	consumersFile  = "consumers"   // before consumers.d: migrated at Open
	consumersDir   = "consumers.d" // <name>.ack per consumer, LOCK
	consumerSuffix = ".ack"
	consumerTemp   = ".ack~" // '~' is never in a consumer name
	consumersLock  = "LOCK"
)

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

// ackLock serializes, across processes, the read-modify-write of consumer
// files and retention's read-then-remove (flock on consumers.d/LOCK).
type ackLock struct{ f *os.File }

func openAckLock(dir string) (*ackLock, error) {
	cdir := filepath.Join(dir, consumersDir)
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: consumers: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(cdir, consumersLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: consumers: %w", err)
	}
	return &ackLock{f: f}, nil
}

func (a *ackLock) lock() error {
	for {
		err := unix.Flock(int(a.f.Fd()), unix.LOCK_EX)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("journal: lock consumers: %w", err)
		}
		return nil
	}
}

func (a *ackLock) unlock() { unix.Flock(int(a.f.Fd()), unix.LOCK_UN) }

func (a *ackLock) close() error { return a.f.Close() }

// readConsumer returns consumer's acked LSN from its file.
func readConsumer(dir, name string) (LSN, bool, error) {
	cdir := filepath.Join(dir, consumersDir)
	lines, err := readStateFile(cdir, name+consumerSuffix, "consumer")
	if err != nil || lines == nil {
		return 0, false, err
	}
	if len(lines) != 1 {
		return 0, false, fmt.Errorf("%w: consumer file %s: %d entries", ErrCorrupt, name, len(lines))
	}
	got, num, err := parseEntry(lines[0])
	if err != nil {
		return 0, false, err
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil || got != name {
		return 0, false, fmt.Errorf("%w: bad consumer entry %q in %s", ErrCorrupt, lines[0], name+consumerSuffix)
	}
	return LSN(v), true, nil
}

// readConsumers returns every consumer's acked LSN.
func readConsumers(dir string) (map[string]LSN, error) {
	ents, err := os.ReadDir(filepath.Join(dir, consumersDir))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]LSN{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: consumers: %w", err)
	}
	out := make(map[string]LSN, len(ents))
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), consumerSuffix)
		if !ok || !validConsumer(name) {
			continue
		}
		v, ok, err := readConsumer(dir, name)
		if err != nil {
			return nil, err
		}
		if ok {
			out[name] = v
		}
	}
	return out, nil
}

// writeConsumer stores consumer's acked LSN atomically (temp, fsync,
// rename, fsync dir).
func writeConsumer(dir, name string, lsn LSN) error {
	return writeStateFile(filepath.Join(dir, consumersDir), name+consumerSuffix, name+consumerTemp, "consumer",
		[]string{fmt.Sprintf("%s %d", strconv.Quote(name), lsn)})
}

// setAcked is SetAcked for the Log and a Follower: under the cross-process
// lock, it moves consumer's file forward to lsn. It reports whether the
// file changed.
func setAcked(dir, consumer string, lsn LSN) (bool, error) {
	cur, ok, err := readConsumer(dir, consumer)
	if err != nil {
		return false, err
	}
	if ok && lsn <= cur {
		return false, nil
	}
	return true, writeConsumer(dir, consumer, lsn)
}

// migrateConsumers moves the entries of the old single consumers file into
// consumers.d (keeping the higher LSN of both) and removes it.
func migrateConsumers(dir string) error {
	lines, err := readListFile(dir, consumersFile)
	if err != nil || lines == nil {
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
		cur, ok, err := readConsumer(dir, name)
		if err != nil {
			return err
		}
		if !ok || LSN(v) > cur {
			if err := writeConsumer(dir, name, LSN(v)); err != nil {
				return err
			}
		}
	}
	if err := os.Remove(filepath.Join(dir, consumersFile)); err != nil {
		return fmt.Errorf("journal: migrate consumers: %w", err)
	}
	return syncDir(dir)
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
	closed, d := l.closed, l.Durable()
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if lsn > d {
		return fmt.Errorf("%w: ack %d, durable %d", ErrFuture, lsn, d)
	}
	if err := l.ackLock.lock(); err != nil {
		return err
	}
	defer l.ackLock.unlock()
	changed, err := setAcked(l.dir, consumer, lsn)
	if err != nil || !changed {
		return err
	}
	return l.retainLocked()
}

// Acked returns consumer's acked LSN and whether it is registered (as stored,
// so acks made by a Follower count).
func (l *Log) Acked(consumer string) (LSN, bool) {
	if validConsumer(consumer) {
		if v, ok, err := readConsumer(l.dir, consumer); err == nil {
			return v, ok
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.acked[consumer]
	return v, ok
}

// Consumers returns the registered consumers, sorted.
func (l *Log) Consumers() []string {
	if m, err := readConsumers(l.dir); err == nil {
		return sortedKeys(m)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return sortedKeys(l.acked)
}

// RemoveConsumer forgets consumer (e.g. a decommissioned peer), so it no
// longer holds segments back.
func (l *Log) RemoveConsumer(consumer string) error {
	if !validConsumer(consumer) {
		return fmt.Errorf("%w: %q", ErrBadConsumer, consumer)
	}
	l.ackMu.Lock()
	defer l.ackMu.Unlock()
	if err := l.ackLock.lock(); err != nil {
		return err
	}
	defer l.ackLock.unlock()
	if err := removeConsumer(l.dir, consumer); err != nil {
		return err
	}
	return l.retainLocked()
}

// removeConsumer deletes consumer's ack file durably (ack lock held).
func removeConsumer(dir, consumer string) error {
	cdir := filepath.Join(dir, consumersDir)
	if err := os.Remove(filepath.Join(cdir, consumer+consumerSuffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("journal: remove consumer: %w", err)
	}
	return syncDir(cdir)
}

// retain applies retention with the consumers as stored now: run
// periodically (Options.RetainEvery), since a Follower's acks do not call
// into this process.
func (l *Log) retain() error {
	l.ackMu.Lock()
	defer l.ackMu.Unlock()
	if err := l.ackLock.lock(); err != nil {
		return err
	}
	defer l.ackLock.unlock()
	return l.retainLocked()
}

// retainLocked re-reads the consumers and removes what they all acked. The
// caller holds ackMu and the cross-process ack lock, so a consumer a
// Follower registers is either seen here or registered after the removal.
func (l *Log) retainLocked() error {
	acked, err := readConsumers(l.dir)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.acked = acked
	l.mu.Unlock()
	return l.compact()
}

// runRetention is the retention goroutine.
func (l *Log) runRetention() {
	defer close(l.retainDone)
	t := time.NewTicker(l.opts.RetainEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if err := l.retain(); err != nil && !failing {
			l.log.Warn("journal retention failed", "err", err)
			failing = true
		} else if err == nil {
			failing = false
		}
	}
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

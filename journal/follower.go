package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// FollowerOptions configure a Follower. The zero value is usable.
type FollowerOptions struct {
	// Logger receives warnings; nil discards.
	Logger *slog.Logger
	// Poll: how often the durable file is re-read when no change
	// notification came (inotify missing or a change missed). Default 50 ms.
	Poll time.Duration
}

// Follower reads a journal that another process (the writer, Open) has
// open: the peer's view of the mount's journal (doc.go, "Followers"). It
// never takes the writer's LOCK and never writes segments; it writes only
// consumer files (SetAcked). All methods are safe for concurrent use.
type Follower struct {
	dir  string
	poll time.Duration
	log  *slog.Logger

	durable atomic.Uint64

	mu     sync.Mutex
	closed bool
	ch     chan struct{} // closed (and replaced) when durable changes

	ackMu   sync.Mutex
	ackLock *ackLock // opened by the first SetAcked

	w    *watcher // nil: polling only
	stop chan struct{}
	done chan struct{}
}

// OpenFollower opens the journal in dir for reading from another process
// than its writer. dir must hold a journal (ErrNotJournal otherwise); the
// writer need not be running.
func OpenFollower(dir string, o FollowerOptions) (*Follower, error) {
	return openFollower(dir, o, true)
}

// openFollower: notify false polls only (tests of the fallback).
func openFollower(dir string, o FollowerOptions, notify bool) (*Follower, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Poll <= 0 {
		o.Poll = 50 * time.Millisecond
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("journal: open follower: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrNotJournal, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "LOCK")); err != nil {
		return nil, fmt.Errorf("%w: %s: no LOCK file", ErrNotJournal, dir)
	}
	if names, err := listSegments(dir); err != nil {
		return nil, err
	} else if len(names) == 0 {
		return nil, fmt.Errorf("%w: %s: no segments", ErrNotJournal, dir)
	}
	f := &Follower{dir: dir, poll: o.Poll, log: o.Logger.With("journal", dir, "follower", true),
		ch: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	if notify {
		f.w, err = newWatcher(dir)
		if err != nil {
			f.log.Warn("journal follower: no change notification, polling", "every", o.Poll, "err", err)
		}
	}
	if v, ok := readDurableFile(dir); ok {
		f.durable.Store(uint64(v))
	}
	go f.run()
	return f, nil
}

// readDurableFile returns the LSN the writer last published.
func readDurableFile(dir string) (LSN, bool) {
	b, err := os.ReadFile(filepath.Join(dir, durableFile))
	if err != nil {
		return 0, false
	}
	return decodeDurable(b)
}

// run follows the durable file: woken by inotify, or every poll interval.
func (f *Follower) run() {
	defer close(f.done)
	w := f.w         // nil once notification failed
	var cur *os.File // the durable file, nil while missing
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	reopen := true
	for {
		select {
		case <-f.stop:
			return
		default:
		}
		if reopen || !sameFile(cur, filepath.Join(f.dir, durableFile)) {
			cur = f.reopen(w, cur)
		}
		if cur != nil {
			var b [durableSize]byte
			// A read racing a rewrite fails its CRC; the rewrite's
			// notification (or the next poll) brings the new value.
			if n, _ := cur.ReadAt(b[:], 0); n == durableSize {
				if v, ok := decodeDurable(b[:]); ok {
					f.set(v)
				}
			}
		}
		reopen = false
		if w == nil {
			select {
			case <-f.stop:
				return
			case <-time.After(f.poll):
			}
			continue
		}
		var err error
		reopen, err = w.wait(f.poll)
		if err != nil {
			select {
			case <-f.stop:
				return
			default:
			}
			f.log.Warn("journal follower: change notification failed, polling", "every", f.poll, "err", err)
			w.close()
			w = nil
		}
	}
}

// reopen (re)opens the durable file and watches it.
func (f *Follower) reopen(w *watcher, old *os.File) *os.File {
	if old != nil {
		old.Close()
	}
	p := filepath.Join(f.dir, durableFile)
	nf, err := os.Open(p)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			f.log.Warn("journal follower: open durable file", "err", err)
		}
		return nil
	}
	if w != nil {
		if err := w.watchFile(p); err != nil {
			f.log.Warn("journal follower: watch durable file", "err", err)
		}
	}
	return nf
}

// sameFile reports whether the open file is still the one at path.
func sameFile(cur *os.File, path string) bool {
	if cur == nil {
		return false
	}
	a, err1 := cur.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// set publishes v (as the writer wrote it: it goes back only after Repair).
func (f *Follower) set(v LSN) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setLocked(v)
}

func (f *Follower) setLocked(v LSN) {
	old := LSN(f.durable.Load())
	if v == old || f.closed {
		return
	}
	if v < old {
		f.log.Warn("journal follower: the durable LSN went back (journal repaired?)", "was", old, "now", v)
	}
	f.durable.Store(uint64(v))
	close(f.ch)
	f.ch = make(chan struct{})
}

// advance publishes v only when it is ahead (a read outside run).
func (f *Follower) advance(v LSN) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v > LSN(f.durable.Load()) {
		f.setLocked(v)
	}
}

// Durable returns the highest LSN the writer has published as durable.
func (f *Follower) Durable() LSN { return LSN(f.durable.Load()) }

func (f *Follower) waitCh() (<-chan struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	return f.ch, nil
}

func (f *Follower) directory() string { return f.dir }

// segmentFor lists the segments afresh: the writer adds and removes them.
func (f *Follower) segmentFor(lsn LSN) (string, error) {
	names, err := listSegments(f.dir)
	if err != nil {
		return "", err
	}
	for i := len(names) - 1; i >= 0; i-- {
		if first, _ := parseSegName(names[i]); first <= lsn {
			return names[i], nil
		}
	}
	return "", fmt.Errorf("%w: LSN %d", ErrCompacted, lsn)
}

// NewReader returns a Reader whose first record is from (0 means the oldest
// retained record), with Log.NewReader's semantics; "beyond the next LSN"
// (ErrFuture) means beyond Durable()+1 here.
func (f *Follower) NewReader(from LSN) (*Reader, error) {
	if f.isClosed() {
		return nil, ErrClosed
	}
	if v, ok := readDurableFile(f.dir); ok {
		f.advance(v)
	}
	names, err := listSegments(f.dir)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: %s: no segments", ErrNotJournal, f.dir)
	}
	first, _ := parseSegName(names[0])
	if from == 0 {
		from = first
	}
	if from < first {
		return nil, fmt.Errorf("%w: LSN %d (oldest retained %d)", ErrCompacted, from, first)
	}
	if d := f.Durable(); from > d+1 {
		return nil, fmt.Errorf("%w: LSN %d (durable %d)", ErrFuture, from, d)
	}
	return &Reader{l: f, next: from}, nil
}

func (f *Follower) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// OpenBlob opens the blob with this hash for reading.
func (f *Follower) OpenBlob(hash [32]byte) (*os.File, error) {
	file, err := os.Open(blobPath(f.dir, hash))
	if err != nil {
		return nil, fmt.Errorf("journal: open blob: %w", err)
	}
	return file, nil
}

// SetAcked records, durably, that consumer has everything ≤ lsn, like
// Log.SetAcked; the writer's retention takes it into account within
// Options.RetainEvery (and never removes a segment this consumer has not
// acked once SetAcked has returned).
func (f *Follower) SetAcked(consumer string, lsn LSN) error {
	if !validConsumer(consumer) {
		return fmt.Errorf("%w: %q", ErrBadConsumer, consumer)
	}
	if f.isClosed() {
		return ErrClosed
	}
	if lsn > f.Durable() {
		if v, ok := readDurableFile(f.dir); ok {
			f.advance(v)
		}
		if d := f.Durable(); lsn > d {
			return fmt.Errorf("%w: ack %d, durable %d", ErrFuture, lsn, d)
		}
	}
	return f.withAckLock(func() error {
		_, err := setAcked(f.dir, consumer, lsn)
		return err
	})
}

// RemoveConsumer forgets consumer, like Log.RemoveConsumer; the writer's
// retention stops counting it within Options.RetainEvery.
func (f *Follower) RemoveConsumer(consumer string) error {
	if !validConsumer(consumer) {
		return fmt.Errorf("%w: %q", ErrBadConsumer, consumer)
	}
	return f.withAckLock(func() error { return removeConsumer(f.dir, consumer) })
}

// withAckLock runs fn holding the consumers' lock (this process's and the
// cross-process one).
func (f *Follower) withAckLock(fn func() error) error {
	f.ackMu.Lock()
	defer f.ackMu.Unlock()
	if f.ackLock == nil {
		al, err := openAckLock(f.dir)
		if err != nil {
			return err
		}
		f.ackLock = al
	}
	if err := f.ackLock.lock(); err != nil {
		return err
	}
	defer f.ackLock.unlock()
	return fn()
}

// Acked returns consumer's acked LSN and whether it is registered.
func (f *Follower) Acked(consumer string) (LSN, bool) {
	if !validConsumer(consumer) {
		return 0, false
	}
	v, ok, err := readConsumer(f.dir, consumer)
	if err != nil {
		f.log.Warn("journal follower: read consumer", "consumer", consumer, "err", err)
		return 0, false
	}
	return v, ok
}

// Close stops following; blocked Readers get ErrClosed.
func (f *Follower) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return ErrClosed
	}
	f.closed = true
	close(f.ch)
	f.ch = make(chan struct{})
	f.mu.Unlock()
	close(f.stop)
	if f.w != nil {
		f.w.close() // wakes run (idempotent)
	}
	<-f.done
	f.ackMu.Lock()
	defer f.ackMu.Unlock()
	if f.ackLock != nil {
		return f.ackLock.close()
	}
	return nil
}

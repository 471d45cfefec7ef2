package rolemap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// LiveOptions configures a Live map.
type LiveOptions struct {
	Logger *slog.Logger  // nil: discard
	Poll   time.Duration // how often Run stats the file; 0: 1 s
}

// Live is the role map at a path, reloaded when the file changes. Lookups
// never block and never fail: they use whichever map was loaded last, and a
// new file that cannot be read leaves the previous map in service.
type Live struct {
	path string
	log  *slog.Logger
	poll time.Duration

	cur atomic.Pointer[Map]

	mu     sync.Mutex // serialises reloads
	failed fileID     // the last file version that failed to load
	closed bool
}

// NewLive opens the role map at path. It fails if that first map cannot be
// opened: there is no previous map to fall back on.
func NewLive(path string, opts LiveOptions) (*Live, error) {
	l := &Live{path: path, log: opts.Logger, poll: opts.Poll}
	if l.log == nil {
		l.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l.log = l.log.With("rolemap", path)
	if l.poll <= 0 {
		l.poll = time.Second
	}
	m, err := Open(path)
	if err != nil {
		return nil, err
	}
	l.cur.Store(m)
	return l, nil
}

// Lookup returns the account's entry in the current map; (Entry{Role:
// Unknown}, false) when the account is not in it. It never blocks.
func (l *Live) Lookup(account string) (Entry, bool) {
	for {
		m := l.cur.Load()
		if m == nil { // Live closed
			return Entry{}, false
		}
		e, ok, open, _ := m.get(account)
		if open {
			return e, ok
		}
		// A reload swapped m out and closed it after we loaded it: the
		// current map is newer, try again there.
	}
}

// Len returns the number of accounts in the current map.
func (l *Live) Len() int {
	if m := l.cur.Load(); m != nil {
		return m.Len()
	}
	return 0
}

// Reload opens the file at the path again and, if it is a valid role map,
// puts it in service. On error the current map stays in service, the error
// is logged and returned.
func (l *Live) Reload() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reloadLocked()
}

func (l *Live) reloadLocked() error {
	if l.closed {
		return errors.New("rolemap: live map is closed")
	}
	m, err := Open(l.path)
	if err != nil {
		if fi, serr := os.Stat(l.path); serr == nil {
			l.failed = fileIDOf(fi)
		}
		l.log.Error("rolemap: reload failed, keeping the previous map", "err", err)
		return err
	}
	l.failed = fileID{}
	old := l.cur.Swap(m)
	l.log.Info("rolemap: reloaded", "accounts", m.Len())
	if old != nil {
		if err := old.Close(); err != nil {
			l.log.Warn("rolemap: closing the previous map", "err", err)
		}
	}
	return nil
}

// Refresh reloads the map if the file at the path changed since it was
// loaded (one stat when it did not): a caller that must see the file's
// current content, as a role change does, calls it before Lookup.
func (l *Live) Refresh() error {
	if !l.changed() {
		return nil
	}
	return l.Reload()
}

// changed reports whether the file at the path is not the loaded one, and
// not a version that already failed to load.
func (l *Live) changed() bool {
	fi, err := os.Stat(l.path)
	if err != nil {
		return false // gone for now: keep the map; a new file will show up
	}
	id := fileIDOf(fi)
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.cur.Load()
	return m != nil && id != m.id && id != l.failed
}

// Run reloads the map when the file changes (polled every Poll: inode, size,
// mtime) and on SIGHUP, until ctx is done; then it returns nil. Failed
// reloads are logged, never returned.
func (l *Live) Run(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(l.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			l.log.Info("rolemap: SIGHUP, reloading")
			_ = l.Reload()
		case <-t.C:
			if l.changed() {
				_ = l.Reload()
			}
		}
	}
}

// Close closes the current map; later lookups find nothing.
func (l *Live) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if m := l.cur.Swap(nil); m != nil {
		if err := m.Close(); err != nil {
			return fmt.Errorf("rolemap: %w", err)
		}
	}
	return nil
}

package journal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

const (
	activeFile  = "active"
	uncleanFile = "unclean"
	cleanFile   = "clean"
)

// activeAcct is an account in the activity log: its last appended LSN and
// when it was last seen.
type activeAcct struct {
	last LSN
	seen time.Time
}

type alSnapshot struct{ set map[string]bool }

func (s *alSnapshot) lines() []string { return quotedLines(s.set) }

func (l *Log) noteActiveLocked(account string, lsn LSN) {
	st := l.active[account]
	if st == nil {
		st = &activeAcct{}
		l.active[account] = st
	}
	st.last, st.seen = lsn, time.Now()
	if !l.alFile[account] {
		l.alNew = true
	}
}

// activitySnapshotLocked expires quiet accounts (all records durable, not
// seen for ActiveWindow) and returns the set to write, or nil when the
// durable activity log needs no change.
func (l *Log) activitySnapshotLocked(now time.Time) *alSnapshot {
	expire := now.Sub(l.alAt) >= l.opts.ActiveWindow/2
	if !l.alNew && !expire {
		return nil
	}
	changed := l.alNew
	if expire {
		l.alAt = now
		d := l.Durable()
		for a, st := range l.active {
			if st.last <= d && now.Sub(st.seen) > l.opts.ActiveWindow {
				delete(l.active, a)
				changed = changed || l.alFile[a]
				// Not in the log any more as of this snapshot: an Activate
				// from now on must wait for a commit that has it again
				// (the file written by this commit lacks it).
				delete(l.alFile, a)
			}
		}
	}
	if !changed {
		return nil
	}
	l.alNew = false
	set := make(map[string]bool, len(l.active))
	for a := range l.active {
		set[a] = true
	}
	return &alSnapshot{set: set}
}

// Activate returns once account is in the durable activity log, so that an
// unclean stop lists it even if none of its coming records become durable.
// The fs layer calls it before an account's first mutation; while the account
// stays active it returns at once.
func (l *Log) Activate(ctx context.Context, account string) error {
	l.mu.Lock()
	st := l.active[account]
	if st == nil {
		st = &activeAcct{}
		l.active[account] = st
	}
	st.seen = time.Now()
	for !l.alFile[account] {
		if l.closed {
			l.mu.Unlock()
			return ErrClosed
		}
		if l.err != nil {
			err := l.err
			l.mu.Unlock()
			return err
		}
		l.alNew = true
		ch := l.durableCh
		l.mu.Unlock()
		l.kickCommit()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("journal: activate: %w", ctx.Err())
		}
		l.mu.Lock()
		if l.active[account] == nil { // expired meanwhile (not possible within a window, but be safe)
			l.active[account] = &activeAcct{seen: time.Now()}
		}
	}
	l.mu.Unlock()
	return nil
}

// startActivity runs at open: an unclean stop moves the activity log's
// accounts into the unclean list; then the stop is marked unclean (the clean
// marker removed) for this session.
func (l *Log) startActivity(fresh bool) error {
	lines, err := readListFile(l.dir, uncleanFile)
	if err != nil {
		return err
	}
	for _, ln := range lines {
		a, _, err := parseEntry(ln)
		if err != nil {
			return err
		}
		l.unclean[a] = true
	}
	_, err = os.Stat(filepath.Join(l.dir, cleanFile))
	clean := err == nil
	if !fresh && !clean {
		lines, err := readListFile(l.dir, activeFile)
		if err != nil {
			return err
		}
		added := 0
		for _, ln := range lines {
			a, _, err := parseEntry(ln)
			if err != nil {
				return err
			}
			if !l.unclean[a] {
				l.unclean[a] = true
				added++
			}
		}
		if added > 0 {
			if err := writeListFile(l.dir, uncleanFile, quotedLines(l.unclean)); err != nil {
				return err
			}
		}
		l.log.Warn("journal was not closed cleanly: accounts with possibly unsynced changes listed for verification",
			"accounts", len(l.unclean), "new", added)
	}
	for _, n := range []string{activeFile, cleanFile} {
		if err := os.Remove(filepath.Join(l.dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal: open: %w", err)
		}
	}
	return syncDir(l.dir)
}

// markClean runs at Close, after everything is durable.
func (l *Log) markClean() error {
	if err := os.Remove(filepath.Join(l.dir, activeFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("journal: close: %w", err)
	}
	return writeListFile(l.dir, cleanFile, nil)
}

// UncleanAccounts lists, sorted, the accounts that may have changes the
// journal lost in an unclean stop (the unsynced tail): verification (hash
// compare against the backing store) should target them. The list persists
// across opens until ClearUnclean.
func (l *Log) UncleanAccounts() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return sortedKeys(l.unclean)
}

// ClearUnclean removes accounts from the unclean list once verified.
func (l *Log) ClearUnclean(accounts ...string) error {
	l.ackMu.Lock() // serializes state-file writes without holding up Append
	defer l.ackMu.Unlock()
	l.mu.Lock()
	for _, a := range accounts {
		delete(l.unclean, a)
	}
	lines := quotedLines(l.unclean)
	l.mu.Unlock()
	return writeListFile(l.dir, uncleanFile, lines)
}

// UncleanAccounts lists, sorted, the writer's unclean accounts (see
// Log.UncleanAccounts), read from <dir>/unclean, and when that list was last
// written: the peer process resyncs them by hash compare, then asks the
// writer to clear them.
func (f *Follower) UncleanAccounts() ([]string, time.Time, error) {
	var written time.Time
	if fi, err := os.Stat(filepath.Join(f.dir, uncleanFile)); err == nil {
		written = fi.ModTime()
	}
	lines, err := readListFile(f.dir, uncleanFile)
	if err != nil {
		return nil, written, err
	}
	set := map[string]bool{}
	for _, ln := range lines {
		a, _, err := parseEntry(ln)
		if err != nil {
			return nil, written, err
		}
		set[a] = true
	}
	return sortedKeys(set), written, nil
}

package peer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"mreplfs/journal"
)

// What a role change (promote, demote, failover; cmd/mreplfs) needs of the
// sender and the applier.

// errRestart ends a session whose set of accounts changed: Run reconnects
// at once, and the new Hello names the accounts the role map gives now.
var errRestart = errors.New("peer: the accounts to ship changed; reconnecting")

// Restart ends the current session, if any; Run reconnects at once with the
// accounts the role map gives now (Accounts).
func (s *Sender) Restart() {
	s.curMu.Lock()
	s.gen++ // a session being set up now restarts too (session)
	c := s.cur
	s.curMu.Unlock()
	if c != nil {
		c.stop(errRestart)
		return
	}
	select { // waiting to reconnect: now
	case s.kicked() <- struct{}{}:
	default:
	}
}

// kicked is the channel Restart signals while Run waits to reconnect.
func (s *Sender) kicked() chan struct{} {
	s.curMu.Lock()
	defer s.curMu.Unlock()
	if s.kick == nil {
		s.kick = make(chan struct{}, 1)
	}
	return s.kick
}

// Connected reports whether a session is streaming.
func (s *Sender) Connected() bool {
	s.curMu.Lock()
	defer s.curMu.Unlock()
	return s.cur != nil
}

// ErrNotShipped is wrapped by Drain when the partner does not take the
// account in the current session (refused, quarantined, resyncing).
var ErrNotShipped = errors.New("peer: account is not being shipped to the partner")

// Drain waits until the streaming session has read the journal through
// upTo and the partner acknowledged every record of account it sent. It
// returns the account's last record sent in this session (0: none; every
// earlier one was acknowledged in an earlier session) and the position the
// partner acknowledged for it. It fails when ctx ends, or at once when the
// partner does not take the account (ErrNotShipped).
func (s *Sender) Drain(ctx context.Context, account string, upTo journal.LSN) (sent, applied uint64, err error) {
	for {
		s.curMu.Lock()
		c := s.cur
		s.curMu.Unlock()
		if c != nil {
			c.mu.Lock()
			ok, read, last, app := c.ok[account], c.readUpTo, c.lastSent[account], c.applied[account]
			c.mu.Unlock()
			if !ok {
				return 0, 0, fmt.Errorf("%w: %s", ErrNotShipped, account)
			}
			if read >= upTo && app >= uint64(last) {
				return uint64(last), app, nil
			}
		}
		select {
		case <-ctx.Done():
			if c == nil {
				return 0, 0, fmt.Errorf("peer: drain %s: not connected to %s: %w", account, s.Partner, ctx.Err())
			}
			return 0, 0, fmt.Errorf("peer: drain %s through %d: %w", account, upTo, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// SetKnown records that the partner holds account up to applied (a role
// change set its position), so a later Welcome reporting that position is
// not taken for a lost state; saved at once.
func (s *Sender) SetKnown(account string, applied uint64) {
	k := s.knownLoad()
	k.mu.Lock()
	k.m[account], k.dirty = applied, true
	delete(k.replay, account)
	k.mu.Unlock()
	s.saveKnown()
}

// SetPosition replaces an account's persisted position and state (a role
// change: the account now follows another master, whose journal positions
// start at p.Applied).
func (a *DirApplier) SetPosition(account string, p AccountPos) error {
	if p.Since.IsZero() {
		p.Since = time.Now()
	}
	return a.st.update(func(get func(string) AccountPos, put func(string, AccountPos)) {
		put(account, p)
	})
}

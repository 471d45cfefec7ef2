package fs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"mreplfs/journal"
)

// Per-account freeze (DESIGN.md §6, §8): a role change first freezes the
// account on its master. A freeze is granted only when the account is
// inactive — no open file handle in its trees and no mutation for a given
// idle time — and then holds every new mutation of the account in the guard
// (bounded: the freeze expires after its timeout) until Unfreeze. Held
// mutations then look the role up again, so after a flip to replica they get
// EROFS and change nothing.
//
// Every mutating operation on an account path enters the account's gate in
// the guard and leaves it when its record is appended (target.done), so a
// freeze also waits for the mutations already past the guard: once Freeze
// returns, every change of the account is in the journal and durable.

// ErrBusy is wrapped by Freeze when the account is not inactive.
var ErrBusy = errors.New("fs: account is busy")

// gate is one account's activity and freeze state.
type gate struct {
	mu       sync.Mutex
	inflight int       // mutations past the guard, record not yet appended
	handles  int       // open file handles in the account's trees
	lastMut  time.Time // when the last mutation entered the guard

	frozen  bool
	thaw    chan struct{} // closed when the freeze ends
	idle    chan struct{} // with frozen: closed when inflight drops to 0
	expire  *time.Timer
	started time.Time
}

func (f *FS) gateOf(account string) *gate {
	if g, ok := f.gates.Load(account); ok {
		return g.(*gate)
	}
	g, _ := f.gates.LoadOrStore(account, &gate{})
	return g.(*gate)
}

// enter waits while the account is frozen, then counts one mutation in
// flight. The caller must leave.
func (g *gate) enter() {
	g.mu.Lock()
	for g.frozen {
		ch := g.thaw
		g.mu.Unlock()
		<-ch
		g.mu.Lock()
	}
	g.inflight++
	g.lastMut = time.Now()
	g.mu.Unlock()
}

func (g *gate) leave() {
	g.mu.Lock()
	g.inflight--
	if g.inflight == 0 && g.frozen && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
	g.mu.Unlock()
}

// done ends a guarded mutation (a no-op for targets without a gate).
func (tg target) done() {
	if tg.gate != nil {
		tg.gate.leave()
	}
}

// openHandle counts an open file handle of account; the returned function
// uncounts it.
func (f *FS) openHandle(account string) func() {
	g := f.gateOf(account)
	g.mu.Lock()
	g.handles++
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.handles--
			g.mu.Unlock()
		})
	}
}

// FreezeInfo is what a granted freeze reports.
type FreezeInfo struct {
	// LSN is the account's last record appended by this mount process (0:
	// none since it started).
	LSN journal.LSN
	// Durable is the journal's durable position once every change of the
	// account was synced: no record of the account lies above it.
	Durable journal.LSN
}

// durabler is the part of the journal that says how far it is durable
// (*journal.Log).
type durabler interface{ Durable() journal.LSN }

// Freeze freezes account for at most timeout, if it is inactive: no open
// file handle and no mutation during the last idle. It waits (bounded by
// ctx) for the mutations already past the guard and syncs the journal. On
// any failure the account is not frozen; a busy account gives an error
// wrapping ErrBusy that says why.
func (f *FS) Freeze(ctx context.Context, account string, idle, timeout time.Duration) (FreezeInfo, error) {
	if account == "" {
		return FreezeInfo{}, errors.New("fs: freeze: no account")
	}
	if timeout <= 0 {
		return FreezeInfo{}, errors.New("fs: freeze: no timeout")
	}
	g := f.gateOf(account)
	g.mu.Lock()
	switch {
	case g.frozen:
		g.mu.Unlock()
		return FreezeInfo{}, fmt.Errorf("%w: %s is frozen already", ErrBusy, account)
	case g.handles > 0:
		n := g.handles
		g.mu.Unlock()
		return FreezeInfo{}, fmt.Errorf("%w: %s has %d open file(s)", ErrBusy, account, n)
	case !g.lastMut.IsZero() && time.Since(g.lastMut) < idle:
		ago := time.Since(g.lastMut)
		g.mu.Unlock()
		return FreezeInfo{}, fmt.Errorf("%w: %s changed %v ago (wanted %v idle)", ErrBusy, account, ago.Round(time.Millisecond), idle)
	}
	g.frozen, g.thaw, g.started = true, make(chan struct{}), time.Now()
	thaw := g.thaw
	g.expire = time.AfterFunc(timeout, func() {
		if f.unfreeze(account, thaw) {
			f.log.Warn("freeze expired", "account", account, "after", timeout)
		}
	})
	var idleCh chan struct{}
	if g.inflight > 0 {
		g.idle = make(chan struct{})
		idleCh = g.idle
	}
	g.mu.Unlock()

	fail := func(err error) (FreezeInfo, error) {
		f.unfreeze(account, thaw)
		return FreezeInfo{}, err
	}
	if idleCh != nil {
		select {
		case <-idleCh:
		case <-ctx.Done():
			return fail(fmt.Errorf("%w: %s: changes under way did not finish: %w", ErrBusy, account, ctx.Err()))
		}
	}
	g.mu.Lock()
	handles := g.handles
	g.mu.Unlock()
	lsn := journal.LSN(f.repl.acct(account).appended.Load())
	if handles > 0 { // opened while we waited
		return fail(fmt.Errorf("%w: %s has %d open file(s)", ErrBusy, account, handles))
	}
	info := FreezeInfo{LSN: lsn}
	if f.journal != nil {
		if err := f.journal.Sync(ctx, journal.LSN(math.MaxInt64)); err != nil {
			return fail(fmt.Errorf("fs: freeze %s: journal sync: %w", account, err))
		}
		if d, ok := f.journal.(durabler); ok {
			info.Durable = d.Durable()
		}
	}
	f.log.Info("account frozen", "account", account, "lsn", info.LSN, "durable", info.Durable, "timeout", timeout)
	return info, nil
}

// Unfreeze ends account's freeze; held mutations go on (and meet the
// current role). It reports whether the account was frozen (false: it was
// not, or the freeze had expired).
func (f *FS) Unfreeze(account string) bool {
	return f.unfreeze(account, nil)
}

// unfreeze ends the freeze whose thaw channel is want (nil: any).
func (f *FS) unfreeze(account string, want chan struct{}) bool {
	g := f.gateOf(account)
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.frozen || want != nil && g.thaw != want {
		return false
	}
	g.frozen = false
	g.expire.Stop()
	close(g.thaw)
	g.thaw, g.idle = nil, nil
	f.log.Info("account unfrozen", "account", account, "held", time.Since(g.started).Round(time.Microsecond))
	return true
}

// FrozenFor reports how long account has been frozen (false: it is not).
func (f *FS) FrozenFor(account string) (time.Duration, bool) {
	g := f.gateOf(account)
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.frozen {
		return 0, false
	}
	return time.Since(g.started), true
}

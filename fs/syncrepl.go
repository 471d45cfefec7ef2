package fs

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"mreplfs/rolemap"
)

// SyncMode says when an fsync of an account's file or directory returns
// (issue 7, DESIGN.md invariant 3).
type SyncMode uint8

const (
	// SyncAsync returns once the journal records are durable locally; the
	// peer ships them within about a second ("rolling" replication).
	SyncAsync SyncMode = iota
	// SyncSync returns only when the replica has durably applied every
	// record of the account appended up to the fsync.
	SyncSync
)

func (m SyncMode) String() string {
	if m == SyncSync {
		return "sync"
	}
	return "async"
}

// SyncPolicy says what a sync fsync does when the replica's ack does not come
// within the timeout. There is no silent fallback: both are logged, counted
// and shown in status.
type SyncPolicy uint8

const (
	// PolicyDegrade returns success, switches the account to async (an
	// alert) and back to sync once the replica has caught up.
	PolicyDegrade SyncPolicy = iota
	// PolicyRefuse returns EIO: for accounts where losing an acknowledged
	// message is worse than a failed delivery (Cyrus answers 451, the
	// sender retries).
	PolicyRefuse
)

func (p SyncPolicy) String() string {
	if p == PolicyRefuse {
		return "refuse"
	}
	return "degrade"
}

// DefaultSyncTimeout is how long a sync fsync waits for the replica by
// default.
const DefaultSyncTimeout = 3 * time.Second

// SyncRule is the mode of one account (or the default).
type SyncRule struct {
	Mode    SyncMode
	Policy  SyncPolicy
	Timeout time.Duration // > 0
}

// SyncSettings are the per-account modes and the default. They can be
// replaced at any time (FS.SetSyncSettings): no remount.
type SyncSettings struct {
	Default  SyncRule
	Accounts map[string]SyncRule
}

// Rule returns account's rule.
func (s *SyncSettings) Rule(account string) SyncRule {
	if r, ok := s.Accounts[account]; ok {
		return r
	}
	return s.Default
}

// ParseSyncMode parses "sync" or "async".
func ParseSyncMode(s string) (SyncMode, error) {
	switch s {
	case "sync":
		return SyncSync, nil
	case "async":
		return SyncAsync, nil
	}
	return 0, fmt.Errorf("sync mode %q is not sync or async", s)
}

// ParseSyncPolicy parses "degrade" or "refuse".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch s {
	case "degrade":
		return PolicyDegrade, nil
	case "refuse":
		return PolicyRefuse, nil
	}
	return 0, fmt.Errorf("sync policy %q is not degrade or refuse", s)
}

// ParseSyncAccount parses one per-account line, "ACCOUNT MODE [POLICY]
// [TIMEOUT]"; what it omits comes from def.
func ParseSyncAccount(line string, def SyncRule) (string, SyncRule, error) {
	f := strings.Fields(line)
	if len(f) < 2 || len(f) > 4 {
		return "", SyncRule{}, fmt.Errorf("sync account %q: want ACCOUNT MODE [POLICY] [TIMEOUT]", line)
	}
	r := def
	var err error
	if r.Mode, err = ParseSyncMode(f[1]); err != nil {
		return "", SyncRule{}, fmt.Errorf("sync account %s: %w", f[0], err)
	}
	if len(f) > 2 {
		if r.Policy, err = ParseSyncPolicy(f[2]); err != nil {
			return "", SyncRule{}, fmt.Errorf("sync account %s: %w", f[0], err)
		}
	}
	if len(f) > 3 {
		if r.Timeout, err = time.ParseDuration(f[3]); err != nil || r.Timeout <= 0 {
			return "", SyncRule{}, fmt.Errorf("sync account %s: timeout %q is not a positive duration", f[0], f[3])
		}
	}
	return f[0], r, nil
}

// replState is what the mount knows of replication per account: the last
// record appended, the last one the replica applied (pushed by the peer
// process over the control socket), and the degraded state.
type replState struct {
	settings atomic.Pointer[SyncSettings]
	accts    sync.Map // account → *acctRepl

	waits, timeouts, degrades, restores, refusals atomic.Int64
}

type acctRepl struct {
	appended atomic.Uint64 // last LSN appended for the account
	acked    atomic.Uint64 // the replica has applied up to here

	mu            sync.Mutex
	advanced      chan struct{} // closed when acked moves (then replaced)
	degraded      bool
	degradedSince time.Time
	degradedAt    uint64 // appended when it degraded: caught up once acked reaches it
	lastRefusal   time.Time
}

func (s *replState) acct(account string) *acctRepl {
	if a, ok := s.accts.Load(account); ok {
		return a.(*acctRepl)
	}
	a, _ := s.accts.LoadOrStore(account, &acctRepl{advanced: make(chan struct{})})
	return a.(*acctRepl)
}

func storeMax(v *atomic.Uint64, x uint64) bool {
	for {
		cur := v.Load()
		if x <= cur {
			return false
		}
		if v.CompareAndSwap(cur, x) {
			return true
		}
	}
}

// noteAppended is called for every journaled record of a real account.
func (s *replState) noteAppended(account string, lsn uint64) {
	if strings.HasPrefix(account, PendingAccount("")) {
		return
	}
	storeMax(&s.acct(account).appended, lsn)
}

// SetSyncSettings replaces the sync modes (nil: every account async). It
// takes effect for the next fsync.
func (f *FS) SetSyncSettings(s *SyncSettings) {
	if s != nil && s.Default.Timeout <= 0 {
		c := *s
		c.Default.Timeout = DefaultSyncTimeout
		s = &c
	}
	f.repl.settings.Store(s)
}

// NoteAcked records the replica's applied positions (the peer process
// pushes them on every Ack) and wakes the fsyncs they satisfy. A degraded
// account that has caught up is switched back to sync.
func (f *FS) NoteAcked(positions map[string]uint64) {
	for account, lsn := range positions {
		a := f.repl.acct(account)
		if !storeMax(&a.acked, lsn) {
			continue
		}
		a.mu.Lock()
		close(a.advanced)
		a.advanced = make(chan struct{})
		restored := a.degraded && lsn >= a.degradedAt
		var since time.Duration
		if restored {
			a.degraded = false
			since = time.Since(a.degradedSince)
		}
		a.mu.Unlock()
		if restored {
			f.repl.restores.Add(1)
			f.log.Warn("sync replication restored: the replica caught up", "account", account,
				"applied", lsn, "degraded_for", since.Round(time.Millisecond))
		}
	}
}

// waitReplica is the sync-mode half of an fsync of tree/rel: for a master
// account in sync mode it waits until the replica has applied every record
// of the account appended so far, or the account's timeout passes (then its
// policy decides).
func (f *FS) waitReplica(ctx context.Context, tree, rel string) syscall.Errno {
	set := f.repl.settings.Load()
	if set == nil || f.journal == nil {
		return 0
	}
	c := f.classify.Classify(classPath(tree, rel))
	if c.Kind != KindAccount {
		return 0
	}
	rule := set.Rule(c.Account)
	if rule.Mode != SyncSync {
		return 0
	}
	if e, ok := f.roles.Lookup(c.Account); !ok || e.Role != rolemap.Master {
		return 0
	}
	a := f.repl.acct(c.Account)
	target := a.appended.Load()
	if a.acked.Load() >= target {
		return 0
	}
	a.mu.Lock()
	degraded := a.degraded
	a.mu.Unlock()
	if degraded && rule.Policy == PolicyDegrade {
		return 0 // async until the replica catches up (NoteAcked)
	}
	f.repl.waits.Add(1)
	// The wait is bounded by the timeout and ignores ctx: an interrupted
	// fsync (any signal the caller catches) would fail the delivery, and
	// Cyrus does not retry an fsync.
	timer := time.NewTimer(rule.Timeout)
	defer timer.Stop()
	for {
		a.mu.Lock()
		ch := a.advanced
		a.mu.Unlock()
		if a.acked.Load() >= target {
			return 0
		}
		select {
		case <-ch:
		case <-timer.C:
			if a.acked.Load() >= target { // the ack and the timer at once
				return 0
			}
			return f.replicaTimeout(c.Account, a, rule, target)
		}
	}
}

// replicaTimeout applies rule's policy when the replica's ack for target
// did not come in time.
func (f *FS) replicaTimeout(account string, a *acctRepl, rule SyncRule, target uint64) syscall.Errno {
	f.repl.timeouts.Add(1)
	acked := a.acked.Load()
	if rule.Policy == PolicyRefuse {
		f.repl.refusals.Add(1)
		a.mu.Lock()
		logIt := time.Since(a.lastRefusal) >= time.Second
		if logIt {
			a.lastRefusal = time.Now()
		}
		a.mu.Unlock()
		if logIt {
			f.log.Error("sync replication: the replica did not ack in time; fsync refused (EIO)", "account", account,
				"want", target, "applied", acked, "timeout", rule.Timeout)
		}
		return syscall.EIO
	}
	a.mu.Lock()
	first := !a.degraded
	if first {
		a.degraded, a.degradedSince, a.degradedAt = true, time.Now(), a.appended.Load()
	}
	a.mu.Unlock()
	if first {
		f.repl.degrades.Add(1)
		f.log.Error("sync replication DEGRADED to async: the replica did not ack in time", "account", account,
			"want", target, "applied", acked, "timeout", rule.Timeout)
	}
	return 0
}

// SyncAccountStatus is one account's replication state in status.
type SyncAccountStatus struct {
	Account  string `json:"account"`
	Mode     string `json:"mode"`
	Policy   string `json:"policy,omitempty"`
	Appended uint64 `json:"appended"`
	Applied  uint64 `json:"applied"`
	Degraded bool   `json:"degraded,omitempty"`
	Since    string `json:"degraded_since,omitempty"`
}

// SyncStatus is the sync-mode part of the mount's status.
type SyncStatus struct {
	Default  string              `json:"default"`
	Waits    int64               `json:"waits"`    // fsyncs that waited for the replica
	Timeouts int64               `json:"timeouts"` // waits that timed out
	Degrades int64               `json:"degrades"` // switches to async
	Restores int64               `json:"restores"` // switches back to sync
	Refusals int64               `json:"refusals"` // fsyncs answered EIO
	Accounts []SyncAccountStatus `json:"accounts,omitempty"`
}

// SyncStatus reports the sync settings and every account known to the
// replication state.
func (f *FS) SyncStatus() SyncStatus {
	st := SyncStatus{Default: "async", Waits: f.repl.waits.Load(), Timeouts: f.repl.timeouts.Load(),
		Degrades: f.repl.degrades.Load(), Restores: f.repl.restores.Load(), Refusals: f.repl.refusals.Load()}
	set := f.repl.settings.Load()
	if set != nil {
		st.Default = set.Default.Mode.String() + "/" + set.Default.Policy.String() + "/" + set.Default.Timeout.String()
	}
	f.repl.accts.Range(func(k, v any) bool {
		a := v.(*acctRepl)
		as := SyncAccountStatus{Account: k.(string), Mode: "async", Appended: a.appended.Load(), Applied: a.acked.Load()}
		if set != nil {
			r := set.Rule(as.Account)
			as.Mode = r.Mode.String()
			if r.Mode == SyncSync {
				as.Policy = r.Policy.String()
			}
		}
		a.mu.Lock()
		if a.degraded {
			as.Degraded, as.Since = true, a.degradedSince.UTC().Format(time.RFC3339)
		}
		a.mu.Unlock()
		st.Accounts = append(st.Accounts, as)
		return true
	})
	return st
}

// AccountPositions returns the last LSN appended for account and the last
// one the replica reported applied (0 when unknown).
func (f *FS) AccountPositions(account string) (appended, applied uint64) {
	a := f.repl.acct(account)
	return a.appended.Load(), a.acked.Load()
}

// WaitApplied waits until the replica has applied account up to lsn, or ctx
// ends (for promote's drain).
func (f *FS) WaitApplied(ctx context.Context, account string, lsn uint64) error {
	a := f.repl.acct(account)
	for {
		a.mu.Lock()
		ch := a.advanced
		a.mu.Unlock()
		if a.acked.Load() >= lsn {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fs: account %s: replica applied %d, want %d: %w", account, a.acked.Load(), lsn, ctx.Err())
		}
	}
}

// uncleanClearer is the journal's side of ClearUnclean (journal.Log).
type uncleanClearer interface {
	UncleanAccounts() []string
	ClearUnclean(accounts ...string) error
}

// ClearUnclean removes accounts from the journal's unclean list once the
// peer has resynced them in full (hash compare) after an unclean stop. A
// resync that began before this mount process started proves nothing about
// the stop this process found (it may have crashed again meanwhile): it is
// ignored. Returns how many accounts were cleared.
func (f *FS) ClearUnclean(accounts []string, since time.Time) (int, error) {
	j, ok := f.journal.(uncleanClearer)
	if !ok {
		return 0, nil
	}
	if since.Before(f.started) {
		f.log.Warn("verification began before this mount started: unclean accounts kept", "accounts", accounts,
			"began", since, "started", f.started)
		return 0, nil
	}
	var clear []string
	for _, a := range j.UncleanAccounts() {
		if slices.Contains(accounts, a) {
			clear = append(clear, a)
		}
	}
	if len(clear) == 0 {
		return 0, nil
	}
	if err := j.ClearUnclean(clear...); err != nil {
		return 0, fmt.Errorf("fs: clear unclean accounts: %w", err)
	}
	f.log.Info("accounts verified after an unclean stop", "accounts", clear)
	return len(clear), nil
}

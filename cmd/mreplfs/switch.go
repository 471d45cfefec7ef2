package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"mreplfs/fs"
	"mreplfs/internal/durable"
	"mreplfs/journal"
	"mreplfs/peer"
	"mreplfs/rolemap"
)

// The peer daemon's part in role changes (DESIGN.md §6): it answers the
// admin requests of `mreplfs promote`, `demote` and `failover` (peer admin
// connections over the replication listener), and resolves a two-phase
// flip a crash left half done.
//
// The two-phase flip of an account between its master M and replica R, at
// epoch e (the coordinator is the promote command):
//
//  1. freeze on M (its mount holds the account's mutations), drain M's
//     records to R and check R applied them all;
//  2. prepare on R, then on M: each writes a prepare file (state dir,
//     roles/ACCOUNT.prepare) naming the account, old and new role, the new
//     epoch e+1 and what the commit needs (the new master's journal
//     position, where the new replica's applied position starts);
//  3. commit on M — the decision point: M's role map says replica at e+1
//     (rebuilt atomically), its mount reloads and unfreezes (held writes
//     get EROFS), its sender reconnects without the account;
//  4. commit on R: master at e+1, its receiver stops taking the account,
//     its mount reloads and forgets the account's cached pages, its sender
//     reconnects with it.
//
// A prepare file left by a crash is resolved by the higher epoch (resolve,
// at start and every second): a role map already at e+1 finishes the
// commit; a partner at e+1 makes this side commit; M aborts its prepare
// once its deadline passed (its commit is refused after it, so the two
// never race), and R aborts when M holds neither e+1 nor a prepare. Both
// sides thus end at e (nothing changed) or at e+1 (roles swapped).

// crashAt is the test hook of the crash-injection tests: with
// MREPLFS_CRASH_AT=<point> the peer kills itself (SIGKILL) at that point
// of a role change (crashPoints).
var crashAt = os.Getenv("MREPLFS_CRASH_AT")

// crashPoints are the points crashAt may name.
var crashPoints = []string{"prepare", "commit-begin", "commit-rolemap", "commit-end"}

func crashPoint(p string) {
	if crashAt == p {
		fmt.Fprintf(os.Stderr, "MREPLFS_CRASH_AT=%s: killing myself\n", p)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}

// prepareFile is a prepared, uncommitted role change of one account.
type prepareFile struct {
	Account  string    `json:"account"`
	OldRole  string    `json:"old_role"`
	NewRole  string    `json:"new_role"`
	OldEpoch uint64    `json:"old_epoch"`
	NewEpoch uint64    `json:"new_epoch"`
	Partner  string    `json:"partner"` // the partner's peer address
	Deadline time.Time `json:"deadline"`
	// PartnerLSN: for a new replica, the new master's journal position:
	// its records of the account after the flip lie above it.
	PartnerLSN uint64 `json:"partner_lsn,omitempty"`
	// OwnLSN: for a new master, this node's journal position at prepare
	// (the partner's applied position starts there).
	OwnLSN uint64 `json:"own_lsn,omitempty"`
}

// roleSwitch is the peer daemon's role-change state.
type roleSwitch struct {
	cfg     *peerConfig
	log     *slog.Logger
	live    *rolemap.Live
	applier *peer.DirApplier // nil without a receiver
	recv    *peer.Receiver   // nil without a receiver
	senders map[string]*peer.Sender
	jrnl    peer.Journal // nil without a journal
	fence   func(ctx context.Context, account string, epoch, applied uint64) error

	mu sync.Mutex // one role change step at a time

	fenceRetry map[string]fenceBackoff // resolveFences's own (one goroutine)
}

func (w *roleSwitch) dir() string { return filepath.Join(w.cfg.state, "roles") }

func (w *roleSwitch) preparePath(account string) string {
	return filepath.Join(w.dir(), url.PathEscape(account)+".prepare")
}

func (w *roleSwitch) readPrepare(account string) (*prepareFile, error) {
	return readRoleState[prepareFile](w.preparePath(account))
}

// readRoleState reads one JSON file of STATE/roles (nil, nil: there is none).
func readRoleState[T any](path string) (*T, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return &v, nil
}

// roleStateAccounts lists the accounts that have a STATE/roles/ACCOUNT+suffix
// file.
func roleStateAccounts(dir, suffix string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, de := range ents {
		name, ok := strings.CutSuffix(de.Name(), suffix)
		if !ok {
			continue
		}
		if account, err := url.PathUnescape(name); err == nil {
			out = append(out, account)
		}
	}
	return out, nil
}

// listRoleState reads every STATE/roles/*suffix file; the first error is
// returned with what could be read.
func listRoleState[T any](state, suffix string) ([]T, error) {
	dir := filepath.Join(state, "roles")
	accounts, err := roleStateAccounts(dir, suffix)
	var out []T
	for _, a := range accounts {
		v, rerr := readRoleState[T](filepath.Join(dir, url.PathEscape(a)+suffix))
		if rerr != nil {
			if err == nil {
				err = rerr
			}
			continue
		}
		if v != nil {
			out = append(out, *v)
		}
	}
	return out, err
}

func (w *roleSwitch) writePrepare(p *prepareFile) error {
	if err := os.MkdirAll(w.dir(), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return durable.WriteFile(w.preparePath(p.Account), b)
}

// removePrepare removes the account's prepare file. Not synced: a removal
// lost in a crash only makes the resolver settle the account again, to the
// same end.
func (w *roleSwitch) removePrepare(account string) error {
	if err := os.Remove(w.preparePath(account)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// entry is the account's current role map entry: the live map, reloaded
// first if the file changed (it may lag a poll behind otherwise).
func (w *roleSwitch) entry(account string) (rolemap.Entry, bool, error) {
	if err := w.live.Refresh(); err != nil {
		return rolemap.Entry{}, false, err
	}
	e, ok := w.live.Lookup(account)
	return e, ok, nil
}

func ok(vals map[string]string) peer.AdminReply { return peer.AdminReply{Values: vals} }

func refused(format string, a ...any) peer.AdminReply {
	return peer.AdminReply{Status: peer.AdminRefused, Reason: fmt.Sprintf(format, a...)}
}

func failed(err error) peer.AdminReply {
	return peer.AdminReply{Status: peer.AdminFailed, Reason: err.Error()}
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

// handle answers one admin request (peer.Receiver.Admin).
func (w *roleSwitch) handle(ctx context.Context, node string, req peer.AdminRequest) peer.AdminReply {
	if _, partner := w.cfg.partners[node]; node != w.cfg.node && !partner {
		w.log.Warn("admin request refused: not this node or a partner", "from", node, "op", req.Op)
		return refused("node %q may not steer this peer", node)
	}
	if req.Op != "query" && req.Op != "reconnect" {
		w.log.Info("admin request", "from", node, "op", req.Op, "account", req.Account, "args", req.Args)
	}
	if req.Account == "" && req.Op != "reconnect" && req.Op != "accounts" {
		return refused("%s: no account", req.Op)
	}
	switch req.Op {
	case "query":
		return w.query(req.Account)
	case "accounts":
		return w.accounts()
	case "freeze":
		return w.freeze(ctx, req)
	case "unfreeze":
		return w.unfreeze(ctx, req.Account)
	case "drain":
		return w.drain(ctx, req)
	case "prepare":
		return w.prepare(req)
	case "commit":
		return w.commit(ctx, req)
	case "abort":
		return w.abort(req)
	case "takeover":
		return w.takeover(ctx, req.Account)
	case "digest":
		return w.digest(req.Account)
	case "reconnect":
		for _, s := range w.senders {
			s.Restart()
		}
		return ok(nil)
	}
	return failed(fmt.Errorf("unknown admin op %q", req.Op))
}

// query reports the account's role, epoch and replication state here.
func (w *roleSwitch) query(account string) peer.AdminReply {
	v := map[string]string{"node": w.cfg.node}
	e, found, err := w.entry(account)
	if err != nil {
		return failed(err)
	}
	if !found {
		e.Role = rolemap.Unknown
	}
	v["role"], v["epoch"], v["partner"] = e.Role.String(), u(e.Epoch), e.Partner
	if w.applier != nil {
		if p, err := w.applier.Position(account); err == nil {
			v["applied"], v["state"], v["applied_epoch"] = u(uint64(p.Applied)), p.State.String(), u(p.Epoch)
			if p.Reason != "" {
				v["reason"] = p.Reason
			}
		}
	}
	if w.jrnl != nil {
		v["durable"] = u(uint64(w.jrnl.Durable()))
	}
	if p, err := w.readPrepare(account); err == nil && p != nil {
		v["prepared_epoch"], v["prepared_role"] = u(p.NewEpoch), p.NewRole
	}
	if s := w.senders[e.Partner]; s != nil && e.Role == rolemap.Master {
		v["connected"] = strconv.FormatBool(s.Connected())
	}
	return ok(v)
}

// accounts lists the accounts of the role map with their roles
// ("account=role:epoch" values).
func (w *roleSwitch) accounts() peer.AdminReply {
	m, err := rolemap.Open(w.cfg.roles)
	if err != nil {
		return failed(err)
	}
	defer m.Close()
	v := map[string]string{}
	for r, err := range m.All() {
		if err != nil {
			return failed(err)
		}
		v[r.Account] = r.Role.String() + ":" + u(r.Epoch) + ":" + r.Partner
	}
	return ok(v)
}

func (w *roleSwitch) control(ctx context.Context, req fs.ControlRequest) (fs.ControlReply, error) {
	if w.cfg.control == "" || w.cfg.control == "none" {
		return fs.ControlReply{}, errors.New("no control socket of the local mount configured")
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rep, err := fs.ControlCall(cctx, w.cfg.control, req)
	if err != nil {
		return rep, fmt.Errorf("the local mount: %w", err)
	}
	if !rep.OK {
		return rep, fmt.Errorf("the local mount: %s: %s", req.Cmd, rep.Error)
	}
	return rep, nil
}

// freeze freezes the account on this (master) node's mount.
func (w *roleSwitch) freeze(ctx context.Context, req peer.AdminRequest) peer.AdminReply {
	e, found, err := w.entry(req.Account)
	if err != nil {
		return failed(err)
	}
	if !found || e.Role != rolemap.Master {
		return refused("%s is %s on %s, not master", req.Account, e.Role, w.cfg.node)
	}
	rep, err := w.control(ctx, fs.ControlRequest{Cmd: "freeze", Account: req.Account,
		IdleMS: int64(req.Uint("idle_ms")), TimeoutMS: int64(req.Uint("timeout_ms"))})
	if err != nil {
		if rep.Busy {
			return refused("busy: %s", rep.Error)
		}
		return failed(err)
	}
	return ok(map[string]string{"lsn": u(rep.LSN), "durable": u(rep.Durable)})
}

func (w *roleSwitch) unfreeze(ctx context.Context, account string) peer.AdminReply {
	rep, err := w.control(ctx, fs.ControlRequest{Cmd: "unfreeze", Account: account})
	if err != nil {
		return failed(err)
	}
	return ok(map[string]string{"was_frozen": strconv.FormatBool(rep.Count == 1)})
}

// drain waits until the partner acknowledged the account's records through
// the journal position "upto".
func (w *roleSwitch) drain(ctx context.Context, req peer.AdminRequest) peer.AdminReply {
	e, found, err := w.entry(req.Account)
	if err != nil {
		return failed(err)
	}
	if !found || e.Role != rolemap.Master {
		return refused("%s is %s on %s, not master", req.Account, e.Role, w.cfg.node)
	}
	s := w.senders[e.Partner]
	if s == nil {
		return refused("no sender to %s here", e.Partner)
	}
	to := time.Duration(req.Uint("timeout_ms")) * time.Millisecond
	if to <= 0 {
		to = 10 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	sent, applied, err := s.Drain(dctx, req.Account, journal.LSN(req.Uint("upto")))
	if err != nil {
		if errors.Is(err, peer.ErrNotShipped) {
			return refused("diverged or not replicating: the partner does not take %s (see its status)", req.Account)
		}
		return refused("peer down or slow: %v", err)
	}
	return ok(map[string]string{"sent": u(sent), "applied": u(applied)})
}

// prepare records a prepared flip of the account to args role at args epoch.
func (w *roleSwitch) prepare(req peer.AdminRequest) peer.AdminReply {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, found, err := w.entry(req.Account)
	if err != nil {
		return failed(err)
	}
	newRole, err := rolemap.ParseRole(req.Args["role"])
	if err != nil || newRole == rolemap.Local {
		return failed(fmt.Errorf("prepare: bad role %q", req.Args["role"]))
	}
	epoch := req.Uint("epoch")
	switch {
	case !found:
		return refused("%s is not in the role map of %s", req.Account, w.cfg.node)
	case e.Epoch+1 != epoch:
		return refused("%s is at epoch %d on %s; cannot prepare epoch %d", req.Account, e.Epoch, w.cfg.node, epoch)
	case e.Role == newRole || e.Role != rolemap.Master && e.Role != rolemap.Replica:
		return refused("%s is %s on %s; cannot become %s", req.Account, e.Role, w.cfg.node, newRole)
	}
	if p, err := w.readPrepare(req.Account); err != nil {
		return failed(err)
	} else if p != nil && p.NewEpoch != epoch {
		return refused("%s has another role change prepared (epoch %d)", req.Account, p.NewEpoch)
	}
	if newRole == rolemap.Master && w.applier != nil {
		if p, err := w.applier.Position(req.Account); err == nil && p.State != peer.StateOK {
			return refused("diverged: the replica of %s on %s is %s (%s)", req.Account, w.cfg.node, p.State, p.Reason)
		}
	}
	p := &prepareFile{Account: req.Account, OldRole: e.Role.String(), NewRole: newRole.String(), OldEpoch: e.Epoch,
		NewEpoch: epoch, Partner: e.Partner, PartnerLSN: req.Uint("partner_lsn"),
		Deadline: time.Now().Add(time.Duration(req.Uint("deadline_ms")) * time.Millisecond)}
	switch {
	case req.Args["own_lsn"] != "":
		p.OwnLSN = req.Uint("own_lsn") // the coordinator's, recorded by the partner too
	case w.jrnl != nil:
		p.OwnLSN = uint64(w.jrnl.Durable())
	}
	if err := w.writePrepare(p); err != nil {
		return failed(err)
	}
	crashPoint("prepare")
	return ok(map[string]string{"own_lsn": u(p.OwnLSN)})
}

// commit carries out the prepared flip (idempotent: a flip already in the
// role map is finished).
func (w *roleSwitch) commit(ctx context.Context, req peer.AdminRequest) peer.AdminReply {
	w.mu.Lock()
	defer w.mu.Unlock()
	crashPoint("commit-begin")
	p, err := w.readPrepare(req.Account)
	if err != nil {
		return failed(err)
	}
	epoch := req.Uint("epoch")
	if p == nil || p.NewEpoch != epoch {
		e, _, err := w.entry(req.Account)
		if err == nil && e.Epoch == epoch {
			return ok(map[string]string{"epoch": u(e.Epoch), "role": e.Role.String()}) // done before
		}
		return refused("no prepared role change of %s to epoch %d here (aborted?)", req.Account, epoch)
	}
	if p.OldRole == "master" {
		if time.Now().After(p.Deadline) {
			return refused("the prepared role change of %s passed its deadline (%s ago); it is aborted", req.Account, time.Since(p.Deadline).Round(time.Millisecond))
		}
		// Changes the mount took after the drain would be lost to the
		// new master: the freeze must still hold (a restarted mount, a
		// lapsed freeze: abort).
		rep, err := w.control(ctx, fs.ControlRequest{Cmd: "frozen", Account: req.Account})
		if err != nil {
			return refused("cannot tell whether %s is still frozen on %s: %v", req.Account, w.cfg.node, err)
		}
		if rep.Count != 1 {
			return refused("%s is no longer frozen on %s (the mount restarted or the freeze lapsed): changes may have come after the drain", req.Account, w.cfg.node)
		}
	}
	if err := w.apply(ctx, p); err != nil {
		return failed(err)
	}
	crashPoint("commit-end")
	return ok(map[string]string{"epoch": u(p.NewEpoch), "role": p.NewRole})
}

// apply makes the prepared flip p real; w.mu held. Every step is
// idempotent, so a crash anywhere is finished by running it again.
func (w *roleSwitch) apply(ctx context.Context, p *prepareFile) error {
	role, _ := rolemap.ParseRole(p.NewRole)
	if role == rolemap.Replica && w.applier != nil {
		// The new master's records start after PartnerLSN.
		if err := w.applier.SetPosition(p.Account, peer.AccountPos{Applied: journal.LSN(p.PartnerLSN), Epoch: p.NewEpoch, State: peer.StateOK}); err != nil {
			return fmt.Errorf("set the replica position of %s: %w", p.Account, err)
		}
	}
	// A new master's sender: the partner's applied position starts at
	// OwnLSN (set once writable, before the sender reconnects).
	known := func() {
		if s := w.senders[p.Partner]; s != nil && role == rolemap.Master {
			s.SetKnown(p.Account, p.OwnLSN)
		}
	}
	if err := w.setRole(ctx, p.Account, rolemap.Entry{Role: role, Partner: p.Partner, Epoch: p.NewEpoch}, known); err != nil {
		return err
	}
	if err := w.removePrepare(p.Account); err != nil {
		w.log.Warn("remove prepare file", "account", p.Account, "err", err)
	}
	w.log.Info("role change committed", "account", p.Account, "role", p.NewRole, "epoch", p.NewEpoch)
	return nil
}

// setRole writes the account's new entry to the role map (the commit
// point) and makes it take effect at once in this peer and the mount; then
// (may be nil) runs before the sender reconnects.
func (w *roleSwitch) setRole(ctx context.Context, account string, e rolemap.Entry, then func()) error {
	cur, found, err := w.entry(account)
	if err != nil {
		return err
	}
	if !found || cur != e {
		if _, err := rolemap.Update(w.cfg.roles, map[string]rolemap.Entry{account: e}); err != nil {
			return err
		}
	}
	crashPoint("commit-rolemap")
	if err := w.live.Reload(); err != nil {
		w.log.Warn("reload role map", "err", err)
	}
	if e.Role == rolemap.Master {
		if w.recv != nil {
			w.recv.Revoke(account)
		}
		// Nothing cached from the replica's time may be served to the
		// writers to come.
		if _, err := w.control(ctx, fs.ControlRequest{Cmd: "forget", Account: account}); err != nil {
			w.log.Warn("mount did not forget the account's cached data", "account", account, "err", err)
		}
	}
	// The mount polls the role map too: a failure here only delays it.
	if _, err := w.control(ctx, fs.ControlRequest{Cmd: "reload"}); err != nil {
		w.log.Warn("mount did not reload the role map (it will at its next poll)", "err", err)
	}
	if e.Role != rolemap.Master {
		if _, err := w.control(ctx, fs.ControlRequest{Cmd: "unfreeze", Account: account}); err != nil {
			w.log.Warn("unfreeze", "account", account, "err", err)
		}
	}
	if then != nil {
		then()
	}
	if s := w.senders[e.Partner]; s != nil {
		s.Restart()
	}
	return nil
}

// abort drops a prepared flip that was not committed.
func (w *roleSwitch) abort(req peer.AdminRequest) peer.AdminReply {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, err := w.readPrepare(req.Account)
	if err != nil {
		return failed(err)
	}
	if p == nil || p.NewEpoch != req.Uint("epoch") {
		return ok(nil)
	}
	if e, _, err := w.entry(req.Account); err == nil && e.Epoch >= p.NewEpoch {
		return refused("the role change of %s to epoch %d is committed here", req.Account, p.NewEpoch)
	}
	if err := w.dropPrepare(context.WithoutCancel(context.Background()), p); err != nil {
		return failed(err)
	}
	w.log.Info("role change aborted", "account", req.Account, "epoch", p.NewEpoch)
	return ok(nil)
}

// dropPrepare removes an aborted prepare; on the old master it also lifts
// the freeze at once (a coordinator that died would leave it to lapse).
func (w *roleSwitch) dropPrepare(ctx context.Context, p *prepareFile) error {
	if err := w.removePrepare(p.Account); err != nil {
		return err
	}
	if p.OldRole == "master" {
		if _, err := w.control(ctx, fs.ControlRequest{Cmd: "unfreeze", Account: p.Account}); err != nil {
			w.log.Warn("unfreeze after an abort (it lapses by itself)", "account", p.Account, "err", err)
		}
	}
	return nil
}

// takeover makes this node master of a replica account at epoch+1 at once
// (failover: the master is unreachable).
func (w *roleSwitch) takeover(ctx context.Context, account string) peer.AdminReply {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, found, err := w.entry(account)
	if err != nil {
		return failed(err)
	}
	if !found || e.Role != rolemap.Replica {
		return refused("%s is %s on %s, not replica", account, e.Role, w.cfg.node)
	}
	if m, err := w.readFence(account); err != nil || m != nil {
		// Its tree still holds this node's unreplicated tail, not yet set
		// aside: serving it as master would mix the two.
		return refused("%s is being fenced on %s (its unreplicated tail is not set aside yet: see mreplfs status -peer-state and the peer's log)", account, w.cfg.node)
	}
	if p, err := w.readPrepare(account); err == nil && p != nil {
		w.removePrepare(account) // superseded by the higher epoch
	}
	ne := rolemap.Entry{Role: rolemap.Master, Partner: e.Partner, Epoch: e.Epoch + 1}
	if err := w.setRole(ctx, account, ne, nil); err != nil {
		return failed(err)
	}
	w.log.Warn("failover: took over as master", "account", account, "epoch", ne.Epoch)
	var applied uint64
	if w.applier != nil {
		if p, err := w.applier.Position(account); err == nil {
			applied = uint64(p.Applied)
		}
	}
	return ok(map[string]string{"epoch": u(ne.Epoch), "applied": u(applied)})
}

// resolveLoop resolves leftover prepare files, and finishes fences cut
// short, at start and every second.
func (w *roleSwitch) resolveLoop(ctx context.Context, dial func(ctx context.Context, addr string) (*peer.AdminClient, error)) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		w.resolve(ctx, dial)
		w.resolveFences(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resolve settles every prepare file by the higher epoch (see the top).
func (w *roleSwitch) resolve(ctx context.Context, dial func(ctx context.Context, addr string) (*peer.AdminClient, error)) {
	accounts, _ := roleStateAccounts(w.dir(), ".prepare")
	for _, account := range accounts {
		w.resolveOne(ctx, account, dial)
	}
}

func (w *roleSwitch) resolveOne(ctx context.Context, account string, dial func(ctx context.Context, addr string) (*peer.AdminClient, error)) {
	w.mu.Lock()
	p, err := w.readPrepare(account)
	if err != nil || p == nil {
		w.mu.Unlock()
		return
	}
	e, _, err := w.entry(account)
	if err != nil {
		w.mu.Unlock()
		return
	}
	switch {
	case e.Epoch == p.NewEpoch && e.Role.String() == p.NewRole:
		w.log.Info("resolving a role change cut short: it is committed here; finishing it", "account", account, "epoch", p.NewEpoch)
		if err := w.apply(ctx, p); err != nil {
			w.log.Warn("finishing a committed role change", "account", account, "err", err)
		}
		w.mu.Unlock()
		return
	case e.Epoch >= p.NewEpoch:
		w.log.Info("resolving a role change cut short: superseded by a higher epoch", "account", account, "prepared", p.NewEpoch, "epoch", e.Epoch)
		w.removePrepare(account)
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	if time.Since(p.Deadline) < 0 {
		return // the coordinator may still be at work
	}
	// Ask the partner (outside the lock: it may be asking us).
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var q peer.AdminReply
	c, err := dial(qctx, p.Partner)
	if err == nil {
		q, err = c.Call(qctx, peer.AdminRequest{Op: "query", Account: account})
		c.Close()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, _ := w.readPrepare(account); cur == nil || cur.NewEpoch != p.NewEpoch {
		return // resolved meanwhile
	}
	if err != nil || q.Err() != nil {
		if p.OldRole == "master" {
			// Our commit is the decision and it is refused after the
			// deadline: nobody can have committed.
			w.log.Warn("resolving a role change cut short: partner unreachable, aborting it here (this node committed nothing)", "account", account, "epoch", p.NewEpoch, "err", err)
			w.dropPrepare(ctx, p)
		}
		return
	}
	pe := q.Uint("epoch")
	switch {
	case pe == p.NewEpoch:
		w.log.Info("resolving a role change cut short: the partner committed it; committing here", "account", account, "epoch", p.NewEpoch)
		if err := w.apply(ctx, p); err != nil {
			w.log.Warn("committing a role change", "account", account, "err", err)
		}
	case pe > p.NewEpoch:
		w.log.Info("resolving a role change cut short: the partner is at a higher epoch", "account", account, "prepared", p.NewEpoch, "partner", pe)
		w.removePrepare(account)
	case p.OldRole == "master" || q.Values["prepared_epoch"] != u(p.NewEpoch):
		// The old master never committed (it decides first), or it holds
		// no prepare any more: abort.
		w.log.Info("resolving a role change cut short: not committed; aborting", "account", account, "epoch", p.NewEpoch)
		w.dropPrepare(ctx, p)
	}
}

// dialAdmin opens an admin connection to the peer at addr (this node's own
// listener, or a partner's), with this node's certificate.
func (c *peerConfig) dialAdmin(ctx context.Context, addr string) (*peer.AdminClient, error) {
	node := ""
	if addr == c.listen {
		node = c.node
	}
	for n, a := range c.partners {
		if a == addr {
			node = n
		}
	}
	if node == "" {
		return nil, fmt.Errorf("no partner with peer address %s in the config", addr)
	}
	cli, err := c.tls.ClientConfig(node)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return peer.DialAdmin(ctx, addr, cli, nil)
}

// stale is the sender's OnStale: the partner took the account over at a
// higher epoch while this node was away (a failover). It fences the account
// before the session streams anything: the session skips the account's
// records (the partner refused it), so its consumer position would
// otherwise pass the tail, and the journal could drop it, before it is read.
// The fence's role change restarts the session (Sender.Restart during its
// setup), which then reconnects without the account. A failed fence ends
// the session, and the next one tries again: the link waits rather than
// let the journal drop mail that exists nowhere else.
func (w *roleSwitch) stale(ctx context.Context, account string, epoch, applied uint64) error {
	if w.fence == nil {
		w.log.Error("account failed over to the partner, and this peer cannot fence it", "account", account, "epoch", epoch)
		return nil
	}
	if err := w.fence(ctx, account, epoch, applied); err != nil {
		w.log.Error("fencing a failed-over account; the link retries", "account", account, "epoch", epoch, "err", err)
		return err
	}
	return nil
}

// listPrepared reads the prepare files under state/roles.
func listPrepared(state string) ([]prepareFile, error) {
	return listRoleState[prepareFile](state, ".prepare")
}

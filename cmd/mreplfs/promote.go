package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"

	"mreplfs/peer"
	"mreplfs/rolemap"
)

const promoteSynopsis = `-config PEER.CONF [flags] ACCOUNT... | -all-from NODE

Swap an account's master and replica with nothing shut down (DESIGN.md §6):
promote makes the replica the master, demote makes the master the replica —
the same swap, named from either side; run it on either server. For each
account it checks both peers agree on its roles and the replica is in sync,
freezes it on the master (refused if it has open files or changed within
-idle), drains its records to the replica and confirms the replica applied
them all (-verify: and that every file hashes the same on both), then flips the roles at epoch+1 on both servers in a crash-safe
two-phase step (prepare on both, commit on both), and unfreezes: writes held
meanwhile get EROFS on the old master; the new master is writable at once,
and replication runs the other way.

-all-from NODE moves every account mastered on NODE (this server or a
partner) to its partner — e.g. before an OS upgrade of NODE — one at a time,
or -parallel at once, with progress.

It prints each step and how long it took. Exit status: 0 done, 5 busy (try
again when the account is idle), 6 refused (roles disagree, replica diverged
or behind, a peer down or another role change under way), 1 failed, 2 usage.`

func runPromote(ctx context.Context, e *env, args []string) error {
	return runSwap(ctx, e, "promote", args)
}

func runDemote(ctx context.Context, e *env, args []string) error {
	return runSwap(ctx, e, "demote", args)
}

// swapOptions are the timing knobs of a swap.
type swapOptions struct {
	verify  bool          // compare content digests before the flip
	idle    time.Duration // the account must have been idle this long
	freeze  time.Duration // a freeze ends by itself after this (coordinator died)
	timeout time.Duration // drain and every other step
}

func runSwap(ctx context.Context, e *env, name string, args []string) error {
	fl := newFlagSet(e, name, promoteSynopsis)
	cfgPath := fl.String("config", "", "this server's peer config (certificates, partners) (required)")
	allFrom := fl.String("all-from", "", "move every account mastered on `NODE` (node id or peer address)")
	parallel := fl.Int("parallel", 1, "with -all-from: accounts swapped at once")
	var o swapOptions
	fl.BoolVar(&o.verify, "verify", false, "before the flip, check the replica's files hash the same as the master's (reads the account on both)")
	fl.DurationVar(&o.idle, "idle", 500*time.Millisecond, "refuse an account changed within this time")
	fl.DurationVar(&o.freeze, "freeze", 10*time.Second, "a freeze lifts by itself after this (if this command dies)")
	fl.DurationVar(&o.timeout, "timeout", 10*time.Second, "give up a step (drain, a peer's answer) after this")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if *cfgPath == "" {
		return usagef("need -config PEER.CONF")
	}
	if (*allFrom == "") == (fl.NArg() == 0) {
		return usagef("give ACCOUNT... or -all-from NODE")
	}
	if *parallel < 1 {
		return usagef("-parallel must be ≥ 1")
	}
	cfg, err := loadPeerConfig(*cfgPath)
	if err != nil {
		return err
	}
	if cfg.listen == "" {
		return usagef("the peer config has no listen address: this server's peer takes no admin requests")
	}
	accounts := fl.Args()
	if *allFrom != "" {
		if accounts, err = mastersOn(cfg, *allFrom); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s -all-from %s: %d account(s)\n", name, *allFrom, len(accounts))
	}
	return swapAll(ctx, e.stdout, cfg, o, accounts, *parallel)
}

// mastersOn lists the accounts mastered on node (this node, or a partner by
// node id or address) according to this server's role map.
func mastersOn(cfg *peerConfig, node string) ([]string, error) {
	addr := cfg.partners[node]
	for _, a := range cfg.partners {
		if a == node {
			addr = a
		}
	}
	self := node == cfg.node || node == cfg.listen
	if !self && addr == "" {
		return nil, usagef("%s is neither this node (%s) nor one of its partners", node, cfg.node)
	}
	m, err := rolemap.Open(cfg.roles)
	if err != nil {
		return nil, withCode(ExitFailure, err)
	}
	defer m.Close()
	var out []string
	for r, err := range m.All() {
		if err != nil {
			return nil, withCode(ExitFailure, err)
		}
		if self && r.Role == rolemap.Master || !self && r.Role == rolemap.Replica && r.Partner == addr {
			out = append(out, r.Account)
		}
	}
	sort.Strings(out)
	return out, nil
}

// swapAll swaps accounts, parallel at a time, printing each one's steps as
// it finishes. It returns the first error (with its exit code).
func swapAll(ctx context.Context, out io.Writer, cfg *peerConfig, o swapOptions, accounts []string, parallel int) error {
	var mu sync.Mutex
	var first error
	failures := 0
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(parallel, max(len(accounts), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			co := newCoordinator(cfg, o)
			co.prewarm(ctx)
			defer co.close()
			for i := range next {
				var buf bytes.Buffer
				co.out = &buf
				if len(accounts) > 1 {
					fmt.Fprintf(&buf, "[%d/%d] ", i+1, len(accounts))
				}
				err := co.swap(ctx, accounts[i])
				mu.Lock()
				out.Write(buf.Bytes())
				if err != nil {
					fmt.Fprintf(out, "  refused  %s\n", err)
					failures++
					if first == nil {
						first = err
					}
				}
				mu.Unlock()
			}
		}()
	}
	for i := range accounts {
		select {
		case next <- i:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	if len(accounts) > 1 {
		fmt.Fprintf(out, "%d of %d account(s) swapped\n", len(accounts)-failures, len(accounts))
	}
	if first != nil && len(accounts) > 1 {
		return fmt.Errorf("%d account(s) not swapped; first: %w", failures, first)
	}
	return first
}

// coordinator runs swaps from this server, over admin connections to the
// peers involved (kept open across accounts).
type coordinator struct {
	cfg   *peerConfig
	o     swapOptions
	out   io.Writer
	mu    sync.Mutex // guards conns (two calls may run at once)
	conns map[string]*peer.AdminClient
}

func newCoordinator(cfg *peerConfig, o swapOptions) *coordinator {
	return &coordinator{cfg: cfg, o: o, out: io.Discard, conns: map[string]*peer.AdminClient{}}
}

// prewarm opens the admin connections to this node's peer and its partners
// at once (the TLS handshakes overlap), waiting at most a second: a peer
// that does not answer by then is left for call to dial and report.
func (co *coordinator) prewarm(ctx context.Context) {
	addrs := []string{co.cfg.listen}
	for _, a := range co.cfg.partners {
		addrs = append(addrs, a)
	}
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, min(co.o.timeout, time.Second))
			defer cancel()
			c, err := co.cfg.dialAdmin(dctx, a)
			if err != nil {
				return
			}
			co.mu.Lock()
			if co.conns[a] == nil {
				co.conns[a] = c
				c = nil
			}
			co.mu.Unlock()
			if c != nil {
				c.Close()
			}
		}()
	}
	wg.Wait()
}

func (co *coordinator) close() {
	for _, c := range co.conns {
		c.Close()
	}
}

// errPeerDown is wrapped by call when the peer did not answer (the request
// may or may not have been carried out).
var errPeerDown = errors.New("peer down")

// call sends one admin request to the peer at addr (dialling it if needed).
func (co *coordinator) call(ctx context.Context, addr string, req peer.AdminRequest) (peer.AdminReply, error) {
	ctx, cancel := context.WithTimeout(ctx, co.o.timeout+5*time.Second)
	defer cancel()
	co.mu.Lock()
	c := co.conns[addr]
	co.mu.Unlock()
	if c == nil {
		var err error
		if c, err = co.cfg.dialAdmin(ctx, addr); err != nil {
			return peer.AdminReply{}, withCode(ExitRefused, fmt.Errorf("%w: %s: %w", errPeerDown, addr, err))
		}
		co.mu.Lock()
		co.conns[addr] = c
		co.mu.Unlock()
	}
	rep, err := c.Call(ctx, req)
	if err != nil {
		co.mu.Lock()
		if co.conns[addr] == c {
			delete(co.conns, addr)
		}
		co.mu.Unlock()
		return rep, withCode(ExitRefused, fmt.Errorf("%w: %w", errPeerDown, err))
	}
	if err := rep.Err(); err != nil {
		code := ExitFailure
		if rep.Status == peer.AdminRefused {
			code = ExitRefused
			if len(rep.Reason) >= 4 && rep.Reason[:4] == "busy" {
				code = ExitBusy
			}
		}
		return rep, withCode(code, fmt.Errorf("%s on %s: %s", req.Op, addr, rep.Reason))
	}
	return rep, nil
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// step prints one finished step with its duration.
func (co *coordinator) step(name string, since time.Time, format string, a ...any) time.Time {
	now := time.Now()
	fmt.Fprintf(co.out, "  %-8s %9s  %s\n", name, now.Sub(since).Round(10*time.Microsecond), fmt.Sprintf(format, a...))
	return now
}

// swap flips account between its master and replica (see the synopsis).
func (co *coordinator) swap(ctx context.Context, account string) (err error) {
	start := time.Now()
	fmt.Fprintf(co.out, "swap %s\n", account)
	q, err := co.call(ctx, co.cfg.listen, peer.AdminRequest{Op: "query", Account: account})
	if err != nil {
		return err
	}
	var mAddr, rAddr string
	switch q.Values["role"] {
	case "master":
		mAddr, rAddr = co.cfg.listen, q.Values["partner"]
	case "replica":
		mAddr, rAddr = q.Values["partner"], co.cfg.listen
	case "unknown":
		return withCode(ExitNotFound, fmt.Errorf("%s is not in the role map of %s", account, co.cfg.node))
	default:
		return withCode(ExitRefused, fmt.Errorf("%s is %s here: not replicated, nothing to swap", account, q.Values["role"]))
	}
	query := func(addr string) (peer.AdminReply, error) {
		if addr == co.cfg.listen {
			return q, nil // asked already
		}
		return co.call(ctx, addr, peer.AdminRequest{Op: "query", Account: account})
	}
	qm, err := query(mAddr)
	if err != nil {
		return err
	}
	// A sender reconnects after every role change (its account list
	// changed): give it the step timeout to come back.
	for wait := time.Now().Add(co.o.timeout); qm.Values["connected"] != "true" && time.Now().Before(wait); {
		time.Sleep(20 * time.Millisecond)
		if qm, err = co.call(ctx, mAddr, peer.AdminRequest{Op: "query", Account: account}); err != nil {
			return err
		}
	}
	qr, err := query(rAddr)
	if err != nil {
		return err
	}
	mNode, rNode := qm.Values["node"], qr.Values["node"]
	epoch := qm.Uint("epoch")
	switch {
	case qm.Values["role"] != "master" || qr.Values["role"] != "replica":
		return withCode(ExitRefused, fmt.Errorf("roles disagree: %s is %s on %s and %s on %s", account, qm.Values["role"], mNode, qr.Values["role"], rNode))
	case qr.Uint("epoch") != epoch:
		return withCode(ExitRefused, fmt.Errorf("epochs disagree: %s is at epoch %d on %s and %d on %s", account, epoch, mNode, qr.Uint("epoch"), rNode))
	case qm.Values["prepared_epoch"] != "" || qr.Values["prepared_epoch"] != "":
		return withCode(ExitRefused, fmt.Errorf("another role change of %s is under way or being resolved", account))
	case qr.Values["state"] != "" && qr.Values["state"] != "ok":
		return withCode(ExitRefused, fmt.Errorf("diverged: the replica of %s on %s is %s (%s)", account, rNode, qr.Values["state"], qr.Values["reason"]))
	case qm.Values["connected"] != "true":
		return withCode(ExitRefused, fmt.Errorf("peer down: %s is not replicating to %s", mNode, rNode))
	}
	t := co.step("check", start, "%s: master %s, replica %s, epoch %d, replica ok", account, mNode, rNode, epoch)

	fr, err := co.call(ctx, mAddr, peer.AdminRequest{Op: "freeze", Account: account, Args: map[string]string{
		"idle_ms": ms(co.o.idle), "timeout_ms": ms(co.o.freeze)}})
	if err != nil {
		return err
	}
	frozenAt := t
	committed := false
	defer func() {
		if !committed {
			co.call(context.WithoutCancel(ctx), mAddr, peer.AdminRequest{Op: "unfreeze", Account: account})
		}
	}()
	t = co.step("freeze", t, "on %s: no open file, idle ≥ %v; last LSN %d", mNode, co.o.idle, fr.Uint("lsn"))

	dr, err := co.call(ctx, mAddr, peer.AdminRequest{Op: "drain", Account: account, Args: map[string]string{
		"upto": u(fr.Uint("durable")), "timeout_ms": ms(co.o.timeout)}})
	if err != nil {
		return err
	}
	t = co.step("drain", t, "%s acknowledged %s through %d", rNode, account, dr.Uint("applied"))

	qr, err = co.call(ctx, rAddr, peer.AdminRequest{Op: "query", Account: account})
	if err != nil {
		return err
	}
	need := max(dr.Uint("sent"), fr.Uint("lsn"))
	if qr.Uint("applied") < need || qr.Values["state"] != "ok" && qr.Values["state"] != "" {
		return withCode(ExitRefused, fmt.Errorf("diverged or behind: %s applied %s through %d (%s), the master's last record is %d",
			rNode, account, qr.Uint("applied"), qr.Values["state"], need))
	}
	t = co.step("confirm", t, "%s applied through %d, the master's last record of %s", rNode, qr.Uint("applied"), account)

	if co.o.verify {
		dm, err := co.call(ctx, mAddr, peer.AdminRequest{Op: "digest", Account: account})
		if err != nil {
			return err
		}
		dr, err := co.call(ctx, rAddr, peer.AdminRequest{Op: "digest", Account: account})
		if err != nil {
			return err
		}
		if dm.Values["digest"] != dr.Values["digest"] {
			return withCode(ExitRefused, fmt.Errorf("diverged: the content of %s differs: %s lists %d entries (%.12s), %s lists %d (%.12s)",
				account, mNode, dm.Uint("entries"), dm.Values["digest"], rNode, dr.Uint("entries"), dr.Values["digest"]))
		}
		t = co.step("verify", t, "%d files and directories hash the same on both", dm.Uint("entries"))
	}

	left := co.o.freeze - time.Since(frozenAt)
	if left < co.o.freeze/2 {
		return withCode(ExitRefused, fmt.Errorf("too slow: %v of the %v freeze used before the flip", time.Since(frozenAt).Round(time.Millisecond), co.o.freeze))
	}
	ne := u(epoch + 1)
	deadline := ms(left / 2)
	// Both prepares at once. The replica's journal holds no record of the
	// account above its durable position of the confirm query (the account
	// is replica there): the new master's records start above it, which
	// both sides record (own_lsn, partner_lsn).
	lr := u(qr.Uint("durable"))
	perr := make(chan error, 2)
	go func() {
		_, err := co.call(ctx, rAddr, peer.AdminRequest{Op: "prepare", Account: account, Args: map[string]string{
			"role": "master", "epoch": ne, "own_lsn": lr, "deadline_ms": deadline}})
		perr <- err
	}()
	go func() {
		_, err := co.call(ctx, mAddr, peer.AdminRequest{Op: "prepare", Account: account, Args: map[string]string{
			"role": "replica", "epoch": ne, "partner_lsn": lr, "deadline_ms": deadline}})
		perr <- err
	}()
	abort := func() {
		for _, a := range []string{mAddr, rAddr} {
			co.call(context.WithoutCancel(ctx), a, peer.AdminRequest{Op: "abort", Account: account, Args: map[string]string{"epoch": ne}})
		}
	}
	if err := cmp(<-perr, <-perr); err != nil {
		abort()
		return err
	}
	t = co.step("prepare", t, "epoch %s prepared on %s and %s", ne, rNode, mNode)

	if _, err := co.call(ctx, mAddr, peer.AdminRequest{Op: "commit", Account: account, Args: map[string]string{"epoch": ne}}); err != nil {
		if errors.Is(err, errPeerDown) {
			// The commit may have happened: only the peers can tell. Their
			// resolvers settle it (the higher epoch decides) once the
			// prepare deadline passed; an abort now could split them.
			committed = true // nor may the account be unfrozen as master
			return withCode(ExitFailure, fmt.Errorf("outcome unknown: %s did not answer the commit (%w); the peers resolve it within seconds (mreplfs status, role maps)", mNode, err))
		}
		abort()
		return err
	}
	committed = true // the decision: the old master is replica now
	t = co.step("commit", t, "%s is replica of %s at epoch %s (held writes get EROFS)", mNode, account, ne)
	var cerr error
	for try := 0; try < 3; try++ {
		if _, cerr = co.call(ctx, rAddr, peer.AdminRequest{Op: "commit", Account: account, Args: map[string]string{"epoch": ne}}); cerr == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if cerr != nil {
		return withCode(ExitFailure, fmt.Errorf("committed on %s, but not yet on %s (its peer finishes it when it resolves, within seconds): %w", mNode, rNode, cerr))
	}
	t = co.step("commit", t, "%s is master of %s at epoch %s", rNode, account, ne)
	co.step("done", start, "%s is writable on %s; replication runs %s → %s", account, rNode, rNode, mNode)
	return nil
}

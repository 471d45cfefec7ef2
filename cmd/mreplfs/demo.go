package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/bench/cyrusload"
)

const demoSynopsis = `[-messages N] [-keep]

Two servers on this machine, each in its own network namespace (10.77.0.1 and
10.77.0.2 on a veth link), each with its spool mounted through mreplfs and a
peer process. Each masters half the accounts and replicates the other's. The
demo delivers Cyrus-shaped mail to both at once, shows per-account replication
state and lag, proves every replica identical to its master, shows a write to a
replica account refused, and tears everything down (also on Ctrl-C).
Needs root.`

func runDemo(ctx context.Context, e *env, args []string) (err error) {
	fset := newFlagSet(e, "demo", demoSynopsis)
	messages := fset.Int("messages", 300, "deliveries in all (half on each server)")
	keep := fset.Bool("keep", false, "leave the work directory (logs, trees) behind")
	rate := fset.Float64("rate", 0, "deliveries per second on each server (0: as fast as they go)")
	rcpts := fset.Int("recipients", 0, "mailboxes per delivery (0: 1, every 5th to 3)")
	outage := fset.Duration("outage", 0, "cut srv-a's link for this long when the load starts, then measure the catch-up")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() != 0 || *messages < 2 {
		return usagef("no arguments; -messages at least 2")
	}
	if os.Geteuid() != 0 {
		return withCode(ExitFailure, errors.New("the demo needs root (network namespaces and FUSE mounts)"))
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	out := e.stdout
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	step := func(tag, format string, a ...any) {
		fmt.Fprintf(out, "%-10s %s\n", "["+tag+"]", fmt.Sprintf(format, a...))
	}

	work, err := os.MkdirTemp("", "mreplfs-demo-")
	if err != nil {
		return err
	}
	// Teardown runs in reverse order, on success, failure and Ctrl-C alike.
	var undo []func()
	defer func() {
		step("teardown", "stopping peers and mounts, removing namespaces")
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		if *keep {
			step("teardown", "kept %s (logs: */mount.log, */peer.log)", work)
		} else {
			os.RemoveAll(work)
		}
	}()

	say("== mreplfs demo: two Cyrus-shaped spools replicating crosswise ==")
	c, err := newCluster(ctx, self, work, "mrdemo", 0, [][]string{{"alice", "carol", "erin"}, {"bob", "dave", "frank"}})
	undo = append(undo, c.Close)
	if err != nil {
		return err
	}
	a, b := c.servers[0], c.servers[1]
	servers := c.servers
	step("network", "namespaces %s (%s) and %s (%s), bridged", a.ns, a.ip, b.ns, b.ip)
	step("setup", "certificates (CA + %s, %s); %s masters %s, %s masters %s",
		a.node, b.node, a.node, strings.Join(a.masters, " "), b.node, strings.Join(b.masters, " "))
	if err := c.start(ctx, 15*time.Second); err != nil {
		return err
	}
	step("mount", "%s and %s: conf, spool and meta mounted through mreplfs", a.node, b.node)
	step("peer", "%s ⇄ %s connected over mutual TLS", a.addr, b.addr)

	// Load on both servers at once; time from the delivery's last fsync to
	// the message file on the partner's disk.
	lags := &lagProbe{}
	lctx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	probeDone := make(chan struct{})
	go func() { lags.run(lctx); close(probeDone) }()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	if *outage > 0 {
		if err := c.setLink(ctx, a, false); err != nil {
			return err
		}
		step("outage", "%s's link cut for %v", a.node, *outage)
	}
	start := time.Now()
	per := *messages / 2
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := s.load()
			for i := 0; i < per && ctx.Err() == nil; i++ {
				if *rate > 0 {
					time.Sleep(time.Until(start.Add(time.Duration(float64(i) / *rate * float64(time.Second)))))
				}
				mbs := demoMailboxes(s.masters, i, *rcpts)
				got, err := d.Deliver(mbs, cyrusload.Body(i, 1000+(i*7919)%30000, s.node))
				if err != nil {
					errs <- fmt.Errorf("deliver on %s: %w", s.name, err)
					return
				}
				if *outage == 0 {
					lags.add(filepath.Join(s.next.backing("spool"), got.Files[0]), got.At)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if *outage > 0 {
		time.Sleep(time.Until(start.Add(*outage)))
		sent0 := a.status().Senders
		if err := c.setLink(ctx, a, true); err != nil {
			return err
		}
		back := time.Now()
		if _, d := c.waitConverged(ctx, 120*time.Second); len(d) > 0 {
			return withCode(ExitFailure, fmt.Errorf("no catch-up after the outage: %d accounts differ", len(d)))
		}
		caught := time.Since(back)
		var recs, bytes int64
		for i, snd := range a.status().Senders {
			if i < len(sent0) {
				recs += snd.Records - sent0[i].Records
				bytes += snd.BytesOnWire - sent0[i].BytesOnWire
			}
		}
		step("outage", "link back: %s caught up in %v (%d records, %d bytes on the wire: %.0f records/s)",
			a.node, caught.Round(time.Millisecond), recs, bytes, float64(recs)/caught.Seconds())
	}
	close(errs)
	if err := <-errs; err != nil {
		stopProbe()
		return err
	}
	shape := "every 5th to 3 mailboxes"
	if *rcpts > 0 {
		shape = fmt.Sprintf("each to %d mailboxes", *rcpts)
	}
	step("load", "%d deliveries (%s) on both servers at once in %v (%.0f/s)",
		2*per, shape, took.Round(time.Millisecond), float64(2*per)/took.Seconds())

	// Converge, then compare every account's trees.
	_, diffs := c.waitConverged(ctx, 30*time.Second)
	caughtUp := time.Since(start) - took
	stopProbe()
	<-probeDone
	if p50, p99, n := lags.stats(); n > 0 {
		step("lag", "delivery fsync → message file on the replica: p50 %v, p99 %v, max %v (%d messages)",
			p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), lags.max().Round(100*time.Microsecond), n)
	}
	step("lag", "all replicas caught up %v after the last delivery", caughtUp.Round(time.Millisecond))

	say("")
	say("  %-8s %-7s %-8s %6s %9s %11s %-11s %s", "account", "master", "replica", "files", "bytes", "applied", "state", "identical")
	for _, s := range servers {
		st := s.next.status()
		for _, acct := range s.masters {
			files, size := accountSize(s.backingSpool(), acct)
			pos := st.Accounts[acct]
			same := "yes"
			if len(diffs[acct]) > 0 {
				same = fmt.Sprintf("NO (%d differences)", len(diffs[acct]))
			}
			say("  %-8s %-7s %-8s %6d %9d %11d %-11s %s", acct, s.node, s.next.node, files, size, pos.Applied, pos.State.String(), same)
		}
	}
	for _, s := range servers {
		for _, snd := range s.status().Senders {
			if snd.Records == 0 {
				continue
			}
			say("  link %s → %s: %d records, %d bytes on the wire for %d bytes of payload (%.2fx), bodies by value %d, by reference %d",
				s.node, snd.Partner, snd.Records, snd.BytesOnWire, s.load().Payload(),
				float64(snd.BytesOnWire)/float64(max(1, s.load().Payload())), snd.BodiesByValue, snd.BodiesByRef)
		}
	}
	say("")
	if len(diffs) > 0 {
		for acct, d := range diffs {
			say("  %s: %s", acct, strings.Join(d[:min(3, len(d))], "; "))
		}
		return withCode(ExitFailure, fmt.Errorf("%d replicas differ from their masters", len(diffs)))
	}
	step("verify", "every replica is byte-identical to its master (files, sizes, SHA-256, message mtimes)")

	// The guard: a replica account refuses writes through the mount.
	victim := b.masters[0]
	p := filepath.Join(a.mnt("spool"), "user", victim, "9999.")
	werr := os.WriteFile(p, []byte("not allowed"), 0o600)
	if !errors.Is(werr, syscall.EROFS) {
		return withCode(ExitFailure, fmt.Errorf("write to replica account %s on %s: got %v, want EROFS", victim, a.node, werr))
	}
	step("guard", "write to %s's mailbox on %s (a replica there): %v", victim, a.node, werr)
	if b, err := os.ReadFile(filepath.Join(a.mnt("spool"), "user", victim, "1.")); err == nil {
		step("guard", "reading %s's replicated mail on %s works: user/%s/1. is %d bytes", victim, a.node, victim, len(b))
	}
	say("== demo OK ==")
	return nil
}

func accountSize(s cyrusload.Spool, acct string) (files int, size int64) {
	d, _ := cyrusload.Digest(s, acct)
	for _, v := range d {
		var n int64
		var mode, hash string
		if _, err := fmt.Sscanf(v, "file %s %d %s", &mode, &n, &hash); err == nil {
			files++
			size += n
		}
	}
	return files, size
}

// lagProbe watches for message files to appear on the replica.
type lagProbe struct {
	mu      sync.Mutex
	pending map[string]time.Time
	lags    []time.Duration
}

func (l *lagProbe) add(path string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil {
		l.pending = map[string]time.Time{}
	}
	l.pending[path] = at
}

func (l *lagProbe) run(ctx context.Context) {
	for {
		l.mu.Lock()
		for p, at := range l.pending {
			var st unix.Stat_t
			if unix.Stat(p, &st) == nil {
				l.lags = append(l.lags, time.Since(at))
				delete(l.pending, p)
			}
		}
		left := len(l.pending)
		l.mu.Unlock()
		if ctx.Err() != nil && left == 0 {
			return
		}
		select {
		case <-time.After(500 * time.Microsecond):
		case <-ctx.Done():
			if left == 0 {
				return
			}
			l.mu.Lock()
			clear(l.pending) // never arrived: counted by the tree comparison
			l.mu.Unlock()
			return
		}
	}
}

func (l *lagProbe) stats() (p50, p99 time.Duration, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lags) == 0 {
		return 0, 0, 0
	}
	s := append([]time.Duration(nil), l.lags...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[(len(s)*99)/100], len(s)
}

func (l *lagProbe) max() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var m time.Duration
	for _, d := range l.lags {
		m = max(m, d)
	}
	return m
}

// demoMailboxes picks the mailboxes of delivery i: n of them (spread over
// the accounts and their folders), or the default mix when n is 0.
func demoMailboxes(masters []string, i, n int) []string {
	if n <= 0 {
		if i%5 == 0 {
			return append([]string{}, masters...)
		}
		return []string{masters[i%len(masters)]}
	}
	mbs := make([]string, n)
	for k := range mbs {
		mbs[k] = masters[k%len(masters)]
		if k >= len(masters) {
			mbs[k] += fmt.Sprintf("/folder%d", k/len(masters))
		}
	}
	return mbs
}

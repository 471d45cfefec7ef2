package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/bench/cyrusload"
	"mreplfs/peer"
)

const demoSynopsis = `[-messages N] [-keep]

Two servers on this machine, each in its own network namespace (10.77.0.1 and
10.77.0.2 on a veth link), each with its spool mounted through mreplfs and a
peer process. Each masters half the accounts and replicates the other's. The
demo delivers Cyrus-shaped mail to both at once, shows per-account replication
state and lag, proves every replica identical to its master, shows a write to a
replica account refused, and tears everything down (also on Ctrl-C).
Needs root.`

// treeNames are the Cyrus trees a demo server mounts.
var treeNames = []string{"conf", "spool", "meta"}

// demoServer is one side of the demo.
type demoServer struct {
	name, node, ns, addr, ip string
	dir                      string
	masters                  []string
	mount, peer              *exec.Cmd
	mountLog, peerLog        string
}

func (s *demoServer) backing(t string) string { return filepath.Join(s.dir, "backing", t) }
func (s *demoServer) mnt(t string) string     { return filepath.Join(s.dir, "mnt", t) }

func (s *demoServer) spool() cyrusload.Spool {
	return cyrusload.Spool{Conf: s.mnt("conf"), Spool: s.mnt("spool"), Meta: s.mnt("meta")}
}

func (s *demoServer) backingSpool() cyrusload.Spool {
	return cyrusload.Spool{Conf: s.backing("conf"), Spool: s.backing("spool"), Meta: s.backing("meta")}
}

func runDemo(ctx context.Context, e *env, args []string) (err error) {
	fset := newFlagSet(e, "demo", demoSynopsis)
	messages := fset.Int("messages", 300, "deliveries in all (half on each server)")
	keep := fset.Bool("keep", false, "leave the work directory (logs, trees) behind")
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
	a := &demoServer{name: "A", node: "srv-a", ns: "mrdemo-a", ip: "10.77.0.1", dir: filepath.Join(work, "A"),
		masters: []string{"alice", "carol", "erin"}}
	b := &demoServer{name: "B", node: "srv-b", ns: "mrdemo-b", ip: "10.77.0.2", dir: filepath.Join(work, "B"),
		masters: []string{"bob", "dave", "frank"}}
	a.addr, b.addr = a.ip+":7411", b.ip+":7411"
	servers := []*demoServer{a, b}
	other := map[*demoServer]*demoServer{a: b, b: a}

	// Network: two namespaces joined by a veth pair; traffic stays on it.
	for _, s := range servers {
		exec.Command("ip", "netns", "del", s.ns).Run() // a stale one from a killed run
	}
	cmds := [][]string{
		{"netns", "add", a.ns}, {"netns", "add", b.ns},
		{"link", "add", "mrdemo-a0", "type", "veth", "peer", "name", "mrdemo-b0"},
		{"link", "set", "mrdemo-a0", "netns", a.ns}, {"link", "set", "mrdemo-b0", "netns", b.ns},
		{"-n", a.ns, "addr", "add", a.ip + "/24", "dev", "mrdemo-a0"}, {"-n", b.ns, "addr", "add", b.ip + "/24", "dev", "mrdemo-b0"},
		{"-n", a.ns, "link", "set", "mrdemo-a0", "up"}, {"-n", b.ns, "link", "set", "mrdemo-b0", "up"},
		{"-n", a.ns, "link", "set", "lo", "up"}, {"-n", b.ns, "link", "set", "lo", "up"},
	}
	undo = append(undo, func() {
		exec.Command("ip", "netns", "del", a.ns).Run()
		exec.Command("ip", "netns", "del", b.ns).Run()
	})
	for _, c := range cmds {
		if o, err := exec.CommandContext(ctx, "ip", c...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s (is iproute2 installed?)", strings.Join(c, " "), err, o)
		}
	}
	step("network", "namespaces %s (%s) and %s (%s) on a veth link", a.ns, a.ip, b.ns, b.ip)

	// Certificates, role maps, configs.
	certs := filepath.Join(work, "certs")
	sub := func(args ...string) error {
		var buf bytes.Buffer
		se := &env{stdout: &buf, stderr: &buf, log: e.log}
		f := map[string]func(context.Context, *env, []string) error{"cert": runCert, "rolemap": runRolemap}[args[0]]
		if err := f(ctx, se, args[1:]); err != nil {
			return fmt.Errorf("mreplfs %s: %w: %s", strings.Join(args, " "), err, buf.String())
		}
		return nil
	}
	if err := sub("cert", "ca", "-dir", certs); err != nil {
		return err
	}
	for _, s := range servers {
		if err := sub("cert", "node", "-dir", certs, "-name", s.node, "-host", s.ip); err != nil {
			return err
		}
		for _, t := range treeNames {
			for _, d := range []string{s.backing(t), s.mnt(t)} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
		}
		o := other[s]
		var roles strings.Builder
		fmt.Fprintf(&roles, "# role map of %s (%s)\n", s.node, s.addr)
		for _, acct := range s.masters {
			fmt.Fprintf(&roles, "%-8s master  %s 1\n", acct, o.addr)
		}
		for _, acct := range o.masters {
			fmt.Fprintf(&roles, "%-8s replica %s 1\n", acct, o.addr)
		}
		txt, cdb := filepath.Join(s.dir, "roles.txt"), filepath.Join(s.dir, "roles.cdb")
		if err := os.WriteFile(txt, []byte(roles.String()), 0o644); err != nil {
			return err
		}
		if err := sub("rolemap", "build", txt, cdb); err != nil {
			return err
		}
		var mc, pc strings.Builder
		for _, t := range treeNames {
			fmt.Fprintf(&mc, "tree: %s=%s:%s\n", t, s.backing(t), s.mnt(t))
			fmt.Fprintf(&pc, "tree: %s=%s\n", t, s.backing(t))
		}
		jdir := filepath.Join(s.dir, "journal")
		fmt.Fprintf(&mc, "roles: %s\njournal: %s\nrolemap_poll: 200ms\n", cdb, jdir)
		fmt.Fprintf(&pc, "node: %s\nlisten: %s\npartner: %s=%s\nroles: %s\njournal: %s\nstate: %s\n",
			s.node, s.addr, o.node, o.addr, cdb, jdir, filepath.Join(s.dir, "peer"))
		fmt.Fprintf(&pc, "tls_cert: %s\ntls_key: %s\ntls_ca: %s\n", filepath.Join(certs, s.node+".crt"),
			filepath.Join(certs, s.node+".key"), filepath.Join(certs, "ca.crt"))
		if err := os.WriteFile(filepath.Join(s.dir, "mount.conf"), []byte(mc.String()), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(s.dir, "peer.conf"), []byte(pc.String()), 0o644); err != nil {
			return err
		}
	}
	step("setup", "certificates (CA + %s, %s); %s masters %s, %s masters %s",
		a.node, b.node, a.node, strings.Join(a.masters, " "), b.node, strings.Join(b.masters, " "))

	// Mounts (host mount namespace), then peers (each in its namespace).
	for _, s := range servers {
		s.mountLog = filepath.Join(s.dir, "mount.log")
		cmd, err := startReady(ctx, self, s.mountLog, "mount", "-config", filepath.Join(s.dir, "mount.conf"))
		if err != nil {
			return fmt.Errorf("mount %s: %w", s.name, err)
		}
		s.mount = cmd
		undo = append(undo, func() { stopProcess(cmd, 15*time.Second) })
	}
	step("mount", "%s and %s: conf, spool and meta mounted through mreplfs", a.node, b.node)
	for _, s := range servers {
		s.peerLog = filepath.Join(s.dir, "peer.log")
		lf, err := os.Create(s.peerLog)
		if err != nil {
			return err
		}
		cmd := exec.Command("ip", "netns", "exec", s.ns, self, "peer", "-config", filepath.Join(s.dir, "peer.conf"))
		cmd.Stdout, cmd.Stderr = lf, lf
		if err := cmd.Start(); err != nil {
			lf.Close()
			return fmt.Errorf("peer %s: %w", s.name, err)
		}
		s.peer = cmd
		undo = append(undo, func() { stopProcess(cmd, 10*time.Second); lf.Close() })
	}
	if err := waitConnected(ctx, servers, 15*time.Second); err != nil {
		return err
	}
	step("peer", "%s ⇄ %s connected over mutual TLS", a.addr, b.addr)

	// Load on both servers at once; time from the delivery's last fsync to
	// the message file on the partner's disk.
	lags := &lagProbe{}
	lctx, stopProbe := context.WithCancel(ctx)
	probeDone := make(chan struct{})
	go func() { lags.run(lctx); close(probeDone) }()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	start := time.Now()
	per := *messages / 2
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := cyrusload.New(s.spool())
			for i := 0; i < per && ctx.Err() == nil; i++ {
				mbs := []string{s.masters[i%len(s.masters)]}
				if i%5 == 0 {
					mbs = append([]string{}, s.masters...)
				}
				got, err := d.Deliver(mbs, cyrusload.Body(i, 1000+(i*7919)%30000, s.node))
				if err != nil {
					errs <- fmt.Errorf("deliver on %s: %w", s.name, err)
					return
				}
				lags.add(filepath.Join(other[s].backing("spool"), got.Files[0]), got.At)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		stopProbe()
		return err
	}
	step("load", "%d deliveries (every 5th to 3 mailboxes) on both servers at once in %v (%.0f/s)",
		2*per, took.Round(time.Millisecond), float64(2*per)/took.Seconds())

	// Converge, then compare every account's trees.
	deadline := time.Now().Add(30 * time.Second)
	var diffs map[string][]string
	for {
		diffs = map[string][]string{}
		for _, s := range servers {
			for _, acct := range s.masters {
				if d := compareAccount(s, other[s], acct); len(d) > 0 {
					diffs[acct] = d
				}
			}
		}
		if len(diffs) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
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
		st := readPeerStatus(other[s])
		for _, acct := range s.masters {
			files, size := accountSize(s.backingSpool(), acct)
			pos := st.Accounts[acct]
			same := "yes"
			if len(diffs[acct]) > 0 {
				same = fmt.Sprintf("NO (%d differences)", len(diffs[acct]))
			}
			say("  %-8s %-7s %-8s %6d %9d %11d %-11s %s", acct, s.node, other[s].node, files, size, pos.Applied, pos.State.String(), same)
		}
	}
	for _, s := range servers {
		for _, snd := range readPeerStatus(s).Senders {
			say("  link %s → %s: %d records, %d bytes on the wire, bodies by value %d, by reference %d",
				s.node, snd.Partner, snd.Records, snd.BytesOnWire, snd.BodiesByValue, snd.BodiesByRef)
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

// startReady starts `self args... -ready-fd 3` with output to logPath and
// waits for its "ready" line.
func startReady(ctx context.Context, self, logPath string, args ...string) (*exec.Cmd, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		lf.Close()
		return nil, err
	}
	cmd := exec.Command(self, append(args, "-ready-fd", "3")...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.ExtraFiles = []*os.File{pw}
	err = cmd.Start()
	pw.Close()
	lf.Close()
	if err != nil {
		pr.Close()
		return nil, err
	}
	line := make([]byte, 6)
	pr.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, rerr := io.ReadFull(pr, line)
	pr.Close()
	if string(line) != "ready\n" {
		stopProcess(cmd, 5*time.Second)
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("not ready (%v): %s", rerr, log)
	}
	return cmd, nil
}

// stopProcess sends SIGTERM and waits, then SIGKILL.
func stopProcess(cmd *exec.Cmd, wait time.Duration) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		cmd.Process.Kill()
		<-done
	}
}

func waitConnected(ctx context.Context, servers []*demoServer, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		up := 0
		for _, s := range servers {
			for _, snd := range readPeerStatus(s).Senders {
				if snd.Connected {
					up++
				}
			}
		}
		if up == len(servers) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			logs := ""
			for _, s := range servers {
				b, _ := os.ReadFile(s.peerLog)
				logs += fmt.Sprintf("\n--- peer %s log:\n%s", s.name, b)
			}
			return fmt.Errorf("peers did not connect within %v%s", timeout, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readPeerStatus(s *demoServer) peerStatus {
	var st peerStatus
	b, err := os.ReadFile(filepath.Join(s.dir, "peer", "status.json"))
	if err == nil {
		json.Unmarshal(b, &st)
	}
	if st.Accounts == nil {
		st.Accounts = map[string]peer.AccountPos{}
	}
	return st
}

func compareAccount(master, replica *demoServer, acct string) []string {
	dm, err := cyrusload.Digest(master.backingSpool(), acct)
	if err != nil {
		return []string{err.Error()}
	}
	dr, err := cyrusload.Digest(replica.backingSpool(), acct)
	if err != nil {
		return []string{err.Error()}
	}
	return cyrusload.Diff(dm, dr)
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

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"mreplfs/bench/cyrusload"
	"mreplfs/peer"
)

// A cluster is several servers on this machine, the way the original engine
// ran them: each server masters some accounts and replicates those of the
// server before it in a ring (with two servers: crosswise). Each server has
// its own network namespace, joined to the others by a bridge in a "switch"
// namespace (addresses 10.77.N.x stay inside them); its trees are mounted
// through mreplfs in the host's mount namespace, and its peer runs in its
// network namespace. The demo and the multi-server tests use it.

// treeNames are the Cyrus trees a cluster server mounts.
var treeNames = []string{"conf", "spool", "meta"}

type cluster struct {
	self    string // the mreplfs binary
	work    string
	prefix  string // namespace and interface name prefix, ≤ 7 characters
	subnet  int    // 10.77.<subnet>.0/24
	servers []*node
	undo    []func()
}

// node is one server of a cluster.
type node struct {
	idx                int
	name, node, ns, ip string
	addr               string // peer address
	dir                string
	masters            []string // accounts mastered here
	next, prev         *node    // replicates to next; replicates prev's accounts
	mount, peer        *exec.Cmd
	peerLogFile        *os.File
	deliverer          *cyrusload.Deliverer
}

// load is the server's delivery agent (one per server, so UIDs go on).
func (s *node) load() *cyrusload.Deliverer {
	if s.deliverer == nil {
		s.deliverer = cyrusload.New(s.spool())
	}
	return s.deliverer
}

func (s *node) backing(t string) string { return filepath.Join(s.dir, "backing", t) }
func (s *node) mnt(t string) string     { return filepath.Join(s.dir, "mnt", t) }
func (s *node) mountLog() string        { return filepath.Join(s.dir, "mount.log") }
func (s *node) peerLog() string         { return filepath.Join(s.dir, "peer.log") }
func (s *node) vethIn() string          { return fmt.Sprintf("%s%da", s.nsPrefix(), s.idx) }
func (s *node) vethSw() string          { return fmt.Sprintf("%s%db", s.nsPrefix(), s.idx) }
func (s *node) nsPrefix() string        { return strings.TrimSuffix(s.ns, fmt.Sprintf("-%d", s.idx)) }

func (s *node) spool() cyrusload.Spool {
	return cyrusload.Spool{Conf: s.mnt("conf"), Spool: s.mnt("spool"), Meta: s.mnt("meta")}
}

func (s *node) backingSpool() cyrusload.Spool {
	return cyrusload.Spool{Conf: s.backing("conf"), Spool: s.backing("spool"), Meta: s.backing("meta")}
}

func ipCmd(ctx context.Context, args ...string) error {
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// newCluster builds the network, certificates, role maps and configs of
// len(masters) servers (masters[i]: the accounts server i masters) under
// work. Nothing runs yet; Close undoes everything.
func newCluster(ctx context.Context, self, work, prefix string, subnet int, masters [][]string) (*cluster, error) {
	c := &cluster{self: self, work: work, prefix: prefix, subnet: subnet}
	sw := prefix + "-sw"
	for i := range masters {
		exec.Command("ip", "netns", "del", fmt.Sprintf("%s-%d", prefix, i)).Run() // stale, from a killed run
	}
	exec.Command("ip", "netns", "del", sw).Run()
	c.undo = append(c.undo, func() {
		for _, s := range c.servers {
			exec.Command("ip", "netns", "del", s.ns).Run()
		}
		exec.Command("ip", "netns", "del", sw).Run()
	})
	if err := ipCmd(ctx, "netns", "add", sw); err != nil {
		return c, fmt.Errorf("%w (is iproute2 installed, and are we root?)", err)
	}
	if err := ipCmd(ctx, "-n", sw, "link", "add", "br0", "type", "bridge"); err != nil {
		return c, err
	}
	if err := ipCmd(ctx, "-n", sw, "link", "set", "br0", "up"); err != nil {
		return c, err
	}
	for i, m := range masters {
		s := &node{idx: i, name: string(rune('A' + i)), node: fmt.Sprintf("srv-%c", 'a'+i),
			ns: fmt.Sprintf("%s-%d", prefix, i), ip: fmt.Sprintf("10.77.%d.%d", subnet, i+1),
			dir: filepath.Join(work, string(rune('A'+i))), masters: m}
		s.addr = s.ip + ":7411"
		c.servers = append(c.servers, s)
		for _, a := range [][]string{
			{"netns", "add", s.ns},
			{"link", "add", s.vethIn(), "type", "veth", "peer", "name", s.vethSw()},
			{"link", "set", s.vethIn(), "netns", s.ns},
			{"link", "set", s.vethSw(), "netns", sw},
			{"-n", sw, "link", "set", s.vethSw(), "master", "br0"},
			{"-n", sw, "link", "set", s.vethSw(), "up"},
			{"-n", s.ns, "addr", "add", s.ip + "/24", "dev", s.vethIn()},
			{"-n", s.ns, "link", "set", s.vethIn(), "up"},
			{"-n", s.ns, "link", "set", "lo", "up"},
		} {
			if err := ipCmd(ctx, a...); err != nil {
				return c, err
			}
		}
	}
	n := len(c.servers)
	for i, s := range c.servers {
		s.next, s.prev = c.servers[(i+1)%n], c.servers[(i+n-1)%n]
	}
	return c, c.configure(ctx)
}

// configure writes certificates, role maps, mount and peer configs.
func (c *cluster) configure(ctx context.Context) error {
	certs := filepath.Join(c.work, "certs")
	sub := func(args ...string) error {
		var buf bytes.Buffer
		se := &env{stdout: &buf, stderr: &buf}
		f := map[string]func(context.Context, *env, []string) error{"cert": runCert, "rolemap": runRolemap}[args[0]]
		if err := f(ctx, se, args[1:]); err != nil {
			return fmt.Errorf("mreplfs %s: %w: %s", strings.Join(args, " "), err, buf.String())
		}
		return nil
	}
	if err := sub("cert", "ca", "-dir", certs); err != nil {
		return err
	}
	for _, s := range c.servers {
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
		var roles strings.Builder
		fmt.Fprintf(&roles, "# role map of %s (%s)\n", s.node, s.addr)
		for _, acct := range s.masters {
			fmt.Fprintf(&roles, "%-8s master  %s 1\n", acct, s.next.addr)
		}
		for _, acct := range s.prev.masters {
			fmt.Fprintf(&roles, "%-8s replica %s 1\n", acct, s.prev.addr)
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
		fmt.Fprintf(&pc, "node: %s\nlisten: %s\npartner: %s=%s\n", s.node, s.addr, s.next.node, s.next.addr)
		if s.prev != s.next {
			fmt.Fprintf(&pc, "partner: %s=%s\n", s.prev.node, s.prev.addr)
		}
		fmt.Fprintf(&pc, "roles: %s\njournal: %s\nstate: %s\n", cdb, jdir, filepath.Join(s.dir, "peer"))
		fmt.Fprintf(&pc, "tls_cert: %s\ntls_key: %s\ntls_ca: %s\n", filepath.Join(certs, s.node+".crt"),
			filepath.Join(certs, s.node+".key"), filepath.Join(certs, "ca.crt"))
		if err := os.WriteFile(filepath.Join(s.dir, "mount.conf"), []byte(mc.String()), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(s.dir, "peer.conf"), []byte(pc.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startMount mounts s's trees (host mount namespace) and waits until ready.
func (c *cluster) startMount(ctx context.Context, s *node) error {
	cmd, err := startReady(ctx, c.self, s.mountLog(), "mount", "-config", filepath.Join(s.dir, "mount.conf"))
	if err != nil {
		return fmt.Errorf("mount %s: %w", s.name, err)
	}
	s.mount = cmd
	return nil
}

// stopMount unmounts s cleanly (SIGTERM).
func (c *cluster) stopMount(s *node) {
	stopProcess(s.mount, 15*time.Second)
	s.mount = nil
}

// killMount kills s's mount process (SIGKILL: a crash). Its mounts stay,
// dead (every access fails with ENOTCONN), until detachMounts.
func (c *cluster) killMount(s *node) {
	if s.mount != nil {
		s.mount.Process.Kill()
		s.mount.Wait()
		s.mount = nil
	}
}

// detachMounts lazily unmounts s's dead mounts so that the mount points are
// free for startMount. Writers must be stopped first: after it, their paths
// reach the empty directories under the mount points.
func (c *cluster) detachMounts(s *node) {
	for _, t := range treeNames {
		syscall.Unmount(s.mnt(t), syscall.MNT_DETACH)
	}
}

// appendConf appends lines to s's mount.conf or peer.conf.
func (s *node) appendConf(which, lines string) error {
	f, err := os.OpenFile(filepath.Join(s.dir, which), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(lines)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// startPeer starts s's peer inside its network namespace.
func (c *cluster) startPeer(s *node) error {
	lf, err := os.OpenFile(s.peerLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// Enter only the network namespace: `ip netns exec` would also give the
	// peer a private copy of the mount table, pinning the FUSE mounts so
	// that a mount process could not finish unmounting (DESIGN.md §7).
	cmd := exec.Command("nsenter", "--net=/var/run/netns/"+s.ns, c.self, "peer", "-config", filepath.Join(s.dir, "peer.conf"))
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("peer %s: %w", s.name, err)
	}
	s.peer, s.peerLogFile = cmd, lf
	return nil
}

// stopPeer stops s's peer (SIGTERM); killPeer kills it (SIGKILL).
func (c *cluster) stopPeer(s *node) {
	stopProcess(s.peer, 10*time.Second)
	s.peer = nil
	if s.peerLogFile != nil {
		s.peerLogFile.Close()
		s.peerLogFile = nil
	}
}

func (c *cluster) killPeer(s *node) {
	if s.peer != nil {
		s.peer.Process.Kill()
		s.peer.Wait()
		s.peer = nil
	}
}

// setLink cuts (up=false) or restores s's link to the others.
func (c *cluster) setLink(ctx context.Context, s *node, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ipCmd(ctx, "-n", c.prefix+"-sw", "link", "set", s.vethSw(), state)
}

// start mounts every server, then starts every peer and waits until every
// link is up.
func (c *cluster) start(ctx context.Context, timeout time.Duration) error {
	for _, s := range c.servers {
		if err := c.startMount(ctx, s); err != nil {
			return err
		}
	}
	for _, s := range c.servers {
		if err := c.startPeer(s); err != nil {
			return err
		}
	}
	return c.waitConnected(ctx, timeout)
}

// waitConnected waits until every server's sender to its next is connected.
func (c *cluster) waitConnected(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		down := ""
		for _, s := range c.servers {
			ok := false
			for _, snd := range s.status().Senders {
				if snd.Partner == s.next.node && snd.Connected {
					ok = true
				}
			}
			if !ok {
				down = s.node + " → " + s.next.node
			}
		}
		if down == "" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("link %s not up within %v%s", down, timeout, c.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logs returns every server's peer and mount log, for a failure message.
func (c *cluster) logs() string {
	var sb strings.Builder
	for _, s := range c.servers {
		for _, f := range []string{s.peerLog(), s.mountLog()} {
			b, _ := os.ReadFile(f)
			fmt.Fprintf(&sb, "\n--- %s:\n%s", f, b)
		}
	}
	return sb.String()
}

// status reads s's peer status.json.
func (s *node) status() peerStatus {
	var st peerStatus
	if b, err := os.ReadFile(filepath.Join(s.dir, "peer", "status.json")); err == nil {
		json.Unmarshal(b, &st)
	}
	if st.Accounts == nil {
		st.Accounts = map[string]peer.AccountPos{}
	}
	return st
}

// diffs compares every account's master and replica trees.
func (c *cluster) diffs() map[string][]string {
	out := map[string][]string{}
	for _, s := range c.servers {
		for _, acct := range s.masters {
			dm, err := cyrusload.Digest(s.backingSpool(), acct)
			if err != nil {
				out[acct] = []string{err.Error()}
				continue
			}
			dr, err := cyrusload.Digest(s.next.backingSpool(), acct)
			if err != nil {
				out[acct] = []string{err.Error()}
				continue
			}
			if d := cyrusload.Diff(dm, dr); len(d) > 0 {
				out[acct] = d
			}
		}
	}
	return out
}

// waitConverged waits until every replica equals its master, and returns
// how long that took, or the differences left at the deadline.
func (c *cluster) waitConverged(ctx context.Context, timeout time.Duration) (time.Duration, map[string][]string) {
	start := time.Now()
	for {
		d := c.diffs()
		if len(d) == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout || ctx.Err() != nil {
			return time.Since(start), d
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close stops every process and removes the namespaces (not the work dir).
func (c *cluster) Close() {
	for _, s := range c.servers {
		c.stopPeer(s)
	}
	for _, s := range c.servers {
		if s.mount != nil {
			c.stopMount(s)
		}
		for _, t := range treeNames { // only if a mount process could not
			syscall.Unmount(s.mnt(t), syscall.MNT_DETACH)
		}
	}
	for i := len(c.undo) - 1; i >= 0; i-- {
		c.undo[i]()
	}
}

// startReady starts `self args... -ready-fd 3` with output to logPath and
// waits for its "ready" line.
func startReady(ctx context.Context, self, logPath string, args ...string) (*exec.Cmd, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
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
		// Stuck: a goroutine dump into its log (Go's SIGQUIT), then kill.
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
}

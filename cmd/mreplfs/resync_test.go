package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"mreplfs/bench/cyrusload"
	"mreplfs/fs/mounttest"
)

// newServerPairSeeded makes A and B with crosswise roles, certificates and
// configs, runs before (if set: e.g. an existing install's spool) and then
// starts both mounts and both peers. newServerPair is it without a hook.
func newServerPairSeeded(t *testing.T, before func(a, b *server)) (a, b *server) {
	t.Helper()
	mounttest.RequireRoot(t)
	bin := mreplfsBinary(t)
	root := t.TempDir()
	certs := filepath.Join(root, "certs")
	mustRun(t, bin, "cert", "ca", "-dir", certs)
	a = &server{t: t, name: "A", node: "srv-a", dir: filepath.Join(root, "A"), addr: freeAddr(t)}
	b = &server{t: t, name: "B", node: "srv-b", dir: filepath.Join(root, "B"), addr: freeAddr(t)}
	for _, s := range []*server{a, b} {
		mustRun(t, bin, "cert", "node", "-dir", certs, "-name", s.node, "-host", "127.0.0.1")
		for _, tr := range treeNames {
			for _, d := range []string{s.backing(tr), s.mnt(tr)} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	cfgs := map[*server][2]string{}
	for _, p := range [][2]*server{{a, b}, {b, a}} {
		self, other := p[0], p[1]
		mine, theirs := []string{"alice", "carol"}, []string{"bob", "dave"}
		if self == b {
			mine, theirs = theirs, mine
		}
		var sb strings.Builder
		for _, acct := range mine {
			fmt.Fprintf(&sb, "%s master %s 1\n", acct, other.addr)
		}
		for _, acct := range theirs {
			fmt.Fprintf(&sb, "%s replica %s 1\n", acct, other.addr)
		}
		txt, cdb := filepath.Join(self.dir, "roles.txt"), filepath.Join(self.dir, "roles.cdb")
		os.WriteFile(txt, []byte(sb.String()), 0o644)
		mustRun(t, bin, "rolemap", "build", txt, cdb)
		var mc, pc strings.Builder
		for _, tr := range treeNames {
			fmt.Fprintf(&mc, "tree: %s=%s:%s\n", tr, self.backing(tr), self.mnt(tr))
			fmt.Fprintf(&pc, "tree: %s=%s\n", tr, self.backing(tr))
		}
		fmt.Fprintf(&mc, "roles: %s\njournal: %s\nrolemap_poll: 100ms\n", cdb, self.journal())
		fmt.Fprintf(&pc, "node: %s\nlisten: %s\npartner: %s=%s\nroles: %s\njournal: %s\nstate: %s\n",
			self.node, self.addr, other.node, other.addr, cdb, self.journal(), filepath.Join(self.dir, "peer"))
		fmt.Fprintf(&pc, "tls_cert: %s\ntls_key: %s\ntls_ca: %s\n",
			filepath.Join(certs, self.node+".crt"), filepath.Join(certs, self.node+".key"), filepath.Join(certs, "ca.crt"))
		mcfg, pcfg := filepath.Join(self.dir, "mount.conf"), filepath.Join(self.dir, "peer.conf")
		os.WriteFile(mcfg, []byte(mc.String()), 0o644)
		os.WriteFile(pcfg, []byte(pc.String()), 0o644)
		cfgs[self] = [2]string{mcfg, pcfg}
	}
	if before != nil {
		before(a, b)
	}
	for _, s := range []*server{a, b} {
		s.startMount(cfgs[s][0])
	}
	for _, s := range []*server{a, b} {
		s.startPeer(cfgs[s][1])
	}
	return a, b
}

// writeExistingSpool writes n messages of acct (folder Archive, every
// third also in Archive/2019 as a hard link), their cyrus.index/cyrus.cache
// and quota straight into s's backing trees, legacy layout, as a Cyrus
// install had them before it first mounted through mreplfs.
func writeExistingSpool(t *testing.T, s *server, acct string, n int) {
	t.Helper()
	uids := map[string]int{}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var total int
	for i := 0; i < n; i++ {
		size := 1000 + (i*7919)%20000
		total += size
		body := bytes.Repeat([]byte(fmt.Sprintf("Message-ID: <old-%d-%s>\r\nold text %d\r\n", i, acct, i)), size/20+1)[:size]
		mbs := []string{acct + "/Archive"}
		if i%3 == 0 {
			mbs = append(mbs, acct+"/Archive/2019")
		}
		first := ""
		for _, mb := range mbs {
			rel := "user/" + mb
			uids[mb]++
			must(os.MkdirAll(filepath.Join(s.backing("spool"), rel), 0o700))
			must(os.MkdirAll(filepath.Join(s.backing("meta"), rel), 0o700))
			dst := filepath.Join(s.backing("spool"), rel, fmt.Sprintf("%d.", uids[mb]))
			if first == "" {
				must(os.WriteFile(dst, body, 0o600))
				mt := time.Unix(1500000000+int64(i)*600, 0)
				must(os.Chtimes(dst, mt, mt))
				first = dst
			} else {
				must(os.Link(first, dst))
			}
			cache, err := os.OpenFile(filepath.Join(s.backing("meta"), rel, "cyrus.cache"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
			must(err)
			_, err = cache.Write(bytes.Repeat([]byte{'o'}, 300))
			must(err)
			cache.Close()
			idx, err := os.OpenFile(filepath.Join(s.backing("meta"), rel, "cyrus.index"), os.O_RDWR|os.O_CREATE, 0o600)
			must(err)
			rec := make([]byte, 112)
			copy(rec, fmt.Sprintf("old uid %d size %d", uids[mb], size))
			_, err = idx.WriteAt(rec, 160+int64(uids[mb]-1)*112)
			must(err)
			_, err = idx.WriteAt([]byte(fmt.Sprintf("%-160s", fmt.Sprintf("exists %d", uids[mb]))), 0)
			must(err)
			idx.Close()
		}
	}
	q := filepath.Join(s.backing("conf"), "quota", acct[:1])
	must(os.MkdirAll(q, 0o700))
	must(os.WriteFile(filepath.Join(q, "user."+acct), []byte(fmt.Sprintf("%%(S (%d 100000) M (%d))\n", total, n)), 0o600))
}

// replicatedState reads an account's position from a server's status.json.
func replicatedState(t *testing.T, s *server, acct string) (applied uint64, state int, ok bool) {
	b, err := os.ReadFile(filepath.Join(s.dir, "peer", "status.json"))
	if err != nil {
		return 0, 0, false
	}
	var st struct {
		Accounts map[string]struct {
			Applied uint64
			State   int
		} `json:"replicated_accounts"`
	}
	if json.Unmarshal(b, &st) != nil {
		return 0, 0, false
	}
	p, ok := st.Accounts[acct]
	return p.Applied, p.State, ok
}

// TestExistingSpoolSeeded: an install's existing mail (written to A's
// backing trees before its mount and peer start, so the journal never saw
// it) is seeded to B by a full resync while deliveries through A's mount go
// on; then B's replicas are identical. Then `mreplfs peer -resync` (refused
// while the daemon runs) repairs a replica changed behind replication's
// back, and the daemon streams on afterwards.
func TestExistingSpoolSeeded(t *testing.T) {
	a, b := newServerPairSeeded(t, func(a, b *server) {
		writeExistingSpool(t, a, "alice", 300)
		writeExistingSpool(t, a, "carol", 40)
	})
	pairOf[a], pairOf[b] = b, a
	da := cyrusload.New(a.spool())
	n := 0
	// Deliveries before, during and after the seeding: at least 30, and
	// until B reports alice resynced with a position past some of them.
	start := time.Now()
	for i := 0; i < 300; i++ {
		mbs := []string{"alice"}
		if i%4 == 0 {
			mbs = []string{"alice", "alice/Sent", "carol"}
		}
		n++
		deliver(t, da, n, mbs, 2000+i*100)
		applied, state, ok := replicatedState(t, b, "alice")
		if i >= 30 && ok && state == 0 && applied > 0 {
			break
		}
	}
	for i := 0; i < 10; i++ {
		n++
		deliver(t, da, n, []string{"alice", "carol"}, 1500)
	}
	waitReplicated(t, 90*time.Second, [2]any{"alice", a}, [2]any{"carol", a})
	t.Logf("existing spool (alice 300, carol 40 messages) seeded under load (%d deliveries) and identical after %v", n, time.Since(start).Round(time.Millisecond))

	// -resync while A's daemon runs: refused.
	bin := mreplfsBinary(t)
	cfg := filepath.Join(a.dir, "peer.conf")
	out, err := exec.Command(bin, "peer", "-config", cfg, "-resync", "alice").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "stop it first") {
		t.Fatalf("-resync with the daemon running: err %v, output:\n%s", err, out)
	}
	// Stop A's daemon; B's replica of alice is changed behind its back.
	cmd := a.peerCmd
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if !strings.Contains(a.peerLog.String(), "account needs a full resync") {
		t.Errorf("A's peer log does not show the seeding resync:\n%s", a.peerLog)
	}
	stray := filepath.Join(b.backing("spool"), "user/alice/9999.")
	os.WriteFile(stray, []byte("not on the master"), 0o600)
	os.Remove(filepath.Join(b.backing("spool"), "user/alice/Archive/7.")) // also held as Archive/2019/3.: made on B
	os.Remove(filepath.Join(b.backing("spool"), "user/alice/Archive/8.")) // sent
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	rc := exec.CommandContext(ctx, bin, "peer", "-config", cfg, "-resync", "alice")
	rc.Stderr = &stderr
	if err := rc.Run(); err != nil {
		t.Fatalf("-resync alice: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "resync alice: sending 1/1 files") || !strings.Contains(stderr.String(), "done") {
		t.Errorf("-resync shows no progress:\n%s", stderr.String())
	}
	t.Logf("-resync output: %s", strings.ReplaceAll(stderr.String(), "\r", "\n"))
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Fatal("-resync left a file the master does not have")
	}
	waitReplicated(t, 10*time.Second, [2]any{"alice", a})

	// The daemon streams on from where the resync left the account.
	a.startPeer(cfg)
	for i := 0; i < 10; i++ {
		n++
		deliver(t, da, n, []string{"alice"}, 2500)
	}
	waitReplicated(t, 60*time.Second, [2]any{"alice", a}, [2]any{"carol", a})
	// status.json is rewritten every 500 ms: wait for a fresh one.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, state, ok := replicatedState(t, b, "alice")
		if ok && state == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice on B in state %d after the stream resumed", state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

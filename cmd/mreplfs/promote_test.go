package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"mreplfs/bench/cyrusload"
	"mreplfs/rolemap"
)

// Role changes between namespaced servers (DESIGN.md §6): promote, demote,
// refusals, crash injection, failover.

// admin runs `mreplfs args...` in s's network namespace (where its peer
// listens) and returns its output and exit code.
func (c *cluster) admin(ctx context.Context, s *node, args ...string) (string, int) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/var/run/netns/" + s.ns, c.self}, args...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		out = append(out, []byte(err.Error())...)
	}
	return string(out), code
}

func (s *node) peerConf() string { return filepath.Join(s.dir, "peer.conf") }

// role returns account's entry in s's role map file.
func (s *node) role(t testing.TB, account string) rolemap.Entry {
	t.Helper()
	m, err := rolemap.Open(filepath.Join(s.dir, "roles.cdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	e, _ := m.Lookup(account)
	return e
}

// sameAccount waits until account is identical on the two servers'
// backing trees and fails the test with the differences if it is not in
// time.
func sameAccount(t testing.TB, account string, master, replica *node, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		dm, err1 := cyrusload.Digest(master.backingSpool(), account)
		dr, err2 := cyrusload.Digest(replica.backingSpool(), account)
		d := cyrusload.Diff(dm, dr)
		if err1 == nil && err2 == nil && len(d) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if len(d) > 5 {
				d = d[:5]
			}
			t.Fatalf("%s: %s and %s differ after %v (%v %v): %s", account, master.node, replica.node, timeout, err1, err2, strings.Join(d, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deliverTo delivers n messages to mailbox on s's mount.
func deliverTo(t testing.TB, s *node, d *cyrusload.Deliverer, mailbox string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := d.Deliver([]string{mailbox}, cyrusload.Body(i, 600+i*37, s.node)); err != nil {
			t.Fatalf("deliver to %s on %s: %v", mailbox, s.node, err)
		}
	}
}

// writeRefused checks that a write to account on s's mount fails with EROFS.
func writeRefused(t testing.TB, s *node, account string) {
	t.Helper()
	p := filepath.Join(s.mnt("spool"), "user", account, "refused-probe.")
	err := os.WriteFile(p, []byte("x"), 0o600)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("write to %s on %s: %v, want EROFS", account, s.node, err)
	}
}

// TestPromote: an idle account is promoted (run on the master's server)
// and demoted back (run on the other): each time writes are refused on the
// old master and accepted on the new one, replication runs the new way, and
// both servers' role maps agree. A busy account (an open file, changes
// within the idle time) is refused with exit code 5, and promoted once idle;
// a diverged replica (-verify) and a partner whose peer is down are refused
// with exit code 6.
func TestPromote(t *testing.T) {
	c := newTestCluster(t, [][]string{{"alice", "carol"}, {"bob", "dave"}})
	a, b := c.servers[0], c.servers[1]
	ctx := context.Background()
	da, db := cyrusload.New(a.spool()), cyrusload.New(b.spool())
	deliverTo(t, a, da, "alice", 20)
	deliverTo(t, a, da, "carol", 5)
	deliverTo(t, b, db, "bob", 5)
	sameAccount(t, "alice", a, b, 30*time.Second)
	// Idle: the replica can have it all within -idle of the last delivery.
	time.Sleep(300 * time.Millisecond)

	out, code := c.admin(ctx, a, "promote", "-config", a.peerConf(), "-idle", "100ms", "alice")
	if code != 0 {
		t.Fatalf("promote alice: exit %d:\n%s", code, out)
	}
	t.Logf("promote alice (run on %s):\n%s", a.node, out)
	for _, step := range []string{"check", "freeze", "drain", "confirm", "prepare", "commit", "done"} {
		if !strings.Contains(out, step) {
			t.Errorf("output lacks step %q", step)
		}
	}
	if ea, eb := a.role(t, "alice"), b.role(t, "alice"); ea.Role != rolemap.Replica || eb.Role != rolemap.Master || ea.Epoch != 2 || eb.Epoch != 2 {
		t.Fatalf("role maps after promote: %s has %+v, %s has %+v", a.node, ea, b.node, eb)
	}
	writeRefused(t, a, "alice")
	// Writable on B at once (no wait for a poll), and replicated to A.
	deliverTo(t, b, db, "alice/Sent", 10)
	sameAccount(t, "alice", b, a, 30*time.Second)
	writeRefused(t, a, "alice")

	// Back again, run on the other server as demote, verifying content.
	time.Sleep(300 * time.Millisecond) // idle
	out, code = c.admin(ctx, a, "demote", "-config", a.peerConf(), "-idle", "100ms", "-verify", "alice")
	if code != 0 {
		t.Fatalf("demote alice (back to %s): exit %d:\n%s", a.node, code, out)
	}
	if ea, eb := a.role(t, "alice"), b.role(t, "alice"); ea.Role != rolemap.Master || eb.Role != rolemap.Replica || ea.Epoch != 3 || eb.Epoch != 3 {
		t.Fatalf("role maps after the swap back: %s has %+v, %s has %+v", a.node, ea, b.node, eb)
	}
	if !strings.Contains(out, "verify") {
		t.Errorf("demote -verify printed no verify step:\n%s", out)
	}
	writeRefused(t, b, "alice")
	deliverTo(t, a, da, "alice/Drafts", 5)
	sameAccount(t, "alice", a, b, 30*time.Second)

	// Diverged: a byte of the replica's copy changed behind replication's
	// back is caught by -verify, and the swap refused.
	victim := filepath.Join(b.backing("spool"), "user/alice/3.")
	orig, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	vfi, err := os.Stat(victim)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), orig...)
	bad[len(bad)/2] ^= 0x20
	if err := os.WriteFile(victim, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	out, code = c.admin(ctx, b, "promote", "-config", b.peerConf(), "-idle", "100ms", "-verify", "alice")
	if code != ExitRefused || !strings.Contains(out, "diverged") {
		t.Errorf("promote -verify of a diverged replica: exit %d, want %d (diverged):\n%s", code, ExitRefused, out)
	}
	if e := a.role(t, "alice"); e.Role != rolemap.Master || e.Epoch != 3 {
		t.Errorf("a refused promote changed alice on %s: %+v", a.node, e)
	}
	if err := os.WriteFile(victim, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(victim, vfi.ModTime(), vfi.ModTime()); err != nil {
		t.Fatal(err)
	}

	// Busy: an open file of carol on her master.
	f, err := os.Open(filepath.Join(a.mnt("spool"), "user/carol/1."))
	if err != nil {
		t.Fatal(err)
	}
	out, code = c.admin(ctx, b, "promote", "-config", b.peerConf(), "-idle", "100ms", "carol")
	f.Close()
	if code != ExitBusy || !strings.Contains(out, "open file") {
		t.Errorf("promote with an open file: exit %d, want %d (busy, open file):\n%s", code, ExitBusy, out)
	}
	// Busy: changed within the idle time (deliveries keep coming).
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		d := cyrusload.New(a.spool())
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := d.Deliver([]string{"carol/Busy"}, cyrusload.Body(i, 500, "busy")); err != nil {
				done <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	out, code = c.admin(ctx, b, "promote", "-config", b.peerConf(), "-idle", "2s", "carol")
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("deliveries to carol during the refused promote: %v", err)
	}
	if code != ExitBusy || !strings.Contains(out, "changed") && !strings.Contains(out, "open file") {
		t.Errorf("promote during writes: exit %d, want %d (busy: changed, or a file open):\n%s", code, ExitBusy, out)
	}
	if e := a.role(t, "carol"); e.Role != rolemap.Master || e.Epoch != 1 {
		t.Errorf("a refused promote changed carol's role on %s: %+v", a.node, e)
	}
	// Idle now: accepted.
	time.Sleep(300 * time.Millisecond)
	out, code = c.admin(ctx, b, "promote", "-config", b.peerConf(), "-idle", "100ms", "carol")
	if code != 0 {
		t.Fatalf("promote of idle carol: exit %d:\n%s", code, out)
	}
	writeRefused(t, a, "carol")
	deliverTo(t, b, db, "carol/New", 3)
	sameAccount(t, "carol", b, a, 30*time.Second)
	// The others never stopped replicating.
	deliverTo(t, b, db, "bob", 3)
	sameAccount(t, "bob", b, a, 30*time.Second)
	if st := c.servers[1].status(); fmt.Sprint(st.Accounts["alice"].State) != "ok" {
		t.Errorf("alice on %s: %+v", b.node, st.Accounts["alice"])
	}

	// Peer down: the partner's peer is stopped; promote refuses, changing
	// nothing, and works again once it is back.
	c.killPeer(b)
	out, code = c.admin(ctx, a, "promote", "-config", a.peerConf(), "-idle", "100ms", "-timeout", "2s", "alice")
	if code != ExitRefused || !strings.Contains(out, "peer down") {
		t.Errorf("promote with the partner's peer down: exit %d, want %d (peer down):\n%s", code, ExitRefused, out)
	}
	if e := a.role(t, "alice"); e.Role != rolemap.Master || e.Epoch != 3 {
		t.Errorf("a refused promote changed alice on %s: %+v", a.node, e)
	}
	if err := c.startPeer(b); err != nil {
		t.Fatal(err)
	}
	out, code = c.admin(ctx, a, "promote", "-config", a.peerConf(), "-idle", "100ms", "alice")
	if code != 0 {
		t.Fatalf("promote once the peer is back: exit %d:\n%s", code, out)
	}
	deliverTo(t, b, db, "alice/Back", 2)
	sameAccount(t, "alice", b, a, 30*time.Second)
}

// failedOver is TestFailover's start: alice's master A took mail with its
// link cut (the tail B lacks), died, and B failed alice over and took mail
// for her; A's mount and peer are down.
type failedOver struct {
	c       *cluster
	a, b    *node
	da, db  *cyrusload.Deliverer
	atDeath map[string]string // A's alice at its death (cyrusload.Digest)
	lacked  map[string]bool   // what B lacked of it
}

// comeBack brings A back: its link, its mount, its peer.
func (f *failedOver) comeBack(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if err := f.c.setLink(ctx, f.a, true); err != nil {
		t.Fatal(err)
	}
	if err := f.c.startMount(ctx, f.a); err != nil {
		t.Fatal(err)
	}
	if err := f.c.startPeer(f.a); err != nil {
		t.Fatal(err)
	}
}

func newFailedOver(t *testing.T) *failedOver {
	c := newTestCluster(t, [][]string{{"alice", "carol"}, {"bob", "dave"}})
	a, b := c.servers[0], c.servers[1]
	ctx := context.Background()
	da, db := cyrusload.New(a.spool()), cyrusload.New(b.spool())
	deliverTo(t, a, da, "alice", 10)
	deliverTo(t, a, da, "carol", 3)
	sameAccount(t, "alice", a, b, 30*time.Second)

	// The tail: mail A takes while its link is down.
	if err := c.setLink(ctx, a, false); err != nil {
		t.Fatal(err)
	}
	deliverTo(t, a, da, "alice", 5)
	deliverTo(t, a, da, "alice/Tail", 3)
	c.killPeer(a)
	c.stopMount(a)
	atDeath, err := cyrusload.Digest(a.backingSpool(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	onB, err := cyrusload.Digest(b.backingSpool(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	lacked := map[string]bool{}
	for k, v := range atDeath {
		if onB[k] != v {
			lacked[k] = true
		}
	}
	if len(lacked) < 8 {
		t.Fatalf("the tail is too small to test anything: %v", lacked)
	}

	start := time.Now()
	out, code := c.admin(ctx, b, "failover", "-config", b.peerConf(), "-probe", "500ms", "alice")
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("failover: exit %d:\n%s", code, out)
	}
	t.Logf("failover (%v): %s", took.Round(time.Millisecond), out)
	if e := b.role(t, "alice"); e.Role != rolemap.Master || e.Epoch != 2 {
		t.Fatalf("alice on %s after failover: %+v", b.node, e)
	}
	deliverTo(t, b, db, "alice/AfterFailover", 3)
	return &failedOver{c: c, a: a, b: b, da: da, db: db, atDeath: atDeath, lacked: lacked}
}

// TestFailover: alice's master A is cut off while it takes mail (so its
// replica B lacks A's tail), then dies. `failover` on B makes alice
// writable there at epoch 2 at once. When A comes back, its handshake shows
// its epoch is stale: it becomes alice's replica, moves its unreplicated
// tail aside — the quarantine report lists exactly the files B lacked, and
// keeps A's copy of each — and resyncs alice from B until identical. The
// other accounts replicate throughout.
func TestFailover(t *testing.T) {
	f := newFailedOver(t)
	c, a, b, da, db, atDeath, lacked := f.c, f.a, f.b, f.da, f.db, f.atDeath, f.lacked
	ctx := context.Background()
	var out string
	var code int
	var err error

	// A comes back.
	f.comeBack(t)
	deadline := time.Now().Add(30 * time.Second)
	var reps []quarantineReport
	var dirs []string
	for {
		reps, dirs, err = listQuarantines(filepath.Join(a.dir, "peer"))
		if err != nil {
			t.Fatal(err)
		}
		if len(reps) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(reps) != 1 {
		t.Fatalf("%d quarantine reports on %s, want 1", len(reps), a.node)
	}
	if e := a.role(t, "alice"); e.Role != rolemap.Replica || e.Epoch != 2 {
		t.Fatalf("alice on %s after it came back: %+v", a.node, e)
	}
	rep := reps[0]
	listed := map[string]bool{}
	for _, f := range rep.Files {
		k := f.Tree + "/" + f.Path
		listed[k] = true
		want := atDeath[k]
		if f.Copy == "" || want == "" || strings.HasPrefix(want, "dir") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dirs[0], f.Copy))
		if err != nil {
			t.Errorf("quarantined copy of %s: %v", k, err)
		} else if !strings.Contains(want, fmt.Sprintf(" %d %x", len(b), sha256Sum(b))) {
			t.Errorf("quarantined copy of %s is not what %s had (%s)", k, a.node, want)
		}
	}
	for k := range lacked {
		if !listed[k] {
			t.Errorf("%s lacked %s, the quarantine does not list it", b.node, k)
		}
	}
	for k := range listed {
		if !lacked[k] {
			t.Errorf("the quarantine lists %s, which %s did not lack", k, b.node)
		}
	}
	if t.Failed() {
		txt, _ := os.ReadFile(filepath.Join(dirs[0], "report.txt"))
		t.Fatalf("report:\n%s", txt)
	}
	// A resyncs from B, and refuses writes to alice.
	sameAccount(t, "alice", b, a, 60*time.Second)
	writeRefused(t, a, "alice")
	out, code = c.admin(ctx, a, "status", "-peer-state", filepath.Join(a.dir, "peer"))
	if code != 0 || !strings.Contains(out, "user/alice/Tail") {
		t.Errorf("status -peer-state: exit %d:\n%s", code, out)
	}
	// The others replicate as before.
	deliverTo(t, a, da, "carol", 2)
	sameAccount(t, "carol", a, b, 30*time.Second)
	deliverTo(t, b, db, "alice/AfterResync", 2)
	sameAccount(t, "alice", b, a, 30*time.Second)
}

// TestFenceCutShort: A's fence fails after it made alice a replica (its
// quarantine directory cannot be made), when no handshake would offer the
// account again. Alice stays held on A — quarantined, her tail untouched,
// never resynced over — and the fence marker stays; once the cause is gone
// the resolver finishes the fence (the report lists what B lacked) and A
// resyncs from B.
func TestFenceCutShort(t *testing.T) {
	f := newFailedOver(t)
	c, a, b := f.c, f.a, f.b
	ctx := context.Background()
	blocker := filepath.Join(a.dir, "peer", "quarantine")
	if err := os.WriteFile(blocker, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.comeBack(t)
	marker := filepath.Join(a.dir, "peer", "roles", "alice.fence")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err := os.Stat(marker)
		if e := a.role(t, "alice"); err == nil && e.Role == rolemap.Replica && e.Epoch == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fence under way on %s: role %+v, marker: %v", a.node, a.role(t, "alice"), err)
		}
	}
	// Held: several resolver rounds and partner reconnects later, A's tail
	// is still A's, and alice is quarantined there.
	time.Sleep(3 * time.Second)
	now, err := cyrusload.Digest(a.backingSpool(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	for k := range f.lacked {
		if now[k] != f.atDeath[k] {
			t.Errorf("%s changed on %s while its fence was cut short: %q, was %q", k, a.node, now[k], f.atDeath[k])
		}
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("fence marker gone while the quarantine failed: %v", err)
	}
	pins := filepath.Join(a.dir, "journal", "consumers.d", "fence:alice-*.ack")
	if m, _ := filepath.Glob(pins); len(m) != 1 {
		t.Errorf("the tail is not pinned in the journal while the fence waits: %v", m)
	}
	if st := a.status().Accounts["alice"]; st.State.String() != "quarantined" || !strings.Contains(st.Reason, "fencing") {
		t.Errorf("alice on %s while its fence is cut short: %+v, want quarantined (fencing)", a.node, st)
	}
	// The admin sees the fence and why the listing of quarantines failed.
	out, code := c.admin(ctx, a, "status", "-peer-state", filepath.Join(a.dir, "peer"))
	if code != 1 || !strings.Contains(out, "fence under way, not finished: alice") || !strings.Contains(out, "not a directory") {
		t.Errorf("status -peer-state: exit %d, want 1, the fence and the listing error:\n%s", code, out)
	}
	if t.Failed() {
		t.FailNow()
	}
	// The cause goes: the resolver finishes the fence.
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	var reps []quarantineReport
	for deadline := time.Now().Add(30 * time.Second); len(reps) == 0; time.Sleep(100 * time.Millisecond) {
		if reps, _, err = listQuarantines(filepath.Join(a.dir, "peer")); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the fence was not finished after its cause went")
		}
	}
	listed := map[string]bool{}
	for _, fl := range reps[0].Files {
		listed[fl.Tree+"/"+fl.Path] = true
	}
	for k := range f.lacked {
		if !listed[k] {
			t.Errorf("%s lacked %s, the finished fence's quarantine does not list it", b.node, k)
		}
	}
	sameAccount(t, "alice", b, a, 60*time.Second)
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("fence marker left after the fence: %v", err)
	}
	if m, _ := filepath.Glob(pins); len(m) != 0 {
		t.Errorf("journal pin left after the fence: %v", m)
	}
	writeRefused(t, a, "alice")
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// startPeerEnv starts s's peer like cluster.startPeer, with extra
// environment variables (the crash hook).
func (c *cluster) startPeerEnv(s *node, env ...string) error {
	lf, err := os.OpenFile(s.peerLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("nsenter", "--net=/var/run/netns/"+s.ns, c.self, "peer", "-config", s.peerConf())
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	s.peer, s.peerLogFile = cmd, lf
	return nil
}

// masterOf returns which of the pair masters account (by the role map
// files), and the other.
func masterOf(t testing.TB, account string, a, b *node) (m, r *node) {
	t.Helper()
	if a.role(t, account).Role == rolemap.Master {
		return a, b
	}
	return b, a
}

// waitAgreed waits until both servers' role maps agree on account (same
// epoch, one master and one replica) and neither holds a prepare file.
func waitAgreed(t *testing.T, account string, a, b *node, timeout time.Duration) (epoch uint64) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ea, eb := a.role(t, account), b.role(t, account)
		_, pa := os.Stat(filepath.Join(a.dir, "peer", "roles", account+".prepare"))
		_, pb := os.Stat(filepath.Join(b.dir, "peer", "roles", account+".prepare"))
		roles := ea.Role == rolemap.Master && eb.Role == rolemap.Replica || ea.Role == rolemap.Replica && eb.Role == rolemap.Master
		if ea.Epoch == eb.Epoch && roles && errors.Is(pa, os.ErrNotExist) && errors.Is(pb, os.ErrNotExist) {
			return ea.Epoch
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: role maps do not agree after %v: %s %+v (prepare: %v), %s %+v (prepare: %v)",
				account, timeout, a.node, ea, pa == nil, b.node, eb, pb == nil)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPromoteCrash kills (SIGKILL, MREPLFS_CRASH_AT) the old master's or the
// old replica's peer at every step of the two-phase flip, restarts it, and
// checks that both servers end agreeing on alice's roles — at the old epoch
// (nothing changed) or the new one (swapped) — and that replication then
// works from the agreed master with nothing lost or applied twice (the
// replica's pre-state checks would quarantine a record applied twice).
func TestPromoteCrash(t *testing.T) {
	c := newTestCluster(t, [][]string{{"alice", "carol"}, {"bob", "dave"}})
	a, b := c.servers[0], c.servers[1]
	ctx := context.Background()
	dels := map[*node]*cyrusload.Deliverer{a: cyrusload.New(a.spool()), b: cyrusload.New(b.spool())}
	deliverTo(t, a, dels[a], "alice", 5)
	sameAccount(t, "alice", a, b, 30*time.Second)
	round := 0
	for _, point := range crashPoints {
		for _, side := range []string{"master", "replica"} {
			round++
			m, r := masterOf(t, "alice", a, b)
			victim := m
			if side == "replica" {
				victim = r
			}
			epoch := m.role(t, "alice").Epoch
			mark := "MREPLFS_CRASH_AT=" + point + ": killing myself"
			before, _ := os.ReadFile(victim.peerLog())
			c.killPeer(victim)
			if err := c.startPeerEnv(victim, "MREPLFS_CRASH_AT="+point); err != nil {
				t.Fatal(err)
			}
			if err := c.waitConnected(ctx, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // idle
			out, code := c.admin(ctx, a, "promote", "-config", a.peerConf(), "-idle", "100ms", "-freeze", "3s", "-timeout", "10s", "alice")
			after, _ := os.ReadFile(victim.peerLog())
			if strings.Count(string(after), mark) != strings.Count(string(before), mark)+1 {
				t.Fatalf("%s on the %s (%s): the peer did not crash there; promote exit %d:\n%s", point, side, victim.node, code, out)
			}
			c.killPeer(victim) // reap it
			if err := c.startPeer(victim); err != nil {
				t.Fatal(err)
			}
			got := waitAgreed(t, "alice", a, b, 30*time.Second)
			nm, nr := masterOf(t, "alice", a, b)
			t.Logf("crash at %s on the old %s (%s): promote exit %d; resolved to epoch %d, master %s\n%s", point, side, victim.node, code, got, nm.node, out)
			if got != epoch && got != epoch+1 || (got == epoch) != (nm == m) {
				t.Fatalf("resolved to epoch %d with master %s (was %d with master %s)", got, nm.node, epoch, m.node)
			}
			if code == 0 && got != epoch+1 {
				t.Fatalf("promote reported success, but the flip was undone")
			}
			if err := c.waitConnected(ctx, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			// Replication from the agreed master: nothing lost, nothing twice.
			deliverTo(t, nm, dels[nm], fmt.Sprintf("alice/R%d", round), 3)
			sameAccount(t, "alice", nm, nr, 30*time.Second)
			writeRefused(t, nr, "alice")
			if st := nr.status().Accounts["alice"]; st.State.String() != "ok" {
				t.Fatalf("alice on the replica %s: %+v", nr.node, st)
			}
		}
	}
}

// sample is one delivery: when it started, how long it took.
type sample struct {
	at time.Time
	d  time.Duration
}

// otherLoad delivers to mailboxes on their servers until stop is closed,
// and returns each delivery's start and duration. Any error fails the test.
func otherLoad(t testing.TB, targets map[*node]string, pause time.Duration, stop <-chan struct{}) func() []sample {
	type res struct {
		d   []sample
		err error
	}
	ch := make(chan res, len(targets))
	for s, mb := range targets {
		go func() {
			d := cyrusload.New(s.spool())
			var r res
			for i := 0; ; i++ {
				select {
				case <-stop:
					ch <- r
					return
				default:
				}
				t0 := time.Now()
				if _, err := d.Deliver([]string{mb}, cyrusload.Body(i, 2000, "load")); err != nil {
					r.err = fmt.Errorf("deliver to %s on %s: %w", mb, s.node, err)
					ch <- r
					return
				}
				r.d = append(r.d, sample{t0, time.Since(t0)})
				time.Sleep(pause)
			}
		}()
	}
	return func() []sample {
		var all []sample
		for range targets {
			r := <-ch
			if r.err != nil {
				t.Error(r.err)
			}
			all = append(all, r.d...)
		}
		return all
	}
}

// TestPromoteBackAndForth swaps alice between the servers many times while
// the other accounts take mail on both, each time writing to alice on her
// new master; then moves every account off srv-a with -all-from. Every swap
// succeeds, no delivery to the other accounts fails, and every account ends
// identical on both servers with its replica in state ok.
func TestPromoteBackAndForth(t *testing.T) {
	c := newTestCluster(t, [][]string{{"alice", "carol"}, {"bob", "dave"}})
	a, b := c.servers[0], c.servers[1]
	ctx := context.Background()
	dels := map[*node]*cyrusload.Deliverer{a: cyrusload.New(a.spool()), b: cyrusload.New(b.spool())}
	deliverTo(t, a, dels[a], "alice", 3)
	sameAccount(t, "alice", a, b, 30*time.Second)
	stop := make(chan struct{})
	wait := otherLoad(t, map[*node]string{a: "carol/Load", b: "bob/Load"}, 5*time.Millisecond, stop)
	stopped := false
	t.Cleanup(func() { // a failure: stop the load before the mounts go
		if !stopped {
			close(stop)
			wait()
		}
	})
	const swaps = 100 // the count: about 25 s here
	for i := 0; i < swaps; i++ {
		from := []*node{a, b}[i%2] // run it on alternate servers
		out, code := c.admin(ctx, from, "promote", "-config", from.peerConf(), "-idle", "50ms", "alice")
		if code != 0 {
			t.Fatalf("swap %d (run on %s): exit %d:\n%s", i+1, from.node, code, out)
		}
		m, _ := masterOf(t, "alice", a, b)
		deliverTo(t, m, dels[m], fmt.Sprintf("alice/S%d", i), 1)
		time.Sleep(60 * time.Millisecond) // idle again
	}
	close(stop)
	stopped = true
	ds := wait()
	t.Logf("%d swaps; %d deliveries to the other accounts meanwhile", swaps, len(ds))
	if e := a.role(t, "alice"); e.Role != rolemap.Master || e.Epoch != swaps+1 {
		t.Errorf("alice on %s after %d swaps: %+v", a.node, swaps, e)
	}
	for _, acct := range []string{"alice", "carol"} {
		sameAccount(t, acct, a, b, 30*time.Second)
	}
	sameAccount(t, "bob", b, a, 30*time.Second)

	// Everything off srv-a (e.g. for its OS upgrade), two accounts at once.
	out, code := c.admin(ctx, b, "promote", "-config", b.peerConf(), "-idle", "50ms", "-parallel", "2", "-all-from", a.node)
	if code != 0 || !strings.Contains(out, "[2/2]") || !strings.Contains(out, "2 of 2 account(s) swapped") {
		t.Fatalf("promote -all-from %s: exit %d:\n%s", a.node, code, out)
	}
	for _, acct := range []string{"alice", "carol", "bob", "dave"} {
		if e := a.role(t, acct); e.Role != rolemap.Replica {
			t.Errorf("%s on %s after -all-from: %+v", acct, a.node, e)
		}
	}
	deliverTo(t, b, dels[b], "carol/AfterMove", 2)
	for _, acct := range []string{"alice", "carol", "bob"} {
		sameAccount(t, acct, b, a, 30*time.Second)
	}
	for _, acct := range []string{"alice", "carol", "bob"} {
		if st := a.status().Accounts[acct]; st.State.String() != "ok" {
			t.Errorf("%s on %s: %+v", acct, a.node, st)
		}
	}
}

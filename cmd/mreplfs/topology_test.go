package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"mreplfs/bench/cyrusload"
	"mreplfs/fs/mounttest"
)

// Multi-server tests at the original engine's topology (DESIGN.md §7): every
// server in its own network namespace, masters some accounts and replicates
// another server's. They use the same cluster code as `mreplfs demo`.

// newTestCluster builds and starts a cluster whose server i masters
// masters[i], replicating to server i+1 (a ring; two servers: crosswise).
func newTestCluster(t *testing.T, masters [][]string) *cluster {
	t.Helper()
	return newTestClusterSetup(t, masters, nil)
}

// newTestClusterSetup is newTestCluster with setup run after the configs
// are written and before anything starts.
func newTestClusterSetup(t testing.TB, masters [][]string, setup func(c *cluster) error) *cluster {
	t.Helper()
	mounttest.RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("multi-server tests need iproute2's ip command (CI installs it)")
		}
		t.Skip("no ip command")
	}
	ctx := context.Background()
	pid := os.Getpid()
	c, err := newCluster(ctx, mreplfsBinary(t), t.TempDir(), fmt.Sprintf("mrt%d", pid%1000), 10+pid%200, masters)
	t.Cleanup(func() {
		if t.Failed() && c != nil {
			t.Logf("cluster logs:%s", c.logs())
		}
		if c != nil {
			c.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		if err := setup(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.start(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// load delivers n messages on every server at once, to its own masters
// (every 4th to all of them), and fails the test on any delivery error.
func load(t *testing.T, c *cluster, n int, pause time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(c.servers))
	for _, s := range c.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := s.load()
			for i := 0; i < n; i++ {
				mbs := []string{s.masters[i%len(s.masters)]}
				if i%4 == 0 {
					mbs = s.masters
				}
				if _, err := d.Deliver(mbs, cyrusload.Body(i, 800+(i*4099)%20000, s.node)); err != nil {
					errs <- fmt.Errorf("%s: %w", s.node, err)
					return
				}
				time.Sleep(pause)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func mustConverge(t *testing.T, c *cluster, timeout time.Duration) time.Duration {
	t.Helper()
	took, diffs := c.waitConverged(context.Background(), timeout)
	if len(diffs) > 0 {
		var sb strings.Builder
		for acct, d := range diffs {
			fmt.Fprintf(&sb, "%s: %d differences, e.g. %s\n", acct, len(d), d[0])
		}
		t.Fatalf("replicas did not converge in %v:\n%s", timeout, sb.String())
	}
	return took
}

// TestRingOfThree: three servers in a ring (A's accounts replicate to B,
// B's to C, C's to A), all taking deliveries at once: every replica ends
// byte-identical to its master.
func TestRingOfThree(t *testing.T) {
	c := newTestCluster(t, [][]string{{"alice", "amy"}, {"bob", "ben"}, {"carol", "cleo"}})
	load(t, c, 40, 0)
	took := mustConverge(t, c, 60*time.Second)
	t.Logf("ring of three converged %v after the load", took)
	// Each replica account is refused on its replica server.
	for _, s := range c.servers {
		err := os.WriteFile(s.next.mnt("spool")+"/user/"+s.masters[0]+"/x.", []byte("x"), 0o600)
		if err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("write to %s on %s: got %v, want EROFS", s.masters[0], s.next.node, err)
		}
	}
}

// TestFaults runs the fault cases on a crosswise pair, one after the other;
// each states what it proves. After each, every replica must converge.
func TestFaults(t *testing.T) {
	c := newTestCluster(t, [][]string{{"alice", "carol"}, {"bob", "dave"}})
	a, b := c.servers[0], c.servers[1]
	ctx := context.Background()
	load(t, c, 10, 0)
	mustConverge(t, c, 30*time.Second)

	t.Run("peer killed with SIGKILL mid-stream resumes without loss or double apply", func(t *testing.T) {
		done := make(chan struct{})
		go func() { load(t, c, 30, time.Millisecond); close(done) }()
		time.Sleep(50 * time.Millisecond)
		c.killPeer(a)
		time.Sleep(300 * time.Millisecond)
		if err := c.startPeer(a); err != nil {
			t.Fatal(err)
		}
		<-done
		mustConverge(t, c, 60*time.Second)
		for _, acct := range a.masters {
			if st := b.status().Accounts[acct].State; st.String() != "ok" {
				t.Fatalf("%s on B after the kill: %v (a double apply would show as divergence)", acct, st)
			}
		}
	})

	t.Run("link cut for 30 s: the mail server goes on, replication catches up", func(t *testing.T) {
		if err := c.setLink(ctx, a, false); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		load(t, c, 30, 20*time.Millisecond) // deliveries keep working while the link is down
		if time.Since(start) > 25*time.Second {
			t.Errorf("deliveries took %v with the link down: the mail server was held up", time.Since(start))
		}
		if len(c.diffs()) == 0 {
			t.Fatal("replicas equal with the link cut: the cut did not cut")
		}
		time.Sleep(time.Until(start.Add(30 * time.Second)))
		if err := c.setLink(ctx, a, true); err != nil {
			t.Fatal(err)
		}
		took := mustConverge(t, c, 60*time.Second)
		t.Logf("caught up %v after the link came back", took)
	})

	t.Run("mount restarted: journal reopened, replication continues", func(t *testing.T) {
		load(t, c, 5, 0)
		c.stopMount(a)
		if err := c.startMount(ctx, a); err != nil {
			t.Fatal(err)
		}
		load(t, c, 15, 0)
		mustConverge(t, c, 60*time.Second)
	})

	t.Run("a byte flipped in a replica file quarantines that account only", func(t *testing.T) {
		// alice's cyrus.index on B: same size, one bit changed in the header
		// region the master rewrites on every delivery.
		idx := b.backing("meta") + "/user/alice/cyrus.index"
		buf, err := os.ReadFile(idx)
		if err != nil {
			t.Fatal(err)
		}
		buf[5] ^= 0x01
		if err := os.WriteFile(idx, buf, 0o600); err != nil {
			t.Fatal(err)
		}
		d := a.load()
		for i := 0; i < 3; i++ {
			if _, err := d.Deliver([]string{"alice"}, cyrusload.Body(9000+i, 1500, "flip")); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Deliver([]string{"carol"}, cyrusload.Body(9100+i, 1500, "flip")); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for b.status().Accounts["alice"].State.String() != "quarantined" {
			if time.Now().After(deadline) {
				t.Fatalf("alice not quarantined on B: %+v", b.status().Accounts["alice"])
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got, _ := os.ReadFile(idx); !bytes.Equal(got[:len(buf)], buf) {
			t.Fatal("the diverged replica file was written over")
		}
		// carol, on the same link, keeps replicating.
		for deadline := time.Now().Add(30 * time.Second); ; {
			dm, _ := cyrusload.Digest(a.backingSpool(), "carol")
			dr, _ := cyrusload.Digest(b.backingSpool(), "carol")
			if len(cyrusload.Diff(dm, dr)) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("carol held up by alice's quarantine: %v", cyrusload.Diff(dm, dr)[0])
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("alice quarantined on B: %s", b.status().Accounts["alice"].Reason)
	})
}

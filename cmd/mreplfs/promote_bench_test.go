package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"mreplfs/fs/mounttest"
)

// BenchmarkRoleChange measures role changes between two namespaced servers
// (run it once: -benchtime 1x; PROMOTE_RUNS, FAILOVER_RUNS change the
// counts):
//
//   - promote: the command's start → it returned and a write to the
//     account on the new master succeeds, for an idle account, swapped back
//     and forth PROMOTE_RUNS times (default 100), run alternately on either
//     server; and the total the command itself reports (its "done" line:
//     first query → new master committed);
//   - the write pause other accounts see: delivery latencies to an account
//     on each server while the swaps run, against the same load alone for
//     as long before;
//   - failover: the command's start → it returned and the account is
//     writable on the new master, FAILOVER_RUNS times (default 10) with the
//     master's peer killed (its host answers: connection refused), and 3
//     times with the master's link cut (the command waits its -probe, 1 s,
//     for an answer); after each the old master's peer comes back, is fenced
//     and resynced before the next run.
//
// PROMOTE_NOOP=1 runs the same commands on an account the role map lacks
// (each stops after its first query): what running the command costs the
// other accounts, without any role change.
func BenchmarkRoleChange(b *testing.B) {
	mounttest.RequireRoot(b)
	if _, err := exec.LookPath("ip"); err != nil {
		b.Skip("no ip command")
	}
	runs, fruns := envInt("PROMOTE_RUNS", 100), envInt("FAILOVER_RUNS", 10)
	ctx := context.Background()
	pid := os.Getpid()
	bin := benchBinary(b)
	c, err := newCluster(ctx, bin, b.TempDir(), fmt.Sprintf("mrb%d", pid%1000), 10+pid%200,
		[][]string{{"alice", "carol"}, {"bob", "dave"}})
	b.Cleanup(func() {
		if b.Failed() && c != nil {
			b.Logf("cluster logs:%s", c.logs())
		}
		if c != nil {
			c.Close()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.start(ctx, 20*time.Second); err != nil {
		b.Fatal(err)
	}
	srv := c.servers
	deliverTo(b, srv[0], srv[0].load(), "alice", 5)
	sameAccount(b, "alice", srv[0], srv[1], 30*time.Second)

	for range b.N {
		// Baseline: the other accounts' load alone.
		stop := make(chan struct{})
		wait := otherLoad(b, map[*node]string{srv[0]: "carol/Base", srv[1]: "bob/Base"}, 5*time.Millisecond, stop)
		start := time.Now()
		time.Sleep(time.Duration(runs) * 150 * time.Millisecond)
		close(stop)
		base := wait()
		baseFor := time.Since(start)

		// The swaps, under the same load.
		stop = make(chan struct{})
		wait = otherLoad(b, map[*node]string{srv[0]: "carol/Load", srv[1]: "bob/Load"}, 5*time.Millisecond, stop)
		var cmd, inner []time.Duration
		done := regexp.MustCompile(`done +([0-9.]+[µm]?s)`)
		start = time.Now()
		for i := 0; i < runs; i++ {
			from := srv[i%2]
			_, r := masterOf(b, "alice", srv[0], srv[1])
			t0 := time.Now()
			if os.Getenv("PROMOTE_NOOP") == "1" {
				if out, code := c.admin(ctx, from, "promote", "-config", from.peerConf(), "nosuch"); code != ExitNotFound {
					b.Fatalf("promote nosuch: exit %d:\n%s", code, out)
				}
				cmd = append(cmd, time.Since(t0))
				time.Sleep(60 * time.Millisecond)
				continue
			}
			out, code := c.admin(ctx, from, "promote", "-config", from.peerConf(), "-idle", "50ms", "alice")
			if code != 0 {
				close(stop)
				wait()
				b.Fatalf("swap %d: exit %d:\n%s", i+1, code, out)
			}
			for os.Mkdir(filepath.Join(r.mnt("spool"), "user/alice", fmt.Sprintf("P%d", i)), 0o700) != nil {
				if time.Since(t0) > 10*time.Second {
					b.Fatalf("swap %d: alice not writable on %s", i+1, r.node)
				}
				time.Sleep(time.Millisecond)
			}
			cmd = append(cmd, time.Since(t0))
			if m := done.FindStringSubmatch(out); m != nil {
				if d, err := time.ParseDuration(m[1]); err == nil {
					inner = append(inner, d)
				}
			}
			time.Sleep(60 * time.Millisecond) // idle again (-idle 50ms)
		}
		swapFor := time.Since(start)
		close(stop)
		during := wait()
		m, r := masterOf(b, "alice", srv[0], srv[1])
		sameAccount(b, "alice", m, r, 30*time.Second)

		// Failover: the master's peer killed, or its link cut.
		var fo, foCut []time.Duration
		for i := 0; i < fruns+3; i++ {
			cut := i >= fruns
			m, r := masterOf(b, "alice", srv[0], srv[1])
			if cut {
				if err := c.setLink(ctx, m, false); err != nil {
					b.Fatal(err)
				}
			} else {
				c.killPeer(m)
			}
			t0 := time.Now()
			out, code := c.admin(ctx, r, "failover", "-config", r.peerConf(), "alice")
			if code != 0 {
				b.Fatalf("failover %d: exit %d:\n%s", i+1, code, out)
			}
			for os.Mkdir(filepath.Join(r.mnt("spool"), "user/alice", fmt.Sprintf("F%d", i)), 0o700) != nil {
				if time.Since(t0) > 10*time.Second {
					b.Fatalf("failover %d: alice not writable on %s", i+1, r.node)
				}
				time.Sleep(time.Millisecond)
			}
			if cut {
				foCut = append(foCut, time.Since(t0))
				if err := c.setLink(ctx, m, true); err != nil {
					b.Fatal(err)
				}
			} else {
				fo = append(fo, time.Since(t0))
				if err := c.startPeer(m); err != nil {
					b.Fatal(err)
				}
			}
			// The old master is fenced and resynced before the next run.
			for m.role(b, "alice").Epoch != r.role(b, "alice").Epoch {
				if time.Since(t0) > 60*time.Second {
					b.Fatalf("failover %d: %s never fenced", i+1, m.node)
				}
				time.Sleep(20 * time.Millisecond)
			}
			sameAccount(b, "alice", r, m, 60*time.Second)
			if err := c.waitConnected(ctx, 30*time.Second); err != nil {
				b.Fatal(err)
			}
		}

		b.Logf("promote, command start → new master writable, %d swaps: %s", len(cmd), pcts(cmd))
		b.Logf("promote, inside the command (first query → new master committed): %s", pcts(inner))
		b.Logf("other accounts' deliveries, load alone for %v: %d, %s", baseFor.Round(time.Second), len(base), pcts(base))
		b.Logf("other accounts' deliveries during the swaps (%v): %d, %s", swapFor.Round(time.Second), len(during), pcts(during))
		b.Logf("failover, master's peer killed, %d runs: %s", len(fo), pcts(fo))
		b.Logf("failover, master's link cut (probe 1 s), %d runs: %s", len(foCut), pcts(foCut))
		b.ReportMetric(ms64(pct(cmd, 50)), "promote-p50-ms")
		b.ReportMetric(ms64(pct(cmd, 99)), "promote-p99-ms")
		b.ReportMetric(ms64(pct(fo, 50)), "failover-p50-ms")
		b.ReportMetric(ms64(pct(during, 99))-ms64(pct(base, 99)), "others-p99-delta-ms")
	}
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchBinary builds the command (mreplfsBinary needs a *testing.T).
func benchBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "mreplfs")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func pcts(ds []time.Duration) string {
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	return fmt.Sprintf("p50 %v, p99 %v, max %v", r(pct(ds, 50)), r(pct(ds, 99)), r(pct(ds, 100)))
}

func ms64(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

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
	"strings"
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
//   - the write pause other accounts see: latencies of deliveries to an
//     account on each server that overlapped a command, against those of
//     the same load between the commands (paired, so the machine's noise is
//     shared);
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
	c, err := newCluster(ctx, bin, b.TempDir(), fmt.Sprintf("mrt%d", pid%1000), 10+pid%200,
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
		// The swaps, under load on the other accounts on both servers;
		// each delivery is classed by whether it overlapped a command.
		stop := make(chan struct{})
		wait := otherLoad(b, map[*node]string{srv[0]: "carol/Load", srv[1]: "bob/Load"}, 5*time.Millisecond, stop)
		var cmd, inner []time.Duration
		steps := map[string][]time.Duration{}
		var windows [][2]time.Time
		done := regexp.MustCompile(`done +([0-9.]+[µm]?s)`)
		noop := os.Getenv("PROMOTE_NOOP") == "1"
		time.Sleep(300 * time.Millisecond)
		for i := 0; i < runs; i++ {
			from := srv[i%2]
			_, r := masterOf(b, "alice", srv[0], srv[1])
			t0 := time.Now()
			if noop {
				if out, code := c.admin(ctx, from, "promote", "-config", from.peerConf(), "nosuch"); code != ExitNotFound {
					b.Fatalf("promote nosuch: exit %d:\n%s", code, out)
				}
				cmd = append(cmd, time.Since(t0))
				windows = append(windows, [2]time.Time{t0, time.Now()})
				time.Sleep(100 * time.Millisecond)
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
			windows = append(windows, [2]time.Time{t0, time.Now()})
			if m := done.FindStringSubmatch(out); m != nil {
				if d, err := time.ParseDuration(m[1]); err == nil {
					inner = append(inner, d)
				}
			}
			stepTimes(out, steps)
			time.Sleep(100 * time.Millisecond) // idle again (-idle 50ms)
		}
		time.Sleep(300 * time.Millisecond)
		close(stop)
		var during, outside []time.Duration
		for _, s := range wait() {
			in := false
			for _, w := range windows {
				if s.at.Before(w[1]) && s.at.Add(s.d).After(w[0]) {
					in = true
					break
				}
			}
			if in {
				during = append(during, s.d)
			} else {
				outside = append(outside, s.d)
			}
		}
		m, r := masterOf(b, "alice", srv[0], srv[1])
		sameAccount(b, "alice", m, r, 30*time.Second)

		// One command swapping alice back and forth runs times (no process
		// start, connections kept): the role changes' own cost to the
		// other accounts, against the same load just before.
		var oneBase, oneDuring, oneSwaps []time.Duration
		if !noop {
			stop = make(chan struct{})
			wait = otherLoad(b, map[*node]string{srv[0]: "carol/One", srv[1]: "bob/One"}, 5*time.Millisecond, stop)
			time.Sleep(3 * time.Second)
			mid := time.Now()
			args := []string{"promote", "-config", srv[0].peerConf(), "-idle", "0s"}
			for range runs {
				args = append(args, "alice")
			}
			out, code := c.admin(ctx, srv[0], args...)
			end := time.Now()
			close(stop)
			if code != 0 {
				wait()
				b.Fatalf("promote alice ×%d: exit %d:\n%s", runs, code, out)
			}
			for _, s := range wait() {
				switch {
				case s.at.Add(s.d).Before(mid) && s.at.After(mid.Add(-3*time.Second)):
					oneBase = append(oneBase, s.d)
				case s.at.After(mid) && s.at.Add(s.d).Before(end):
					oneDuring = append(oneDuring, s.d)
				}
			}
			for _, m := range done.FindAllStringSubmatch(out, -1) {
				if d, err := time.ParseDuration(m[1]); err == nil {
					oneSwaps = append(oneSwaps, d)
				}
			}
			m, r = masterOf(b, "alice", srv[0], srv[1])
			sameAccount(b, "alice", m, r, 30*time.Second)
		}

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
		for _, st := range []string{"check", "freeze", "drain", "confirm", "prepare", "commit-old", "commit-new"} {
			if len(steps[st]) > 0 {
				b.Logf("  step %-10s %s", st, pcts(steps[st]))
			}
		}
		b.Logf("other accounts' deliveries overlapping a command: %d, %s", len(during), pcts(during))
		b.Logf("other accounts' deliveries between the commands: %d, %s", len(outside), pcts(outside))
		b.Logf("one command, %d swaps back to back: each %s", len(oneSwaps), pcts(oneSwaps))
		b.Logf("  other accounts' deliveries during it: %d, %s", len(oneDuring), pcts(oneDuring))
		b.Logf("  the same load for 3 s before it: %d, %s", len(oneBase), pcts(oneBase))
		b.Logf("failover, master's peer killed, %d runs: %s", len(fo), pcts(fo))
		b.Logf("failover, master's link cut (probe 1 s), %d runs: %s", len(foCut), pcts(foCut))
		b.ReportMetric(ms64(pct(cmd, 50)), "promote-p50-ms")
		b.ReportMetric(ms64(pct(cmd, 99)), "promote-p99-ms")
		b.ReportMetric(ms64(pct(fo, 50)), "failover-p50-ms")
		b.ReportMetric(ms64(pct(during, 99))-ms64(pct(outside, 99)), "others-p99-delta-ms")
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

var stepLine = regexp.MustCompile(`^\s+([a-z]+)\s+([0-9.]+[µm]?s)\s`)

// stepTimes adds the step durations a swap printed to steps (its two
// commit lines are commit-old, then commit-new).
func stepTimes(out string, steps map[string][]time.Duration) {
	commits := 0
	for _, line := range strings.Split(out, "\n") {
		m := stepLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		d, err := time.ParseDuration(m[2])
		if err != nil {
			continue
		}
		name := m[1]
		if name == "commit" {
			name = []string{"commit-old", "commit-new"}[min(commits, 1)]
			commits++
		}
		steps[name] = append(steps[name], d)
	}
}

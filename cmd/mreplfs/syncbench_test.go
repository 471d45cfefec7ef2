package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/bench/cyrusload"
)

// BenchmarkSyncMode (issue 7): one crosswise pair of namespaced servers; on
// server A, account "asy" is async and account "syn" is sync (policy
// refuse, so a missing ack cannot pass unnoticed); "native" is a plain
// directory on the same disk. In interleaved rounds (native, async, sync,
// native, …) it runs Cyrus-shaped deliveries (cyrusload: message link +
// fsync, cyrus.index/cache rewrite + fsync, quota) one at a time and 8 at a
// time, and small-file fsyncs, and reports deliveries/s, p50/p99 fsync and
// delivery latency per configuration, the ratios to native, and the extra
// p50 fsync latency of sync over async next to the link's TCP round trip
// measured in the same run. b.N rounds.
//
//	go test -run '^$' -bench SyncMode -benchtime 3x ./cmd/mreplfs
func BenchmarkSyncMode(b *testing.B) {
	c := newTestClusterSetup(b, [][]string{{"asy", "syn"}, {"bob"}}, func(c *cluster) error {
		return c.servers[0].appendConf("mount.conf", "sync_account: syn sync refuse 10s\n")
	})
	a := c.servers[0]
	native := filepath.Join(b.TempDir(), "native")
	for _, t := range treeNames {
		if err := os.MkdirAll(filepath.Join(native, t), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	type cfg struct {
		name, acct string
		d          *cyrusload.Deliverer
		dir        string // for the small-file fsyncs
		fsyncs     []time.Duration
		delivs     []time.Duration
		n1, n8     int
		t1, t8     time.Duration
	}
	nd := cyrusload.New(cyrusload.Spool{Conf: filepath.Join(native, "conf"), Spool: filepath.Join(native, "spool"), Meta: filepath.Join(native, "meta")})
	ad := a.load()
	cfgs := []*cfg{
		{name: "native", acct: "syn", d: nd, dir: filepath.Join(native, "spool", "user", "syn")},
		{name: "async", acct: "asy", d: ad, dir: filepath.Join(a.mnt("spool"), "user", "asy")},
		{name: "sync", acct: "syn", d: ad, dir: filepath.Join(a.mnt("spool"), "user", "syn")},
	}
	body := cyrusload.Body(1, 8*1024, "bench")
	const perRound, fsyncsPerRound = 100, 100
	seq := 0
	b.ResetTimer()
	for range b.N {
		for _, k := range cfgs {
			// One at a time.
			t0 := time.Now()
			for range perRound {
				d0 := time.Now()
				if _, err := k.d.Deliver([]string{k.acct}, body); err != nil {
					b.Fatalf("%s: %v", k.name, err)
				}
				k.delivs = append(k.delivs, time.Since(d0))
			}
			k.t1 += time.Since(t0)
			k.n1 += perRound
			// Eight at a time (group commit on both sides).
			t0 = time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range perRound / 8 {
						if _, err := k.d.Deliver([]string{k.acct}, body); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatalf("%s: %v", k.name, err)
			}
			k.t8 += time.Since(t0)
			k.n8 += 8 * (perRound / 8)
			// Small files: create, write 8 KiB, fsync (timed), close.
			for range fsyncsPerRound {
				seq++
				f, err := os.Create(filepath.Join(k.dir, fmt.Sprintf("f%d.", seq)))
				if err != nil {
					b.Fatal(err)
				}
				f.Write(body)
				f0 := time.Now()
				err = f.Sync()
				k.fsyncs = append(k.fsyncs, time.Since(f0))
				f.Close()
				if err != nil {
					b.Fatalf("%s fsync: %v", k.name, err)
				}
			}
		}
	}
	b.StopTimer()
	rtt := tcpRoundTrip(b, a.ns, a.next.ns, a.next.ip)
	pct := func(d []time.Duration, p float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[int(p*float64(len(s)-1))]
	}
	rate := map[string]float64{}
	p50 := map[string]time.Duration{}
	for _, k := range cfgs {
		rate[k.name] = float64(k.n1) / k.t1.Seconds()
		rate[k.name+"8"] = float64(k.n8) / k.t8.Seconds()
		p50[k.name] = pct(k.fsyncs, 0.5)
		b.ReportMetric(rate[k.name], k.name+"-deliveries/s")
		b.ReportMetric(rate[k.name+"8"], k.name+"-deliveries/s-x8")
		b.ReportMetric(float64(pct(k.fsyncs, 0.5).Microseconds()), k.name+"-fsync-p50-us")
		b.ReportMetric(float64(pct(k.fsyncs, 0.99).Microseconds()), k.name+"-fsync-p99-us")
		b.ReportMetric(float64(pct(k.delivs, 0.5).Microseconds()), k.name+"-delivery-p50-us")
		b.ReportMetric(float64(pct(k.delivs, 0.99).Microseconds()), k.name+"-delivery-p99-us")
	}
	b.ReportMetric(rate["async"]/rate["native"], "async/native")
	b.ReportMetric(rate["sync"]/rate["native"], "sync/native")
	b.ReportMetric(rate["sync8"]/rate["native8"], "sync/native-x8")
	b.ReportMetric(rate["sync"]/rate["async"], "sync/async")
	b.ReportMetric(float64(rtt.Microseconds()), "link-rtt-us")
	b.ReportMetric(float64((p50["sync"] - p50["async"]).Microseconds()), "sync-extra-fsync-p50-us")
}

// tcpRoundTrip measures the median TCP round trip of 1-byte ping-pongs from
// namespace fromNS to a listener in toNS at ip: what one replication round
// trip costs at least on that link.
func tcpRoundTrip(tb testing.TB, fromNS, toNS, ip string) time.Duration {
	tb.Helper()
	inNS := func(ns string, fn func() error) error {
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				errc <- err
				return
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
				errc <- err
				return
			}
			errc <- fn()
		}()
		return <-errc
	}
	var ln net.Listener
	if err := inNS(toNS, func() (err error) { ln, err = net.Listen("tcp", ip+":0"); return }); err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			c.Write(buf)
		}
	}()
	var conn net.Conn
	if err := inNS(fromNS, func() (err error) { conn, err = net.Dial("tcp", ln.Addr().String()); return }); err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 1)
	var rtts []time.Duration
	for range 2000 {
		t0 := time.Now()
		if _, err := conn.Write(buf); err != nil {
			tb.Fatal(err)
		}
		if _, err := conn.Read(buf); err != nil {
			tb.Fatal(err)
		}
		rtts = append(rtts, time.Since(t0))
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2]
}

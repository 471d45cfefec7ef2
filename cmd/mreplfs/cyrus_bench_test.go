package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mreplfs/rolemap/cyrustest"
)

// BenchmarkCyrusDeliveries runs the end-to-end suite's delivery load (both
// servers at once, two LMTP connections each, 1 and 3 recipients, 1 KB–1 MB)
// against two native Cyrus servers and against the two-server mreplfs
// cluster (mreplfs-nopeer: the mounts without their peers, so nothing
// replicates), and reports recipient deliveries per second. On mreplfs it also
// probes replication lag under that load: a message delivered to
// alice+Probe on her master, until STATUS on her replica server shows it.
// Each iteration is one load of 40 transactions per connection:
//
//	go test -run '^$' -bench CyrusDeliveries -benchtime 1x ./cmd/mreplfs/
func BenchmarkCyrusDeliveries(b *testing.B) {
	for _, mode := range []string{"native", "mreplfs-nopeer", "mreplfs"} {
		b.Run(mode, func(b *testing.B) {
			var cs *cyrusServers
			if mode == "native" {
				cyrustest.RequireCyrus(b)
				cs = &cyrusServers{masterOf: map[string]int{}}
				_, masters := e2eAccounts()
				for i, m := range masters {
					for _, a := range m {
						cs.masterOf[a] = i
					}
					cs.cyrus = append(cs.cyrus, cyrustest.Start(b, filepath.Join(cyrustest.TempDir(b), string(rune('A'+i)), "mnt"),
						cyrustest.Options{Meta: true}))
				}
			} else {
				cs = newCyrusServersPeers(b, mode == "mreplfs")
			}
			cs.provision(b)
			adm := cs.cyrus[0].IMAP(b, cyrustest.Admin)
			if err := imapSteps(adm, `CREATE "user/alice/Probe"`, `SETACL "user/alice/Probe" anyone p`); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if mode == "mreplfs" { // the new folder registered on the replica server
				for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
					v, err := viewOf(ctx, cs.replica("alice"), "alice")
					if err == nil && v.Status["INBOX/Probe"] != "" {
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("INBOX/Probe not on the replica server: %v", err)
					}
				}
			}
			st := &loadStats{}
			var lags []time.Duration
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				done := make(chan struct{})
				var pw sync.WaitGroup
				if mode == "mreplfs" {
					pw.Add(1)
					go func() {
						defer pw.Done()
						l, err := cs.probeLag(ctx, done)
						if err != nil {
							b.Error(err)
						}
						lags = append(lags, l...)
					}()
				}
				var wg sync.WaitGroup
				start := time.Now()
				for i := range cs.cyrus {
					for w := 0; w < 2; w++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							if err := cs.deliverLoad(ctx, i, 40, int64(1000*it+10*i+w), st); err != nil {
								b.Error(err)
							}
						}()
					}
				}
				wg.Wait()
				st.elapsed += time.Since(start)
				close(done)
				pw.Wait()
			}
			b.StopTimer()
			b.ReportMetric(float64(st.rcpt)/st.elapsed.Seconds(), "deliveries/s")
			b.ReportMetric(float64(st.txns)/st.elapsed.Seconds(), "txn/s")
			b.ReportMetric(float64(st.bytes)/st.elapsed.Seconds()/1e6, "MB/s")
			if len(lags) > 0 {
				sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
				ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
				b.ReportMetric(ms(lags[len(lags)/2]), "lag-p50-ms")
				b.ReportMetric(ms(lags[len(lags)*99/100]), "lag-p99-ms")
				b.ReportMetric(ms(lags[len(lags)-1]), "lag-max-ms")
				b.ReportMetric(float64(readErrors.Swap(0)), "replica-read-NO")
				b.Logf("%d lag probes", len(lags))
			}
			if mode == "mreplfs" {
				t0 := time.Now()
				cs.waitTrees(b, 120*time.Second)
				b.Logf("replicas equal %v after the load", time.Since(t0))
			}
		})
	}
}

var messagesRe = regexp.MustCompile(`MESSAGES (\d+)`)

// readErrors counts replica-side STATUS answers NO during a probe.
var readErrors atomic.Int64

// probeLag delivers to alice+Probe on her master every 100 ms until done,
// and measures each time until STATUS on her replica server counts it.
func (cs *cyrusServers) probeLag(ctx context.Context, done <-chan struct{}) ([]time.Duration, error) {
	rc, err := cyrustest.DialIMAP(ctx, cs.replica("alice").IMAPAddr)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if err := rc.Login("alice", "x"); err != nil {
		return nil, err
	}
	count := func() (int, error) {
		st, err := rc.Cmd(`STATUS "INBOX/Probe" (MESSAGES)`)
		var ie *cyrustest.IMAPError
		if errors.As(err, &ie) && ie.Status == "NO" {
			// A reader on the replica server can meet a mailbox in the
			// middle of an applied batch ("Mailbox has an invalid
			// format"): counted, and asked again.
			readErrors.Add(1)
			return -1, nil
		}
		if err != nil {
			return 0, err
		}
		for _, l := range st {
			if m := messagesRe.FindStringSubmatch(l); m != nil {
				return strconv.Atoi(m[1])
			}
		}
		return 0, fmt.Errorf("STATUS: %q", st)
	}
	n, err := count()
	for err == nil && n < 0 {
		n, err = count()
	}
	if err != nil {
		return nil, err
	}
	var lags []time.Duration
	for k := 0; ; k++ {
		select {
		case <-done:
			return lags, nil
		case <-time.After(100 * time.Millisecond):
		}
		if err := deliverOne(ctx, cs.master("alice"), "alice+Probe", fmt.Sprintf("probe %d", k)); err != nil {
			return lags, err
		}
		t0 := time.Now()
		n++
		for {
			c, err := count()
			if err != nil {
				return lags, err
			}
			if c >= n {
				break
			}
			if time.Since(t0) > 30*time.Second {
				return lags, fmt.Errorf("probe %d not on the replica after 30 s", k)
			}
			time.Sleep(time.Millisecond)
		}
		lags = append(lags, time.Since(t0))
	}
}

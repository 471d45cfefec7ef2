package journal

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// benchRecord is an in-place index write of 512 incompressible bytes.
func benchRecord(rnd *rand.Rand, acct string) Record {
	data := make([]byte, 512)
	for i := range data {
		data[i] = byte(rnd.Uint32())
	}
	return Record{Op: OpWrite, Account: acct, Epoch: 1, Tree: "meta", Path: acct + "/cyrus.index", Offset: 4096, PrevSize: -1, Data: data}
}

// BenchmarkAppendSync: N concurrent writers, each doing Append then Sync of
// its own record (the fs layer's fsync path); group commit shares fdatasyncs.
func BenchmarkAppendSync(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			l, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			ctx := context.Background()
			r0 := benchRecord(rand.New(rand.NewPCG(1, 2)), "x")
			b.SetBytes(int64(len(r0.Data)))
			var next atomic.Int64
			var wg sync.WaitGroup
			syncs0 := l.syncs.Load()
			b.ResetTimer()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rnd := rand.New(rand.NewPCG(uint64(w), 9))
					acct := fmt.Sprintf("user%d", w)
					for next.Add(1) <= int64(b.N) {
						r := benchRecord(rnd, acct)
						lsn, err := l.Append(ctx, &r)
						if err == nil {
							err = l.Sync(ctx, lsn)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			b.ReportMetric(float64(l.syncs.Load()-syncs0)/float64(b.N), "fdatasyncs/op")
		})
	}
}

// BenchmarkAppend: plain Append throughput (no one waits; the committer
// writes in the background every second or when the buffer fills).
func BenchmarkAppend(b *testing.B) {
	l, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(1, 2))
	recs := make([]Record, 64)
	for i := range recs {
		recs[i] = benchRecord(rnd, fmt.Sprintf("user%d", i%8))
	}
	b.SetBytes(int64(len(recs[0].Data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.Append(ctx, &recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}

// BenchmarkPublishDurable: what the commit path pays per commit for
// Followers (one 12-byte pwrite of <dir>/durable).
func BenchmarkPublishDurable(b *testing.B) {
	f, err := openDurable(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < b.N; i++ {
		if err := publishDurable(f, LSN(i)); err != nil {
			b.Fatal(err)
		}
	}
}

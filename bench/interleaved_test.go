package bench

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkDeliveryInterleaved mounts all four configurations at once and
// runs the delivery workload on them in alternating chunks of 50, so load
// changes on a shared machine hit every configuration alike (paired
// measurement). b.N deliveries per configuration. It reports each
// configuration's deliveries/s and CPU µs per delivery, and the ratios
// mreplfs/loopback, mreplfs-nojournal/loopback and mreplfs/native.
//
//	GODEBUG=asyncpreemptoff=1 go test -run '^$' -bench DeliveryInterleaved -benchtime 1000x ./bench
func BenchmarkDeliveryInterleaved(b *testing.B) {
	body := make([]byte, 10*1024)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	for _, rcpts := range []int{1, 3} {
		b.Run(fmt.Sprintf("rcpt=%d", rcpts), func(b *testing.B) {
			type run struct {
				dir   string
				boxes []mailbox
				el    time.Duration
				cpu   time.Duration
				done  int
			}
			runs := make([]*run, len(configs))
			for i, c := range configs {
				dir := c.setup(b, b.TempDir())
				runs[i] = &run{dir: dir, boxes: cyrusSkeleton(b, dir, rcpts)}
			}
			const chunk = 50
			b.ResetTimer()
			for runs[0].done < b.N {
				for _, r := range runs {
					n := min(chunk, b.N-r.done)
					cpu0, t0 := cpuTime(), time.Now()
					for i := range n {
						if err := deliver(r.dir, r.boxes, r.done+i+1, body); err != nil {
							b.Fatalf("delivery %d: %v", r.done+i+1, err)
						}
					}
					r.el += time.Since(t0)
					r.cpu += cpuTime() - cpu0
					r.done += n
				}
			}
			b.StopTimer()
			rate := map[string]float64{}
			for i, r := range runs {
				rate[configs[i].name] = float64(r.done) / r.el.Seconds()
				b.ReportMetric(rate[configs[i].name], configs[i].name+"-deliveries/s")
				b.ReportMetric(float64(r.cpu.Microseconds())/float64(r.done), configs[i].name+"-cpu-us/delivery")
			}
			b.ReportMetric(rate["mreplfs"]/rate["loopback"], "mreplfs/loopback")
			b.ReportMetric(rate["mreplfs-nojournal"]/rate["loopback"], "nojournal/loopback")
			b.ReportMetric(rate["mreplfs"]/rate["native"], "mreplfs/native")
		})
	}
}

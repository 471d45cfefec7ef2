package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	mfs "mreplfs/fs"
	"mreplfs/fs/mounttest"
	"mreplfs/journal"
	"mreplfs/rolemap"
	"mreplfs/rolemap/classify"
	"mreplfs/rolemap/cyrustest"
)

// BenchmarkLMTP delivers real LMTP messages (10 KiB, one recipient, one
// connection) to Debian's Cyrus running natively and on mreplfs (all
// accounts master, real classifier and journal), reporting deliveries/s and
// this process's CPU per delivery (the LMTP client, plus the FUSE daemon on
// the mount; Cyrus's own CPU is not counted).
//
//	go test -run '^$' -bench LMTP -benchtime 300x ./bench
func BenchmarkLMTP(b *testing.B) {
	for _, onMount := range []bool{false, true} {
		name := "native"
		if onMount {
			name = "mreplfs"
		}
		b.Run(name, func(b *testing.B) {
			cyrustest.RequireCyrus(b)
			base := cyrustest.TempDir(b)
			dir := filepath.Join(base, "mnt")
			if onMount {
				lg, err := journal.Open(filepath.Join(base, "journal"), journal.Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { lg.Close() })
				cl := mfs.CyrusClassifier(classify.New(classify.Options{}), "root")
				e := mounttest.Mount(b, mounttest.Options{Tree: "root", Journal: lg, Dir: base,
					FS: mfs.Options{Roles: mounttest.AllRoles(rolemap.Master), Classifier: cl, AllowOther: true}})
				dir = e.Mnt
			}
			in := cyrustest.Start(b, dir, cyrustest.Options{Meta: true})
			adm := in.IMAP(b, cyrustest.Admin)
			if _, err := adm.Cmd("CREATE %s", cyrustest.Quote(in.MailboxName(cyrustest.Alice, ""))); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			c, err := cyrustest.DialLMTP(ctx, in.LMTPAddr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msgs := make([][]byte, b.N)
			for i := range msgs {
				msgs[i] = cyrustest.Message(fmt.Sprintf("bench %d", i), 10*1024)
			}
			cpu0, t0 := cpuTime(), time.Now()
			b.ResetTimer()
			for i := range b.N {
				if errs := c.Deliver("s@example.org", []string{cyrustest.Alice}, msgs[i]); errs[0] != nil {
					b.Fatalf("delivery %d: %v\n%s", i, errs[0], in.Log())
				}
			}
			b.StopTimer()
			el := time.Since(t0)
			b.ReportMetric(float64(b.N)/el.Seconds(), "deliveries/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "proc-cpu-us/delivery")
		})
	}
}

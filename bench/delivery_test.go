package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mailbox is one recipient's files: legacy layout (no hash), quota root.
type mailbox struct {
	dir   string // spool/user/<u>/
	quota string // conf/quota/<h>/user.<u>
}

// cyrusSkeleton creates DIR/{conf/quota,spool/stage.,spool/user/u<i>} for n
// users and returns their mailboxes.
func cyrusSkeleton(b *testing.B, dir string, n int) []mailbox {
	var out []mailbox
	must(b, os.MkdirAll(filepath.Join(dir, "spool/stage."), 0o755))
	for i := range n {
		u := fmt.Sprintf("u%d", i+1)
		m := mailbox{dir: filepath.Join(dir, "spool/user", u), quota: filepath.Join(dir, "conf/quota/u", "user."+u)}
		must(b, os.MkdirAll(m.dir, 0o755))
		must(b, os.MkdirAll(filepath.Dir(m.quota), 0o755))
		must(b, os.WriteFile(m.quota, []byte("%(S (0 100000))\n"), 0o600))
		must(b, os.WriteFile(filepath.Join(m.dir, "cyrus.index"), make([]byte, 160), 0o600))
		must(b, os.WriteFile(filepath.Join(m.dir, "cyrus.cache"), nil, 0o600))
		out = append(out, m)
	}
	return out
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// deliver is one Cyrus-shaped LMTP delivery (CYRUS.md §3): the body to
// stage./ (one write, no fsync), link() into each mailbox, fsync of each
// link through an O_RDONLY fd and utimensat, a cache append with fsync, a
// 112-byte index record and the 160-byte index header with fsync, the
// quota file rewritten as .NEW (fsync) and renamed over, then the stage
// file unlinked.
func deliver(dir string, boxes []mailbox, uid int, body []byte) error {
	stage := filepath.Join(dir, "spool/stage.", fmt.Sprintf("%d-%d-1", os.Getpid(), uid))
	fd, err := unix.Open(stage, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	if _, err := unix.Write(fd, body); err != nil {
		return err
	}
	unix.Close(fd)
	name := fmt.Sprintf("%d.", uid)
	ts := []unix.Timespec{{Sec: 1700000000 + int64(uid)}, {Sec: 1700000000 + int64(uid)}}
	cache := make([]byte, 600)
	rec := make([]byte, 112)
	hdr := make([]byte, 160)
	quota := []byte(fmt.Sprintf("%%(S (%d 100000) M (%d))\n", uid*len(body)/1024, uid))
	for _, m := range boxes {
		dst := filepath.Join(m.dir, name)
		if err := unix.Link(stage, dst); err != nil {
			return err
		}
		rfd, err := unix.Open(dst, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Fsync(rfd); err != nil {
			return err
		}
		unix.Close(rfd)
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, 0); err != nil {
			return err
		}
		cfd, err := unix.Open(filepath.Join(m.dir, "cyrus.cache"), unix.O_RDWR|unix.O_APPEND|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if _, err := unix.Write(cfd, cache); err != nil {
			return err
		}
		if err := unix.Fsync(cfd); err != nil {
			return err
		}
		unix.Close(cfd)
		ifd, err := unix.Open(filepath.Join(m.dir, "cyrus.index"), unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if _, err := unix.Pwrite(ifd, rec, int64(160+112*(uid-1))); err != nil {
			return err
		}
		if _, err := unix.Pwrite(ifd, hdr, 0); err != nil {
			return err
		}
		if err := unix.Fsync(ifd); err != nil {
			return err
		}
		unix.Close(ifd)
		qfd, err := unix.Open(m.quota+".NEW", unix.O_CREAT|unix.O_TRUNC|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		if _, err := unix.Write(qfd, quota); err != nil {
			return err
		}
		if err := unix.Fsync(qfd); err != nil {
			return err
		}
		unix.Close(qfd)
		if err := unix.Rename(m.quota+".NEW", m.quota); err != nil {
			return err
		}
	}
	return unix.Unlink(stage)
}

// BenchmarkDelivery runs the Cyrus-shaped delivery natively, through go-fuse's
// plain loopback, and through mreplfs with no journal and with the real
// journal, for 1 and 3 recipients, reporting deliveries/s and CPU µs per
// delivery (client + FUSE daemon, both in this process). Run as root with
// GODEBUG=asyncpreemptoff=1 (FUSE.md G9), e.g.
//
//	GODEBUG=asyncpreemptoff=1 go test -run '^$' -bench Delivery -benchtime 2000x -count 3 ./bench
func BenchmarkDelivery(b *testing.B) {
	body := make([]byte, 10*1024)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	for _, rcpts := range []int{1, 3} {
		for _, c := range configs {
			b.Run(fmt.Sprintf("rcpt=%d/%s", rcpts, c.name), func(b *testing.B) {
				dir := c.setup(b, b.TempDir())
				boxes := cyrusSkeleton(b, dir, rcpts)
				b.SetBytes(int64(len(body)))
				cpu0, t0 := cpuTime(), time.Now()
				b.ResetTimer()
				for i := range b.N {
					if err := deliver(dir, boxes, i+1, body); err != nil {
						b.Fatalf("delivery %d: %v", i+1, err)
					}
				}
				b.StopTimer()
				el, cpu := time.Since(t0), cpuTime()-cpu0
				b.ReportMetric(float64(b.N)/el.Seconds(), "deliveries/s")
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/delivery")
			})
		}
	}
}

package bench

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	mfs "mreplfs/fs"
	"mreplfs/fs/mounttest"
	"mreplfs/journal"
	"mreplfs/rolemap"
	"mreplfs/rolemap/classify"
)

// config is one way of serving the Cyrus DIR to the workload.
type config struct {
	name string
	// setup serves dir/backing and returns the directory the workload
	// writes (DIR with conf/ and spool/).
	setup func(b *testing.B, dir string) string
}

var timeout = time.Second

var configs = []config{
	{"native", func(b *testing.B, dir string) string { return mkdir(b, filepath.Join(dir, "backing")) }},
	{"loopback", mountLoopback},
	{"mreplfs-nojournal", func(b *testing.B, dir string) string { return mountMreplfs(b, dir, &nopJournal{}) }},
	{"mreplfs", func(b *testing.B, dir string) string {
		lg, err := journal.Open(filepath.Join(dir, "journal"), journal.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if err := lg.Close(); err != nil {
				b.Errorf("journal close: %v", err)
			}
		})
		return mountMreplfs(b, dir, lg)
	}},
}

// mountLoopback mounts go-fuse's unmodified loopback (kernel passthrough on,
// as root) with the same timeouts and mount flags as mreplfs.
func mountLoopback(b *testing.B, dir string) string {
	mounttest.RequireRoot(b)
	backing := mkdir(b, filepath.Join(dir, "backing"))
	mnt := mkdir(b, filepath.Join(dir, "mnt"))
	root, err := fusefs.NewLoopbackRoot(backing)
	if err != nil {
		b.Fatal(err)
	}
	neg := time.Duration(0)
	srv, err := fusefs.Mount(mnt, root, &fusefs.Options{EntryTimeout: &timeout, AttrTimeout: &timeout, NegativeTimeout: &neg,
		MountOptions: fuse.MountOptions{DirectMount: true, DirectMountStrict: true, MaxWrite: 1 << 20, MaxBackground: 64,
			Options: []string{"default_permissions"}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			b.Errorf("unmount: %v", err)
		}
	})
	return mnt
}

func mkdir(b *testing.B, d string) string {
	if err := os.Mkdir(d, 0o755); err != nil {
		b.Fatal(err)
	}
	return d
}

// mountMreplfs mounts dir/backing as one root tree, every account master,
// the real Cyrus classifier, journal j.
func mountMreplfs(b *testing.B, dir string, j mfs.Appender) string {
	cl := mfs.CyrusClassifier(classify.New(classify.Options{}), "root")
	e := mounttest.Mount(b, mounttest.Options{Tree: "root", Journal: j, Dir: dir,
		FS: mfs.Options{Roles: mounttest.AllRoles(rolemap.Master), Classifier: cl,
			Logger: slog.New(slog.DiscardHandler)}})
	return e.Mnt
}

// nopJournal is the "journal off" appender: records are built, then dropped.
type nopJournal struct{ lsn atomic.Uint64 }

func (n *nopJournal) Append(context.Context, *journal.Record) (journal.LSN, error) {
	return journal.LSN(n.lsn.Add(1)), nil
}
func (*nopJournal) Sync(context.Context, journal.LSN) error         { return nil }
func (*nopJournal) PutBlob(context.Context, [32]byte, string) error { return nil }

// cpuTime is this process's user+system CPU time (the FUSE server runs in
// this process too, so it counts client, daemon and their kernel work).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

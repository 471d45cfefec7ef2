package fs_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	mfs "mreplfs/fs"
	"mreplfs/fs/mounttest"
	"mreplfs/journal"
	"mreplfs/rolemap"
)

// roleDirs: where each role's files live in the test tree (the mounttest
// classifier maps acct/<name> to account <name>).
var roleDirs = []struct {
	name string
	dir  string
	role rolemap.Role // Unknown: not put in the map
	set  bool
}{
	{"master", "acct/m", rolemap.Master, true},
	{"local", "acct/l", rolemap.Local, true},
	{"replica", "acct/r", rolemap.Replica, true},
	{"unknown", "acct/u", rolemap.Unknown, false},
	{"unresolved", "unres/x", rolemap.Unknown, false},
	{"non-account", "stage.", rolemap.Unknown, false},
}

// setupDir fills dir (backing) with: f ("hello"), g ("world"), d/ (empty),
// x ("old"), x.NEW ("new content"), f carrying xattr user.k.
func setupDir(t *testing.T, backing, dir string) {
	t.Helper()
	d := filepath.Join(backing, dir)
	must(t, os.MkdirAll(filepath.Join(d, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(d, "f"), []byte("hello"), 0o644))
	must(t, os.WriteFile(filepath.Join(d, "g"), []byte("world"), 0o644))
	must(t, os.WriteFile(filepath.Join(d, "x"), []byte("old"), 0o644))
	must(t, os.WriteFile(filepath.Join(d, "x.NEW"), []byte("new content"), 0o644))
	must(t, unix.Setxattr(filepath.Join(d, "f"), "user.k", []byte("v"), 0))
	must(t, os.MkdirAll(filepath.Join(backing, "stage."), 0o755))
	must(t, os.WriteFile(filepath.Join(backing, "stage./s1"), []byte("message body"), 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// snapshot describes every file of a tree: type, mode, size, content hash,
// mtime, nlink, xattrs.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o nlink=%d mtime=%d.%d", st.Mode, st.Nlink, st.Mtim.Sec, st.Mtim.Nsec)
		if st.Mode&syscall.S_IFMT == syscall.S_IFREG {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" size=%d sha=%x", len(b), sha256.Sum256(b))
			buf := make([]byte, 1024)
			if n, err := unix.Llistxattr(p, buf); err == nil {
				desc += " xattrs=" + strings.ReplaceAll(string(buf[:n]), "\x00", ",")
			}
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// recString is a compact form of a record for comparisons.
func recString(r journal.Record) string {
	s := fmt.Sprintf("%s %s", opName(r.Op), r.Path)
	switch r.Op {
	case journal.OpRename, journal.OpLink:
		s += " -> " + r.NewPath
		if r.Flags != 0 {
			s += fmt.Sprintf(" flags=%d", r.Flags)
		}
	case journal.OpWrite:
		s += fmt.Sprintf(" @%d %q prev=%d", r.Offset, r.Data, r.PrevSize)
	case journal.OpTruncate:
		s += fmt.Sprintf(" size=%d prev=%d", r.Size, r.PrevSize)
	case journal.OpMessage:
		s += fmt.Sprintf(" size=%d", r.Size)
	case journal.OpReplace:
		s += fmt.Sprintf(" %q prev=%d", r.Data, r.PrevSize)
	case journal.OpSymlink:
		s += fmt.Sprintf(" -> %q", r.Data)
	case journal.OpSetattr:
		s += fmt.Sprintf(" flags=%d", r.Flags)
		if r.Flags&journal.SetMode != 0 {
			s += fmt.Sprintf(" mode=%o", r.Mode&0o7777)
		}
	}
	return s
}

func opName(o journal.Op) string {
	names := map[journal.Op]string{journal.OpMessage: "message", journal.OpWrite: "write", journal.OpTruncate: "truncate",
		journal.OpReplace: "replace", journal.OpMkdir: "mkdir", journal.OpRmdir: "rmdir", journal.OpUnlink: "unlink",
		journal.OpRename: "rename", journal.OpLink: "link", journal.OpSymlink: "symlink", journal.OpSetattr: "setattr",
		journal.OpCreate: "create", journal.OpDirty: "dirty"}
	if n, ok := names[o]; ok {
		return n
	}
	return fmt.Sprintf("op%d", o)
}

// mutation is one mutating syscall made through the mount in dir (a mount
// path); want lists the master records with "D" standing for dir's
// tree-relative path.
type mutation struct {
	name string
	do   func(dir, mnt string) error
	want []string
	// refusedErr is what a refused role gets (EROFS unless set).
	refusedErr error
	// allErr: every role gets this error (not a guard matter).
	allErr error
}

func openClose(p string, flags int) error {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func withFd(p string, flags int, fn func(fd int) error) error {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	err = fn(fd)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

var mutations = []mutation{
	{name: "open O_CREAT", do: func(d, _ string) error { return openClose(d+"/new", unix.O_CREAT|unix.O_WRONLY) },
		want: []string{"create D/new"}},
	{name: "open O_CREAT|O_EXCL existing", do: func(d, _ string) error { return openClose(d+"/f", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY) },
		allErr: unix.EEXIST},
	{name: "open O_WRONLY", do: func(d, _ string) error { return openClose(d+"/f", unix.O_WRONLY) }},
	{name: "open O_RDWR", do: func(d, _ string) error { return openClose(d+"/f", unix.O_RDWR) }},
	{name: "open O_RDONLY|O_TRUNC", do: func(d, _ string) error { return openClose(d+"/f", unix.O_RDONLY|unix.O_TRUNC) },
		want: []string{"truncate D/f size=0 prev=5"}},
	{name: "open O_WRONLY|O_TRUNC", do: func(d, _ string) error { return openClose(d+"/f", unix.O_WRONLY|unix.O_TRUNC) },
		want: []string{"truncate D/f size=0 prev=5"}},
	{name: "pwrite", do: func(d, _ string) error {
		return withFd(d+"/f", unix.O_WRONLY, func(fd int) error { _, err := unix.Pwrite(fd, []byte("HE"), 0); return err })
	}, want: []string{`write D/f @0 "HE" prev=5`}},
	{name: "write O_APPEND", do: func(d, _ string) error {
		return withFd(d+"/f", unix.O_WRONLY|unix.O_APPEND, func(fd int) error { _, err := unix.Write(fd, []byte("!")); return err })
	}, want: []string{`write D/f @5 "!" prev=5`}},
	{name: "truncate", do: func(d, _ string) error { return unix.Truncate(d+"/f", 2) },
		want: []string{"truncate D/f size=2 prev=5"}},
	{name: "ftruncate", do: func(d, _ string) error {
		return withFd(d+"/f", unix.O_RDWR, func(fd int) error { return unix.Ftruncate(fd, 9) })
	}, want: []string{"truncate D/f size=9 prev=5"}},
	{name: "fallocate", do: func(d, _ string) error {
		return withFd(d+"/f", unix.O_RDWR, func(fd int) error { return unix.Fallocate(fd, 0, 0, 100) })
	}, want: []string{"truncate D/f size=100 prev=5"}},
	{name: "copy_file_range", do: func(d, _ string) error {
		return withFd(d+"/g", unix.O_RDONLY, func(in int) error {
			return withFd(d+"/f", unix.O_WRONLY, func(out int) error {
				off := int64(1)
				_, err := unix.CopyFileRange(in, nil, out, &off, 3, 0)
				return err
			})
		})
	}, want: []string{`write D/f @1 "wor" prev=5`}},
	{name: "rename", do: func(d, _ string) error { return unix.Rename(d+"/f", d+"/f2") },
		want: []string{"rename D/f -> D/f2"}},
	{name: "rename over", do: func(d, _ string) error { return unix.Rename(d+"/f", d+"/g") },
		want: []string{"rename D/f -> D/g"}},
	{name: "rename RENAME_EXCHANGE", do: func(d, _ string) error {
		return unix.Renameat2(unix.AT_FDCWD, d+"/f", unix.AT_FDCWD, d+"/g", unix.RENAME_EXCHANGE)
	}, want: []string{"rename D/f -> D/g flags=2"}},
	{name: "rename X.NEW over X", do: func(d, _ string) error { return unix.Rename(d+"/x.NEW", d+"/x") },
		want: []string{`replace D/x "new content" prev=3`}},
	{name: "rename stage file to message", do: func(d, mnt string) error { return unix.Rename(mnt+"/stage./s1", d+"/7.") },
		want: []string{"message D/7. size=12"}},
	{name: "link", do: func(d, _ string) error { return unix.Link(d+"/f", d+"/f.l") },
		want: []string{"link D/f -> D/f.l"}},
	{name: "link stage file to message", do: func(d, mnt string) error { return unix.Link(mnt+"/stage./s1", d+"/5.") },
		want: []string{"message D/5. size=12"}},
	{name: "symlink", do: func(d, _ string) error { return unix.Symlink("f", d+"/sl") },
		want: []string{`symlink D/sl -> "f"`}},
	{name: "mknod fifo", do: func(d, _ string) error { return unix.Mkfifo(d+"/fifo", 0o600) },
		want: []string{"create D/fifo"}},
	{name: "unlink", do: func(d, _ string) error { return unix.Unlink(d + "/f") },
		want: []string{"unlink D/f"}},
	{name: "mkdir", do: func(d, _ string) error { return unix.Mkdir(d+"/nd", 0o755) },
		want: []string{"mkdir D/nd"}},
	{name: "rmdir", do: func(d, _ string) error { return unix.Rmdir(d + "/d") },
		want: []string{"rmdir D/d"}},
	{name: "chmod", do: func(d, _ string) error { return unix.Chmod(d+"/f", 0o600) },
		want: []string{"setattr D/f flags=1 mode=600"}},
	{name: "chown", do: func(d, _ string) error { return unix.Chown(d+"/f", 12, 34) },
		want: []string{"setattr D/f flags=16"}},
	{name: "utimensat", do: func(d, _ string) error {
		ts := []unix.Timespec{{Sec: 1000, Nsec: 5}, {Sec: 2000, Nsec: 7}}
		return unix.UtimesNanoAt(unix.AT_FDCWD, d+"/f", ts, 0)
	}, want: []string{"setattr D/f flags=6"}},
	{name: "setxattr", do: func(d, _ string) error { return unix.Setxattr(d+"/f", "user.n", []byte("1"), 0) },
		want: []string{"dirty D/f"}},
	{name: "removexattr", do: func(d, _ string) error { return unix.Removexattr(d+"/f", "user.k") },
		want: []string{"dirty D/f"}},
	{name: "ioctl FS_IOC_SETFLAGS", do: func(d, _ string) error {
		return withFd(d+"/f", unix.O_RDONLY, func(fd int) error { return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, 0) })
	}, allErr: unix.ENOTTY},
}

// TestMutationMatrix: every mutating syscall × every role. Refused roles get
// EROFS and an unchanged backing tree; master gets exactly the expected
// records; local and non-account paths are changed and not journaled.
func TestMutationMatrix(t *testing.T) {
	for _, m := range mutations {
		for _, rd := range roleDirs {
			t.Run(m.name+"/"+rd.name, func(t *testing.T) {
				e := mounttest.Mount(t, mounttest.Options{})
				if rd.set {
					e.Roles.Set(filepath.Base(rd.dir), rd.role)
				}
				setupDir(t, e.Backing, rd.dir)
				before := snapshot(t, e.Backing)
				err := m.do(filepath.Join(e.Mnt, rd.dir), e.Mnt)
				refused := !rd.role.Writable() && rd.name != "non-account"
				switch {
				case m.allErr != nil:
					if !errors.Is(err, m.allErr) {
						t.Fatalf("got err %v, want %v", err, m.allErr)
					}
					refused = true // nothing may change
				case refused:
					if !errors.Is(err, unix.EROFS) {
						t.Fatalf("got err %v, want EROFS", err)
					}
				default:
					if err != nil {
						t.Fatalf("got err %v, want success", err)
					}
				}
				if refused {
					after := snapshot(t, e.Backing)
					if d := diffSnap(before, after); d != "" {
						t.Errorf("backing tree changed by a refused %s:\n%s", m.name, d)
					}
				}
				var got []string
				for _, r := range e.Rec.Records() {
					got = append(got, recString(r))
					if r.Tree != "spool" || r.Account != filepath.Base(rd.dir) || r.Epoch != 1 {
						t.Errorf("record %s: tree %q account %q epoch %d, want spool %q 1", recString(r), r.Tree, r.Account, r.Epoch, filepath.Base(rd.dir))
					}
				}
				var want []string
				if rd.name == "master" && m.allErr == nil {
					for _, w := range m.want {
						want = append(want, strings.ReplaceAll(w, "D/", rd.dir+"/"))
					}
				}
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("records:\ngot  %q\nwant %q", got, want)
				}
				for _, r := range e.Rec.Records() {
					if r.Op == journal.OpMessage {
						if b, ok := e.Rec.Blob(r.Hash); !ok || string(b) != "message body" {
							t.Errorf("blob for %s: got %q %v, want the message body", r.Path, b, ok)
						}
					}
				}
			})
		}
	}
}

func diffSnap(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, "- "+k)
		} else if v != w {
			out = append(out, fmt.Sprintf("~ %s: %s -> %s", k, v, w))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, "+ "+k)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// countHandler counts slog records at warn level and above by message.
type countHandler struct {
	mu   sync.Mutex
	msgs map[string][]string // message -> "account op path" of each
}

func (h *countHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	var attrs []string
	r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a.Key+"="+a.Value.String()); return true })
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs[r.Message] = append(h.msgs[r.Message], strings.Join(attrs, " "))
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

// TestRefusalLoggedOncePerAccount: refusals are logged with account, op
// and path, once per account per interval.
func TestRefusalLoggedOncePerAccount(t *testing.T) {
	h := &countHandler{msgs: map[string][]string{}}
	e := mounttest.Mount(t, mounttest.Options{FS: mfs.Options{Logger: slog.New(h)}})
	e.Roles.Set("r", rolemap.Replica)
	setupDir(t, e.Backing, "acct/r")
	setupDir(t, e.Backing, "acct/u")
	for range 3 {
		os.WriteFile(filepath.Join(e.Mnt, "acct/r/f"), []byte("x"), 0o644)
		unix.Unlink(filepath.Join(e.Mnt, "acct/r/g"))
	}
	unix.Mkdir(filepath.Join(e.Mnt, "acct/u/new"), 0o755)
	h.mu.Lock()
	got := h.msgs["refused write (EROFS)"]
	h.mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("got %d refusal logs %q, want 2 (one per account)", len(got), got)
	}
	for i, want := range []string{"account=r role=replica op=open path=spool/acct/r/f", "account=u role=unknown op=mkdir path=spool/acct/u/new"} {
		if got[i] != want {
			t.Errorf("log %d: got %q, want %q", i, got[i], want)
		}
	}
}

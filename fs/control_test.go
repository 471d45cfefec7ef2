package fs_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/fs"
	"mreplfs/fs/mounttest"
	"mreplfs/rolemap"
)

func TestControlSocket(t *testing.T) {
	e := mounttest.Mount(t, mounttest.Options{})
	e.Roles.Set("r", rolemap.Replica)
	must(t, os.MkdirAll(filepath.Join(e.Backing, "acct/r"), 0o755))
	must(t, os.WriteFile(filepath.Join(e.Backing, "acct/r/f"), []byte("aaaa"), 0o600))
	sock := filepath.Join(t.TempDir(), "control.sock")
	reloads := 0
	c := &fs.Control{FS: e.FS, Reload: func(context.Context) error { reloads++; return nil }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file left behind: %v", err)
		}
	})
	call := func(req fs.ControlRequest) fs.ControlReply {
		t.Helper()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		var rep fs.ControlReply
		var err error
		for range 50 {
			if rep, err = fs.ControlCall(cctx, sock, req); err == nil {
				return rep
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("control call %+v: %v", req, err)
		return rep
	}
	if rep := call(fs.ControlRequest{Cmd: "ping"}); !rep.OK || rep.V != fs.ControlVersion {
		t.Errorf("ping: %+v", rep)
	}
	st, err := os.Stat(sock)
	must(t, err)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %o, want 600", st.Mode().Perm())
	}
	rep := call(fs.ControlRequest{Cmd: "status"})
	if !rep.OK || rep.Status == nil || len(rep.Status.Trees) != 1 || rep.Status.Trees[0].Mountpoint != e.Mnt {
		t.Errorf("status: %+v", rep)
	}
	if rep := call(fs.ControlRequest{Cmd: "reload"}); !rep.OK || reloads != 1 {
		t.Errorf("reload: %+v (reloads %d)", rep, reloads)
	}
	if rep := call(fs.ControlRequest{Cmd: "nope"}); rep.OK || !strings.Contains(rep.Error, "unknown command") {
		t.Errorf("unknown: %+v", rep)
	}
	if rep := call(fs.ControlRequest{V: 99, Cmd: "ping"}); rep.OK || !strings.Contains(rep.Error, "version") {
		t.Errorf("bad version: %+v", rep)
	}
	if rep := call(fs.ControlRequest{Cmd: "forget"}); rep.OK {
		t.Errorf("forget with no target: %+v", rep)
	}
	if rep := call(fs.ControlRequest{Cmd: "forget", Tree: "nope", Paths: []string{"x"}}); rep.OK {
		t.Errorf("forget unknown tree: %+v", rep)
	}

	// forget through the socket makes an open fd see a backing change.
	fd, err := unix.Open(filepath.Join(e.Mnt, "acct/r/f"), unix.O_RDONLY, 0)
	must(t, err)
	defer unix.Close(fd)
	buf := make([]byte, 4)
	_, err = unix.Pread(fd, buf, 0)
	must(t, err)
	wf, err := os.OpenFile(filepath.Join(e.Backing, "acct/r/f"), os.O_WRONLY, 0)
	must(t, err)
	wf.WriteAt([]byte("bbbb"), 0)
	wf.Close()
	if rep := call(fs.ControlRequest{Cmd: "forget", Tree: "spool", Paths: []string{"acct/r/f"}}); !rep.OK || rep.Count == 0 {
		t.Errorf("forget: %+v", rep)
	}
	_, err = unix.Pread(fd, buf, 0)
	must(t, err)
	if string(buf) != "bbbb" {
		t.Errorf("after forget: %q", buf)
	}

	// Garbage: an error reply, the connection stays usable.
	conn, err := net.Dial("unix", sock)
	must(t, err)
	defer conn.Close()
	conn.Write([]byte("{not json\n{\"v\":1,\"cmd\":\"ping\"}\n"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 4096)
	got := ""
	for strings.Count(got, "\n") < 2 {
		n, err := conn.Read(b)
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, got)
		}
		got += string(b[:n])
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if !strings.Contains(lines[0], "bad request") || !strings.Contains(lines[1], `"ok":true`) {
		t.Errorf("replies %q", lines)
	}

	// A second server on the same live socket is refused.
	if err := (&fs.Control{FS: e.FS}).Serve(ctx, sock); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Serve: %v, want in use", err)
	}
}

package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/bench/cyrusload"
	"mreplfs/fs/mounttest"
)

// These tests run two "servers" on this machine as real processes: for each,
// a `mreplfs mount` over its backing trees and a `mreplfs peer`, joined by
// real TCP with mutual TLS on loopback. Server A masters alice and carol,
// server B masters bob and dave; each replicates the other's (the original
// engine's crosswise topology). The load is Cyrus-shaped, written through
// the mounts in the legacy layout (so no cyrus.header is needed to own a
// path): a stage file linked into mailboxes, fsync through an O_RDONLY fd,
// utimensat, cyrus.index/cyrus.cache writes with fsync, quota replaced by
// rename.

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// mreplfsBinary builds the command once per test run.
func mreplfsBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mreplfs-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "mreplfs")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// server is one side: backing trees, mounts, journal, role map, peer.
type server struct {
	t                 *testing.T
	name, node        string
	dir               string // everything of this server
	addr              string
	mountCmd, peerCmd *exec.Cmd
	mountLog, peerLog *bytes.Buffer
}

func (s *server) backing(tree string) string { return filepath.Join(s.dir, "backing", tree) }
func (s *server) mnt(tree string) string     { return filepath.Join(s.dir, "mnt", tree) }
func (s *server) journal() string            { return filepath.Join(s.dir, "journal") }

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newServerPair makes A and B with crosswise roles, certificates and
// configs, and starts both mounts and both peers.
func newServerPair(t *testing.T) (a, b *server) {
	t.Helper()
	return newServerPairSeeded(t, nil)
}

func mustRun(t *testing.T, bin string, args ...string) {
	t.Helper()
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("mreplfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (s *server) startMount(cfg string) {
	t := s.t
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s.mountLog = &bytes.Buffer{}
	cmd := exec.Command(mreplfsBinary(t), "mount", "-config", cfg, "-ready-fd", "3")
	cmd.ExtraFiles = []*os.File{pw}
	cmd.Stdout, cmd.Stderr = s.mountLog, s.mountLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	line := make([]byte, 6)
	pr.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = pr.Read(line)
	pr.Close()
	if string(line) != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("mount %s not ready: %q %v\n%s", s.name, line, err, s.mountLog)
	}
	s.mountCmd = cmd
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		for _, tr := range treeNames {
			unix.Unmount(s.mnt(tr), unix.MNT_DETACH) // only if the process could not
		}
		if t.Failed() {
			t.Logf("mount %s log:\n%s", s.name, s.mountLog)
		}
	})
}

func (s *server) startPeer(cfg string) {
	t := s.t
	s.peerLog = &bytes.Buffer{}
	cmd := exec.Command(mreplfsBinary(t), "peer", "-config", cfg)
	cmd.Stdout, cmd.Stderr = s.peerLog, s.peerLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.peerCmd = cmd
	t.Cleanup(func() {
		if s.peerCmd == cmd {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("peer %s log:\n%s", s.name, s.peerLog)
		}
	})
}

// killPeer kills the peer process with SIGKILL.
func (s *server) killPeer() {
	s.peerCmd.Process.Kill()
	s.peerCmd.Wait()
}

// spool is a server's trees as Cyrus sees them (through the mount).
func (s *server) spool() cyrusload.Spool {
	return cyrusload.Spool{Conf: s.mnt("conf"), Spool: s.mnt("spool"), Meta: s.mnt("meta")}
}

// backingSpool is a server's backing trees.
func (s *server) backingSpool() cyrusload.Spool {
	return cyrusload.Spool{Conf: s.backing("conf"), Spool: s.backing("spool"), Meta: s.backing("meta")}
}

func deliver(t *testing.T, d *cyrusload.Deliverer, n int, mailboxes []string, size int) {
	t.Helper()
	if _, err := d.Deliver(mailboxes, cyrusload.Body(n, size, "test")); err != nil {
		t.Fatal(err)
	}
}

// waitReplicated waits until every account's replica equals its master.
func waitReplicated(t *testing.T, timeout time.Duration, pairs ...[2]any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var bad []string
		for _, p := range pairs {
			acct := p[0].(string)
			m, r := p[1].(*server), otherOf(p[1].(*server))
			dm, err := cyrusload.Digest(m.backingSpool(), acct)
			if err != nil {
				t.Fatal(err)
			}
			if len(dm) == 0 {
				bad = append(bad, acct+": master has nothing")
				continue
			}
			dr, err := cyrusload.Digest(r.backingSpool(), acct)
			if err != nil {
				t.Fatal(err)
			}
			if d := cyrusload.Diff(dm, dr); len(d) > 0 {
				bad = append(bad, fmt.Sprintf("%s (%d differences, first: %s)", acct, len(d), d[0]))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas did not converge in %v:\n%s", timeout, strings.Join(bad, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var pairOf = map[*server]*server{}

func otherOf(s *server) *server { return pairOf[s] }

// TestTwoServersCrosswise: both servers master half the accounts and take
// a Cyrus-shaped load at once; every replica ends byte-identical to its
// master, readers through the replica's mount see the replicated bytes, and
// a write to a replica account through the mount is refused (EROFS).
func TestTwoServersCrosswise(t *testing.T) {
	a, b := newServerPair(t)
	pairOf[a], pairOf[b] = b, a
	da, db := cyrusload.New(a.spool()), cyrusload.New(b.spool())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 40; i++ {
			mbs := []string{"alice"}
			if i%4 == 0 {
				mbs = []string{"alice", "alice/Sent", "carol"}
			}
			deliver(t, da, i, mbs, 2000+i*300)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 40; i++ {
			mbs := []string{"bob"}
			if i%3 == 0 {
				mbs = []string{"bob", "dave"}
			}
			deliver(t, db, i, mbs, 1500+i*250)
		}
	}()
	wg.Wait()
	waitReplicated(t, 60*time.Second, [2]any{"alice", a}, [2]any{"carol", a}, [2]any{"bob", b}, [2]any{"dave", b})

	// The replica's mount shows the replicated content (no stale cache).
	want, err := os.ReadFile(filepath.Join(a.backing("meta"), "user/alice/cyrus.index"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(b.mnt("meta"), "user/alice/cyrus.index"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("alice's index through B's mount: %d bytes, err %v; want %d bytes as on A", len(got), err, len(want))
	}
	// Writes to a replica account are refused, and change nothing.
	err = os.WriteFile(filepath.Join(b.mnt("spool"), "user/alice/999."), []byte("x"), 0o600)
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write to a replica account on B: got %v, want EROFS", err)
	}
	if _, err := os.Stat(filepath.Join(b.backing("spool"), "user/alice/999.")); !os.IsNotExist(err) {
		t.Fatal("refused write reached B's backing tree")
	}
}

// TestPeerKilledMidStream: the peer process of A is killed with SIGKILL
// while A takes deliveries, then restarted; the replicas converge, nothing
// lost, nothing applied over (a duplicate apply of a message would be a
// divergence and quarantine the account).
func TestPeerKilledMidStream(t *testing.T) {
	a, b := newServerPair(t)
	pairOf[a], pairOf[b] = b, a
	da := cyrusload.New(a.spool())
	for i := 0; i < 60; i++ {
		deliver(t, da, i, []string{"alice"}, 3000)
		if i == 20 {
			a.killPeer()
		}
		if i == 40 {
			a.startPeer(filepath.Join(a.dir, "peer.conf"))
		}
	}
	waitReplicated(t, 60*time.Second, [2]any{"alice", a})
	st, err := os.ReadFile(filepath.Join(b.dir, "peer", "status.json"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(st, []byte(`"State": 1`)) || bytes.Contains(st, []byte(`"State": 2`)) {
		t.Fatalf("an account was quarantined or needs resync on B:\n%s", st)
	}
}

// TestDemo runs `mreplfs demo` (the README's main command) as a user would:
// it must set up the two namespaced servers, replicate, verify and tear
// everything down, leaving no namespace or mount behind.
func TestDemo(t *testing.T) {
	mounttest.RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the demo needs iproute2's ip command (CI installs it)")
		}
		t.Skip("no ip command")
	}
	out, err := exec.Command(mreplfsBinary(t), "demo", "-messages", "60").CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{"every replica is byte-identical", "read-only file system", "== demo OK =="} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	ns, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(ns), "mrdemo") {
		t.Errorf("demo left network namespaces behind: %s", ns)
	}
	mounts, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(mounts), "mreplfs-demo-") {
		t.Errorf("demo left mounts behind")
	}
}

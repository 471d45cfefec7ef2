package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// guest is one running UML guest and the command agent on its serial line.
type guest struct {
	name, ip string
	cmd      *exec.Cmd
	in       io.WriteCloser // host → guest commands
	lines    chan string
	exited   chan struct{}
	log      *slog.Logger
	host     bool // a host node (hostnode.go), not a UML guest

	mu  sync.Mutex
	seq int
}

// guestSpec says how to boot a guest.
type guestSpec struct {
	name, ip, tap, mac string
	disks              []string // ubd0, ubd1, …
	uml, initrd, mem   string
	shm, umlDir        string
	console            string // console log path
}

// bootGuest starts the UML kernel. Its process group is killed by
// (*guest).kill; the process also dies with the harness (Pdeathsig).
func bootGuest(spec guestSpec, log *slog.Logger) (*guest, error) {
	// ssl0 (the guest's /dev/ttyS0) reads fd 3 and writes fd 4.
	toGuestR, toGuestW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	fromGuestR, fromGuestW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	con, err := os.Create(spec.console)
	if err != nil {
		return nil, err
	}
	args := []string{"umid=mrbench-" + spec.name, "uml_dir=" + spec.umlDir, "mem=" + spec.mem, "initrd=" + spec.initrd}
	for i, d := range spec.disks {
		args = append(args, fmt.Sprintf("ubd%d=%s", i, d))
	}
	args = append(args, "con=null", "con0=null,fd:1", "ssl=null", "ssl0=fd:3,fd:4",
		"vec0:transport=tap,ifname="+spec.tap+",gro=1,mac="+spec.mac,
		"bench.host="+spec.name, "bench.ip="+spec.ip, "bench.ctl=/dev/ttyS0")
	cmd := exec.Command(spec.uml, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+spec.shm)
	cmd.Stdout, cmd.Stderr = con, con
	cmd.ExtraFiles = []*os.File{toGuestR, fromGuestW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	toGuestR.Close()
	fromGuestW.Close()
	con.Close()
	if err != nil {
		toGuestW.Close()
		fromGuestR.Close()
		return nil, fmt.Errorf("start UML %s: %w", spec.name, err)
	}
	g := &guest{name: spec.name, ip: spec.ip, cmd: cmd, in: toGuestW, lines: make(chan string, 1024),
		exited: make(chan struct{}), log: log.With("guest", spec.name)}
	go func() { cmd.Wait(); close(g.exited) }()
	go func() {
		sc := bufio.NewScanner(fromGuestR)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			g.lines <- strings.TrimRight(sc.Text(), "\r")
		}
		close(g.lines)
	}()
	return g, nil
}

// waitReady waits for the agent's @@READY line.
func (g *guest) waitReady(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-g.lines:
			if !ok {
				return fmt.Errorf("guest %s: serial line closed before ready", g.name)
			}
			if strings.HasPrefix(l, "@@READY") {
				return nil
			}
		case <-t.C:
			return fmt.Errorf("guest %s: not ready within %v", g.name, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// errGuest is a command that ran and failed.
var errGuest = errors.New("guest command failed")

// run runs a shell command line in the guest and returns its output; a
// non-zero exit status is an error wrapping errGuest with the output.
func (g *guest) run(ctx context.Context, timeout time.Duration, cmdline string) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
	id := strconv.Itoa(g.seq)
	if strings.ContainsAny(cmdline, "\n\r") {
		return "", fmt.Errorf("guest %s: multi-line command", g.name)
	}
	if _, err := fmt.Fprintf(g.in, "%s %s\n", id, cmdline); err != nil {
		return "", fmt.Errorf("guest %s: %w", g.name, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	start := time.Now()
	defer func() {
		if d := time.Since(start); d > 3*time.Second {
			g.log.Debug("slow command", "took", d.Round(time.Millisecond), "cmd", short(cmdline))
		}
	}()
	var out strings.Builder
	for {
		select {
		case l, ok := <-g.lines:
			if !ok {
				return out.String(), fmt.Errorf("guest %s: serial line closed during %q", g.name, cmdline)
			}
			if i := strings.Index(l, "@@RC "); i >= 0 {
				f := strings.Fields(l[i:])
				if len(f) == 3 && f[1] == id {
					if i > 0 { // output without a final newline
						out.WriteString(l[:i] + "\n")
					}
					if f[2] != "0" {
						return out.String(), fmt.Errorf("%w: %s: %q exited %s: %s", errGuest, g.name, short(cmdline), f[2], lastLines([]byte(out.String()), 8))
					}
					return out.String(), nil
				}
				continue // a stale answer of an abandoned command
			}
			if strings.HasPrefix(l, "@@READY") {
				continue
			}
			out.WriteString(l + "\n")
		case <-t.C:
			return out.String(), fmt.Errorf("guest %s: %q: no answer within %v", g.name, short(cmdline), timeout)
		case <-ctx.Done():
			return out.String(), ctx.Err()
		}
	}
}

func short(s string) string {
	if len(s) > 160 {
		return s[:160] + "…"
	}
	return s
}

// poweroff asks the guest to stop and waits a little; kill ends it anyway.
func (g *guest) poweroff(wait time.Duration) {
	if g.host {
		// Never poweroff on the host: end the agent's input instead.
		g.in.Close()
		select {
		case <-g.exited:
		case <-time.After(wait):
		}
		g.kill()
		return
	}
	fmt.Fprintf(g.in, "999999 sync; poweroff -f\n")
	select {
	case <-g.exited:
	case <-time.After(wait):
	}
	g.kill()
}

// kill ends the guest's whole process group (the UML kernel and its
// helper processes).
func (g *guest) kill() {
	if g.cmd.Process != nil {
		syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-g.exited:
	case <-time.After(5 * time.Second):
	}
	g.in.Close()
}

// consoleTail is the end of a guest's console log, for error messages.
func consoleTail(path string) string {
	b, _ := os.ReadFile(filepath.Clean(path))
	return lastLines(b, 15)
}

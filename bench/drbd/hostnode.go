package main

import (
	"bufio"
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

//go:embed hostnode.sh
var hostNodeScript []byte

// The host environment (-envs host) is the fallback the issue asks for: the
// same workloads and mreplfs configurations without UML, each node a shell
// on the host in its own network and mount namespaces (joined by a veth
// pair), measured against its own plain baseline (a directory on the host's
// disk). DRBD cannot run there (the host kernel has no modules).

// startHostNode starts a node's agent (hostnode.sh) in new network and mount
// namespaces; its plain disk is the directory disk.
func startHostNode(name, ip, veth string, p plan, log *slog.Logger) (*guest, error) {
	script := filepath.Join(p.Run, "hostnode.sh")
	if err := os.WriteFile(script, hostNodeScript, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "BENCH_NAME="+name, "BENCH_ETC="+p.Etc, "BENCH_RUN="+p.Run)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		Setpgid: true, Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	errLog, err := os.Create(filepath.Join(p.Run, "host-"+name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stderr = errLog
	if err := cmd.Start(); err != nil {
		errLog.Close()
		return nil, fmt.Errorf("host node %s: %w", name, err)
	}
	errLog.Close()
	g := &guest{name: name, ip: ip, cmd: cmd, in: in, lines: make(chan string, 1024),
		exited: make(chan struct{}), log: log.With("host_node", name), host: true}
	go func() { cmd.Wait(); close(g.exited) }()
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			g.lines <- sc.Text()
		}
		close(g.lines)
	}()
	return g, nil
}

// hostNodes starts nodes a and b and links them with a veth pair.
func (h *harness) hostNodes(ctx context.Context) error {
	for _, n := range []struct{ name, ip, veth string }{{"a", ipA, "hva"}, {"b", ipB, "hvb"}} {
		g, err := startHostNode(n.name, n.ip, n.veth, h.plan, h.log)
		if err != nil {
			return err
		}
		h.guests = append(h.guests, g)
		if err := g.waitReady(ctx, time.Minute); err != nil {
			return fmt.Errorf("%w (see %s)", err, filepath.Join(h.plan.Run, "host-"+n.name+".log"))
		}
	}
	h.a, h.b = h.guests[0], h.guests[1]
	pa, pb := strconv.Itoa(h.a.cmd.Process.Pid), strconv.Itoa(h.b.cmd.Process.Pid)
	for _, args := range [][]string{
		{"link", "add", "hva", "netns", pa, "type", "veth", "peer", "name", "hvb", "netns", pb},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, g := range []*guest{h.a, h.b} {
		veth := "hv" + g.name
		if _, err := g.run(ctx, time.Minute, fmt.Sprintf("ip link set lo up && ip addr add %s/24 dev %s && ip link set %s up", g.ip, veth, veth)); err != nil {
			return err
		}
	}
	return nil
}

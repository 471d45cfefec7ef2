package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// inner runs in fresh network, mount and PID namespaces (runInner): it
// builds the bridge and taps, boots both guests and runs the plan.
func inner(planPath string, log *slog.Logger) error {
	var p plan
	b, err := os.ReadFile(planPath)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Nothing mounted here may leak to the host's mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	shm := filepath.Join(p.Run, "shm")
	if err := os.MkdirAll(shm, 0o700); err != nil {
		return err
	}
	// Guest RAM is backed by files in TMPDIR: a tmpfs only this namespace sees.
	if err := unix.Mount("tmpfs", shm, "tmpfs", 0, "size=4g,mode=700"); err != nil {
		return fmt.Errorf("tmpfs for guest memory: %w", err)
	}
	for _, a := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br0", "type", "bridge"},
		{"tuntap", "add", "tapa", "mode", "tap"},
		{"tuntap", "add", "tapb", "mode", "tap"},
		{"link", "set", "tapa", "master", "br0"},
		{"link", "set", "tapb", "master", "br0"},
		{"link", "set", "br0", "up"},
		{"link", "set", "tapa", "up"},
		{"link", "set", "tapb", "up"},
	} {
		if out, err := exec.Command("ip", a...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(a, " "), err, out)
		}
	}
	for _, i := range []string{"br0", "tapa", "tapb"} {
		os.WriteFile("/proc/sys/net/ipv6/conf/"+i+"/disable_ipv6", []byte("1"), 0o644)
	}
	umlDir := filepath.Join(p.Run, "uml")
	os.MkdirAll(umlDir, 0o700)
	raw, err := os.OpenFile(p.Raw, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer raw.Close()
	for _, env := range p.Envs {
		h := &harness{plan: p, log: log.With("env", env), env: env}
		err := h.runEnv(ctx, shm, umlDir, raw)
		h.shutdown()
		if err != nil || p.Shell {
			return err
		}
	}
	return nil
}

// runEnv starts the two nodes of environment h.env (UML guests, or host
// nodes), then runs every round.
func (h *harness) runEnv(ctx context.Context, shm, umlDir string, raw *os.File) error {
	p, log := h.plan, h.log
	t0 := time.Now()
	configs := p.Configs
	if h.env == "host" {
		if err := h.hostNodes(ctx); err != nil {
			return err
		}
		configs = nil
		for _, c := range p.Configs {
			if !strings.HasPrefix(c, "drbd-") {
				configs = append(configs, c)
			}
		}
		log.Info("host nodes ready", "after", time.Since(t0).Round(time.Millisecond))
	} else {
		if err := h.bootGuests(ctx, shm, umlDir); err != nil {
			return err
		}
		log.Info("guests ready", "after", time.Since(t0).Round(time.Millisecond))
		if out, err := h.a.run(ctx, time.Minute, "uname -r; head -1 /proc/drbd; ping -c 3 -q "+ipB+" | tail -1"); err != nil {
			return err
		} else {
			log.Info("guest a", "says", strings.ReplaceAll(strings.TrimSpace(out), "\n", " | "))
		}
		if p.Kick {
			if _, err := h.b.run(ctx, time.Minute, "ping -q -i 0.01 "+ipA+" >/dev/null 2>&1 & echo $! > /run/kick.pid"); err != nil {
				return err
			}
		}
	}
	if p.Shell {
		return h.shell(ctx)
	}
	for r := 1; r <= p.Rounds; r++ {
		for wi, wl := range p.Workloads {
			for _, cfg := range configs {
				if cfg == "mreplfs-sync" && !p.Sync {
					continue
				}
				t := time.Now()
				rec, err := h.runOne(ctx, r, wi, wl, cfg)
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					return fmt.Errorf("%s round %d %s %s: %w", h.env, r, wl.Name, cfg, err)
				}
				rec.Env = h.env
				rec.WallS = time.Since(t).Seconds()
				b, _ := json.Marshal(rec)
				raw.Write(append(b, '\n'))
				log.Info("run", "round", r, "workload", wl.Name, "config", cfg, "per_s", fmt.Sprintf("%.1f", rec.Result.PerSec),
					"p50_ms", rec.Result.P50ms, "p99_ms", rec.Result.P99ms, "wire_per_payload", fmt.Sprintf("%.3f", rec.wirePerPayload()),
					"lag_p50_ms", fmt.Sprintf("%.1f", rec.LagP50ms), "check", rec.Check, "wall_s", fmt.Sprintf("%.1f", rec.WallS))
			}
		}
	}
	return nil
}

// bootGuests boots UML guests a and b, each with two sparse-file disks
// (ubda: DRBD's backing disk, ubdb: the plain disk).
func (h *harness) bootGuests(ctx context.Context, shm, umlDir string) error {
	p := h.plan
	for _, s := range []struct{ name, ip, tap, mac string }{
		{"a", ipA, "tapa", "52:54:00:99:00:01"}, {"b", ipB, "tapb", "52:54:00:99:00:02"},
	} {
		var disks []string
		for _, d := range []string{"drbd", "plain"} {
			img := filepath.Join(p.Run, s.name+"-"+d+".img")
			f, err := os.Create(img)
			if err != nil {
				return err
			}
			err = f.Truncate(p.Disk)
			f.Close()
			if err != nil {
				return err
			}
			disks = append(disks, img)
		}
		g, err := bootGuest(guestSpec{name: s.name, ip: s.ip, tap: s.tap, mac: s.mac, disks: disks, uml: p.UML,
			initrd: p.Initrd, mem: p.Mem, shm: shm, umlDir: umlDir,
			console: filepath.Join(p.Run, s.name+".console.log")}, h.log)
		if err != nil {
			return err
		}
		h.guests = append(h.guests, g)
	}
	h.a, h.b = h.guests[0], h.guests[1]
	for _, g := range h.guests {
		if err := g.waitReady(ctx, 3*time.Minute); err != nil {
			return fmt.Errorf("%w; console: %s", err, consoleTail(filepath.Join(p.Run, g.name+".console.log")))
		}
	}
	return nil
}

// harness holds the running guests.
type harness struct {
	plan      plan
	env       string // uml or host
	log       *slog.Logger
	guests    []*guest
	a, b      *guest
	drbdUp    bool
	lastProto string
}

// shutdown powers the guests off (killing what does not stop).
func (h *harness) shutdown() {
	for _, g := range h.guests {
		g.poweroff(10 * time.Second)
	}
}

// stat reads a guest's counters.
func (h *harness) stat(ctx context.Context, g *guest, syncFirst bool) (counters, error) {
	cmd := "load stat"
	if syncFirst {
		cmd = "sync; load stat"
	}
	out, err := g.run(ctx, 2*time.Minute, cmd)
	if err != nil {
		return counters{}, err
	}
	var c counters
	for _, l := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(l, "STAT "); ok {
			return c, json.Unmarshal([]byte(s), &c)
		}
	}
	return c, fmt.Errorf("guest %s: no STAT line in %q", g.name, out)
}

// clockOffset estimates the guest's wall clock minus the host's, and the
// uncertainty (half the best round trip through the agent).
func (h *harness) clockOffset(ctx context.Context, g *guest) (off, errNs int64, err error) {
	best := int64(-1)
	for i := 0; i < 5; i++ {
		t0 := time.Now().UnixNano()
		out, err := g.run(ctx, time.Minute, "load now")
		t1 := time.Now().UnixNano()
		if err != nil {
			return 0, 0, err
		}
		var gt int64
		if _, err := fmt.Sscan(strings.TrimSpace(out), &gt); err != nil {
			return 0, 0, fmt.Errorf("load now: %q", out)
		}
		if rtt := t1 - t0; best < 0 || rtt < best {
			best, off = rtt, gt-(t0+t1)/2
		}
	}
	return off, best / 2, nil
}

// shell reads "a CMD" or "b CMD" lines from stdin and runs them in that
// guest (-shell: for debugging the guests by hand).
func (h *harness) shell(ctx context.Context) error {
	sc := bufio.NewScanner(os.Stdin)
	fmt.Println("shell: 'a CMD' or 'b CMD' runs CMD in that guest; EOF ends")
	for sc.Scan() {
		name, cmd, _ := strings.Cut(sc.Text(), " ")
		g := map[string]*guest{"a": h.a, "b": h.b}[name]
		if g == nil || cmd == "" {
			fmt.Println("want: a|b CMD")
			continue
		}
		out, err := g.run(ctx, 30*time.Minute, cmd)
		fmt.Print(out)
		if err != nil {
			fmt.Println("ERROR:", err)
		}
	}
	return sc.Err()
}

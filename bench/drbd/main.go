package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

//go:embed init.sh
var initScript []byte

// plan is everything the inner (namespaced) process needs; the outer one
// writes it as JSON.
type plan struct {
	Run       string   `json:"run"` // per-run scratch directory (images, logs)
	UML       string   `json:"uml"`
	Initrd    string   `json:"initrd"`
	Mem       string   `json:"mem"`
	Disk      int64    `json:"disk"`
	Rounds    int      `json:"rounds"`
	Workloads []wlSpec `json:"workloads"`
	Configs   []string `json:"configs"`
	Kick      bool     `json:"kick"`
	Raw       string   `json:"raw"`   // raw.jsonl written by the inner process
	Sync      bool     `json:"sync"`  // the mreplfs binary has a sync mode
	Shell     bool     `json:"shell"` // no runs: commands from stdin (debugging)
	Envs      []string `json:"envs"`  // uml, host
	Etc       string   // the configs (host nodes)
}

// wlSpec is one workload: the load subcommand and its size.
type wlSpec struct {
	Name string `json:"name"` // plain, cyrus1, cyrus10
	Mode string `json:"mode"` // plain or cyrus
	N    int    `json:"n"`    // deliveries
	Rcpt int    `json:"rcpt"`
}

var allConfigs = []string{"plain", "drbd-A", "drbd-C", "mreplfs-nojournal", "mreplfs-async", "mreplfs-sync"}

func main() {
	level := slog.LevelInfo
	if os.Getenv("BENCH_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if len(os.Args) == 3 && os.Args[1] == "-inner" {
		if err := inner(os.Args[2], log); err != nil {
			log.Error("inner", "err", err)
			os.Exit(1)
		}
		return
	}
	fl := flag.NewFlagSet("drbd", flag.ExitOnError)
	rounds := fl.Int("rounds", 3, "rounds; each runs every workload on every configuration, interleaved")
	files := fl.Int("files", 300, "plain workload: files per run (cyrus: files/4 deliveries to 1 mailbox, files/40 to 10)")
	smoke := fl.Bool("smoke", false, "one short round (CI): -rounds 1 -files 40, results in the work directory")
	work := fl.String("work", filepath.Join(os.TempDir(), "mreplfs-bench-drbd"), "work directory (package cache, scratch)")
	out := fl.String("out", "bench/drbd/results", "results directory (results.md, chart.svg, raw.jsonl)")
	configs := fl.String("configs", strings.Join(allConfigs, ","), "configurations, in the order run within a round")
	workloads := fl.String("workloads", "plain,cyrus1,cyrus10", "workloads")
	mem := fl.String("mem", "512M", "guest memory")
	envs := fl.String("envs", "uml,host", "environments: uml (two UML guests: every configuration) and host (the fallback: mreplfs in two network namespaces on the host, against a plain directory of the host's disk; no DRBD)")
	kick := fl.Bool("kick", true, "guest b pings a at 100 Hz during runs (UML otherwise leaves packets unprocessed for ~200 ms, REPORT.md gotcha 5)")
	shell := fl.Bool("shell", false, "debugging: boot the guests, then run 'a CMD' / 'b CMD' lines from stdin")
	keep := fl.Bool("keep", false, "keep the scratch directory (images, unpacked packages, guest logs)")
	report := fl.String("report", "", "only rewrite results.md and chart.svg of this results directory from its raw.jsonl and meta.json")
	fl.Parse(os.Args[1:])
	if *report != "" {
		if err := rewriteReport(*report); err != nil {
			log.Error("report", "err", err)
			os.Exit(1)
		}
		return
	}
	if *smoke {
		*rounds, *files = 1, 40
		if !isFlagSet(fl, "out") {
			*out = filepath.Join(*work, "smoke-results")
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := outer(ctx, log, outerOpts{rounds: *rounds, files: *files, work: *work, out: *out, configs: *configs,
		workloads: *workloads, mem: *mem, kick: *kick, keep: *keep, smoke: *smoke, shell: *shell, envs: *envs})
	if err != nil {
		log.Error("bench-drbd failed", "err", err)
		os.Exit(1)
	}
}

func isFlagSet(fl *flag.FlagSet, name string) bool {
	set := false
	fl.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

type outerOpts struct {
	rounds, files                      int
	work, out, configs, workloads, mem string
	envs                               string
	kick, keep, smoke, shell           bool
}

func workloadSpecs(names string, files int) ([]wlSpec, error) {
	var out []wlSpec
	for _, n := range strings.Split(names, ",") {
		switch n {
		case "plain":
			out = append(out, wlSpec{Name: n, Mode: "plain", N: files, Rcpt: 1})
		case "cyrus1":
			out = append(out, wlSpec{Name: n, Mode: "cyrus", N: max(files/4, 1), Rcpt: 1})
		case "cyrus10":
			out = append(out, wlSpec{Name: n, Mode: "cyrus", N: max(files/40, 1), Rcpt: 10})
		default:
			return nil, fmt.Errorf("unknown workload %q (plain, cyrus1, cyrus10)", n)
		}
	}
	return out, nil
}

func outer(ctx context.Context, log *slog.Logger, o outerOpts) (err error) {
	start := time.Now()
	if os.Geteuid() != 0 {
		return errors.New("must run as root (network namespaces, taps, UML guests)")
	}
	for _, t := range []string{"apt-get", "dpkg", "ip", "go"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("host tool %s: %w", t, err)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("/dev/net/tun: %w", err)
	}
	wls, err := workloadSpecs(o.workloads, o.files)
	if err != nil {
		return err
	}
	envs := strings.Split(o.envs, ",")
	for _, e := range envs {
		if e != "uml" && e != "host" {
			return fmt.Errorf("unknown environment %q (uml, host)", e)
		}
	}
	cfgs := strings.Split(o.configs, ",")
	for _, c := range cfgs {
		if !contains(allConfigs, c) {
			return fmt.Errorf("unknown configuration %q (%s)", c, strings.Join(allConfigs, ", "))
		}
	}
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(repo, "cmd/mreplfs")); err != nil {
		return errors.New("run from the repository root (cmd/mreplfs not found)")
	}
	work, err := filepath.Abs(o.work)
	if err != nil {
		return err
	}
	run := filepath.Join(work, "run-"+time.Now().Format("20060102-150405"))
	if err := os.MkdirAll(run, 0o755); err != nil {
		return err
	}
	defer func() {
		if o.keep || err != nil {
			log.Info("scratch directory kept", "dir", run)
			os.RemoveAll(filepath.Join(run, "x"))
			removeGlob(filepath.Join(run, "*.img"))
			return
		}
		os.RemoveAll(run)
	}()
	log.Info("bench-drbd", "rounds", o.rounds, "configs", o.configs, "workloads", o.workloads, "run", run)

	t0 := time.Now()
	a := &assets{x: filepath.Join(run, "x"), bin: filepath.Join(run, "bin"), initrd: filepath.Join(run, "initrd.gz")}
	if err := fetchPackages(ctx, log, filepath.Join(work, "debs"), a.x); err != nil {
		return err
	}
	if err := a.locate(); err != nil {
		return err
	}
	tDebs := time.Since(t0)
	t0 = time.Now()
	for _, b := range [][2]string{{"./bench/drbd/load", "load"}, {"./cmd/mreplfs", "mreplfs"}} {
		if err := buildStatic(ctx, repo, b[0], filepath.Join(a.bin, b[1])); err != nil {
			return err
		}
	}
	tBuild := time.Since(t0)
	t0 = time.Now()
	hasSync, err := mreplfsHasSync(ctx, filepath.Join(a.bin, "mreplfs"))
	if err != nil {
		return err
	}
	if !hasSync && contains(cfgs, "mreplfs-sync") {
		log.Warn("this mreplfs has no sync mode yet: the mreplfs-sync rows are skipped")
	}
	etc := filepath.Join(run, "etc")
	if err := writeGuestConfigs(ctx, filepath.Join(a.bin, "mreplfs"), etc, hasSync); err != nil {
		return err
	}
	if err := buildInitrd(ctx, a, etc); err != nil {
		return err
	}
	log.Info("assets ready", "packages", tDebs.Round(time.Millisecond), "go_build", tBuild.Round(time.Millisecond),
		"initramfs", time.Since(t0).Round(time.Millisecond), "uml_kernel", a.kver)

	p := plan{Run: run, UML: a.uml, Initrd: a.initrd, Mem: o.mem, Disk: 1 << 30, Rounds: o.rounds, Workloads: wls,
		Configs: cfgs, Kick: o.kick, Raw: filepath.Join(run, "raw.jsonl"), Sync: hasSync, Shell: o.shell,
		Envs: envs, Etc: etc}
	pb, _ := json.MarshalIndent(p, "", "  ")
	planPath := filepath.Join(run, "plan.json")
	if err := os.WriteFile(planPath, pb, 0o644); err != nil {
		return err
	}
	innerErr := runInner(ctx, planPath)
	if o.shell {
		return innerErr
	}
	recs, err := readRaw(p.Raw)
	if err != nil || len(recs) == 0 {
		return errors.Join(innerErr, err)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	meta := reportMeta{Rounds: o.rounds, Files: o.files, Workloads: wls, Configs: cfgs, Host: hostInfo(),
		Kernel: a.kver, Wall: time.Since(start), Kick: o.kick, Smoke: o.smoke, Envs: envs, Date: start,
		Incomplete: errString(innerErr), SyncMissing: !hasSync && contains(cfgs, "mreplfs-sync")}
	mb, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(filepath.Join(o.out, "meta.json"), mb, 0o644); err != nil {
		return err
	}
	if err := writeReport(o.out, recs, meta); err != nil {
		return err
	}
	raw, _ := os.ReadFile(p.Raw)
	if err := os.WriteFile(filepath.Join(o.out, "raw.jsonl"), raw, 0o644); err != nil {
		return err
	}
	log.Info("results written", "dir", o.out, "wall", time.Since(start).Round(time.Second))
	if innerErr != nil {
		return fmt.Errorf("incomplete results (%d runs): %w", len(recs), innerErr)
	}
	if bad := failedChecks(recs); len(bad) > 0 {
		return fmt.Errorf("replication checks failed: %s", strings.Join(bad, "; "))
	}
	return nil
}

// runInner re-executes this binary in new network, mount and PID
// namespaces. The inner process is PID 1 there: when it ends, the kernel
// kills every guest it started, and the namespaces go with their taps,
// bridge and tmpfs. It dies with us (Pdeathsig).
func runInner(ctx context.Context, planPath string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "-inner", planPath)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the namespaced harness: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("namespaced harness: %w", err)
		}
		return nil
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		return ctx.Err()
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func removeGlob(g string) {
	m, _ := filepath.Glob(g)
	for _, p := range m {
		os.Remove(p)
	}
}

func hostInfo() string {
	var u syscall.Utsname
	syscall.Uname(&u)
	b := make([]byte, 0, 65)
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	n, _ := exec.Command("nproc").Output()
	return fmt.Sprintf("host kernel %s, %s CPUs", b, strings.TrimSpace(string(n)))
}

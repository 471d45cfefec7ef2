package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// readRaw reads the inner process's raw.jsonl.
func readRaw(p string) ([]record, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

type reportMeta struct {
	Rounds, Files int
	Workloads     []wlSpec
	Configs       []string
	Host, Kernel  string
	Wall          time.Duration
	Kick, Smoke   bool
	Envs          []string
	SyncMissing   bool
	Date          time.Time
	Incomplete    string // why the run stopped early ("" if it did not)
}

// summary is one configuration on one workload, over the rounds.
type summary struct {
	Workload, Config    string
	Runs                int
	PerSec, Min, Max    float64
	Ratio               float64 // median of per-round ratios to plain
	RatioMin, RatioMax  float64
	P50, P99            float64 // medians of the runs' percentiles
	Wire, Tx            float64 // (tx+rx)/payload, tx/payload: medians
	Block               float64 // bytes written to the device / payload
	CPUms               float64 // guest CPU (a+b) per delivery
	ProcMs              float64 // of which the mreplfs processes
	LagP50, LagP99, Cat float64
	Checks, ChecksOK    int
	LatKind             string
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minMax(v []float64) (float64, float64) {
	if len(v) == 0 {
		return 0, 0
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

func summarize(all []record, env, wl string, cfgs []string) []summary {
	var recs []record
	for _, r := range all {
		if r.Env == env {
			recs = append(recs, r)
		}
	}
	plain := map[int]float64{}
	for _, r := range recs {
		if r.Workload == wl && r.Config == "plain" {
			plain[r.Round] = r.Result.PerSec
		}
	}
	var out []summary
	for _, c := range cfgs {
		s := summary{Workload: wl, Config: c}
		var ps, ratio, p50, p99, wire, tx, blk, cpu, proc, l50, l99, cat []float64
		for _, r := range recs {
			if r.Workload != wl || r.Config != c {
				continue
			}
			s.Runs++
			s.LatKind = r.Result.LatKind
			ps = append(ps, r.Result.PerSec)
			if p, ok := plain[r.Round]; ok && p > 0 {
				ratio = append(ratio, r.Result.PerSec/p)
			}
			p50 = append(p50, r.Result.P50ms)
			p99 = append(p99, r.Result.P99ms)
			if r.Result.Payload > 0 {
				wire = append(wire, r.wirePerPayload())
				tx = append(tx, float64(r.TxBytes)/float64(r.Result.Payload))
				blk = append(blk, float64(r.BlockWritten)/float64(r.Result.Payload))
			}
			cpu = append(cpu, float64(r.CPUTicks)*10/float64(r.Result.N))
			proc = append(proc, float64(r.ProcTicks)*10/float64(r.Result.N))
			if strings.HasPrefix(c, "mreplfs") {
				l50, l99, cat = append(l50, r.LagP50ms), append(l99, r.LagP99ms), append(cat, r.CatchUpms)
			}
			if r.Check != "-" {
				s.Checks++
				if r.Check == "ok" {
					s.ChecksOK++
				}
			}
		}
		if s.Runs == 0 {
			continue
		}
		s.PerSec = median(ps)
		s.Min, s.Max = minMax(ps)
		s.Ratio = median(ratio)
		s.RatioMin, s.RatioMax = minMax(ratio)
		s.P50, s.P99 = median(p50), median(p99)
		s.Wire, s.Tx, s.Block, s.CPUms, s.ProcMs = median(wire), median(tx), median(blk), median(cpu), median(proc)
		s.LagP50, s.LagP99, s.Cat = median(l50), median(l99), median(cat)
		out = append(out, s)
	}
	return out
}

var configLabel = map[string]string{
	"plain":             "plain ext4 (no replication)",
	"drbd-A":            "DRBD 8.4 protocol A",
	"drbd-C":            "DRBD 8.4 protocol C",
	"mreplfs-nojournal": "mreplfs mount, no journal (FUSE only)",
	"mreplfs-async":     "mreplfs async",
	"mreplfs-sync":      "mreplfs sync",
}

var envHeading = map[string]string{
	"uml": "## In two UML guests: plain ext4, DRBD and mreplfs side by side",
	"host": "## Fallback without UML: mreplfs in two network namespaces on the host, against a plain directory of the host's disk\n\n" +
		"UML makes every system call and process switch expensive, and FUSE multiplies both (each file operation is a " +
		"round trip through the mreplfs process), so the UML rows above charge mreplfs a toll that DRBD, in the kernel, " +
		"does not pay. Here the same workload and the same mreplfs configurations run on the host (no DRBD: the host kernel " +
		"has no modules); each system is compared with its own plain baseline. The host's disk is shared with other " +
		"tenants; CPU is the workload's and mreplfs's processes only.",
}

var workloadLabel = map[string]string{
	"plain":   "small files (create, write 8–32 KB, fsync, close, rename)",
	"cyrus1":  "Cyrus-shaped delivery, 1 recipient",
	"cyrus10": "Cyrus-shaped delivery, 10 recipients (one body hard-linked into 10 mailboxes)",
}

// rewriteReport rewrites dir's results.md and chart.svg from its raw.jsonl
// and meta.json (after a change to the report's code).
func rewriteReport(dir string) error {
	var m reportMeta
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	recs, err := readRaw(filepath.Join(dir, "raw.jsonl"))
	if err != nil {
		return err
	}
	return writeReport(dir, recs, m)
}

// writeReport writes results.md and chart.svg.
func writeReport(dir string, recs []record, m reportMeta) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# mreplfs vs DRBD in two User-Mode Linux guests\n\n")
	if m.Smoke {
		fmt.Fprintf(&b, "**Smoke run** (one short round): it proves the harness works, its figures mean nothing.\n\n")
	}
	cmd := fmt.Sprintf("make bench-drbd ROUNDS=%d FILES=%d", m.Rounds, m.Files)
	var wls []string
	for _, w := range m.Workloads {
		wls = append(wls, w.Name)
	}
	if strings.Join(wls, ",") != "plain,cyrus1,cyrus10" || strings.Join(m.Configs, ",") != strings.Join(allConfigs, ",") {
		cmd = fmt.Sprintf("go run ./bench/drbd -rounds %d -files %d -workloads %s -configs %s", m.Rounds, m.Files,
			strings.Join(wls, ","), strings.Join(m.Configs, ","))
	}
	fmt.Fprintf(&b, "Generated by `%s` on %s; %s; UML kernel %s, "+
		"2 guests × 512 MB, 1 GiB sparse-file disks; %d rounds, configurations interleaved in every round; whole run %s.\n\n",
		cmd, m.Date.UTC().Format("2006-01-02 15:04 UTC"), m.Host, m.Kernel, m.Rounds, m.Wall.Round(time.Second))
	if m.Incomplete != "" {
		fmt.Fprintf(&b, "**Incomplete**: the run stopped early (%s); the tables hold the runs that finished.\n\n", m.Incomplete)
	}
	fmt.Fprintf(&b, "![chart](chart.svg)\n\n")
	charts := map[string][][]summary{}
	for _, env := range m.Envs {
		fmt.Fprintf(&b, "%s\n\n", envHeading[env])
		for _, wl := range m.Workloads {
			ss := summarize(recs, env, wl.Name, m.Configs)
			charts[env] = append(charts[env], ss)
			if len(ss) == 0 {
				continue
			}
			unit := "deliveries/s"
			if wl.Mode == "plain" {
				unit = "files/s"
			}
			fmt.Fprintf(&b, "### %s — %d per run\n\n", workloadLabel[wl.Name], wl.N)
			cpuHead := "guest CPU ms / delivery (a+b)"
			if env == "host" {
				cpuHead = "CPU ms / delivery (workload + mreplfs processes)"
			}
			fmt.Fprintf(&b, "| configuration | %s median (range) | × plain (per-round median, range) | %s p50 / p99 ms | link bytes / payload byte (a→b only) | device writes / payload | %s | replication lag p50 / p99 ms, last file after end | replica checks |\n", unit, ss[0].LatKind, cpuHead)
			fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|\n")
			for _, s := range ss {
				lag := "–"
				if s.Config == "mreplfs-async" || s.Config == "mreplfs-sync" {
					lag = fmt.Sprintf("%.1f / %.1f, %.0f ms", s.LagP50, s.LagP99, s.Cat)
				}
				checks := "–"
				if s.Checks > 0 {
					checks = fmt.Sprintf("%d/%d ok", s.ChecksOK, s.Checks)
				}
				cpu := fmt.Sprintf("%.1f", s.CPUms)
				if strings.HasPrefix(s.Config, "mreplfs") {
					cpu += fmt.Sprintf(" (mreplfs %.1f)", s.ProcMs)
				}
				wire := "–"
				if s.Config != "plain" && s.Config != "mreplfs-nojournal" {
					wire = fmt.Sprintf("%.2f (%.2f)", s.Wire, s.Tx)
				}
				block := fmt.Sprintf("%.2f", s.Block)
				if env == "host" {
					block = "–" // no device of its own
				}
				fmt.Fprintf(&b, "| %s | %.0f (%.0f–%.0f) | %.2f (%.2f–%.2f) | %.2f / %.1f | %s | %s | %s | %s | %s |\n",
					configLabel[s.Config], s.PerSec, s.Min, s.Max, s.Ratio, s.RatioMin, s.RatioMax, s.P50, s.P99, wire, block, cpu, lag, checks)
			}
			b.WriteString("\n")
		}
	}
	b.WriteString(goals(recs, m))
	if m.SyncMissing {
		b.WriteString("mreplfs sync: not measured — the mreplfs binary built for this run had no `sync_mode` setting yet.\n\n")
	}
	b.WriteString(methodNotes(m))
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "chart.svg"), []byte(chart(charts, m)), 0o644)
}

// goals compares the UML rows with issue 10's goals (the compass's
// performance row).
func goals(recs []record, m reportMeta) string {
	if !contains(m.Envs, "uml") {
		return ""
	}
	var b strings.Builder
	b.WriteString("## The issue's goals, in the UML guests\n\n| workload | goal | measured | met |\n|---|---|---|---|\n")
	yes := map[bool]string{true: "yes", false: "**no**"}
	for _, wl := range m.Workloads {
		by := map[string]summary{}
		for _, s := range summarize(recs, "uml", wl.Name, m.Configs) {
			by[s.Config] = s
		}
		for _, g := range [][2]string{{"mreplfs-sync", "drbd-C"}, {"mreplfs-async", "drbd-A"}} {
			mr, okM := by[g[0]]
			dr, okD := by[g[1]]
			if okM && okD {
				fmt.Fprintf(&b, "| %s | %s × plain ≥ %s × plain | %.2f vs %.2f | %s |\n", wl.Name, configShort[g[0]], configShort[g[1]],
					mr.Ratio, dr.Ratio, yes[mr.Ratio >= dr.Ratio])
			}
		}
		for _, c := range []string{"mreplfs-async", "mreplfs-sync"} {
			if s, ok := by[c]; ok {
				fmt.Fprintf(&b, "| %s | %s bytes sent on the link ≤ 1.1 × payload (DRBD C: %.2f) | %.2f (both directions: %.2f) | %s |\n",
					wl.Name, configShort[c], by["drbd-C"].Tx, s.Tx, s.Wire, yes[s.Tx <= 1.1])
			}
		}
	}
	b.WriteString("\nBytes sent (a→b) is what DRBD's reference figure counts; both directions add the replica's acks (and TCP's).\n\n")
	return b.String()
}

func methodNotes(m reportMeta) string {
	kick := "guest b pinged a at 100 Hz during every run (the \"kicker\": UML otherwise sometimes leaves a received packet unprocessed until the next one arrives, ~200 ms later); its ICMP bytes are subtracted from the link bytes"
	if !m.Kick {
		kick = "no kicker ping ran (-kick=false)"
	}
	return fmt.Sprintf(`## How to read this

- **Same environment for everything.** Every configuration runs inside the same two UML guests (Debian's user-mode-linux
  6.1 with its in-kernel DRBD 8.4.11 and fuse.ko), on a bridge of taps in a private network namespace. The workload
  runs in guest a; DRBD's secondary and mreplfs's receiving peer run in guest b. Every run starts on a freshly made
  ext4 (lazy init off), so no run inherits another's state.
- **Interleaved rounds.** Each round runs every configuration once per workload, one after the other, so that load from
  other tenants of this shared 2-CPU machine spreads over all of them. Figures are medians over rounds with the range
  (min–max); "× plain" is the median of the per-round ratios to the plain run of the same round. Expect large ranges:
  other agents run tests on this machine at the same time.
- **Latency.** "fsync" is the fsync() call of each file; "delivery" is one whole Cyrus-shaped delivery (for one
  recipient: link, fsync, cache append + fsync, index write + fsync, quota rewrite + fsync + rename; ten times that for
  ten recipients).
- **Link bytes** are guest a's NIC counters (both directions; a→b alone in brackets) from just before the workload until
  replication has caught up, divided by the payload the workload wrote (bodies once, plus index/cache/quota bytes).
  Bodies are random bytes, so compression helps neither system. %s.
- **Device writes / payload**: bytes written to the device under the file system (DRBD: /dev/drbd0, which DRBD ships
  whole; plain and mreplfs: the plain virtual disk, including mreplfs's journal).
- **CPU per delivery**, UML: the busy time (user+system+irq) of both guests' /proc/stat over the same window, less the
  kicker ping and the lag watcher; in brackets the mreplfs processes' share. It is UML CPU, which costs far more per
  system call and per process switch than a real or KVM kernel; compare rows, not absolute values. Host: the workload
  process and the mreplfs processes only (the host's /proc/stat is shared with other tenants); kernel threads (ext4
  journal, writeback) are not counted there.
- **Replication lag** (mreplfs only): for each delivery, the time from its completion on a to the moment its last
  message file exists in b's backing tree (polled every 5 ms), with the two clocks' offset measured through the
  command agent (uncertainty about a millisecond). A Cyrus-shaped delivery writes its message file before its index and
  quota, so replication can overtake the end of the delivery: a negative lag means the file was on the replica before
  the delivery finished (in sync mode a Cyrus-shaped delivery's must be: the message file's fsync waits for the replica;
  the plain workload's file is fsynced under tmp/ and renamed to new/ without another fsync, so its new/ name may arrive
  after the workload moved on). "last file after end" is how long after the workload ended the
  replica had everything. DRBD protocol C has no lag by construction; protocol A's is not measured.
- **mreplfs sync** runs with "sync_mode: sync", "sync_timeout: 60s", "sync_policy: degrade"; a run that degraded to
  async would say so in raw.jsonl (sync_degrades).
- **mreplfs, no journal** is the mount alone ("journal: none", no peers): what FUSE costs in that environment, before any
  replication.
- **Replica checks**: DRBD: a demoted, b promoted and mounted read-only; mreplfs: b's backing trees. Each compares one
  SHA-256 over every file (type, mode, size, content; message files' mtimes) with a's.
- **Caveats.** The virtual disks are sparse files on the same host disk (a guest's flush becomes a host fsync), so
  primary and secondary compete for one device and 2 CPUs; the guest-to-guest network is a same-host bridge whose
  latency UML inflates (ping 0.4–1.5 ms). The absolute numbers belong to this environment; ratios to plain, bytes per
  payload byte and relative CPU are the portable part. DRBD is 8.4 (in-tree), not DRBD 9.
`, kick)
}

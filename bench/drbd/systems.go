package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// record is one run: one workload on one configuration in one round.
type record struct {
	Env      string     `json:"env"` // uml or host
	Round    int        `json:"round"`
	Workload string     `json:"workload"`
	Config   string     `json:"config"`
	Result   loadResult `json:"result"`
	// Counters of guests a and b before the workload and once replication
	// has caught up (DRBD: nothing pending; mreplfs: the last delivery's
	// file is on b).
	A0, A1, B0, B1 counters            `json:"-"`
	Counters       map[string]counters `json:"counters"`
	TxBytes        int64               `json:"tx_bytes"` // a's NIC, kicker pings subtracted
	RxBytes        int64               `json:"rx_bytes"`
	CPUTicks       int64               `json:"cpu_ticks"` // a+b busy, USER_HZ (100/s)
	BlockWritten   int64               `json:"block_written"`
	ProcTicks      int64               `json:"mreplfs_ticks"` // the mreplfs processes of a and b, USER_HZ
	// mreplfs: lag of each delivery (its last file on b's backing tree after
	// its completion on a), and of the last one after the workload ended.
	LagP50ms  float64 `json:"lag_p50_ms,omitempty"`
	LagP99ms  float64 `json:"lag_p99_ms,omitempty"`
	LagMaxms  float64 `json:"lag_max_ms,omitempty"`
	CatchUpms float64 `json:"catch_up_ms,omitempty"`
	// mreplfs sync: fsyncs that waited for the replica, and ack timeouts or
	// degrades to async (non-zero: the row was partly async).
	SyncWaits    int64   `json:"sync_waits,omitempty"`
	SyncDegrades int64   `json:"sync_degrades,omitempty"`
	ClockErrms   float64 `json:"clock_err_ms,omitempty"`
	Check        string  `json:"check"` // ok, failed: …, or "-" (nothing to check)
	Digest       string  `json:"digest"`
	HostLoad     string  `json:"host_load"`
	WallS        float64 `json:"wall_s"`
}

// loadResult is load's RESULT line.
type loadResult struct {
	Mode     string  `json:"mode"`
	N        int     `json:"n"`
	Rcpt     int     `json:"rcpt"`
	Payload  int64   `json:"payload_bytes"`
	Secs     float64 `json:"secs"`
	PerSec   float64 `json:"per_s"`
	LatKind  string  `json:"latency_of"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	StartNs  int64   `json:"start_ns"`
	FinishNs int64   `json:"finish_ns"`
	CPUms    int64   `json:"cpu_ms"`
}

func (r *record) wirePerPayload() float64 {
	if r.Result.Payload == 0 {
		return 0
	}
	return float64(r.TxBytes+r.RxBytes) / float64(r.Result.Payload)
}

const (
	mkfs      = "mkfs.ext4 -F -q -E lazy_itable_init=1,lazy_journal_init=1,nodiscard"
	mountOpts = "-o noinit_itable"
	// GODEBUG: a Go client of a FUSE mount otherwise causes INTERRUPT storms
	// (FUSE.md G9).
	goenv    = "GODEBUG=asyncpreemptoff=1"
	waitDRBD = `for i in $(seq 600); do grep -q "cs:Connected.*UpToDate/UpToDate" /proc/drbd && break; sleep 0.1; done; grep -q "cs:Connected.*UpToDate/UpToDate" /proc/drbd || { cat /proc/drbd; false; }`
)

func accountsOf(wl wlSpec) string {
	if wl.Mode == "plain" {
		return "plainbox"
	}
	return strings.Join(benchAccounts[1:], ",")
}

// runOne runs workload wl on configuration cfg.
func (h *harness) runOne(ctx context.Context, round, wi int, wl wlSpec, cfg string) (rec record, err error) {
	rec = record{Round: round, Workload: wl.Name, Config: cfg, Check: "-"}
	a, b := h.a, h.b
	T := 5 * time.Minute
	var root, replicaRoot string
	var teardown []func()
	defer func() {
		for i := len(teardown) - 1; i >= 0; i-- {
			teardown[i]()
		}
	}()
	cleanup := func(g *guest, cmd string) {
		teardown = append(teardown, func() {
			if ctx.Err() != nil {
				return // interrupted: the guests are being stopped anyway
			}
			if _, terr := g.run(context.WithoutCancel(ctx), T, cmd); terr != nil && err == nil {
				err = fmt.Errorf("teardown: %w", terr)
			}
		})
	}
	switch {
	case cfg == "plain":
		if _, err := a.run(ctx, T, "freshdisk"); err != nil {
			return rec, err
		}
		cleanup(a, "umount "+gPlain)
		root = gPlain
	case strings.HasPrefix(cfg, "drbd-"):
		if err := h.drbdUpWith(ctx, strings.TrimPrefix(cfg, "drbd-")); err != nil {
			return rec, err
		}
		if _, err := a.run(ctx, T, fmt.Sprintf("drbdadm primary r0 && %s /dev/drbd0 && mount %s /dev/drbd0 %s", mkfs, mountOpts, gDRBD)); err != nil {
			return rec, err
		}
		root = gDRBD
	case cfg == "mreplfs-nojournal":
		// The FUSE toll alone: the mount without a journal, no peers.
		if _, err := a.run(ctx, T, fmt.Sprintf("freshdisk && mkdir -p %s/conf %s/spool %s/meta %s/conf %s/spool %s/meta",
			gBacking, gBacking, gBacking, gMount, gMount, gMount)); err != nil {
			return rec, err
		}
		cleanup(a, "umount "+gPlain)
		if err := startMount(ctx, a, "nojournal"); err != nil {
			return rec, err
		}
		cleanup(a, stopMount)
		root = gMount
	case strings.HasPrefix(cfg, "mreplfs-"):
		mode := strings.TrimPrefix(cfg, "mreplfs-")
		for _, g := range []*guest{a, b} {
			if _, err := g.run(ctx, T, fmt.Sprintf("freshdisk && mkdir -p %s/conf %s/spool %s/meta %s/journal %s/state %s/conf %s/spool %s/meta",
				gBacking, gBacking, gBacking, gPlain, gPlain, gMount, gMount, gMount)); err != nil {
				return rec, err
			}
			cleanup(g, "umount "+gPlain)
		}
		// b: the receiving peer. a: the mount, then the sending peer.
		if _, err := b.run(ctx, T, fmt.Sprintf("%s mreplfs peer -config %s/b-peer.conf > /tmp/peer.log 2>&1 & echo $! > /run/peer.pid", goenv, gEtc)); err != nil {
			return rec, err
		}
		cleanup(b, stopwaitFn+"stopwait /run/peer.pid; rm -f /run/peer.pid")
		if err := startMount(ctx, a, mode); err != nil {
			return rec, err
		}
		cleanup(a, stopMount)
		if _, err := a.run(ctx, T, fmt.Sprintf("%s mreplfs peer -config %s/a-peer.conf > /tmp/peer.log 2>&1 & echo $! > /run/peer.pid; "+
			`for i in $(seq 600); do grep -q '"connected": true' %s/state/status.json 2>/dev/null && break; sleep 0.05; done; grep -q '"connected": true' %s/state/status.json || { cat /tmp/peer.log; false; }`,
			goenv, gEtc, gPlain, gPlain)); err != nil {
			return rec, err
		}
		cleanup(a, stopwaitFn+"stopwait /run/peer.pid; rm -f /run/peer.pid")
		root, replicaRoot = gMount, gBacking
	default:
		return rec, fmt.Errorf("unknown configuration %q", cfg)
	}

	seed := round*100 + wi
	args := fmt.Sprintf("-root %s -n %d -seed %d", root, wl.N, seed)
	if wl.Mode == "cyrus" {
		args += fmt.Sprintf(" -rcpt %d", wl.Rcpt)
	}
	var offA, offB, errA, errB int64
	if replicaRoot != "" {
		if offA, errA, err = h.clockOffset(ctx, a); err != nil {
			return rec, err
		}
		if offB, errB, err = h.clockOffset(ctx, b); err != nil {
			return rec, err
		}
		watch := strings.Replace(args, "-root "+root, "-root "+replicaRoot, 1)
		if _, err := b.run(ctx, T, fmt.Sprintf("rm -f /tmp/watch.out; load watch -mode %s %s -out /tmp/watch.out > /tmp/watch.log 2>&1 &", wl.Mode, watch)); err != nil {
			return rec, err
		}
	}
	if rec.A0, err = h.stat(ctx, a, h.env != "host"); err != nil {
		return rec, err
	}
	if rec.B0, err = h.stat(ctx, b, false); err != nil {
		return rec, err
	}
	out, err := a.run(ctx, 2*time.Hour, fmt.Sprintf("%s load %s %s -done /tmp/done.txt", goenv, wl.Mode, args))
	if err != nil {
		return rec, err
	}
	for _, l := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(l, "RESULT "); ok {
			if err := json.Unmarshal([]byte(s), &rec.Result); err != nil {
				return rec, err
			}
		}
	}
	if rec.Result.N == 0 {
		return rec, fmt.Errorf("workload printed no RESULT: %s", lastLines([]byte(out), 8))
	}
	// Settle: replication has caught up.
	switch {
	case strings.HasPrefix(cfg, "drbd-"):
		if _, err := a.run(ctx, T, `for i in $(seq 3000); do grep -q "pe:0 ua:0 ap:0" /proc/drbd && break; sleep 0.02; done; grep -q "pe:0 ua:0 ap:0" /proc/drbd || { cat /proc/drbd; false; }`); err != nil {
			return rec, err
		}
	case replicaRoot != "":
		if _, err := b.run(ctx, 30*time.Minute, `for i in $(seq 12000); do tail -n1 /tmp/watch.out 2>/dev/null | grep -qE "^(END|TIMEOUT)" && break; sleep 0.05; done; tail -n1 /tmp/watch.out | grep -q "^END" || { tail -n3 /tmp/watch.out /tmp/watch.log /tmp/peer.log; false; }`); err != nil {
			return rec, err
		}
	}
	if cfg == "mreplfs-sync" {
		out, err := a.run(ctx, T, "mreplfs status -control "+gPlain+"/journal/control.sock")
		if err != nil {
			return rec, err
		}
		var st struct {
			Status struct {
				Sync struct {
					Waits, Timeouts, Degrades int64
				} `json:"sync"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return rec, fmt.Errorf("mreplfs status: %w: %s", err, out)
		}
		rec.SyncWaits, rec.SyncDegrades = st.Status.Sync.Waits, st.Status.Sync.Degrades+st.Status.Sync.Timeouts
	}
	if rec.A1, err = h.stat(ctx, a, false); err != nil {
		return rec, err
	}
	if rec.B1, err = h.stat(ctx, b, false); err != nil {
		return rec, err
	}
	rec.fillCounters(cfg)
	if h.env == "host" {
		// /proc/stat is the whole shared host's: count the workload and the
		// mreplfs processes only.
		rec.CPUTicks = rec.Result.CPUms/10 + rec.ProcTicks
	}
	rec.Counters = map[string]counters{"a0": rec.A0, "a1": rec.A1, "b0": rec.B0, "b1": rec.B1}
	if replicaRoot != "" {
		if err := h.lags(ctx, &rec, offA-offB, errA+errB); err != nil {
			return rec, err
		}
	}
	// Check: the replica holds exactly what the writer wrote.
	digest := func(g *guest, root string) (string, error) {
		out, err := g.run(ctx, T, fmt.Sprintf("load digest -root %s -accounts %s", root, accountsOf(wl)))
		return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "DIGEST ")), err
	}
	switch {
	case cfg == "plain":
		rec.Digest, err = digest(a, root)
		if err != nil {
			return rec, err
		}
	case strings.HasPrefix(cfg, "drbd-"):
		if rec.Digest, err = digest(a, gDRBD); err != nil {
			return rec, err
		}
		if _, err := a.run(ctx, T, "umount "+gDRBD+" && drbdadm secondary r0"); err != nil {
			return rec, err
		}
		if _, err := b.run(ctx, T, waitDRBD+" && drbdadm primary r0 && mount -o ro /dev/drbd0 "+gDRBD); err != nil {
			return rec, err
		}
		db, err := digest(b, gDRBD)
		if _, uerr := b.run(ctx, T, "umount "+gDRBD+" && drbdadm secondary r0"); uerr != nil && err == nil {
			err = uerr
		}
		if err != nil {
			return rec, err
		}
		rec.Check = checkResult(rec.Digest, db)
	case replicaRoot == "":
		// Not replicated (the FUSE-only mount): nothing to compare.
		if rec.Digest, err = digest(a, root); err != nil {
			return rec, err
		}
	default:
		// The last records (index, quota) may follow the last message file.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if rec.Digest, err = digest(a, gBacking); err != nil {
				return rec, err
			}
			db, err := digest(b, gBacking)
			if err != nil {
				return rec, err
			}
			rec.Check = checkResult(rec.Digest, db)
			if rec.Check == "ok" || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	if l, err := os.ReadFile("/proc/loadavg"); err == nil {
		rec.HostLoad = strings.Fields(string(l))[0]
	}
	return rec, nil
}

// stopwaitFn defines stopwait PIDFILE: SIGTERM, wait up to 15 s for the
// process to end (a zombie has ended: on the host nodes nobody reaps the
// orphans), then SIGKILL.
const stopwaitFn = `stopwait() { p=$(cat $1); kill $p; for i in $(seq 300); do grep -qs "^State:.[^Z]" /proc/$p/status || return 0; sleep 0.05; done; kill -9 $p; }; `

const stopMount = stopwaitFn + "stopwait /run/mount.pid; rm -f /run/mount.pid; umount " +
	gMount + "/conf " + gMount + "/spool " + gMount + "/meta 2>/dev/null; true"

// startMount starts mreplfs mount in g with a-mount-MODE.conf and waits
// until it is ready.
func startMount(ctx context.Context, g *guest, mode string) error {
	_, err := g.run(ctx, 5*time.Minute, fmt.Sprintf("rm -f /run/mount.ready; %s mreplfs mount -config %s/a-mount-%s.conf -ready-fd 3 3>/run/mount.ready > /tmp/mount.log 2>&1 & echo $! > /run/mount.pid; "+
		"for i in $(seq 600); do grep -q ready /run/mount.ready && break; sleep 0.05; done; grep -q ready /run/mount.ready || { cat /tmp/mount.log; false; }", goenv, gEtc, mode))
	return err
}

func checkResult(a, b string) string {
	if a == b {
		return "ok"
	}
	return fmt.Sprintf("failed: a %s, b %s", a, b)
}

// fillCounters turns the snapshots into the run's figures.
func (r *record) fillCounters(cfg string) {
	// Kicker: b sends echo requests, a answers; each frame is 98 bytes.
	icmp := func(k string) int64 { return r.A1.ICMP[k] - r.A0.ICMP[k] }
	r.TxBytes = r.A1.TxBytes - r.A0.TxBytes - 98*(icmp("OutEchoReps")+icmp("OutEchos"))
	// The vector driver counts a received frame without its 14-byte
	// Ethernet header (84 bytes for a ping), a sent one with it (98).
	r.RxBytes = r.A1.RxBytes - r.A0.RxBytes - 84*(icmp("InEchos")+icmp("InEchoReps"))
	// Both guests' busy time, less the kicker's own (the watcher's is
	// subtracted in lags).
	r.CPUTicks = (r.A1.CPUBusy - r.A0.CPUBusy) + (r.B1.CPUBusy - r.B0.CPUBusy) -
		(r.A1.Procs["kick"] - r.A0.Procs["kick"]) - (r.B1.Procs["kick"] - r.B0.Procs["kick"])
	for k, v := range r.A1.Procs {
		if k != "kick" {
			r.ProcTicks += v - r.A0.Procs[k]
		}
	}
	for k, v := range r.B1.Procs {
		if k != "kick" {
			r.ProcTicks += v - r.B0.Procs[k]
		}
	}
	dev := "ubdb"
	if strings.HasPrefix(cfg, "drbd-") {
		dev = "drbd0"
	}
	r.BlockWritten = 512 * (r.A1.Written[dev] - r.A0.Written[dev])
}

// lags joins a's completion times with b's arrival times. skew is a's clock
// minus b's.
func (h *harness) lags(ctx context.Context, rec *record, skew, errNs int64) error {
	done, err := h.a.run(ctx, 5*time.Minute, "cat /tmp/done.txt")
	if err != nil {
		return err
	}
	arrived, err := h.b.run(ctx, 5*time.Minute, "cat /tmp/watch.out")
	if err != nil {
		return err
	}
	at := map[string]int64{}
	for _, l := range strings.Split(arrived, "\n") {
		if ms, ok := strings.CutPrefix(l, "END cpu_ms="); ok {
			v, _ := strconv.ParseInt(strings.TrimSpace(ms), 10, 64)
			if h.env != "host" {
				rec.CPUTicks -= v / 10 // the watcher is ours, not replication's
			}
		}
		if f := strings.Fields(l); len(f) == 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			at[f[0]] = v + skew // on a's clock
		}
	}
	var lag []float64
	var last int64
	for _, l := range strings.Split(done, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		d, _ := strconv.ParseInt(f[1], 10, 64)
		arr, ok := at[f[0]]
		if !ok {
			return fmt.Errorf("lag: %s never seen on b", f[0])
		}
		lag = append(lag, float64(arr-d)/1e6)
		last = max(last, arr)
	}
	if len(lag) == 0 {
		return fmt.Errorf("lag: no deliveries in a's done file")
	}
	sort.Float64s(lag)
	q := func(p float64) float64 { return lag[int(p*float64(len(lag)-1))] }
	rec.LagP50ms, rec.LagP99ms, rec.LagMaxms = q(0.5), q(0.99), q(1)
	rec.CatchUpms = float64(last-rec.Result.FinishNs) / 1e6
	rec.ClockErrms = float64(errNs) / 1e6
	return nil
}

// drbdUpWith brings the DRBD resource up (first time) or switches it to
// protocol p, connected and UpToDate on both sides, a and b Secondary.
func (h *harness) drbdUpWith(ctx context.Context, p string) error {
	T := 5 * time.Minute
	for _, g := range h.guests {
		if _, err := g.run(ctx, T, fmt.Sprintf("cp /etc/drbd-%s.conf /etc/drbd.conf", p)); err != nil {
			return err
		}
	}
	if !h.drbdUp {
		for _, g := range h.guests {
			if _, err := g.run(ctx, T, "drbdadm create-md --force r0 >/dev/null 2>&1 && drbdadm up r0"); err != nil {
				return err
			}
		}
		// Both backing files are zeroes: skip the initial full sync.
		if _, err := h.a.run(ctx, T, `for i in $(seq 600); do grep -q cs:Connected /proc/drbd && break; sleep 0.1; done; drbdadm -- --clear-bitmap new-current-uuid r0`); err != nil {
			return err
		}
		h.drbdUp = true
	} else if h.lastProto != p {
		for _, g := range h.guests {
			if _, err := g.run(ctx, T, "drbdadm adjust r0"); err != nil {
				return err
			}
		}
	}
	h.lastProto = p
	if _, err := h.a.run(ctx, T, waitDRBD); err != nil {
		return err
	}
	_, err := h.a.run(ctx, T, fmt.Sprintf("grep -q ' %s r' /proc/drbd || { cat /proc/drbd; false; }", p))
	return err
}

// failedChecks lists the runs whose replica check failed.
func failedChecks(recs []record) []string {
	var bad []string
	for _, r := range recs {
		if r.Check != "ok" && r.Check != "-" {
			bad = append(bad, fmt.Sprintf("round %d %s %s: %s", r.Round, r.Workload, r.Config, r.Check))
		}
	}
	return bad
}

// counters is load stat's STAT line (bench/drbd/load/stat.go).
type counters struct {
	TimeNs   int64            `json:"time_ns"`
	CPUBusy  int64            `json:"cpu_busy_ticks"`
	CPUIdle  int64            `json:"cpu_idle_ticks"`
	NIC      string           `json:"nic"`
	TxBytes  int64            `json:"tx_bytes"`
	RxBytes  int64            `json:"rx_bytes"`
	ICMP     map[string]int64 `json:"icmp"`
	DRBDSent int64            `json:"drbd_ns_kib"`
	Written  map[string]int64 `json:"sectors_written"`
	Procs    map[string]int64 `json:"proc_ticks,omitempty"`
}

package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"mreplfs/bench/cyrusload"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: load plain|cyrus|watch|digest|stat|now [flags]")
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"plain": runPlain, "cyrus": runCyrus, "watch": runWatch, "digest": runDigest,
		"stat": runStat, "now": func([]string) error { fmt.Println(time.Now().UnixNano()); return nil },
	}
	f, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "load: unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
	if err := f(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "load %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// shape is what both the writer and the watcher must agree on to name the
// files of a run.
type shape struct {
	mode     string // plain or cyrus
	n        int
	rcpt     int
	accounts []string
	seed     uint64
	min, max int
}

func shapeFlags(fl *flag.FlagSet, mode string) (*shape, *string, *string) {
	s := &shape{mode: mode}
	root := fl.String("root", "", "directory holding conf/, spool/ and meta/")
	accts := fl.String("accounts", "", "comma-separated accounts (default: "+defaultCyrusAccounts+" for cyrus, plainbox for plain)")
	fl.IntVar(&s.n, "n", 2000, "deliveries")
	fl.IntVar(&s.rcpt, "rcpt", 1, "cyrus: mailboxes per delivery (1: round robin over the accounts; K: the first K accounts)")
	fl.Uint64Var(&s.seed, "seed", 1, "random seed (sizes and bodies)")
	fl.IntVar(&s.min, "min", 8192, "smallest body")
	fl.IntVar(&s.max, "max", 32768, "largest body")
	return s, root, accts
}

// defaultCyrusAccounts are the mailboxes of the cyrus workload.
const defaultCyrusAccounts = "mbox00,mbox01,mbox02,mbox03,mbox04,mbox05,mbox06,mbox07,mbox08,mbox09"

func (s *shape) check(root, accts string) error {
	switch {
	case accts != "":
	case s.mode == "plain":
		accts = "plainbox"
	default:
		accts = defaultCyrusAccounts
	}
	s.accounts = strings.Split(accts, ",")
	switch {
	case root == "":
		return errors.New("no -root")
	case s.n <= 0 || s.min <= 0 || s.max < s.min:
		return errors.New("want -n > 0 and 0 < -min <= -max")
	case s.mode == "plain" && len(s.accounts) != 1:
		return errors.New("plain: give one account")
	case s.rcpt < 1 || s.rcpt > len(s.accounts):
		return fmt.Errorf("-rcpt %d: between 1 and the number of accounts (%d)", s.rcpt, len(s.accounts))
	}
	return nil
}

// plainName is the i-th file of the plain workload (maildir style).
func plainName(i int) string { return fmt.Sprintf("%d.M%dP1.bench", 1700000000+i, i) }

// expected lists, per delivery, the path (relative to the root) of the
// last file it creates: what the replica must show for it to be there.
func (s *shape) expected() []string {
	out := make([]string, 0, s.n)
	uids := map[string]int{}
	for i := 0; i < s.n; i++ {
		if s.mode == "plain" {
			out = append(out, filepath.Join("spool/user", s.accounts[0], "new", plainName(i)))
			continue
		}
		var last string
		for _, mb := range s.mailboxes(i) {
			uids[mb]++
			last = fmt.Sprintf("spool/user/%s/%d.", mb, uids[mb])
		}
		out = append(out, last)
	}
	return out
}

func (s *shape) mailboxes(i int) []string {
	if s.rcpt == 1 {
		return []string{s.accounts[i%len(s.accounts)]}
	}
	return s.accounts[:s.rcpt]
}

// result is the RESULT line of a run.
type result struct {
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
	CPUms    int64   `json:"cpu_ms"` // this process, user+system
}

func (r *result) finish(lat []time.Duration, start time.Time) {
	end := time.Now()
	r.Secs = end.Sub(start).Seconds()
	r.PerSec = float64(r.N) / r.Secs
	r.StartNs, r.FinishNs = start.UnixNano(), end.UnixNano()
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	r.P50ms, r.P99ms, r.MaxMs = q(0.5), q(0.99), q(1)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	r.CPUms = (ru.Utime.Nano() + ru.Stime.Nano()) / 1e6
	b, _ := json.Marshal(r)
	fmt.Printf("RESULT %s\n", b)
}

// doneLog records when each delivery completed.
type doneLog struct {
	w *bufio.Writer
	f *os.File
}

func openDone(p string) (*doneLog, error) {
	if p == "" {
		return &doneLog{w: bufio.NewWriter(io.Discard)}, nil
	}
	f, err := os.Create(p)
	if err != nil {
		return nil, err
	}
	return &doneLog{w: bufio.NewWriter(f), f: f}, nil
}

func (d *doneLog) add(rel string, t time.Time) { fmt.Fprintf(d.w, "%s %d\n", rel, t.UnixNano()) }

func (d *doneLog) close() error {
	err := d.w.Flush()
	if d.f != nil {
		if cerr := d.f.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

func body(rng *rand.Rand, s *shape) []byte {
	b := make([]byte, s.min+rng.IntN(s.max-s.min+1))
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func syncDir(d string) error {
	f, err := os.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func runPlain(args []string) error {
	fl := flag.NewFlagSet("plain", flag.ExitOnError)
	s, root, accts := shapeFlags(fl, "plain")
	done := fl.String("done", "", "write each delivery's completion time here")
	fl.Parse(args)
	if err := s.check(*root, *accts); err != nil {
		return err
	}
	dir := filepath.Join(*root, "spool/user", s.accounts[0])
	tmp, nw := filepath.Join(dir, "tmp"), filepath.Join(dir, "new")
	for _, d := range []string{tmp, nw} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	for _, d := range []string{filepath.Dir(dir), dir, tmp, nw} {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	dl, err := openDone(*done)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(s.seed, 1))
	names := s.expected()
	r := &result{Mode: "plain", N: s.n, Rcpt: 1, LatKind: "fsync"}
	lat := make([]time.Duration, 0, s.n)
	start := time.Now()
	for i := 0; i < s.n; i++ {
		b := body(rng, s)
		name := plainName(i)
		tp := filepath.Join(tmp, name)
		f, err := os.OpenFile(tp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
		t0 := time.Now()
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("fsync %s: %w", tp, err)
		}
		lat = append(lat, time.Since(t0))
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(tp, filepath.Join(nw, name)); err != nil {
			return err
		}
		r.Payload += int64(len(b))
		dl.add(names[i], time.Now())
	}
	r.finish(lat, start)
	return dl.close()
}

func runCyrus(args []string) error {
	fl := flag.NewFlagSet("cyrus", flag.ExitOnError)
	s, root, accts := shapeFlags(fl, "cyrus")
	done := fl.String("done", "", "write each delivery's completion time here")
	fl.Parse(args)
	if err := s.check(*root, *accts); err != nil {
		return err
	}
	sp := cyrusload.Spool{Conf: filepath.Join(*root, "conf"), Spool: filepath.Join(*root, "spool"), Meta: filepath.Join(*root, "meta")}
	for _, d := range []string{sp.Conf, sp.Spool, sp.Meta} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	dl, err := openDone(*done)
	if err != nil {
		return err
	}
	d := cyrusload.New(sp)
	rng := rand.New(rand.NewPCG(s.seed, 2))
	r := &result{Mode: "cyrus", N: s.n, Rcpt: s.rcpt, LatKind: "delivery"}
	lat := make([]time.Duration, 0, s.n)
	start := time.Now()
	for i := 0; i < s.n; i++ {
		b := body(rng, s)
		t0 := time.Now()
		got, err := d.Deliver(s.mailboxes(i), b)
		if err != nil {
			return err
		}
		lat = append(lat, time.Since(t0))
		dl.add("spool/"+got.Files[len(got.Files)-1], got.At)
	}
	r.Payload = d.Payload()
	r.finish(lat, start)
	return dl.close()
}

// runWatch polls, in order, for each delivery's last file under -root and
// prints "relpath unixnano" when it appears; it ends after the last one or
// at -timeout (then it prints "TIMEOUT relpath").
func runWatch(args []string) error {
	fl := flag.NewFlagSet("watch", flag.ExitOnError)
	mode := fl.String("mode", "cyrus", "plain or cyrus: the writer's workload")
	s, root, accts := shapeFlags(fl, "")
	out := fl.String("out", "", "output file (default stdout)")
	poll := fl.Duration("poll", 5*time.Millisecond, "poll interval")
	timeout := fl.Duration("timeout", 30*time.Minute, "give up after this long")
	fl.Parse(args)
	s.mode = *mode
	if err := s.check(*root, *accts); err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = bufio.NewWriter(f)
	}
	defer w.Flush()
	deadline := time.Now().Add(*timeout)
	for _, rel := range s.expected() {
		p := filepath.Join(*root, rel)
		for {
			if _, err := os.Lstat(p); err == nil {
				fmt.Fprintf(w, "%s %d\n", rel, time.Now().UnixNano())
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(w, "TIMEOUT %s\n", rel)
				return nil
			}
			time.Sleep(*poll)
		}
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Fprintf(w, "END cpu_ms=%d\n", (ru.Utime.Nano()+ru.Stime.Nano())/1e6)
	return nil
}

func runDigest(args []string) error {
	fl := flag.NewFlagSet("digest", flag.ExitOnError)
	root := fl.String("root", "", "directory holding conf/, spool/ and meta/")
	accts := fl.String("accounts", "", "comma-separated accounts")
	fl.Parse(args)
	if *root == "" || *accts == "" {
		return errors.New("need -root and -accounts")
	}
	sp := cyrusload.Spool{Conf: filepath.Join(*root, "conf"), Spool: filepath.Join(*root, "spool"), Meta: filepath.Join(*root, "meta")}
	var lines []string
	files := 0
	for _, a := range strings.Split(*accts, ",") {
		d, err := cyrusload.Digest(sp, a)
		if err != nil {
			return err
		}
		for k, v := range d {
			lines = append(lines, k+" "+v)
			if strings.HasPrefix(v, "file ") {
				files++
			}
		}
	}
	sort.Strings(lines)
	h := sha256.New()
	for _, l := range lines {
		io.WriteString(h, l+"\n")
	}
	fmt.Printf("DIGEST files=%d sha256=%x\n", files, h.Sum(nil))
	return nil
}

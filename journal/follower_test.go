package journal_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mreplfs/journal"
)

// writerEnv makes the test binary a writer process (TestMain): the journal's
// real writer, in another process than the Follower under test.
const (
	writerEnv     = "MREPLFS_JOURNAL_WRITER_CHILD"
	writerArgsEnv = "MREPLFS_JOURNAL_WRITER_ARGS"
)

// childArgs are the writer child's parameters, "key=value" separated by
// spaces: mode (load, pace), round, writers, count (records, 0 = until
// killed or stdin closes), seg (segment size), pace (a duration between
// records of one writer).
type childArgs struct {
	mode           string
	round, writers int
	count          int
	seg            int64
	pace           time.Duration
}

func parseChildArgs(s string) childArgs {
	a := childArgs{mode: "load", writers: 4, seg: 16 << 10}
	for _, kv := range strings.Fields(s) {
		k, v, _ := strings.Cut(kv, "=")
		n, _ := strconv.Atoi(v)
		switch k {
		case "mode":
			a.mode = v
		case "round":
			a.round = n
		case "writers":
			a.writers = n
		case "count":
			a.count = n
		case "seg":
			a.seg = int64(n)
		case "pace":
			a.pace, _ = time.ParseDuration(v)
		}
	}
	return a
}

func childFail(what string, err error) {
	fmt.Fprintf(os.Stderr, "writer child: %s: %v\n", what, err)
	os.Exit(3)
}

// loadRecord is record i of writer w in a round: its path says who wrote it,
// its data is derived from that, so a reader can check it alone.
func loadRecord(round, w, i int) journal.Record {
	acct := fmt.Sprintf("r%dw%d", round, w)
	return journal.Record{Op: journal.OpWrite, Account: acct, Tree: "meta",
		Path: fmt.Sprintf("%s/%d", acct, i), PrevSize: -1,
		Data: []byte(strings.Repeat(fmt.Sprintf("%s-%d;", acct, i), 1+i%30))}
}

// writerChild appends from several goroutines, syncing every third record
// (load) or every record with a timestamp as data (pace), and prints each
// LSN a Sync returned for. With count > 0 it stops there, prints "done
// <durable>", and closes the journal once stdin closes; otherwise it runs
// until stdin closes or it is killed.
func writerChild(dir, args string) {
	a := parseChildArgs(args)
	l, err := journal.Open(dir, journal.Options{SegmentSize: a.seg, SyncEvery: 20 * time.Millisecond,
		RetainEvery: 10 * time.Millisecond})
	if err != nil {
		childFail("open", err)
	}
	ctx := context.Background()
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, v ...any) {
		mu.Lock()
		fmt.Fprintf(out, format+"\n", v...)
		out.Flush()
		mu.Unlock()
	}
	say("ready %d", l.Durable())
	stopped := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stopped) }()
	var wg sync.WaitGroup
	var next sync.Mutex
	total := 0
	for w := 0; w < a.writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stopped:
					return
				default:
				}
				next.Lock()
				if a.count > 0 && total >= a.count {
					next.Unlock()
					return
				}
				total++
				next.Unlock()
				var r journal.Record
				if a.mode == "pace" {
					r = journal.Record{Op: journal.OpCheckpoint, Data: binary.LittleEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))}
				} else {
					r = loadRecord(a.round, w, i)
				}
				lsn, err := l.Append(ctx, &r)
				if err != nil {
					childFail("append", err)
				}
				if a.mode == "pace" || i%3 == 0 {
					if err := l.Sync(ctx, lsn); err != nil {
						childFail("sync", err)
					}
					if a.mode == "pace" {
						say("%d %d", lsn, time.Now().UnixNano())
					} else {
						say("%d", lsn)
					}
				}
				if a.pace > 0 {
					time.Sleep(a.pace)
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Sync(ctx, 1<<62); err != nil {
		childFail("sync", err)
	}
	say("done %d", l.Durable())
	<-stopped
	if err := l.Close(); err != nil {
		childFail("close", err)
	}
	os.Exit(0)
}

// writerProc is a running writer child.
type writerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // its stdout, closed at its exit
}

func startWriter(t testing.TB, dir, args string) *writerProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), writerEnv+"="+dir, writerArgsEnv+"="+args)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &writerProc{cmd: cmd, stdin: stdin, lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	return p
}

// waitLine returns the next line starting with prefix, failing the test if
// the child exits or 60 s pass first.
func (p *writerProc) waitLine(t testing.TB, prefix string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ln, ok := <-p.lines:
			if !ok {
				t.Fatalf("writer child exited before printing %q", prefix)
			}
			if strings.HasPrefix(ln, prefix) {
				return ln
			}
		case <-timeout:
			t.Fatalf("writer child: no %q within 60 s", prefix)
		}
	}
}

// stop closes the child's stdin (it closes its journal and exits) and waits.
func (p *writerProc) stop(t testing.TB) {
	t.Helper()
	p.stdin.Close()
	for range p.lines {
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("writer child: %v", err)
	}
}

// kill SIGKILLs the child after n more synced LSNs.
func (p *writerProc) killAfter(t testing.TB, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		p.waitLine(t, "")
	}
	p.cmd.Process.Kill()
	for range p.lines {
	}
	p.cmd.Wait()
}

func durableOf(t testing.TB, line string) journal.LSN {
	t.Helper()
	v, err := strconv.ParseUint(strings.Fields(line)[1], 10, 64)
	if err != nil {
		t.Fatalf("child said %q", line)
	}
	return journal.LSN(v)
}

// tailChecker verifies what a Follower's Reader returns: consecutive LSNs
// (the Reader's own order), every record intact, and per writer account the
// record numbers 0, 1, 2, … with none twice and none skipped.
type tailChecker struct {
	mu   sync.Mutex
	next map[string]int
	n    int
}

func (c *tailChecker) check(r journal.Record, want journal.LSN) error {
	var round, w, i int
	if _, err := fmt.Sscanf(r.Path, "r%dw%d/%d", &round, &w, &i); err != nil {
		return fmt.Errorf("record %d: path %q", r.LSN, r.Path)
	}
	exp := loadRecord(round, w, i)
	if r.LSN != want || r.Account != exp.Account || string(r.Data) != string(exp.Data) || r.Op != exp.Op {
		return fmt.Errorf("record %d (want LSN %d) damaged or out of place: %+v", r.LSN, want, r)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next[r.Account] != i {
		return fmt.Errorf("record %d: %s record %d, want %d (duplicate or gap)", r.LSN, r.Account, i, c.next[r.Account])
	}
	c.next[r.Account] = i + 1
	c.n++
	return nil
}

func segmentFirsts(t testing.TB, dir string) []journal.LSN {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	var out []journal.LSN
	for _, p := range m {
		v, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(p), ".seg"), 16, 64)
		if err == nil {
			out = append(out, journal.LSN(v))
		}
	}
	slices.Sort(out)
	return out
}

// TestFollowerAcrossWriterRestarts: a writer process appends and syncs
// under load; it is SIGKILLed twice and restarted, then finishes cleanly.
// A Follower in this process tails throughout, acking as it goes so the
// writer's retention removes the segments it has passed: every durable
// record arrives exactly once, in order, intact, and none beyond the
// durable LSN.
func TestFollowerAcrossWriterRestarts(t *testing.T) {
	dir := t.TempDir()
	p := startWriter(t, dir, "round=0 writers=4")
	p.waitLine(t, "ready")
	f, err := journal.OpenFollower(dir, journal.FollowerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := f.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	c := &tailChecker{next: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tailDone := make(chan struct{})
	var pos atomic.Uint64 // rd.Position(), published by the tailing goroutine
	var tailErr error     // set before tailDone closes
	go func() {
		defer close(tailDone)
		tailErr = func() error {
			for {
				r, err := rd.Next(ctx)
				if err != nil {
					if ctx.Err() == nil {
						return fmt.Errorf("Next at %d: %w", rd.Position(), err)
					}
					return nil
				}
				if d := f.Durable(); r.LSN > d {
					return fmt.Errorf("record %d returned, durable %d", r.LSN, d)
				}
				if err := c.check(r, rd.Position()-1); err != nil {
					return err
				}
				pos.Store(uint64(rd.Position()))
				if r.LSN%100 == 0 {
					if err := f.SetAcked("tail", r.LSN); err != nil {
						return err
					}
				}
			}
		}()
	}()
	p.killAfter(t, 300)
	p = startWriter(t, dir, "round=1 writers=4")
	p.waitLine(t, "ready")
	p.killAfter(t, 300)
	p = startWriter(t, dir, "round=2 writers=4 count=3000")
	d := durableOf(t, p.waitLine(t, "done"))
	deadline := time.Now().Add(60 * time.Second)
wait:
	for journal.LSN(pos.Load()) <= d && time.Now().Before(deadline) {
		select {
		case <-tailDone:
			break wait
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	<-tailDone
	p.stop(t)
	if tailErr != nil {
		t.Fatal(tailErr)
	}
	if got := rd.Position() - 1; got != d {
		t.Fatalf("follower read up to %d, writer's durable %d", got, d)
	}
	if c.n != int(d) {
		t.Fatalf("follower read %d records, durable LSN %d", c.n, d)
	}
	firsts := segmentFirsts(t, dir)
	if len(firsts) == 0 || firsts[0] == 1 {
		t.Fatalf("no segment removed behind the follower's acks: %v", firsts)
	}
	t.Logf("%d records read across 3 writer processes (2 killed); segments now start at %d", c.n, firsts[0])
}

// TestFollowerConsumersHoldRetention: a consumer a Follower registers while
// the writer is down holds segments back in the restarted writer (another
// consumer acked everything), and its acks make the writer remove them.
func TestFollowerConsumersHoldRetention(t *testing.T) {
	dir := t.TempDir()
	p := startWriter(t, dir, "round=0 writers=2 count=1500 seg=4096")
	d0 := durableOf(t, p.waitLine(t, "done"))
	p.stop(t)

	f, err := journal.OpenFollower(dir, journal.FollowerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Durable() != d0 {
		t.Fatalf("follower durable %d with the writer down, want %d", f.Durable(), d0)
	}
	if err := f.SetAcked("slow", 0); err != nil {
		t.Fatal(err)
	}
	if err := f.SetAcked("pin", 0); err != nil { // removed below
		t.Fatal(err)
	}
	if err := f.SetAcked("fast", d0); err != nil {
		t.Fatal(err)
	}
	before := segmentFirsts(t, dir)
	if len(before) < 5 {
		t.Fatalf("only %d segments", len(before))
	}

	// The restarted writer retains every 10 ms; "done" comes after many
	// passes (it appends 1500 more records, syncing every third).
	p = startWriter(t, dir, "round=1 writers=2 count=1500 seg=4096")
	d1 := durableOf(t, p.waitLine(t, "done"))
	time.Sleep(100 * time.Millisecond) // more retention passes, for good measure
	if got := segmentFirsts(t, dir); len(got) == 0 || got[0] != 1 {
		t.Fatalf("writer removed segments that consumer slow had not acked: first now %v", got[:1])
	}
	if err := f.SetAcked("fast", d1); err != nil {
		t.Fatal(err)
	}

	rd, err := f.NewReader(1)
	if err != nil {
		t.Fatal(err)
	}
	c := &tailChecker{next: map[string]int{}}
	for rd.Position() <= d1 {
		r, err := rd.Next(context.Background())
		if err != nil {
			t.Fatalf("Next %d: %v", rd.Position(), err)
		}
		if err := c.check(r, rd.Position()-1); err != nil {
			t.Fatal(err)
		}
	}
	rd.Close()
	if err := f.SetAcked("slow", d1); err != nil {
		t.Fatal(err)
	}
	if v, ok := f.Acked("slow"); !ok || v != d1 {
		t.Fatalf("Acked(slow) = %d, %v", v, ok)
	}
	// A removed consumer holds nothing back.
	if err := f.RemoveConsumer("pin"); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Acked("pin"); ok {
		t.Fatal("consumer pin still registered after RemoveConsumer")
	}
	// The writer notices within its retention period; wait for it (no
	// timing assertion: up to 30 s).
	deadline := time.Now().Add(30 * time.Second)
	var after []journal.LSN
	for time.Now().Before(deadline) {
		after = segmentFirsts(t, dir)
		if len(after) > 0 && after[0] > 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(after) == 0 || after[0] == 1 {
		t.Fatalf("writer kept every segment after all consumers acked %d: %v", d1, after[:1])
	}
	if _, err := f.NewReader(1); !errors.Is(err, journal.ErrCompacted) {
		t.Fatalf("NewReader(1) after removal: got %v, want ErrCompacted", err)
	}
	p.stop(t)
	t.Logf("%d segments before; writer kept LSN 1 while slow lagged; after its ack the first segment is %d (%d left)",
		len(before), after[0], len(after))
}

// BenchmarkFollowerLatency: from a writer process's Append (timestamp in
// the record) through its Sync, the durable file and inotify, to this
// process's Reader.Next returning the record. paced: one writer, a record
// every 2 ms; load: 8 writers appending and syncing flat out.
func BenchmarkFollowerLatency(b *testing.B) {
	for _, bc := range []struct{ name, args string }{
		{"paced", "mode=pace writers=1 pace=2ms seg=67108864"},
		{"load8", "mode=pace writers=8 seg=67108864"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dir := b.TempDir()
			p := startWriter(b, dir, bc.args)
			p.waitLine(b, "ready")
			synced := map[journal.LSN]int64{} // LSN → when the writer's Sync returned
			linesDone := make(chan struct{})
			go func() {
				defer close(linesDone)
				for ln := range p.lines {
					var lsn, ns int64
					if _, err := fmt.Sscanf(ln, "%d %d", &lsn, &ns); err == nil {
						synced[journal.LSN(lsn)] = ns
					}
				}
			}()
			f, err := journal.OpenFollower(dir, journal.FollowerOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			rd, err := f.NewReader(f.Durable() + 1)
			if err != nil {
				b.Fatal(err)
			}
			defer rd.Close()
			lat := make([]time.Duration, 0, b.N)
			seen := make(map[journal.LSN]int64, b.N)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r, err := rd.Next(ctx)
				if err != nil {
					b.Fatal(err)
				}
				now := time.Now().UnixNano()
				lat = append(lat, time.Duration(now-int64(binary.LittleEndian.Uint64(r.Data))))
				seen[r.LSN] = now
			}
			b.StopTimer()
			p.stdin.Close()
			p.cmd.Wait()
			<-linesDone
			// notify: from the writer's Sync returning to Next returning
			// here (the follower's own part; negative when the follower
			// won the race, as the durable file is written before Sync
			// callers are woken).
			var notify []time.Duration
			for lsn, at := range seen {
				if s, ok := synced[lsn]; ok {
					notify = append(notify, time.Duration(at-s))
				}
			}
			q := func(d []time.Duration, x float64) float64 {
				sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
				return float64(d[int(x*float64(len(d)-1))].Microseconds())
			}
			b.ReportMetric(q(lat, 0.5), "p50-µs")
			b.ReportMetric(q(lat, 0.99), "p99-µs")
			b.ReportMetric(q(lat, 1), "max-µs")
			if len(notify) > 0 {
				b.ReportMetric(q(notify, 0.5), "notify-p50-µs")
				b.ReportMetric(q(notify, 0.99), "notify-p99-µs")
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// source is what the peer needs of a journal: the writer's Log in-process,
// or a Follower from its own process.
type source interface {
	NewReader(from journal.LSN) (*journal.Reader, error)
	OpenBlob(hash [32]byte) (*os.File, error)
	Acked(consumer string) (journal.LSN, bool)
	SetAcked(consumer string, lsn journal.LSN) error
}

var (
	_ source = (*journal.Log)(nil)
	_ source = (*journal.Follower)(nil)
)

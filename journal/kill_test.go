package journal_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mreplfs/journal"
)

// crashEnv makes the test binary an appending child (TestMain).
const crashEnv = "MREPLFS_JOURNAL_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	if dir := os.Getenv(writerEnv); dir != "" {
		writerChild(dir, os.Getenv(writerArgsEnv))
		return
	}
	os.Exit(m.Run())
}

func killRecord(w, i int) journal.Record {
	acct := fmt.Sprintf("kill%d", w)
	return journal.Record{Op: journal.OpWrite, Account: acct, Tree: "meta",
		Path: fmt.Sprintf("%s/%d", acct, i), PrevSize: -1,
		Data: []byte(strings.Repeat(fmt.Sprintf("w%d-i%d;", w, i), 1+i%40))}
}

// crashChild appends from 8 writers until killed; after each Sync returns it
// prints the LSN it waited for.
func crashChild(dir string) {
	l, err := journal.Open(dir, journal.Options{SegmentSize: 64 << 10, SyncEvery: 50 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	ctx := context.Background()
	var mu sync.Mutex
	for w := 0; w < 8; w++ {
		go func() {
			acct := fmt.Sprintf("kill%d", w)
			if err := l.Activate(ctx, acct); err != nil {
				fmt.Fprintln(os.Stderr, "child activate:", err)
				os.Exit(3)
			}
			for i := 0; ; i++ {
				r := killRecord(w, i)
				lsn, err := l.Append(ctx, &r)
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(3)
				}
				if i%3 == 0 {
					if err := l.Sync(ctx, lsn); err != nil {
						fmt.Fprintln(os.Stderr, "child sync:", err)
						os.Exit(3)
					}
					mu.Lock()
					fmt.Fprintf(os.Stdout, "%d\n", lsn)
					mu.Unlock()
				}
			}
		}()
	}
	select {}
}

// TestKillUnderLoad: SIGKILL a process appending under load; reopening loses
// nothing a Sync had returned for, every record reads back intact, and the
// accounts that were writing are listed as unclean.
func TestKillUnderLoad(t *testing.T) {
	dir := t.TempDir()
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var synced journal.LSN
		lines := 0
		sc := bufio.NewScanner(out)
		timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
		for sc.Scan() {
			v, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			synced = max(synced, journal.LSN(v))
			if lines++; lines == 300+round*200 {
				cmd.Process.Kill() // SIGKILL: no deferred code, no Close
			}
		}
		timer.Stop()
		cmd.Wait()
		if lines < 300 {
			t.Fatalf("round %d: child exited after %d syncs (see stderr)", round, lines)
		}

		l, err := journal.Open(dir, journal.Options{})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		if d := l.Durable(); d < synced {
			t.Fatalf("round %d: durable %d after reopen, but Sync had returned for %d", round, d, synced)
		}
		rd, _ := l.NewReader(0)
		n := 0
		for rd.Position() <= l.Durable() {
			r, err := rd.Next(context.Background())
			if err != nil {
				t.Fatalf("round %d: Next %d: %v", round, rd.Position(), err)
			}
			var w, i int
			if _, err := fmt.Sscanf(r.Path, "kill%d/%d", &w, &i); err != nil {
				t.Fatalf("round %d: record %d path %q", round, r.LSN, r.Path)
			}
			want := killRecord(w, i)
			want.LSN = r.LSN
			if r.Account != want.Account || string(r.Data) != string(want.Data) {
				t.Fatalf("round %d: record %d damaged: %+v", round, r.LSN, r)
			}
			n++
		}
		rd.Close()
		unclean := l.UncleanAccounts()
		for w := 0; w < 8; w++ {
			if a := fmt.Sprintf("kill%d", w); !slices.Contains(unclean, a) {
				t.Errorf("round %d: UncleanAccounts %v lacks %s", round, unclean, a)
			}
		}
		t.Logf("round %d: %d syncs seen, synced up to %d, durable %d after reopen, %d records read",
			round, lines, synced, l.Durable(), n)
		if err := l.ClearUnclean(unclean...); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// After a clean Close and the list cleared, nothing is unclean.
	l, err := journal.Open(dir, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.UncleanAccounts(); len(got) != 0 {
		t.Fatalf("UncleanAccounts after clean stop: got %v", got)
	}
}

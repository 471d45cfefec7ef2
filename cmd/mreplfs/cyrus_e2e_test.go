package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"mreplfs/bench/cyrusload"
	"mreplfs/fs/mounttest"
	"mreplfs/rolemap/cyrustest"
)

// The end-to-end suite (issue 9): two servers in network namespaces, each
// running an unmodified Debian Cyrus 3.6 whose configdirectory, spool and
// meta partitions are mreplfs mounts, plus a peer. Each server masters half
// of the accounts and replicates the other half; both take LMTP and IMAP
// load at once.

// cyrusServers is the e2e topology: the cluster plus a Cyrus per server.
type cyrusServers struct {
	c     *cluster
	cyrus []*cyrustest.Instance
	// masterOf maps every account to the index of its master server.
	masterOf map[string]int
}

func (cs *cyrusServers) master(acct string) *cyrustest.Instance { return cs.cyrus[cs.masterOf[acct]] }
func (cs *cyrusServers) replica(acct string) *cyrustest.Instance {
	return cs.cyrus[1-cs.masterOf[acct]]
}

// e2eAccounts are the 20 accounts; server 0 masters the even ones.
func e2eAccounts() (all []string, masters [][]string) {
	names := []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
		"mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "zoe"}
	masters = make([][]string, 2)
	for i, n := range names {
		masters[i%2] = append(masters[i%2], n)
	}
	return names, masters
}

// newCyrusServers builds the two-server cluster, mounts every tree, starts
// a Cyrus on each server's mounts and then the peers, whose config names the
// local Cyrus (replica registration, annotations sidecars).
func newCyrusServers(t testing.TB) *cyrusServers {
	return newCyrusServersWith(t, true, cyrustest.Options{Meta: true})
}

// newCyrusServersPeers is newCyrusServers, with the peers started or not
// (without them nothing replicates: the mounts' cost alone).
func newCyrusServersPeers(t testing.TB, peers bool) *cyrusServers {
	return newCyrusServersWith(t, peers, cyrustest.Options{Meta: true})
}

// newCyrusServersWith builds the servers with Cyrus options o (layout,
// hashing), the same on both: the partners must share them.
func newCyrusServersWith(t testing.TB, peers bool, o cyrustest.Options) *cyrusServers {
	t.Helper()
	mounttest.RequireRoot(t)
	cyrustest.RequireCyrus(t)
	if _, err := exec.LookPath("ip"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the end-to-end suite needs iproute2's ip command (CI installs it)")
		}
		t.Skip("no ip command")
	}
	ctx := context.Background()
	_, masters := e2eAccounts()
	pid := os.Getpid()
	work := cyrustest.TempDir(t)
	c, err := newCluster(ctx, mreplfsBinary(t), work, fmt.Sprintf("mre%d", pid%1000), 10+(pid+100)%200, masters)
	t.Cleanup(func() {
		if t.Failed() && c != nil {
			t.Logf("cluster logs:%s", c.logs())
		}
		if c != nil {
			c.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	cs := &cyrusServers{c: c, masterOf: map[string]int{}}
	for i, m := range masters {
		for _, a := range m {
			cs.masterOf[a] = i
		}
	}
	for _, s := range c.servers {
		if err := c.startMount(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range c.servers {
		run := filepath.Join(s.dir, "cyrus-run")
		o.RunDir, o.Syslog = run, true
		in := cyrustest.Start(t, filepath.Join(s.dir, "mnt"), o)
		cs.cyrus = append(cs.cyrus, in)
		f, err := os.OpenFile(filepath.Join(s.dir, "peer.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "cyrus_conf: %s\nregister_delay: 200ms\nannotations_poll: 250ms\n", in.Conf)
		f.Close()
	}
	if !peers {
		return cs
	}
	for _, s := range c.servers {
		if err := c.startPeer(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.waitConnected(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return cs
}

// imapSteps runs tagged commands and fails on the first that is not OK.
func imapSteps(c *cyrustest.IMAPClient, cmds ...string) error {
	for _, cmd := range cmds {
		if _, err := c.Cmd("%s", cmd); err != nil {
			return err
		}
	}
	return nil
}

// provision creates every account on its master: INBOX, Sent (SPECIAL-USE
// \Sent), Drafts (\Drafts), Archive, a quota, subscriptions.
func (cs *cyrusServers) provision(t testing.TB) {
	t.Helper()
	all, _ := e2eAccounts()
	for i, in := range cs.cyrus {
		adm := in.IMAP(t, cyrustest.Admin)
		for _, a := range all {
			if cs.masterOf[a] != i {
				continue
			}
			for _, f := range []string{"", "/Sent", "/Drafts", "/Archive"} {
				if _, err := adm.Cmd("CREATE %s", cyrustest.Quote("user/"+a+f)); err != nil {
					t.Fatalf("%s: %v\n%s", a, err, in.Log())
				}
			}
			if _, err := adm.Cmd("SETQUOTA %s (STORAGE 500000)", cyrustest.Quote("user/"+a)); err != nil {
				t.Fatal(err)
			}
			u := in.IMAP(t, a)
			if err := imapSteps(u, `SETMETADATA INBOX/Sent (/private/specialuse "\\Sent")`,
				`SETMETADATA INBOX/Drafts (/private/specialuse "\\Drafts")`,
				`SETMETADATA INBOX (/private/comment "inbox of `+a+`")`,
				"SUBSCRIBE INBOX", "SUBSCRIBE INBOX/Sent"); err != nil {
				t.Fatalf("%s: %v\n%s", a, err, in.Log())
			}
			u.Logout()
		}
		adm.Logout()
	}
}

// waitTrees waits until every replica account's files equal its master's
// and returns how long that took.
func (cs *cyrusServers) waitTrees(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	all, _ := e2eAccounts()
	start := time.Now()
	for {
		var bad []string
		for _, a := range all {
			m := cs.c.servers[cs.masterOf[a]]
			r := cs.c.servers[1-cs.masterOf[a]]
			fm, err := accountFiles(m, a)
			if err != nil {
				t.Fatal(err)
			}
			fr, err := accountFiles(r, a)
			if err != nil {
				t.Fatal(err)
			}
			if len(fm) == 0 {
				bad = append(bad, a+": no files on its master")
			} else if d := cyrusload.Diff(fm, fr); len(d) > 0 {
				bad = append(bad, fmt.Sprintf("%s: %d differences, e.g. %s", a, len(d), d[0]))
			}
		}
		if len(bad) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("replica trees differ from their masters after %v:\n%s", timeout, strings.Join(bad, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// loadStats counts what the load did.
type loadStats struct {
	mu         sync.Mutex
	txns, rcpt int           // LMTP transactions and recipients delivered (250)
	bytes      int64         // message bytes accepted
	lmtpTime   time.Duration // summed transaction time
	imapCmds   int
	elapsed    time.Duration
}

// deliverLoad sends n LMTP transactions to server i's Cyrus, for its own
// master accounts: every third to 3 recipients; sizes 1 KB–1 MB (every
// 20th 1 MB). It returns the first error.
func (cs *cyrusServers) deliverLoad(ctx context.Context, i, n int, seed int64, st *loadStats) error {
	in := cs.cyrus[i]
	_, all := e2eAccounts()
	masters := all[i]
	rnd := rand.New(rand.NewSource(seed))
	c, err := cyrustest.DialLMTP(ctx, in.LMTPAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	for k := 0; k < n; k++ {
		rcpts := []string{masters[rnd.Intn(len(masters))]}
		if k%3 == 0 {
			p := rnd.Perm(len(masters))
			rcpts = []string{masters[p[0]], masters[p[1]], masters[p[2]]}
		}
		size := []int{1 << 10, 4 << 10, 16 << 10, 64 << 10, 200 << 10}[rnd.Intn(5)]
		if k%20 == 19 {
			size = 1 << 20
		}
		msg := cyrustest.Message(fmt.Sprintf("load %d/%d", i, k), size)
		t0 := time.Now()
		for j, err := range c.Deliver("load@example.org", rcpts, msg) {
			if err != nil {
				return fmt.Errorf("LMTP %d to %s on server %d: %w", k, rcpts[j], i, err)
			}
		}
		d := time.Since(t0)
		st.mu.Lock()
		st.txns++
		st.rcpt += len(rcpts)
		st.bytes += int64(len(msg))
		st.lmtpTime += d
		st.mu.Unlock()
	}
	return nil
}

// imapSession is one user's session on its master: SELECT, FETCH (peek and
// implicit \Seen), STORE flags and keywords, COPY, MOVE, EXPUNGE, APPEND,
// CREATE/RENAME/DELETE of a folder, SUBSCRIBE, a new SPECIAL-USE.
func (cs *cyrusServers) imapSession(ctx context.Context, acct string, round int, st *loadStats) error {
	in := cs.master(acct)
	c, err := cyrustest.DialIMAP(ctx, in.IMAPAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Login(acct, "x"); err != nil {
		return err
	}
	work := fmt.Sprintf("INBOX/Work%d", round)
	tmp := fmt.Sprintf("INBOX/Tmp%d", round)
	steps := []string{
		"SELECT INBOX",
		"FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
		"FETCH 1 (BODY[])",
		`STORE 1:2 +FLAGS (\Flagged $Label1)`,
		`STORE 3 +FLAGS (\Answered Project` + acct + `)`,
		"CREATE " + work,
		"COPY 1:3 " + work,
		"MOVE 4 INBOX/Archive",
		`STORE 2 +FLAGS (\Deleted)`,
		"EXPUNGE",
		"SUBSCRIBE " + work,
		`SETMETADATA ` + work + ` (/private/specialuse "` + []string{`\\Archive`, `\\Junk`}[round%2] + `")`,
		"CREATE " + tmp,
		"RENAME " + tmp + " " + tmp + "x",
		"DELETE " + tmp + "x",
		"UNSUBSCRIBE INBOX/Sent",
		"SUBSCRIBE INBOX/Sent",
	}
	if err := imapSteps(c, steps...); err != nil {
		return fmt.Errorf("%s round %d: %w", acct, round, err)
	}
	if err := c.Append("INBOX/Sent", `(\Seen $Sent)`, cyrustest.Message("sent by "+acct, 3000)); err != nil {
		return fmt.Errorf("%s: APPEND: %w", acct, err)
	}
	if err := c.Append("INBOX/Drafts", `(\Draft)`, cyrustest.Message("draft of "+acct, 1500)); err != nil {
		return fmt.Errorf("%s: APPEND: %w", acct, err)
	}
	st.mu.Lock()
	st.imapCmds += len(steps) + 3
	st.mu.Unlock()
	return c.Logout()
}

// TestCyrusEndToEnd is the issue-9 suite; each phase says what it proves.
func TestCyrusEndToEnd(t *testing.T) {
	cs := newCyrusServers(t)
	cs.core(t)
	cs.roleChanges(t)
}

// TestCyrusEndToEndLegacy runs the same load with the legacy layout and
// hashed spool (mailbox_legacy_dirs, hashimapspool): mailboxes named by
// path, folder RENAME and delayed DELETE by link and copy, headers that keep
// a renamed mailbox's old name (registered by writing its records
// directly, since reconstruct -P crashes on them).
func TestCyrusEndToEndLegacy(t *testing.T) {
	cs := newCyrusServersWith(t, true, cyrustest.Options{Layout: cyrustest.Legacy, Hash: true, Meta: true})
	cs.core(t)
}

// core provisions, checks registration and misrouted mail, runs the load,
// and compares every replica with its master (files and IMAP views).
func (cs *cyrusServers) core(t *testing.T) {
	ctx := context.Background()
	all, _ := e2eAccounts()

	cs.provision(t)
	took := cs.waitTrees(t, 60*time.Second)
	t.Logf("provisioned %d accounts; replicas equal %v later", len(all), took)

	t.Run("replica accounts are registered on their replica server's Cyrus", func(t *testing.T) {
		for _, a := range all {
			waitFor(t, 30*time.Second, a+" listed on its replica", func() bool {
				v, err := viewOf(ctx, cs.replica(a), a)
				return err == nil && len(v.Folders) == 4
			})
		}
	})

	t.Run("misrouted mail gets a temporary 451 on the replica server, never 550", func(t *testing.T) {
		// alice is server 0's; deliver to her and to bob (server 1's) on server 1
		in := cs.cyrus[1]
		c, err := cyrustest.DialLMTP(ctx, in.LMTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		errs := c.Deliver("x@example.org", []string{"alice", "bob"}, cyrustest.Message("misrouted", 2000))
		var re *cyrustest.ReplyError
		if !errors.As(errs[0], &re) || re.Code != 451 || !strings.Contains(re.Text, "4.3.0") {
			t.Fatalf("alice on her replica server: %v; want 451 4.3.0", errs[0])
		}
		if errs[1] != nil {
			t.Fatalf("bob on his master, same transaction: %v", errs[1])
		}
		t.Logf("LMTP on the replica server: alice → %q, bob → 250", re.Text)
		im := in.IMAP(t, "alice")
		_, err = im.Cmd("SELECT INBOX")
		var ie *cyrustest.IMAPError
		if !errors.As(err, &ie) || ie.Status != "NO" {
			t.Fatalf("SELECT of a replica account: %v; want NO", err)
		}
		t.Logf("IMAP SELECT on the replica server: NO %s", ie.Text)
		if _, err := im.Cmd("EXAMINE INBOX"); err != nil {
			t.Fatalf("EXAMINE of a replica account: %v", err)
		}
	})

	// The load: both servers at once, deliveries and sessions together.
	st := &loadStats{}
	t.Run("load on both servers at once", func(t *testing.T) {
		// a first wave so that every INBOX has messages for the sessions
		for _, a := range all {
			cs.master(a).Deliver(t, []string{a}, cyrustest.Message("first "+a, 2500))
		}
		var wg sync.WaitGroup
		errc := make(chan error, 64)
		start := time.Now()
		for i := range cs.cyrus {
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := cs.deliverLoad(ctx, i, 40, int64(i*10+w), st); err != nil {
						errc <- err
					}
				}()
			}
		}
		for round := 0; round < 2; round++ {
			var sw sync.WaitGroup
			sem := make(chan struct{}, 4)
			for _, a := range all {
				sw.Add(1)
				sem <- struct{}{}
				go func() {
					defer sw.Done()
					defer func() { <-sem }()
					// every session needs 4 messages: top up first
					for k := 0; k < 4; k++ {
						if err := deliverOne(ctx, cs.master(a), a, fmt.Sprintf("topup %d", k)); err != nil {
							errc <- err
							return
						}
					}
					if err := cs.imapSession(ctx, a, round, st); err != nil {
						errc <- err
					}
				}()
			}
			sw.Wait()
		}
		wg.Wait()
		st.elapsed = time.Since(start)
		close(errc)
		for err := range errc {
			t.Error(err)
		}
		if t.Failed() {
			for _, in := range cs.cyrus {
				b, _ := os.ReadFile(filepath.Join(in.RunDir, "syslog"))
				var errs []string
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, "<3>") || strings.Contains(l, "ERROR") {
						errs = append(errs, l)
					}
				}
				t.Logf("Cyrus on %s, its errors:\n%s", in.Dir, strings.Join(errs, "\n"))
			}
			t.FailNow()
		}
		t.Logf("load: %d LMTP transactions (%d recipient deliveries, %.1f MB) and %d IMAP commands in %v: %.1f transactions/s, %.1f deliveries/s, mean LMTP transaction %v",
			st.txns, st.rcpt, float64(st.bytes)/1e6, st.imapCmds, st.elapsed.Round(time.Millisecond),
			float64(st.txns)/st.elapsed.Seconds(), float64(st.rcpt)/st.elapsed.Seconds(),
			(st.lmtpTime / time.Duration(max(st.txns, 1))).Round(time.Microsecond))
	})

	t.Run("after quiescence every replica's tree equals its master's", func(t *testing.T) {
		took := cs.waitTrees(t, 120*time.Second)
		t.Logf("replicas equal %v after the load ended", took)
	})

	t.Run("the replica server shows each account as its master does", func(t *testing.T) {
		msgs, quotaNote := 0, ""
		for _, a := range all {
			vm := mustView(t, cs.master(a), a)
			// the sidecar may still be on its way: poll the replica
			var d []string
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				vr := mustView(t, cs.replica(a), a)
				if strings.HasPrefix(vr.Quota, "error:") {
					// the replica's Cyrus opens the quota file for writing,
					// which the mount refuses; the file itself is compared
					// with the trees
					quotaNote, vr.Quota = vr.Quota, vm.Quota
				}
				d = diffViews(vm, vr)
				if len(d) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s on the replica server differs from its master:\n%s", a, strings.Join(d, "\n"))
				}
			}
			if !strings.Contains(strings.Join(vm.Folders, " "), `\Sent`) || !strings.Contains(strings.Join(vm.Folders, " "), `\Archive`) {
				t.Fatalf("%s: SPECIAL-USE missing on the master: %v", a, vm.Folders)
			}
			msgs += vm.messages()
		}
		t.Logf("%d accounts, %d messages: folders, SPECIAL-USE, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, UIDs, flags, keywords, MODSEQs, INTERNALDATEs, sizes and bodies equal on both servers", len(all), msgs)
		if quotaNote != "" {
			t.Logf("GETQUOTAROOT on the replica server: %s", quotaNote)
		}
		// reading changed nothing
		cs.waitTrees(t, 30*time.Second)
	})

	t.Run("after quiescence no replica account is quarantined", func(t *testing.T) {
		for _, s := range cs.c.servers {
			for a, pos := range s.status().Accounts {
				if pos.State.String() != "ok" {
					t.Errorf("%s on %s: %v %s", a, s.node, pos.State, pos.Reason)
				}
			}
		}
	})

}

// roleChanges promotes accounts and fails a server over (issue 8's
// commands with real Cyrus).
func (cs *cyrusServers) roleChanges(t *testing.T) {
	t.Run("promote: the new master serves each account as the old one did", func(t *testing.T) {
		cs.promotePhase(t, []string{"alice", "carol", "bob"})
	})

	t.Run("catalogue counters", func(t *testing.T) {
		for _, s := range cs.c.servers {
			cat := s.status().Cyrus
			if cat == nil || cat.Registered == 0 || cat.SidecarsApplied == 0 || cat.SidecarsWritten == 0 {
				t.Fatalf("%s: catalogue %+v", s.node, cat)
			}
			t.Logf("%s: %+v", s.node, *cat)
		}
	})

	t.Run("failover: a server crashes under load, the survivor takes its accounts, the old master's tail is quarantined", func(t *testing.T) {
		cs.failoverPhase(t)
	})

}

// deliverOne delivers a small message to acct over LMTP.
func deliverOne(ctx context.Context, in *cyrustest.Instance, acct, subject string) error {
	c, err := cyrustest.DialLMTP(ctx, in.LMTPAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Deliver("x@example.org", []string{acct}, cyrustest.Message(subject, 1500))[0]; err != nil {
		return fmt.Errorf("LMTP to %s: %w", acct, err)
	}
	return nil
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

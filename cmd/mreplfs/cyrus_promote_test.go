package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mreplfs/rolemap/cyrustest"
)

// The promote steps of the end-to-end suite: after the load, a few
// accounts change master with `mreplfs promote`, and an IMAP client on the
// NEW master must see exactly what it saw on the old one.

// mreplfsIn runs `mreplfs args...` in s's network namespace and returns
// its output and exit code.
func (cs *cyrusServers) mreplfsIn(ctx context.Context, s *node, args ...string) (string, int) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/var/run/netns/" + s.ns, cs.c.self}, args...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		return string(out) + err.Error(), -1
	}
	return string(out), 0
}

// subscriptions returns account's LSUB list on in.
func subscriptions(t *testing.T, in *cyrustest.Instance, account string) []string {
	t.Helper()
	c := in.IMAP(t, account)
	defer c.Logout()
	out, err := c.Cmd(`LSUB "" "*"`)
	if err != nil {
		t.Fatalf("LSUB as %s: %v", account, err)
	}
	sort.Strings(out)
	return out
}

// promotePhase promotes accounts (each on its replica server) and checks
// the new master: same folders, SPECIAL-USE, subscriptions, UIDVALIDITY,
// UIDs, MODSEQs, flags, keywords, bodies and quota; new deliveries land
// there and replicate back; the old master refuses the account.
func (cs *cyrusServers) promotePhase(t *testing.T, accounts []string) {
	ctx := context.Background()
	before := map[string]*accountView{}
	subs := map[string][]string{}
	for _, a := range accounts {
		before[a] = mustView(t, cs.master(a), a)
		subs[a] = subscriptions(t, cs.master(a), a)
		if len(subs[a]) == 0 {
			t.Fatalf("%s has no subscriptions on its master", a)
		}
	}
	cs.waitTrees(t, 60*time.Second) // the views changed nothing; all replicated
	for _, a := range accounts {
		oldM, newM := cs.masterOf[a], 1-cs.masterOf[a]
		s := cs.c.servers[newM]
		t0 := time.Now()
		out, code := cs.mreplfsIn(ctx, s, "promote", "-config", filepath.Join(s.dir, "peer.conf"), "-idle", "200ms", a)
		for try := 0; code == ExitBusy && try < 5; try++ {
			// busy (exit 5: an open file, or a change within -idle, e.g.
			// an annotations sidecar just written): try again, as an admin
			// would
			t.Logf("promote %s: busy, again: %s", a, out)
			time.Sleep(500 * time.Millisecond)
			out, code = cs.mreplfsIn(ctx, s, "promote", "-config", filepath.Join(s.dir, "peer.conf"), "-idle", "200ms", a)
		}
		if code != 0 {
			t.Fatalf("promote %s on %s: exit %d:\n%s", a, s.node, code, out)
		}
		t.Logf("promote %s to %s took %v", a, s.node, time.Since(t0).Round(time.Millisecond))
		cs.masterOf[a] = newM
		// the roles moved with the account's servers' lists
		cs.c.servers[oldM].masters = remove(cs.c.servers[oldM].masters, a)
		cs.c.servers[newM].masters = append(cs.c.servers[newM].masters, a)
	}
	for _, a := range accounts {
		after := mustView(t, cs.master(a), a)
		if d := diffViews(before[a], after); len(d) > 0 {
			t.Errorf("%s on its new master differs from the old master:\n%s", a, strings.Join(d, "\n"))
		}
		if got := subscriptions(t, cs.master(a), a); strings.Join(got, "\n") != strings.Join(subs[a], "\n") {
			t.Errorf("%s's subscriptions on the new master: %q, before %q", a, got, subs[a])
		}
		if !strings.Contains(strings.Join(after.Folders, " "), `\Sent`) {
			t.Errorf("%s: no \\Sent on the new master: %v", a, after.Folders)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%v on their new masters: folders, SPECIAL-USE, subscriptions, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, UIDs, MODSEQs, flags, keywords, bodies and quota as before", accounts)

	for _, a := range accounts {
		// new mail lands on the new master ...
		if err := deliverOne(ctx, cs.master(a), a, "after promote"); err != nil {
			t.Fatalf("%s on its new master: %v", a, err)
		}
		c := cs.master(a).IMAP(t, a)
		if err := imapSteps(c, "SELECT INBOX", `STORE 1 +FLAGS (\Seen)`,
			`SETMETADATA INBOX/Drafts (/private/specialuse NIL)`,
			`SETMETADATA INBOX/Archive (/private/specialuse "\\Drafts")`); err != nil {
			t.Fatalf("%s writing on its new master: %v", a, err)
		}
		c.Logout()
		// ... and the old master refuses it
		lc, err := cyrustest.DialLMTP(ctx, cs.replica(a).LMTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		var re *cyrustest.ReplyError
		if err := lc.Deliver("x@example.org", []string{a}, cyrustest.Message("to the old master", 1000))[0]; !errors.As(err, &re) || re.Code != 451 {
			t.Errorf("LMTP to %s on its old master: %v, want 451", a, err)
		}
		lc.Close()
	}
	// ... and replicate back, SPECIAL-USE included
	cs.waitTrees(t, 60*time.Second)
	for _, a := range accounts {
		vm := mustView(t, cs.master(a), a)
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			vr := mustView(t, cs.replica(a), a)
			vr.Quota = vm.Quota // GETQUOTAROOT is refused on a replica server
			d := diffViews(vm, vr)
			if len(d) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s on its old master (now its replica) differs from the new master:\n%s", a, strings.Join(d, "\n"))
			}
		}
	}
	t.Logf("new deliveries, flags and SPECIAL-USE changes on the new masters replicated back to the old ones")
}

func remove(list []string, x string) []string {
	var out []string
	for _, v := range list {
		if v != x {
			out = append(out, v)
		}
	}
	return out
}

// acked is one delivery Cyrus acknowledged (LMTP 250) to one recipient.
type acked struct {
	account, subject string
	at               time.Time
}

// crashServer kills everything of server i at once with SIGKILL: its
// Cyrus (master and children), its peer and its mount.
func (cs *cyrusServers) crashServer(t *testing.T, i int) time.Time {
	t.Helper()
	s := cs.c.servers[i]
	pids := []int{}
	if m := cs.cyrus[i].MasterPID(); m > 0 {
		pids = append(pids, m)
		pids = append(pids, cyrustest.Children(m)...)
	}
	if s.peer != nil {
		pids = append(pids, s.peer.Process.Pid)
	}
	if s.mount != nil {
		pids = append(pids, s.mount.Process.Pid)
	}
	at := time.Now()
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	if s.peer != nil {
		s.peer.Wait()
		s.peer = nil
	}
	if s.mount != nil {
		s.mount.Wait()
		s.mount = nil
	}
	for _, tr := range treeNames {
		syscall.Unmount(s.mnt(tr), syscall.MNT_DETACH)
	}
	return at
}

// subjectsIn returns the subjects of the messages in account's INBOX on in.
func subjectsIn(t *testing.T, in *cyrustest.Instance, account string) map[string]bool {
	t.Helper()
	c := in.IMAP(t, account)
	defer c.Logout()
	if _, err := c.Cmd("EXAMINE INBOX"); err != nil {
		t.Fatalf("EXAMINE as %s: %v", account, err)
	}
	out, err := c.Cmd("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	if err != nil {
		t.Fatalf("FETCH as %s: %v", account, err)
	}
	got := map[string]bool{}
	for _, l := range out {
		if i := strings.Index(l, "Subject: "); i >= 0 {
			got[strings.TrimSpace(strings.SplitN(l[i+9:], "\r\n", 2)[0])] = true
		}
	}
	return got
}

// failoverPhase crashes server 0 under load (Cyrus, mount and peer killed
// at once with SIGKILL), runs `mreplfs failover -all-from` on server 1, and
// checks what the survivor serves. Half of the dead server's accounts are in
// sync mode: every delivery Cyrus acknowledged for them must be on the
// survivor. For the async half, the link is cut for a moment before the
// crash, so that some acknowledged deliveries cannot have been shipped: the
// survivor must lack exactly those, and when the dead server comes back its
// peer must set every one of them aside in its quarantine (and nothing the
// survivor has), then resync as the replica.
func (cs *cyrusServers) failoverPhase(t *testing.T) {
	ctx := context.Background()
	dead, surv := cs.c.servers[0], cs.c.servers[1]
	accounts := append([]string(nil), dead.masters...)
	// half of them in sync mode (refuse: a missed replica ack fails the
	// delivery rather than acknowledging it unreplicated)
	syncMode := map[string]bool{}
	f, err := os.OpenFile(filepath.Join(dead.dir, "mount.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range accounts[:len(accounts)/2] {
		syncMode[a] = true
		fmt.Fprintf(f, "sync_account: %s sync refuse 5s\n", a)
	}
	f.Close()
	if out, err := exec.Command(cs.c.self, "status", "-control", filepath.Join(dead.dir, "journal", "control.sock"), "-reload").CombinedOutput(); err != nil {
		t.Fatalf("reload of the sync settings: %v\n%s", err, out)
	}
	var mu sync.Mutex
	var acks []acked
	stop := make(chan struct{})
	loadDone := make(chan error, 1)
	go func() {
		c, err := cyrustest.DialLMTP(ctx, cs.cyrus[0].LMTPAddr)
		if err != nil {
			loadDone <- err
			return
		}
		defer c.Close()
		for k := 0; ; k++ {
			select {
			case <-stop:
				loadDone <- nil
				return
			default:
			}
			rcpts := []string{accounts[k%len(accounts)]}
			if k%3 == 0 {
				rcpts = append(rcpts, accounts[(k+1)%len(accounts)], accounts[(k+2)%len(accounts)])
			}
			subj := fmt.Sprintf("failover load %d", k)
			errs := c.Deliver("x@example.org", rcpts, cyrustest.Message(subj, 2000+(k%7)*3000))
			now := time.Now()
			mu.Lock()
			for j, err := range errs {
				if err == nil {
					acks = append(acks, acked{rcpts[j], subj, now})
				}
			}
			mu.Unlock()
			for _, err := range errs {
				var re *cyrustest.ReplyError
				if err != nil && !errors.As(err, &re) {
					loadDone <- nil // the crash cut the connection
					return
				}
			}
		}
	}()
	time.Sleep(3 * time.Second)
	// the sync accounts are in sync mode, and their fsyncs waited
	out, err := exec.Command(cs.c.self, "status", "-control", filepath.Join(dead.dir, "journal", "control.sock")).Output()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	var rep struct {
		Status struct {
			Sync struct {
				Waits    int64 `json:"waits"`
				Accounts []struct {
					Account, Mode string
				} `json:"accounts"`
			} `json:"sync"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	mst := rep.Status
	inSync := 0
	for _, a := range mst.Sync.Accounts {
		if syncMode[a.Account] && a.Mode == "sync" {
			inSync++
		}
	}
	if inSync != len(syncMode) || mst.Sync.Waits == 0 {
		t.Fatalf("sync mode not in force on %s (%d of %d accounts, %d waits):\n%s", dead.node, inSync, len(syncMode), mst.Sync.Waits, out)
	}
	// Cut the dead-to-be server's link: what it acknowledges for its async
	// accounts from now on cannot reach the survivor (sync accounts wait,
	// then refuse: 451). The async loss must be exactly these, and the
	// old master must list exactly them when it comes back.
	if err := cs.c.setLink(ctx, dead, false); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	var asyncAccts []string
	for _, a := range accounts {
		if !syncMode[a] {
			asyncAccts = append(asyncAccts, a)
		}
	}
	lc, err := cyrustest.DialLMTP(ctx, cs.cyrus[0].LMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 6; k++ {
		a := asyncAccts[k%len(asyncAccts)]
		subj := fmt.Sprintf("during the cut %d", k)
		if err := lc.Deliver("x@example.org", []string{a}, cyrustest.Message(subj, 3000))[0]; err != nil {
			t.Fatalf("async delivery to %s with the link cut: %v", a, err)
		}
		mu.Lock()
		acks = append(acks, acked{a, subj, time.Now()})
		mu.Unlock()
	}
	lc.Close()
	crashAt := cs.crashServer(t, 0)
	close(stop)
	if err := <-loadDone; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	t.Logf("crashed %s after %d acknowledged deliveries to its accounts", dead.node, len(acks))
	mu.Unlock()

	t0 := time.Now()
	out2, code := cs.mreplfsIn(ctx, surv, "failover", "-config", filepath.Join(surv.dir, "peer.conf"), "-probe", "500ms", "-all-from", dead.node)
	if code != 0 {
		t.Fatalf("failover -all-from %s: exit %d:\n%s", dead.node, code, out2)
	}
	t.Logf("failover -all-from %s took %v:\n%s", dead.node, time.Since(t0).Round(time.Millisecond), out2)
	for _, a := range accounts {
		cs.masterOf[a] = 1
	}

	lost, syncAcked, asyncAcked := 0, 0, 0
	var lostWindow time.Duration
	missing := map[string]map[string]bool{} // account → subjects
	onSurvivor := map[string]map[string]bool{}
	for _, a := range accounts {
		have := subjectsIn(t, cs.cyrus[1], a)
		onSurvivor[a] = have
		for _, ak := range acks {
			if ak.account != a {
				continue
			}
			if syncMode[a] {
				syncAcked++
			} else {
				asyncAcked++
			}
			if have[ak.subject] {
				continue
			}
			if syncMode[a] {
				t.Errorf("sync mode: %s's %q was acknowledged (LMTP 250) %v before the crash and is not on the survivor",
					a, ak.subject, crashAt.Sub(ak.at).Round(time.Millisecond))
				continue
			}
			lost++
			if missing[a] == nil {
				missing[a] = map[string]bool{}
			}
			missing[a][ak.subject] = true
			if d := crashAt.Sub(ak.at); d > lostWindow {
				lostWindow = d
			}
		}
		// writable on the survivor at once
		if err := deliverOne(ctx, cs.cyrus[1], a, "after failover"); err != nil {
			t.Errorf("%s on the survivor after failover: %v", a, err)
		}
		c := cs.cyrus[1].IMAP(t, a)
		if err := imapSteps(c, "SELECT INBOX", `STORE 1 +FLAGS (\Flagged)`); err != nil {
			t.Errorf("%s on the survivor after failover: %v", a, err)
		}
		c.Logout()
	}
	cutLost := 0
	for _, ak := range acks {
		// (a load delivery acknowledged just after the cut may have been
		// shipped before it: only those sent after the cut must be lost)
		if strings.HasPrefix(ak.subject, "during the cut") {
			if !missing[ak.account][ak.subject] {
				t.Errorf("%s's %q, acknowledged with the link cut, is on the survivor: the cut did not cut", ak.account, ak.subject)
			}
			cutLost++
		}
	}
	t.Logf("sync mode: all %d acknowledged deliveries on the survivor; async mode: %d of %d missing, %d of them sent after the link was cut %v before the crash (the oldest missing: acknowledged %v before the crash)",
		syncAcked, lost, asyncAcked, cutLost, crashAt.Sub(cutAt).Round(time.Millisecond), lostWindow.Round(time.Millisecond))

	// The dead server comes back (mount and peer; its Cyrus stays down):
	// its peer learns its epoch is stale, sets the unreplicated tail aside
	// as a quarantine and resyncs from the new master. The quarantine must
	// list exactly the missing messages.
	if err := cs.c.setLink(ctx, dead, true); err != nil {
		t.Fatal(err)
	}
	if err := cs.c.startMount(ctx, dead); err != nil {
		t.Fatal(err)
	}
	if err := cs.c.startPeer(dead); err != nil {
		t.Fatal(err)
	}
	var reported map[string]map[string]bool
	complete := func() bool {
		for a, subs := range missing {
			for s := range subs {
				if !reported[a][s] {
					return false
				}
			}
		}
		return true
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		reported = quarantinedSubjects(t, filepath.Join(dead.dir, "peer", "quarantine"))
		if complete() {
			break
		}
		if time.Now().After(deadline) {
			for a, subs := range missing {
				for s := range subs {
					if !reported[a][s] {
						t.Errorf("%s's lost %q is not in the old master's quarantine", a, s)
					}
				}
			}
			t.FailNow()
		}
	}
	// Everything else the quarantine holds was never acknowledged: a
	// sync-mode delivery refused (451) when the replica's ack did not come,
	// or one cut off by the crash. None of it is on the survivor.
	unacked := 0
	for a, subs := range reported {
		for s := range subs {
			switch {
			case onSurvivor[a][s]:
				t.Errorf("the old master's quarantine holds %s's %q, which is on the survivor too", a, s)
			case !missing[a][s]:
				unacked++
			}
		}
	}
	t.Logf("the old master came back: its quarantine holds all %d lost acknowledged messages, plus %d never acknowledged (refused or cut off by the crash)", lost, unacked)
	took := cs.waitTrees(t, 120*time.Second)
	t.Logf("the old master resynced as replica of every account %v later", took)
}

// quarantinedSubjects reads every quarantine report under dir and returns
// the subjects of the message files each keeps, per account.
func quarantinedSubjects(t *testing.T, dir string) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "report.json"))
		if err != nil {
			continue // being written
		}
		var rep quarantineReport
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		for _, f := range rep.Files {
			if !strings.HasSuffix(f.Path, ".") || f.Copy == "" {
				continue // not a message file
			}
			msg, err := os.ReadFile(filepath.Join(dir, e.Name(), f.Copy))
			if err != nil {
				t.Fatal(err)
			}
			if i := bytes.Index(msg, []byte("Subject: ")); i >= 0 {
				subj := strings.TrimSpace(strings.SplitN(string(msg[i+9:]), "\r\n", 2)[0])
				if out[rep.Account] == nil {
					out[rep.Account] = map[string]bool{}
				}
				out[rep.Account][subj] = true
			}
		}
	}
	return out
}

package main

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
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

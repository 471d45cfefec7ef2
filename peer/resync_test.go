package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mreplfs/journal"
)

// walkFirst lists an account's paths under root's trees in the tests'
// layout: <tree>/<account>/...
func walkFirst(root string) func(string, func(tree, rel string, fi os.FileInfo) error) error {
	return func(acct string, fn func(tree, rel string, fi os.FileInfo) error) error {
		for _, tree := range []string{"spool", "meta"} {
			base := filepath.Join(root, tree)
			err := filepath.Walk(filepath.Join(base, acct), func(p string, fi os.FileInfo, err error) error {
				if err != nil {
					if errors.Is(err, os.ErrNotExist) {
						return nil // removed while listed: its unlink is journaled
					}
					return err
				}
				rel, _ := filepath.Rel(base, p)
				return fn(tree, filepath.ToSlash(rel), fi)
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
}

// resyncSender is p.sender able to resync: it knows the master's trees.
func (p *pair) resyncSender(t testing.TB) (*Sender, *JournalSource) {
	s, src := p.sender(t, p.tlsA)
	s.Trees = map[string]string{"spool": filepath.Join(p.m.tree, "spool"), "meta": filepath.Join(p.m.tree, "meta")}
	s.Walk = walkFirst(p.m.tree)
	s.KnownFile = filepath.Join(t.TempDir(), "known.json")
	return s, src
}

// seed writes an existing install's mail for acct into the master tree
// without journaling it (years of mail before the first mount): n messages
// in INBOX, every third also in Sent (a hard link, as Cyrus's
// singleinstancestore does) and every fifth also in also (another account),
// a nested folder, cyrus.index/cyrus.cache, and a symlink.
func (m *master) seed(rng *rand.Rand, acct, also string, n int) (bytes int64) {
	m.t.Helper()
	mk := func(tree, rel string) string {
		p := filepath.Join(m.tree, tree, rel)
		if err := os.MkdirAll(p, 0o700); err != nil {
			m.t.Fatal(err)
		}
		return p
	}
	put := func(mbox string, b []byte, mt time.Time) string {
		m.uid[mbox]++
		dir := mk("spool", mbox)
		mk("meta", mbox)
		p := filepath.Join(dir, fmt.Sprintf("%d.", m.uid[mbox]))
		if err := os.WriteFile(p, b, 0o600); err != nil {
			m.t.Fatal(err)
		}
		os.Chtimes(p, mt, mt)
		m.index(acct, mbox, len(b))
		return p
	}
	link := func(src, mbox string) {
		m.uid[mbox]++
		dir := mk("spool", mbox)
		mk("meta", mbox)
		if err := os.Link(src, filepath.Join(dir, fmt.Sprintf("%d.", m.uid[mbox]))); err != nil {
			m.t.Fatal(err)
		}
		m.index(strings.SplitN(mbox, "/", 2)[0], mbox, 0)
	}
	for i := 0; i < n; i++ {
		b := body(rng, 100000+i, 1000+rng.IntN(30000))
		bytes += int64(len(b))
		mt := time.Unix(1600000000+int64(i)*3600, 0)
		mbox := acct + "/INBOX"
		if i%7 == 6 {
			mbox = acct + "/Archive/2019/Q" + fmt.Sprint(i%4)
		}
		p := put(mbox, b, mt)
		if i%3 == 0 {
			link(p, acct+"/Sent")
		}
		if i%5 == 0 && also != "" {
			link(p, also+"/INBOX")
		}
	}
	if err := os.Symlink("1.", filepath.Join(m.tree, "spool", acct, "INBOX", "first")); err != nil {
		m.t.Fatal(err)
	}
	return bytes
}

// index appends an index record and cache entry without journaling them.
func (m *master) index(acct, mbox string, size int) {
	for _, f := range []struct {
		name string
		data []byte
	}{{"cyrus.cache", []byte(strings.Repeat("c", 300))}, {"cyrus.index", []byte(fmt.Sprintf("%-112s", fmt.Sprintf("uid=%d size=%d", m.uid[mbox], size)))}} {
		p := filepath.Join(m.tree, "meta", mbox, f.name)
		fh, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			m.t.Fatal(err)
		}
		fh.Write(f.data)
		fh.Close()
		m.sizes[p] += int64(len(f.data))
	}
}

func (p *pair) sameTrees(t *testing.T) {
	t.Helper()
	if d := diffTrees(t, treeDigest(t, p.m.tree), treeDigest(t, p.replica)); len(d) > 0 {
		t.Fatalf("replica differs (%d):\n%s", len(d), strings.Join(d[:min(len(d), 20)], "\n"))
	}
}

// TestResyncSeedsUnderLoad: accounts whose mail the journal never saw are
// seeded to an empty replica while deliveries to them go on during the
// walk; the replica ends identical (hard links, symlink, nested folders,
// index and cache included), and the stream resumed without divergence.
func TestResyncSeedsUnderLoad(t *testing.T) {
	accts := []string{"alice", "bob"}
	p := newPair(t, accts)
	rng := rand.New(rand.NewPCG(11, 12))
	seeded := p.m.seed(rng, "alice", "bob", 400)
	seeded += p.m.seed(rng, "bob", "", 100)
	s, _ := p.resyncSender(t)
	var during atomic.Int64
	s.Progress = func(pr ResyncProgress) {
		if pr.Phase == "sending" {
			during.Store(1)
		}
	}

	// Deliveries run before, during and after the resyncs.
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var delivered, whileResync int
	go func() {
		defer wg.Done()
		lrng := rand.New(rand.NewPCG(13, 14))
		for i := 0; ; i++ {
			select {
			case <-stopLoad:
				return
			default:
			}
			rc := []string{accts[i%2]}
			if i%4 == 0 {
				rc = accts
			}
			p.m.deliver(rc, body(lrng, i, 500+lrng.IntN(5000)))
			delivered++
			if during.Load() == 1 && s.Stats.Resyncs.Load() < 2 {
				whileResync++
			}
			if i%5 == 0 {
				p.m.sync()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	start := time.Now()
	run(t, s)
	deadline := time.Now().Add(60 * time.Second)
	for s.Stats.Resyncs.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("resyncs did not complete")
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	time.Sleep(200 * time.Millisecond) // more deliveries after the resync
	close(stopLoad)
	wg.Wait()
	p.m.sync()
	p.waitApplied(t, 30*time.Second)
	p.sameTrees(t)
	for _, a := range accts {
		if pos, _ := p.applier.Position(a); pos.State != StateOK {
			t.Fatalf("%s: %+v", a, pos)
		}
	}
	if whileResync == 0 {
		t.Fatal("no delivery happened while the resync was sending: the test proves nothing")
	}
	t.Logf("seeded %d bytes; resync took %v (settle included), sent %d files, %d bytes by value; %d deliveries (%d during the resync); wire total %d bytes",
		seeded, took, s.Stats.ResyncFiles.Load(), s.Stats.ResyncBytes.Load(), delivered, whileResync, s.Stats.BytesOnWire.Load())
}

// copyTree copies src onto dst (files, dirs, symlinks, modes and mtimes;
// hard links become separate files).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		d := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			return os.MkdirAll(d, fi.Mode().Perm())
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			return os.Symlink(l, d)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(d, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			return err
		}
		out.Close()
		return os.Chtimes(d, fi.ModTime(), fi.ModTime())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestResyncSendsOnlyTheDifference: a replica that already holds most of
// an account (a restored backup, a lost state.db) gets only what differs:
// missing and changed files cross the wire, extra files are removed,
// duplicate names become hard links again.
func TestResyncSendsOnlyTheDifference(t *testing.T) {
	p := newPair(t, []string{"alice"})
	rng := rand.New(rand.NewPCG(21, 22))
	seeded := p.m.seed(rng, "alice", "", 300)
	for _, tr := range []string{"spool", "meta"} {
		copyTree(t, filepath.Join(p.m.tree, tr, "alice"), filepath.Join(p.replica, tr, "alice"))
	}
	// Differences: 10 messages missing, one changed, an index changed, and
	// extra files and folders only on the replica.
	var missing int64
	for i := 1; i <= 10; i++ {
		f := filepath.Join(p.replica, "spool/alice/INBOX", fmt.Sprintf("%d.", i*4))
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		missing += fi.Size()
		os.Remove(f)
	}
	os.WriteFile(filepath.Join(p.replica, "spool/alice/INBOX/2."), []byte("not what the master has"), 0o600)
	os.WriteFile(filepath.Join(p.replica, "meta/alice/INBOX/cyrus.index"), []byte("stale"), 0o600)
	os.WriteFile(filepath.Join(p.replica, "spool/alice/INBOX/999."), []byte("expunged on the master"), 0o600)
	os.MkdirAll(filepath.Join(p.replica, "spool/alice/Deleted/Sub"), 0o700)
	os.WriteFile(filepath.Join(p.replica, "spool/alice/Deleted/Sub/1."), []byte("gone folder"), 0o600)
	// Something that is not alice's stays.
	os.MkdirAll(filepath.Join(p.replica, "spool/zed"), 0o700)
	os.WriteFile(filepath.Join(p.replica, "spool/zed/keep"), []byte("not alice's"), 0o600)

	s, _ := p.resyncSender(t)
	run(t, s)
	deadline := time.Now().Add(30 * time.Second)
	for s.Stats.Resyncs.Load() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("resync did not complete")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(p.replica, "spool/zed/keep")); err != nil {
		t.Fatalf("another account's file was touched: %v", err)
	}
	os.RemoveAll(filepath.Join(p.replica, "spool/zed"))
	p.sameTrees(t)
	wire, sentBytes := s.Stats.BytesOnWire.Load(), s.Stats.ResyncBytes.Load()
	t.Logf("account %d bytes of messages; replica lacked %d; resync sent %d content bytes, %d files, %d bytes on the wire",
		seeded, missing, sentBytes, s.Stats.ResyncFiles.Load(), wire)
	if wire > seeded/5 {
		t.Fatalf("wire bytes %d for a replica lacking %d of %d: want far less than resending everything", wire, missing, seeded)
	}
	// At most the 10 missing messages (fewer when a copy is held under
	// another name), the changed message and the changed index.
	if n := s.Stats.ResyncFiles.Load(); n < 2 || n > 12 {
		t.Fatalf("files sent: got %d, want 2..12", n)
	}
}

// TestResyncHostileListing: a listing naming paths outside the account
// (another account's, "..", an unknown tree) changes nothing and
// quarantines the account.
func TestResyncHostileListing(t *testing.T) {
	for name, bad := range map[string][2]string{
		"dotdot":       {"spool", "alice/../../escape"},
		"other":        {"spool", "carol/INBOX/1."},
		"unknown tree": {"conf", "alice/x"},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPair(t, []string{"alice", "bob"})
			rng := rand.New(rand.NewPCG(31, 32))
			p.m.seed(rng, "alice", "", 5)
			os.WriteFile(filepath.Join(p.m.tree, "escape"), []byte("x"), 0o600)
			os.MkdirAll(filepath.Join(p.m.tree, "conf/alice"), 0o700)
			os.WriteFile(filepath.Join(p.m.tree, "conf/alice/x"), []byte("x"), 0o600)
			s, _ := p.resyncSender(t)
			s.Trees["conf"] = filepath.Join(p.m.tree, "conf")
			honest := s.Walk
			s.Walk = func(acct string, fn func(tree, rel string, fi os.FileInfo) error) error {
				if err := honest(acct, fn); err != nil || acct != "alice" {
					return err
				}
				fi, err := os.Lstat(filepath.Join(p.m.tree, "spool/alice/INBOX/1."))
				if err != nil {
					return err
				}
				// A hostile master: its walker names a foreign path.
				return fn(bad[0], bad[1], fi)
			}
			// The sender hashes what it lists: give the hostile names a file.
			os.MkdirAll(filepath.Join(p.m.tree, "spool/carol/INBOX"), 0o700)
			os.WriteFile(filepath.Join(p.m.tree, "spool/carol/INBOX/1."), []byte("x"), 0o600)
			run(t, s)
			deadline := time.Now().Add(20 * time.Second)
			for {
				pos, _ := p.applier.Position("alice")
				if pos.State == StateQuarantine {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("alice not quarantined: %+v", pos)
				}
				time.Sleep(10 * time.Millisecond)
			}
			for _, f := range []string{"escape", "../escape", "spool/carol", "conf", "spool/alice"} {
				if _, err := os.Lstat(filepath.Join(p.replica, f)); err == nil {
					t.Errorf("%s exists on the replica after a refused listing", f)
				}
			}
			// bob (empty) was resynced and streams.
			p.m.deliver([]string{"bob"}, []byte("for bob"))
			p.m.sync()
			deadline = time.Now().Add(20 * time.Second)
			for {
				if pos, _ := p.applier.Position("bob"); pos.Applied >= p.m.lsn {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("bob held up by alice's refused resync")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestResyncAfterDirty: the journal marked alice only dirty (its size
// limit), so the receiver asks for a full resync; the sender reconnects,
// resyncs, and the stream goes on.
func TestResyncAfterDirty(t *testing.T) {
	p := newPair(t, []string{"alice"})
	s, _ := p.resyncSender(t)
	s.ResyncSettle = 100 * time.Millisecond
	run(t, s)
	rng := rand.New(rand.NewPCG(41, 42))
	for i := 0; i < 10; i++ {
		p.m.deliver([]string{"alice"}, body(rng, i, 3000))
	}
	p.m.sync()
	p.waitApplied(t, 20*time.Second)
	base := s.Stats.Resyncs.Load()
	// Changes the journal did not keep in detail, then OpDirty.
	p.m.seed(rng, "alice", "", 20)
	p.m.append(journal.Record{Op: journal.OpDirty, Account: "alice"})
	p.m.sync()
	deadline := time.Now().Add(30 * time.Second)
	for s.Stats.Resyncs.Load() == base {
		if time.Now().After(deadline) {
			pos, _ := p.applier.Position("alice")
			t.Fatalf("no resync after OpDirty: %+v", pos)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 10; i < 20; i++ {
		p.m.deliver([]string{"alice"}, body(rng, i, 3000))
	}
	p.m.sync()
	p.waitApplied(t, 20*time.Second)
	p.sameTrees(t)
}

// TestResyncLostState: a replica whose recorded position went back (its
// state.db restored from an old copy) is resynced because the sender
// remembers what it acknowledged.
func TestResyncLostState(t *testing.T) {
	p := newPair(t, []string{"alice"})
	s, _ := p.resyncSender(t)
	s.ResyncSettle = 100 * time.Millisecond
	stop := run(t, s)
	rng := rand.New(rand.NewPCG(51, 52))
	for i := 0; i < 20; i++ {
		p.m.deliver([]string{"alice"}, body(rng, i, 2000))
	}
	p.m.sync()
	p.waitApplied(t, 20*time.Second)
	time.Sleep(100 * time.Millisecond)
	stop()
	// The replica forgets: position back to 1; its copy of a message goes.
	p.applier.st.update(func(get func(string) AccountPos, put func(string, AccountPos)) {
		pos := get("alice")
		pos.Applied = 1
		put("alice", pos)
	})
	os.Remove(filepath.Join(p.replica, "spool/alice/INBOX/3."))
	s2, _ := p.resyncSender(t)
	s2.KnownFile, s2.ResyncSettle = s.KnownFile, 100*time.Millisecond
	run(t, s2)
	deadline := time.Now().Add(20 * time.Second)
	for s2.Stats.Resyncs.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a replica that went back was not resynced")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.waitApplied(t, 20*time.Second)
	p.sameTrees(t)
	if n := s2.Stats.ResyncFiles.Load(); n != 1 {
		t.Fatalf("resync sent %d files, want 1 (the removed message)", n)
	}
}

// TestResyncCommand: Sender.Resync (what `mreplfs peer -resync` runs)
// brings back a quarantined account's replica to the master's state.
func TestResyncCommand(t *testing.T) {
	p := newPair(t, []string{"alice"})
	rng := rand.New(rand.NewPCG(61, 62))
	p.m.seed(rng, "alice", "", 30)
	if err := p.applier.SetState("alice", StateQuarantine, "test"); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(p.replica, "spool/alice"), 0o700)
	os.WriteFile(filepath.Join(p.replica, "spool/alice/stray"), []byte("x"), 0o600)
	s, _ := p.resyncSender(t)
	var last ResyncProgress
	s.Progress = func(pr ResyncProgress) { last = pr }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Resync(ctx, []AccountEpoch{{"alice", 1}}); err != nil {
		t.Fatal(err)
	}
	if last.Phase != "done" {
		t.Fatalf("last progress %+v", last)
	}
	if pos, _ := p.applier.Position("alice"); pos.State != StateOK {
		t.Fatalf("alice after resync: %+v", pos)
	}
	p.sameTrees(t)
}

// BenchmarkResyncSeed: seed an empty replica with an account of 500
// messages (about 8 MB, index and cache included) over TLS on loopback.
// Reports seconds per seed, content MB/s and wire bytes per content byte.
func BenchmarkResyncSeed(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		p := newPair(b, []string{"alice"})
		rng := rand.New(rand.NewPCG(71, 72))
		bytes := p.m.seed(rng, "alice", "", 500)
		s, _ := p.resyncSender(b)
		s.ResyncSettle = time.Millisecond
		b.StartTimer()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := s.Resync(ctx, []AccountEpoch{{"alice", 1}})
		cancel()
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(bytes)
		b.ReportMetric(float64(s.Stats.BytesOnWire.Load())/float64(bytes), "wire/content")
		b.ReportMetric(float64(s.Stats.ResyncFiles.Load()), "files")
	}
}

// TestResyncReplayBoundary: records on both sides of the end of a resync's
// replay window arrive in one batch; writes to one file must not be merged
// across it (the merged write would carry the pre-state of a record the
// copy is already past, and quarantine the account).
func TestResyncReplayBoundary(t *testing.T) {
	p := newPair(t, []string{"alice"})
	rng := rand.New(rand.NewPCG(81, 82))
	p.m.seed(rng, "alice", "", 20)
	s, _ := p.resyncSender(t)
	s.ResyncSettle = 50 * time.Millisecond
	honest := s.Walk
	n := 0
	s.Walk = func(acct string, fn func(tree, rel string, fi os.FileInfo) error) error {
		// After P was recorded: the copy will hold these deliveries.
		for i := 0; i < 3; i++ {
			n++
			p.m.deliver([]string{"alice"}, body(rng, n, 800))
		}
		p.m.sync()
		return honest(acct, fn)
	}
	done := make(chan struct{})
	s.Progress = func(pr ResyncProgress) {
		if pr.Phase != "done" {
			return
		}
		// After the replay window closed, before streaming starts.
		for i := 0; i < 3; i++ {
			n++
			p.m.deliver([]string{"alice"}, body(rng, n, 800))
		}
		p.m.sync()
		close(done)
	}
	run(t, s)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("resync did not complete")
	}
	p.waitApplied(t, 20*time.Second)
	p.sameTrees(t)
	if pos, _ := p.applier.Position("alice"); pos.State != StateOK {
		t.Fatalf("alice: %+v", pos)
	}
}

// TestResyncFailureStaysWithItsAccount: an account the master cannot list,
// and one the replica cannot resync (a file it cannot remove), hold up
// nobody else: the other account is seeded and streams.
func TestResyncFailureStaysWithItsAccount(t *testing.T) {
	p := newPair(t, []string{"alice", "bob", "carol"})
	rng := rand.New(rand.NewPCG(91, 92))
	for _, a := range []string{"alice", "bob", "carol"} {
		p.m.seed(rng, a, "", 10)
	}
	// carol's replica holds a file the master lacks and nobody may remove.
	stuck := filepath.Join(p.replica, "spool/carol/INBOX/stuck")
	os.MkdirAll(filepath.Dir(stuck), 0o700)
	os.WriteFile(stuck, []byte("immutable"), 0o600)
	if out, err := exec.Command("chattr", "+i", stuck).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chattr +i (needs root and e2fsprogs): %v %s", err, out)
		}
		t.Skipf("chattr +i: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", stuck).Run() })
	s, src := p.resyncSender(t)
	s.ResyncSettle = 50 * time.Millisecond
	honest := s.Walk
	s.Walk = func(acct string, fn func(tree, rel string, fi os.FileInfo) error) error {
		if acct == "alice" {
			return errors.New("permission denied (test)")
		}
		return honest(acct, fn)
	}
	run(t, s)
	p.m.deliver([]string{"bob"}, []byte("for bob"))
	p.m.sync()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if pos, _ := p.applier.Position("bob"); pos.Applied >= p.m.lsn && pos.State == StateOK {
			break
		}
		if time.Now().After(deadline) {
			pos, _ := p.applier.Position("bob")
			t.Fatalf("bob held up by the others' failed resyncs: %+v", pos)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Between attempts the journal is not held for the failed accounts.
	for deadline := time.Now().Add(10 * time.Second); src.Acked() < p.m.lsn; {
		if time.Now().After(deadline) {
			t.Fatalf("consumer position %d held below %d by the failed resyncs", src.Acked(), p.m.lsn)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		pos, _ := p.applier.Position("carol")
		if pos.State == StateResyncing && strings.Contains(pos.Reason, "resync failed") {
			break
		}
		if time.Now().After(deadline) { // the failed attempt may end after bob's progress
			t.Fatalf("carol: %+v, want state resyncing with the failure", pos)
		}
	}
	if pos, _ := p.applier.Position("alice"); pos.Applied != 0 || pos.State != StateOK {
		t.Fatalf("alice (not listable on the master): %+v, want untouched", pos)
	}
	want := map[string]string{}
	for k, v := range treeDigest(t, p.m.tree) {
		if strings.Contains(k, "bob") {
			want[k] = v
		}
	}
	got := map[string]string{}
	for k, v := range treeDigest(t, p.replica) {
		if strings.Contains(k, "bob") {
			got[k] = v
		}
	}
	if d := diffTrees(t, want, got); len(d) > 0 {
		t.Fatalf("bob differs:\n%s", strings.Join(d, "\n"))
	}
}

// TestResyncDoesNotHoldOthers: while an account is resynced (its walk
// held up here), the partner's other accounts keep streaming.
func TestResyncDoesNotHoldOthers(t *testing.T) {
	p := newPair(t, []string{"bob", "alice"})
	rng := rand.New(rand.NewPCG(101, 102))
	s1, _ := p.resyncSender(t)
	s1.Accounts = func() []AccountEpoch { return []AccountEpoch{{"bob", 1}} }
	stop := run(t, s1)
	p.m.deliver([]string{"bob"}, body(rng, 1, 1000))
	p.m.sync()
	p.waitApplied(t, 20*time.Second)
	stop()

	// alice joins with an existing spool; her walk waits for a release.
	p.m.seed(rng, "alice", "", 50)
	s2, _ := p.resyncSender(t)
	s2.KnownFile = s1.KnownFile
	s2.ResyncSettle = 50 * time.Millisecond
	release := make(chan struct{})
	honest := s2.Walk
	s2.Walk = func(acct string, fn func(tree, rel string, fi os.FileInfo) error) error {
		if acct == "alice" {
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
		return honest(acct, fn)
	}
	run(t, s2)
	p.m.deliver([]string{"bob"}, body(rng, 2, 1000))
	p.m.sync()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pos, _ := p.applier.Position("bob"); pos.Applied >= p.m.lsn {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bob did not stream while alice's resync was under way")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	deadline = time.Now().Add(20 * time.Second)
	for s2.Stats.Resyncs.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("alice's resync did not complete")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.m.deliver([]string{"alice", "bob"}, body(rng, 3, 1000))
	p.m.sync()
	p.waitApplied(t, 20*time.Second)
	p.sameTrees(t)
}

// TestReconnectWaitsForOldBatch: a sender reconnects while the receiver is
// still applying a batch of its old connection; the new Welcome must give
// the position after that batch, or the new sender resends records the old
// batch applies meanwhile, over a replica already past their pre-state.
func TestReconnectWaitsForOldBatch(t *testing.T) {
	p := newPair(t, []string{"alice"})
	rng := rand.New(rand.NewPCG(111, 112))
	block, blocked := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var armed atomic.Bool
	p.applier.observe = func(r *journal.Record) {
		if armed.Load() {
			once.Do(func() { close(blocked); <-block })
		}
	}
	s1, _ := p.sender(t, p.tlsA)
	stop1 := run(t, s1)
	for i := 0; i < 3; i++ {
		p.m.deliver([]string{"alice"}, body(rng, i, 1000))
	}
	p.m.sync()
	p.waitApplied(t, 20*time.Second)
	armed.Store(true)
	for i := 3; i < 6; i++ {
		p.m.deliver([]string{"alice"}, body(rng, i, 1000))
	}
	p.m.sync()
	select {
	case <-blocked:
	case <-time.After(20 * time.Second):
		t.Fatal("no batch reached the applier")
	}
	stop1() // the old connection ends while its batch is being applied
	for i := 6; i < 9; i++ {
		p.m.deliver([]string{"alice"}, body(rng, i, 1000))
	}
	p.m.sync()
	s2, _ := p.sender(t, p.tlsA)
	run(t, s2)
	time.Sleep(300 * time.Millisecond) // s2's Welcome is under way
	close(block)
	p.waitApplied(t, 20*time.Second)
	p.sameTrees(t)
	if pos, _ := p.applier.Position("alice"); pos.State != StateOK {
		t.Fatalf("alice: %+v", pos)
	}
}

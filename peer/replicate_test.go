package peer

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mreplfs/journal"
	"mreplfs/rolemap"
)

// fakeRoles is a role map in memory.
type fakeRoles map[string]rolemap.Entry

func (f fakeRoles) Lookup(a string) (rolemap.Entry, bool) { e, ok := f[a]; return e, ok }

const masterAddr = "10.77.0.1:7411" // what the replica's role map names as partner

// master is the sending server of a test: a tree written like Cyrus does,
// and the journal records the fs layer would make of it.
type master struct {
	t     testing.TB
	tree  string // holds spool/ and meta/
	stage string
	log   *journal.Log
	sizes map[string]int64 // in-place files: current size
	uid   map[string]int   // per mailbox: next uid
	lsn   journal.LSN
	// payload counts what Cyrus wrote, body once per delivery (DESIGN.md §5).
	payload int64
}

func newMaster(t testing.TB) *master {
	t.Helper()
	m := &master{t: t, tree: t.TempDir(), stage: t.TempDir(), sizes: map[string]int64{}, uid: map[string]int{}}
	for _, d := range []string{"spool", "meta"} {
		os.MkdirAll(filepath.Join(m.tree, d), 0o755)
	}
	l, err := journal.Open(filepath.Join(t.TempDir(), "journal"), journal.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	m.log = l
	return m
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func (m *master) append(r journal.Record) {
	m.t.Helper()
	r.Epoch = 1
	r.UID, r.GID = uint32(os.Getuid()), uint32(os.Getgid())
	l, err := m.log.Append(context.Background(), &r)
	if err != nil {
		m.t.Fatal(err)
	}
	m.lsn = l
}

func (m *master) sync() {
	m.t.Helper()
	if err := m.log.Sync(context.Background(), m.lsn); err != nil {
		m.t.Fatal(err)
	}
}

// ensureDir makes a mailbox directory (and its record) once.
func (m *master) ensureDir(acct, tree, rel string) {
	p := filepath.Join(m.tree, tree, rel)
	if _, err := os.Stat(p); err == nil {
		return
	}
	if err := os.MkdirAll(p, 0o700); err != nil {
		m.t.Fatal(err)
	}
	m.append(journal.Record{Op: journal.OpMkdir, Account: acct, Tree: tree, Path: rel, Mode: 0o700})
}

// writeAt changes an in-place file (cyrus.index, cyrus.cache) like Cyrus.
func (m *master) writeAt(acct, tree, rel string, off int64, data []byte) {
	p := filepath.Join(m.tree, tree, rel)
	prev, seen := m.sizes[p]
	if !seen {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			m.t.Fatal(err)
		}
		f.Close()
		m.append(journal.Record{Op: journal.OpCreate, Account: acct, Tree: tree, Path: rel, Mode: 0o600})
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		m.t.Fatal(err)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		m.t.Fatal(err)
	}
	f.Close()
	m.sizes[p] = max(prev, off+int64(len(data)))
	m.append(journal.Record{Op: journal.OpWrite, Account: acct, Tree: tree, Path: rel, Offset: off, Data: data, PrevSize: prev})
	m.payload += int64(len(data))
}

// deliver writes one message to several accounts: stage file, link into each
// INBOX, index record + header rewrite, cache append, like lmtpd.
func (m *master) deliver(rcpts []string, body []byte) {
	stage := filepath.Join(m.stage, fmt.Sprintf("stage-%d", m.lsn))
	if err := os.WriteFile(stage, body, 0o600); err != nil {
		m.t.Fatal(err)
	}
	h := sha256.Sum256(body)
	if err := m.log.PutBlob(context.Background(), h, stage); err != nil {
		m.t.Fatal(err)
	}
	m.payload += int64(len(body))
	mtime := time.Unix(1796000000+int64(m.lsn), 0)
	for _, a := range rcpts {
		mbox := a + "/INBOX"
		m.ensureDir(a, "spool", mbox)
		m.ensureDir(a, "meta", mbox)
		m.uid[mbox]++
		name := fmt.Sprintf("%s/%d.", mbox, m.uid[mbox])
		dst := filepath.Join(m.tree, "spool", name)
		if err := os.Link(stage, dst); err != nil {
			m.t.Fatal(err)
		}
		os.Chtimes(dst, mtime, mtime)
		m.append(journal.Record{Op: journal.OpMessage, Account: a, Tree: "spool", Path: name, Size: int64(len(body)),
			Mode: 0o600, Hash: h, MTime: mtime.UnixNano(), ATime: mtime.UnixNano()})
		idx := mbox + "/cyrus.index"
		cache := mbox + "/cyrus.cache"
		rec := make([]byte, 112)
		copy(rec, fmt.Sprintf("uid=%d size=%d", m.uid[mbox], len(body)))
		m.writeAt(a, "meta", cache, m.sizes[filepath.Join(m.tree, "meta", cache)], []byte(strings.Repeat("c", 300)))
		m.writeAt(a, "meta", idx, 160+int64(m.uid[mbox]-1)*112, rec)
		m.writeAt(a, "meta", idx, 0, []byte(fmt.Sprintf("%-160s", fmt.Sprintf("header exists=%d", m.uid[mbox]))))
	}
	os.Remove(stage)
}

// treeDigest describes every file and directory under dir: type, mode,
// size, content hash, link count and (files) mtime.
func treeDigest(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	// Link counts within the tree: on the master the journal's blob store
	// holds one more link to each message file, outside the tree.
	names := map[uint64]int{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				names[fi.Sys().(*syscall.Stat_t).Ino]++
			}
		}
		return nil
	})
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		switch {
		case fi.IsDir():
			out[rel] = fmt.Sprintf("dir %o", fi.Mode().Perm())
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "symlink " + l
		default:
			b, _ := os.ReadFile(p)
			n := names[st.Ino]
			out[rel] = fmt.Sprintf("file %o %d %x links=%d mtime=%d", fi.Mode().Perm(), fi.Size(), sha256.Sum256(b), n, fi.ModTime().UnixNano())
			if !strings.HasSuffix(rel, ".") { // in-place files: mtime is not replicated
				out[rel] = fmt.Sprintf("file %o %d %x links=%d", fi.Mode().Perm(), fi.Size(), sha256.Sum256(b), n)
			}
		}
		return nil
	})
	return out
}

func diffTrees(t *testing.T, a, b map[string]string) []string {
	t.Helper()
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, fmt.Sprintf("%s: master %q, replica %q", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%s: only on the replica (%q)", k, v))
		}
	}
	sort.Strings(d)
	return d
}

// pair is a master and a replica server joined by a real TCP + TLS link.
type pair struct {
	m        *master
	replica  string
	applier  *DirApplier
	recv     *Receiver
	ln       net.Listener
	tlsA     TLSFiles
	tlsB     TLSFiles
	accounts []string
	roles    fakeRoles
	site     tlsSite
}

func newPair(t testing.TB, accounts []string) *pair {
	t.Helper()
	site := newSite(t, "site")
	p := &pair{m: newMaster(t), replica: t.TempDir(), accounts: accounts, roles: fakeRoles{},
		tlsA: site.node(t, "srv-a"), tlsB: site.node(t, "srv-b"), site: site}
	for _, d := range []string{"spool", "meta"} {
		os.MkdirAll(filepath.Join(p.replica, d), 0o755)
	}
	for _, a := range accounts {
		p.roles[a] = rolemap.Entry{Role: rolemap.Replica, Partner: masterAddr, Epoch: 1}
	}
	a, err := OpenDirApplier(ApplierOptions{
		Trees:    map[string]string{"spool": filepath.Join(p.replica, "spool"), "meta": filepath.Join(p.replica, "meta")},
		StateDir: t.TempDir(), Logger: testLogger(t),
		CheckPath: func(account, tree, rel string) error {
			if strings.SplitN(rel, "/", 2)[0] != account {
				return fmt.Errorf("not %s's", account)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	p.applier = a
	srvTLS, err := p.tlsB.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	p.recv = &Receiver{Node: "srv-b", Applier: a, Roles: p.roles, Partners: map[string]string{"srv-a": masterAddr}, TLS: srvTLS, Logger: testLogger(t)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.recv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

// sender makes a sender from srv-a (or another identity) to the replica.
func (p *pair) sender(t testing.TB, files TLSFiles) (*Sender, *JournalSource) {
	t.Helper()
	cli, err := files.ClientConfig("srv-b")
	if err != nil {
		t.Fatal(err)
	}
	src := &JournalSource{Log: p.m.log, Consumer: "peer:srv-b"}
	s := &Sender{Node: "srv-a", Partner: "srv-b", Addr: p.ln.Addr().String(), Source: src, TLS: cli, Logger: testLogger(t),
		Accounts: func() []AccountEpoch {
			var out []AccountEpoch
			for _, a := range p.accounts {
				out = append(out, AccountEpoch{a, 1})
			}
			return out
		}}
	return s, src
}

func run(t *testing.T, s *Sender) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitApplied waits until the replica applied the master's last record of
// every account.
func (p *pair) waitApplied(t *testing.T, timeout time.Duration) {
	t.Helper()
	want := map[string]journal.LSN{}
	r, err := p.m.log.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for r.Position() <= p.m.lsn {
		rec, err := r.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(rec.Account, pendingPrefix) {
			want[rec.Account] = rec.LSN
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		behind := ""
		for a, l := range want {
			pos, _ := p.applier.Position(a)
			if pos.Applied < l {
				behind = fmt.Sprintf("%s at %d, want %d (state %v %s)", a, pos.Applied, l, pos.State, pos.Reason)
			}
		}
		if behind == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica did not catch up in %v: %s", timeout, behind)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func body(rng *rand.Rand, i, size int) []byte {
	b := []byte(fmt.Sprintf("Return-Path: <sender@example.org>\r\nMessage-ID: <%d@test>\r\nSubject: message %d\r\n\r\n", i, i))
	for len(b) < size {
		b = append(b, "lorem ipsum dolor sit amet "[rng.IntN(20):]...)
		b = append(b, byte('a'+rng.IntN(26)))
	}
	return b[:size]
}

// TestReplicateOverTLS: a Cyrus-shaped load on the master (1 and 3
// recipients) reaches the replica over mutual TLS, byte-identical, hard
// links included, each body crossing the wire once.
func TestReplicateOverTLS(t *testing.T) {
	accts := []string{"alice", "bob", "carol", "dave"}
	p := newPair(t, accts)
	s, _ := p.sender(t, p.tlsA)
	run(t, s)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 120; i++ {
		rcpts := []string{accts[i%4]}
		if i%5 == 0 {
			rcpts = []string{"alice", "bob", "carol"}
		}
		p.m.deliver(rcpts, body(rng, i, 500+rng.IntN(20000)))
		if i%10 == 0 {
			p.m.sync()
		}
	}
	p.m.sync()
	p.waitApplied(t, 30*time.Second)
	if d := diffTrees(t, treeDigest(t, p.m.tree), treeDigest(t, p.replica)); len(d) > 0 {
		t.Fatalf("replica differs (%d):\n%s", len(d), strings.Join(d[:min(len(d), 20)], "\n"))
	}
	if got := s.Stats.BodiesByValue.Load(); got != 120 {
		t.Errorf("bodies sent by value: got %d, want 120 (one per delivery)", got)
	}
	if got := s.Stats.BodiesByRef.Load(); got != 24*2 {
		t.Errorf("bodies sent by reference: got %d, want %d", got, 24*2)
	}
	t.Logf("payload %d bytes, on the wire %d bytes (%.2fx)", p.m.payload, s.Stats.BytesOnWire.Load(), float64(s.Stats.BytesOnWire.Load())/float64(p.m.payload))
}

// TestTenRecipientsWireBytes: one body linked into 10 mailboxes crosses the
// wire once; the link carries ≤ 1.1× the payload.
func TestTenRecipientsWireBytes(t *testing.T) {
	var accts []string
	for i := 0; i < 10; i++ {
		accts = append(accts, fmt.Sprintf("user%d", i))
	}
	p := newPair(t, accts)
	s, _ := p.sender(t, p.tlsA)
	run(t, s)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 30; i++ {
		b := make([]byte, 30000) // incompressible body: no help from zstd
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		p.m.deliver(accts, b)
	}
	p.m.sync()
	p.waitApplied(t, 30*time.Second)
	if d := diffTrees(t, treeDigest(t, p.m.tree), treeDigest(t, p.replica)); len(d) > 0 {
		t.Fatalf("replica differs:\n%s", strings.Join(d[:min(len(d), 20)], "\n"))
	}
	ratio := float64(s.Stats.BytesOnWire.Load()) / float64(p.m.payload)
	t.Logf("10 recipients: payload %d, wire %d, ratio %.3f", p.m.payload, s.Stats.BytesOnWire.Load(), ratio)
	if ratio > 1.1 {
		t.Errorf("wire bytes %.3f× payload, want ≤ 1.1×", ratio)
	}
}

// TestResumeAfterSenderStops: the sender is stopped mid-stream and a new one
// resumes from the persisted positions; nothing is lost or applied over.
func TestResumeAfterSenderStops(t *testing.T) {
	accts := []string{"alice", "bob"}
	p := newPair(t, accts)
	rng := rand.New(rand.NewPCG(5, 6))
	s1, _ := p.sender(t, p.tlsA)
	stop := run(t, s1)
	for i := 0; i < 200; i++ {
		p.m.deliver([]string{accts[i%2]}, body(rng, i, 2000))
		if i == 100 {
			p.m.sync()
			for deadline := time.Now().Add(10 * time.Second); s1.Stats.Acked.Load() == 0 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			stop() // mid-stream: some acked, more coming
		}
	}
	p.m.sync()
	s2, src := p.sender(t, p.tlsA)
	if src.Acked() == 0 {
		t.Fatal("no acked position persisted by the first sender")
	}
	run(t, s2)
	p.waitApplied(t, 30*time.Second)
	if d := diffTrees(t, treeDigest(t, p.m.tree), treeDigest(t, p.replica)); len(d) > 0 {
		t.Fatalf("replica differs:\n%s", strings.Join(d[:min(len(d), 20)], "\n"))
	}
	for _, a := range accts {
		if pos, _ := p.applier.Position(a); pos.State != StateOK {
			t.Fatalf("%s: %+v", a, pos)
		}
	}
}

// TestRefusedIdentities: a sender that is not the accounts' master, or has
// no certificate from the site CA, gets nothing applied.
func TestRefusedIdentities(t *testing.T) {
	p := newPair(t, []string{"alice"})
	p.m.deliver([]string{"alice"}, []byte("hello"))
	p.m.sync()

	// A valid certificate, but for srv-x, which the role map does not name.
	x := p.site.node(t, "srv-x")
	s, _ := p.sender(t, x)
	s.Node = "srv-x"
	run(t, s)
	time.Sleep(300 * time.Millisecond)
	if pos, _ := p.applier.Position("alice"); pos.Applied != 0 {
		t.Fatalf("srv-x got records applied: %+v", pos)
	}
	if s.Stats.Records.Load() != 0 {
		t.Fatalf("srv-x sent %d records; the receiver should have refused every account", s.Stats.Records.Load())
	}
	// A certificate from another CA: the TLS handshake fails.
	other := newSite(t, "other").node(t, "srv-a")
	s2, _ := p.sender(t, other)
	cli, _ := other.ClientConfig("srv-b")
	good, err := p.tlsA.ClientConfig("srv-b")
	if err != nil {
		t.Fatal(err)
	}
	cli.RootCAs = good.RootCAs // trusts the real server, presents a foreign cert
	s2.TLS = cli
	run(t, s2)
	time.Sleep(300 * time.Millisecond)
	if s2.Stats.Connected.Load() || s2.Stats.Records.Load() != 0 {
		t.Fatal("a sender with a foreign certificate connected")
	}
	if pos, _ := p.applier.Position("alice"); pos.Applied != 0 {
		t.Fatalf("foreign sender got records applied: %+v", pos)
	}
}

// TestBailOutOnDivergence: a byte flipped in a replica file quarantines that
// account only; the others keep replicating.
func TestBailOutOnDivergence(t *testing.T) {
	accts := []string{"alice", "bob"}
	p := newPair(t, accts)
	s, _ := p.sender(t, p.tlsA)
	run(t, s)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 10; i++ {
		p.m.deliver([]string{accts[i%2]}, body(rng, i, 1000))
	}
	p.m.sync()
	p.waitApplied(t, 10*time.Second)
	// Change alice's replica index behind replication's back: it grows.
	idx := filepath.Join(p.replica, "meta/alice/INBOX/cyrus.index")
	f, err := os.OpenFile(idx, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("local change"))
	f.Close()
	for i := 10; i < 20; i++ {
		p.m.deliver([]string{accts[i%2]}, body(rng, i, 1000))
	}
	p.m.sync()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, _ := p.applier.Position("alice")
		if a.State == StateQuarantine {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice not quarantined: %+v", a)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// bob caught up completely.
	want := map[string]string{}
	for k, v := range treeDigest(t, p.m.tree) {
		if strings.Contains(k, "bob") {
			want[k] = v
		}
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		got := map[string]string{}
		for k, v := range treeDigest(t, p.replica) {
			if strings.Contains(k, "bob") {
				got[k] = v
			}
		}
		d := diffTrees(t, want, got)
		if len(d) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob held up by alice's quarantine:\n%s", strings.Join(d, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// alice's replica was not overwritten with the master's data.
	b, _ := os.ReadFile(idx)
	if !strings.HasSuffix(string(b), "local change") {
		t.Fatal("the diverged replica file was written over")
	}
}

// TestPendingMailboxAttributed: records of a new uuid mailbox journaled
// before its owner was known ("pending:<id>") are shipped under the owner
// once its cyrus.header record arrives, and hold the consumer position
// until then.
func TestPendingMailboxAttributed(t *testing.T) {
	p := newPair(t, []string{"alice"})
	s, src := p.sender(t, p.tlsA)
	run(t, s)
	const id = "ig5qudig5xhk5lij9pw6dcgx"
	pend := "pending:" + id
	dir := "alice/" + id
	os.MkdirAll(filepath.Join(p.m.tree, "meta", dir), 0o700)
	p.m.append(journal.Record{Op: journal.OpMkdir, Account: pend, Tree: "meta", Path: dir, Mode: 0o700})
	p.m.writeAt(pend, "meta", dir+"/cyrus.index", 0, []byte(strings.Repeat("i", 160)))
	p.m.sync()
	time.Sleep(300 * time.Millisecond)
	if got := src.Acked(); got != 0 {
		t.Fatalf("consumer position moved past unattributed records: %d", got)
	}
	if _, err := os.Stat(filepath.Join(p.replica, "meta", dir)); !os.IsNotExist(err) {
		t.Fatal("pending records were applied before attribution")
	}
	hdr := []byte("\241\002\213\015Cyrus mailbox header\n%(T e N user.alice I " + id + ")\n")
	os.WriteFile(filepath.Join(p.m.tree, "meta", dir, "cyrus.header"), hdr, 0o600)
	p.m.append(journal.Record{Op: journal.OpReplace, Account: "alice", Tree: "meta", Path: dir + "/cyrus.header",
		Data: hdr, Size: int64(len(hdr)), Hash: sha256.Sum256(hdr), Mode: 0o600, PrevSize: -1})
	p.m.sync()
	p.waitApplied(t, 10*time.Second)
	if d := diffTrees(t, treeDigest(t, p.m.tree), treeDigest(t, p.replica)); len(d) > 0 {
		t.Fatalf("replica differs:\n%s", strings.Join(d, "\n"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for src.Acked() != p.m.lsn && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if src.Acked() != p.m.lsn {
		t.Fatalf("consumer position %d, want %d", src.Acked(), p.m.lsn)
	}
}

// TestPendingAfterLaterRecord: a delivery to the same account is applied
// between a new mailbox's first records and its header; the held records,
// shipped at attribution, must still be applied (not skipped as old).
func TestPendingAfterLaterRecord(t *testing.T) {
	p := newPair(t, []string{"alice"})
	s, _ := p.sender(t, p.tlsA)
	run(t, s)
	const id = "mo88qudig5xhk5lij9pw6dcg"
	pend := "pending:" + id
	dir := "alice/" + id
	os.MkdirAll(filepath.Join(p.m.tree, "meta", dir), 0o700)
	p.m.append(journal.Record{Op: journal.OpMkdir, Account: pend, Tree: "meta", Path: dir, Mode: 0o700})
	p.m.writeAt(pend, "meta", dir+"/cyrus.index", 0, []byte(strings.Repeat("i", 160)))
	p.m.deliver([]string{"alice"}, []byte("a delivery to INBOX meanwhile\r\n"))
	p.m.sync()
	p.waitApplied(t, 10*time.Second) // alice's applied is now past the held records
	hdr := []byte("\241\002\213\015Cyrus mailbox header\n%(T e N user.alice.Sent I " + id + ")\n")
	os.WriteFile(filepath.Join(p.m.tree, "meta", dir, "cyrus.header"), hdr, 0o600)
	p.m.append(journal.Record{Op: journal.OpReplace, Account: "alice", Tree: "meta", Path: dir + "/cyrus.header",
		Data: hdr, Size: int64(len(hdr)), Hash: sha256.Sum256(hdr), Mode: 0o600, PrevSize: -1})
	p.m.sync()
	p.waitApplied(t, 10*time.Second)
	if d := diffTrees(t, treeDigest(t, p.m.tree), treeDigest(t, p.replica)); len(d) > 0 {
		t.Fatalf("replica differs:\n%s", strings.Join(d, "\n"))
	}
}

// TestLargeBodiesSplitFrames: bodies that together exceed one frame's limit
// still replicate (the batch is cut into several frames).
func TestLargeBodiesSplitFrames(t *testing.T) {
	p := newPair(t, []string{"alice", "bob"})
	rng := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < 8; i++ { // 8 × 12 MiB incompressible = 96 MiB > MaxFrame, read as one batch
		b := make([]byte, 12<<20)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		p.m.deliver([]string{[]string{"alice", "bob"}[i%2]}, b)
	}
	p.m.sync()
	s, _ := p.sender(t, p.tlsA) // started after the load: one big read
	run(t, s)
	p.waitApplied(t, 60*time.Second)
	if d := diffTrees(t, treeDigest(t, p.m.tree), treeDigest(t, p.replica)); len(d) > 0 {
		t.Fatalf("replica differs:\n%s", strings.Join(d[:min(5, len(d))], "\n"))
	}
}

// countingSource counts the consumer position's writes.
type countingSource struct {
	*JournalSource
	writes atomic.Int64
}

func (c *countingSource) SetAcked(l journal.LSN) error {
	c.writes.Add(1)
	return c.JournalSource.SetAcked(l)
}

// TestAckPersistenceThrottled: acks arrive per batch, but the consumer
// position (a file rewritten with two fsyncs, once on the ack reader's
// path) is written at most every ackPersistEvery, and in the end reaches
// the last record.
func TestAckPersistenceThrottled(t *testing.T) {
	p := newPair(t, []string{"alice"})
	s, src := p.sender(t, p.tlsA)
	cs := &countingSource{JournalSource: src}
	s.Source = cs
	run(t, s)
	rng := rand.New(rand.NewPCG(3, 4))
	start := time.Now()
	for i := 0; i < 150; i++ {
		p.m.deliver([]string{"alice"}, body(rng, i, 500))
		p.m.sync()
		if i%10 == 0 {
			p.waitApplied(t, 30*time.Second) // one batch at a time now and then
		}
	}
	p.waitApplied(t, 30*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for src.Acked() < p.m.lsn && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	if got := src.Acked(); got < p.m.lsn {
		t.Fatalf("consumer position %d, want %d (the last record)", got, p.m.lsn)
	}
	batches, writes := s.Stats.Batches.Load(), cs.writes.Load()
	if limit := int64(elapsed/ackPersistEvery) + 2; writes > limit {
		t.Errorf("%d writes of the consumer position in %v, want at most %d (one per %v)", writes, elapsed, limit, ackPersistEvery)
	}
	if writes >= batches {
		t.Errorf("%d writes of the consumer position for %d batches: not throttled", writes, batches)
	}
	t.Logf("%d batches, %d consumer position writes in %v", batches, writes, elapsed)
}

package peer

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mreplfs/journal"
)

// adminServer serves a receiver with handler h (nil: none) on its own
// listener of p's replica identity.
func adminServer(t *testing.T, p *pair, h AdminHandler) string {
	t.Helper()
	srv, err := p.tlsB.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{Node: "srv-b", Applier: p.applier, Roles: p.roles, Partners: map[string]string{"srv-a": masterAddr},
		TLS: srv, Logger: testLogger(t), Admin: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// TestAdmin: admin requests over the replication listener reach the
// handler with the caller's certified node id, one reply per request on one
// connection; a wrong admin version and a receiver without a handler answer
// failed.
func TestAdmin(t *testing.T) {
	p := newPair(t, []string{"alice"})
	var mu sync.Mutex
	var got []string
	addr := adminServer(t, p, func(ctx context.Context, node string, req AdminRequest) AdminReply {
		mu.Lock()
		got = append(got, node+" "+req.Op+" "+req.Account+" "+req.Args["epoch"])
		mu.Unlock()
		if req.Op == "busy" {
			return AdminReply{Status: AdminRefused, Reason: "busy: 1 open file"}
		}
		return AdminReply{Values: map[string]string{"lsn": "42"}}
	})
	cli, err := p.tlsA.ClientConfig("srv-b")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := DialAdmin(ctx, addr, cli, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rep, err := c.Call(ctx, AdminRequest{Op: "query", Account: "alice", Args: map[string]string{"epoch": "3"}})
	if err != nil || rep.Err() != nil || rep.Uint("lsn") != 42 {
		t.Fatalf("query: %+v, %v", rep, err)
	}
	rep, err = c.Call(ctx, AdminRequest{Op: "busy", Account: "bob"})
	var ae *AdminError
	if err != nil || !errors.As(rep.Err(), &ae) || ae.Status != AdminRefused || !strings.Contains(ae.Reason, "busy") {
		t.Fatalf("busy: %+v, %v", rep, err)
	}
	rep, err = c.Call(ctx, AdminRequest{Version: 9, Op: "query"})
	if err != nil || rep.Status != AdminFailed || !strings.Contains(rep.Reason, "admin version 9") {
		t.Fatalf("version 9: %+v, %v", rep, err)
	}
	mu.Lock()
	want := []string{"srv-a query alice 3", "srv-a busy bob "}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("handler saw %q, want %q", got, want)
	}
	mu.Unlock()

	// No handler: refused politely.
	c2, err := DialAdmin(ctx, adminServer(t, p, nil), cli, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if rep, err := c2.Call(ctx, AdminRequest{Op: "query"}); err != nil || rep.Status != AdminFailed {
		t.Errorf("no handler: %+v, %v", rep, err)
	}
}

// TestDrain: Drain returns once the partner acknowledged the account's
// records through a journal position, with the last one sent; an account
// the session does not ship is ErrNotShipped; Restart reconnects at once.
func TestDrain(t *testing.T) {
	p := newPair(t, []string{"alice", "bob"})
	s, _ := p.sender(t, p.tlsA)
	run(t, s)
	rng := rand.New(rand.NewPCG(3, 4))
	var lastAlice journal.LSN
	for i := 0; i < 30; i++ {
		acct := []string{"alice", "bob"}[i%2]
		p.m.deliver([]string{acct}, body(rng, i, 300+rng.IntN(3000)))
		if acct == "alice" {
			lastAlice = p.m.lsn
		}
	}
	p.m.sync()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sent, applied, err := s.Drain(ctx, "alice", p.m.lsn)
	if err != nil {
		t.Fatal(err)
	}
	if sent != uint64(lastAlice) || applied < sent {
		t.Errorf("Drain: sent %d applied %d, want sent %d (alice's last record)", sent, applied, lastAlice)
	}
	pos, err := p.applier.Position("alice")
	if err != nil || uint64(pos.Applied) < sent {
		t.Errorf("replica position %+v, %v; want ≥ %d", pos, err, sent)
	}
	if _, _, err := s.Drain(ctx, "carol", p.m.lsn); !errors.Is(err, ErrNotShipped) {
		t.Errorf("Drain of an account not shipped: %v, want ErrNotShipped", err)
	}
	before := s.Stats.Connects.Load()
	s.Restart()
	for s.Stats.Connects.Load() == before || !s.Connected() {
		if ctx.Err() != nil {
			t.Fatal("no reconnect after Restart")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRestartDuringSetup: a Restart while a session is being set up (its
// account list read, its handshake under way) makes that session restart
// too, so it never streams with a list from before the role change.
func TestRestartDuringSetup(t *testing.T) {
	p := newPair(t, []string{"alice"})
	s, _ := p.sender(t, p.tlsA)
	var dials, lists atomic.Int32
	hold := make(chan struct{})
	s.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		if dials.Add(1) == 2 {
			<-hold
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	accounts := s.Accounts
	s.Accounts = func() []AccountEpoch { lists.Add(1); return accounts() }
	run(t, s)
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitUntil("the first session", s.Connected)
	s.Restart() // the second session's dial blocks
	waitUntil("the second dial", func() bool { return dials.Load() == 2 })
	s.Restart() // while the second session is being set up
	close(hold)
	waitUntil("a third account list", func() bool { return lists.Load() >= 3 && s.Connected() })
}

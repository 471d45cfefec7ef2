package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"mreplfs/journal"
	"mreplfs/rolemap"
)

// RoleLookup is the receiver's view of the role map.
type RoleLookup interface {
	Lookup(account string) (rolemap.Entry, bool)
}

// Receiver accepts connections from partner senders and applies their
// records to the accounts replicated here.
type Receiver struct {
	Node    string // this node's id
	Applier *DirApplier
	Roles   RoleLookup
	// Partners maps a partner node id (its certificate's common name) to the
	// peer address the role map names for the accounts it masters.
	Partners map[string]string
	TLS      *tls.Config // server config (mutual TLS); nil only in tests on a trusted pipe
	Logger   *slog.Logger
	// FetchTimeout bounds the wait for a body the receiver asked for.
	FetchTimeout time.Duration
	// OnApplied, when set, is called after each batch with the paths it
	// changed per tree (to make the mount forget cached names and pages).
	OnApplied func(touched map[string][]string)
	// Admin, when set, answers admin connections (admin.go): role changes.
	Admin AdminHandler

	omu    sync.Mutex
	owners map[string]*session // account → the session that applies its records
}

// takeOver makes s the session that applies account: an older session (a
// connection of a sender that died or reconnected) stops taking its
// records, and its batch under way, if any, ends before s reads the
// account's position for its Welcome. Otherwise the old session could apply
// records after the Welcome, and the new sender resend them over a replica
// already past their pre-state.
func (r *Receiver) takeOver(account string, s *session) {
	r.omu.Lock()
	if r.owners == nil {
		r.owners = map[string]*session{}
	}
	old := r.owners[account]
	r.owners[account] = s
	r.omu.Unlock()
	if old == nil || old == s {
		return
	}
	old.amu.Lock()
	delete(old.allowed, account)
	old.amu.Unlock()
	old.applying.Lock()
	old.applying.Unlock()
}

// Revoke stops every session from applying account (a role change made it
// master here, or moved its master): a batch under way ends first. A new
// session takes it again only if the role map then admits it.
func (r *Receiver) Revoke(account string) {
	r.omu.Lock()
	old := r.owners[account]
	delete(r.owners, account)
	r.omu.Unlock()
	if old == nil {
		return
	}
	old.amu.Lock()
	delete(old.allowed, account)
	old.amu.Unlock()
	old.applying.Lock()
	old.applying.Unlock()
}

// release forgets s as the owner of its accounts once its connection has
// ended: no batch of s applies anything after it returns (its apply
// goroutine may outlive the connection by a batch).
func (r *Receiver) release(s *session) {
	s.amu.Lock()
	clear(s.allowed)
	s.amu.Unlock()
	s.applying.Lock()
	s.applying.Unlock()
	r.omu.Lock()
	defer r.omu.Unlock()
	for a, o := range r.owners {
		if o == s {
			delete(r.owners, a)
		}
	}
}

func (r *Receiver) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// Serve accepts connections on ln until ctx is done.
func (r *Receiver) Serve(ctx context.Context, ln net.Listener) error {
	if r.TLS != nil {
		ln = tls.NewListener(ln, r.TLS)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.ServeConn(ctx, c); err != nil && ctx.Err() == nil {
				r.logger().Warn("peer connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// session is one connection's state on the receiving side.
type session struct {
	r        *Receiver
	conn     net.Conn
	node     string
	version  uint64 // the session's protocol version (the Welcome's)
	log      *slog.Logger
	wmu      sync.Mutex
	w        *bufio.Writer
	amu      sync.Mutex
	applying sync.Mutex        // held while a batch is filtered and applied
	allowed  map[string]uint64 // account → epoch accepted in this session (guarded by amu)
	admitted map[string]uint64 // account → epoch of every account this node masters for us (resyncable)
	lists    map[string][]ManifestEntry
	jobs     map[string]*resyncJob
	held     map[[32]byte]hashRef // content written or verified by this connection's resyncs

	bmu   sync.Mutex
	blobs map[[32]byte]chan []byte
}

func (s *session) send(t MsgType, body []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := WriteFrame(s.w, t, body); err != nil {
		return err
	}
	return s.w.Flush()
}

// ServeConn runs one connection to its end.
func (r *Receiver) ServeConn(ctx context.Context, c net.Conn) error {
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { <-ctx.Done(); c.Close() }()

	s := &session{r: r, conn: c, w: bufio.NewWriterSize(c, 256<<10), blobs: map[[32]byte]chan []byte{}, allowed: map[string]uint64{},
		admitted: map[string]uint64{}, lists: map[string][]ManifestEntry{}, jobs: map[string]*resyncJob{}, held: map[[32]byte]hashRef{}}
	defer func() { cancel(); r.release(s) }() // cancel first: a batch waiting for a body ends
	node := ""
	if tc, ok := c.(*tls.Conn); ok {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.HandshakeContext(ctx); err != nil {
			r.logger().Warn("peer refused: TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			return fmt.Errorf("tls handshake: %w", err)
		}
		n, err := PeerNode(tc.ConnectionState())
		if err != nil {
			return err
		}
		node = n
	}
	s.log = r.logger().With("peer", node, "remote", c.RemoteAddr().String())
	br := bufio.NewReaderSize(c, 256<<10)

	// Handshake.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t, body, err := ReadFrame(br, nil)
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	if t == MsgAdmin {
		s.node = node
		s.log.Debug("admin connection")
		return r.serveAdmin(ctx, s, br, body)
	}
	if t != MsgHello {
		s.send(MsgRefuse, MarshalRefuse("expected hello"))
		return fmt.Errorf("%w: first frame is %s, not hello", ErrFrame, t)
	}
	h, err := UnmarshalHello(body)
	if err != nil {
		s.send(MsgRefuse, MarshalRefuse(err.Error()))
		return err
	}
	if node == "" {
		node = h.Node // no TLS: trust the hello (tests over a pipe only)
		s.log = s.log.With("peer", node)
	}
	if node != h.Node {
		s.send(MsgRefuse, MarshalRefuse("hello names another node than the certificate"))
		s.log.Warn("peer refused: hello node differs from certificate", "hello", h.Node)
		return fmt.Errorf("peer: hello node %q, certificate %q", h.Node, node)
	}
	s.node = node
	w := Welcome{Version: min(h.Version, Version), Node: r.Node}
	s.version = w.Version
	replay := map[string]uint64{}
	for _, ae := range h.Accounts {
		pos := Position{Account: ae.Account}
		state, why := r.admit(node, ae)
		if state == StateOK {
			r.takeOver(ae.Account, s)
			p, err := r.Applier.Position(ae.Account)
			if err != nil {
				return fmt.Errorf("read position of %s: %w", ae.Account, err)
			}
			pos.Applied, pos.Epoch, state = uint64(p.Applied), p.Epoch, p.State
			if p.Inflight > p.Applied {
				replay[ae.Account] = uint64(p.Inflight)
			}
			s.admitted[ae.Account] = ae.Epoch
			if state == StateOK {
				s.amu.Lock()
				s.allowed[ae.Account] = ae.Epoch
				s.amu.Unlock()
			}
		} else {
			s.log.Warn("account refused", "account", ae.Account, "reason", why)
			// The epoch here, and what was applied from the sender
			// before: a sender at an older epoch learns it was failed
			// over, and which of its records never arrived.
			if e, ok := r.Roles.Lookup(ae.Account); ok && e.Epoch > ae.Epoch {
				pos.Epoch = e.Epoch
				if p, err := r.Applier.Position(ae.Account); err == nil {
					pos.Applied = uint64(p.Applied)
				}
			}
		}
		pos.State = state
		w.Positions = append(w.Positions, pos)
	}
	if err := s.send(MsgWelcome, MarshalWelcome(w)); err != nil {
		return fmt.Errorf("send welcome: %w", err)
	}
	// The replay windows of batches a crash interrupted: the sender must not
	// merge writes across their ends (a merged write straddling one would be
	// checked against a copy already past its pre-state).
	if err := s.send(MsgReplay, MarshalReplay(replay)); err != nil {
		return fmt.Errorf("send replay windows: %w", err)
	}
	c.SetDeadline(time.Time{})
	s.amu.Lock()
	accepted := len(s.allowed)
	s.amu.Unlock()
	s.log.Info("peer connected", "accounts", len(h.Accounts), "accepted", accepted)

	// Batches go to one applier goroutine, so this loop stays free to
	// receive the blobs the applier asks for.
	batches := newBatchQueue()
	applyErr := make(chan error, 1)
	go func() { applyErr <- s.applyLoop(ctx, batches) }()
	defer batches.close()
	defer func() {
		for _, j := range s.jobs {
			j.a.mu.Lock()
			j.abortFile()
			j.a.mu.Unlock()
		}
	}()
	for {
		c.SetReadDeadline(time.Now().Add(IdleAfter)) // the sender pings every PingEvery
		t, body, err := ReadFrame(br, nil)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read: %w", err)
		}
		switch t {
		case MsgBatch:
			recs, err := UnmarshalBatch(body)
			if err != nil {
				return err
			}
			batches.put(recs)
			select {
			case err := <-applyErr:
				return err
			default:
			}
		case MsgBlob:
			b, err := UnmarshalBlob(body)
			if err != nil {
				return err
			}
			s.bmu.Lock()
			ch := s.blobs[b.Hash]
			delete(s.blobs, b.Hash)
			s.bmu.Unlock()
			if ch != nil {
				ch <- b.Content
			}
		case MsgPing:
			n, err := UnmarshalPing(t, body)
			if err != nil {
				return err
			}
			if err := s.send(MsgPong, MarshalPing(n)); err != nil {
				return err
			}
		case MsgManifest, MsgFile, MsgResyncEnd:
			if err := s.resyncFrame(ctx, t, body); err != nil {
				return err
			}
		case MsgRefuse:
			reason, _ := UnmarshalRefuse(body)
			return fmt.Errorf("peer: sender refused: %s", reason)
		default:
			return fmt.Errorf("%w: unexpected %s from sender", ErrFrame, t)
		}
	}
}

// admit decides whether node may ship account here.
func (r *Receiver) admit(node string, ae AccountEpoch) (AccountState, string) {
	e, ok := r.Roles.Lookup(ae.Account)
	switch {
	case !ok:
		return StateRefused, "account unknown here"
	case e.Role != rolemap.Replica:
		return StateRefused, "account is " + e.Role.String() + " here, not replica"
	case r.Partners != nil && r.Partners[node] != e.Partner:
		return StateRefused, fmt.Sprintf("node %s is not this account's master (role map says %s)", node, e.Partner)
	case ae.Epoch != e.Epoch:
		return StateRefused, fmt.Sprintf("epoch %d, role map here says %d", ae.Epoch, e.Epoch)
	}
	return StateOK, ""
}

// fetch asks the sender for a body and waits for it.
func (s *session) fetch(ctx context.Context, h [32]byte) ([]byte, error) {
	ch := make(chan []byte, 1)
	s.bmu.Lock()
	s.blobs[h] = ch
	s.bmu.Unlock()
	if err := s.send(MsgNeed, MarshalNeed([][32]byte{h})); err != nil {
		return nil, err
	}
	to := s.r.FetchTimeout
	if to == 0 {
		to = 30 * time.Second
	}
	select {
	case b := <-ch:
		return b, nil
	case <-time.After(to):
		s.bmu.Lock()
		delete(s.blobs, h)
		s.bmu.Unlock()
		return nil, fmt.Errorf("peer: body %x not received within %v", h[:8], to)
	case <-ctx.Done():
		s.bmu.Lock()
		delete(s.blobs, h)
		s.bmu.Unlock()
		return nil, ctx.Err()
	}
}

func (s *session) applyLoop(ctx context.Context, batches *batchQueue) error {
	for {
		// Under load, whatever has arrived is applied in one go: a batch's
		// cost is mostly its fsyncs and position commits.
		raw, ok := batches.take(8192)
		if !ok {
			return nil
		}
		if err := s.applyBatch(ctx, raw); err != nil {
			return err
		}
	}
}

// applyBatch filters, applies and acks one batch (s.applying held: a new
// session taking over an account waits for it).
func (s *session) applyBatch(ctx context.Context, raw [][]byte) error {
	s.applying.Lock()
	defer s.applying.Unlock()
	recs := make([]journal.Record, 0, len(raw))
	for _, b := range raw {
		r, err := DecodeRecord(b)
		if err != nil {
			return err
		}
		s.amu.Lock()
		epoch, ok := s.allowed[r.Account]
		s.amu.Unlock()
		if !ok {
			s.log.Warn("record for an account not accepted in this session dropped", "account", r.Account, "lsn", r.LSN)
			continue
		}
		if e, ok := s.r.Roles.Lookup(r.Account); !ok || e.Role != rolemap.Replica || e.Epoch < r.Epoch {
			// The role map changed under the session (a promote or a
			// failover): never apply to a copy that is no longer a
			// replica of this sender.
			s.log.Warn("record for an account that is no longer a replica at this epoch dropped; ending the session", "account", r.Account, "lsn", r.LSN, "epoch", r.Epoch)
			s.conn.Close()
			return fmt.Errorf("peer: record %d of %s: account is %s at epoch %d here", r.LSN, r.Account, e.Role, e.Epoch)
		}
		if r.Epoch > epoch {
			// The account's epoch moved during the session (a role change):
			// dropping the record would leave it unacked and stall the
			// window. End the session; the next Hello settles the epoch.
			s.log.Warn("record from a future epoch: ending the session", "account", r.Account, "lsn", r.LSN, "epoch", r.Epoch)
			s.conn.Close()
			return fmt.Errorf("peer: record %d of %s has epoch %d, session admitted %d", r.LSN, r.Account, r.Epoch, epoch)
		}
		recs = append(recs, r)
	}
	var durable func(map[string]journal.LSN)
	if s.version >= 2 {
		durable = func(applied map[string]journal.LSN) {
			d := Ack{}
			for a, l := range applied {
				d.Positions = append(d.Positions, Position{Account: a, Applied: uint64(l), State: StateOK})
			}
			if err := s.send(MsgDurable, MarshalDurable(d)); err != nil {
				s.log.Warn("send durable", "err", err) // the Ack follows, or the session ends
			}
		}
	}
	res, err := s.r.Applier.ApplyBatchDurable(ctx, recs, s.fetch, durable)
	if err != nil {
		return err
	}
	ack := Ack{}
	s.amu.Lock()
	for a, p := range res.Positions {
		ack.Positions = append(ack.Positions, Position{Account: a, Applied: uint64(p.Applied), State: p.State})
		if p.State != StateOK {
			delete(s.allowed, a)
		}
	}
	s.amu.Unlock()
	transient := false
	for a, e := range res.Errors {
		s.log.Warn("account stopped in batch", "account", a, "err", e)
		if p := res.Positions[a]; p.State == StateOK {
			// Records after the failed one are still coming: they must
			// not apply over the gap. Drop the connection once acked;
			// the sender resumes from the persisted positions.
			transient = true
			s.amu.Lock()
			delete(s.allowed, a)
			s.amu.Unlock()
		}
	}
	if s.r.OnApplied != nil && len(res.Touched) > 0 {
		s.r.OnApplied(res.Touched)
	}
	if err := s.send(MsgAck, MarshalAck(ack)); err != nil {
		return err
	}
	if transient {
		s.conn.Close()
		return errors.New("peer: an account failed to apply; reconnecting to resume from its position")
	}
	return nil
}

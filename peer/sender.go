package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mreplfs/journal"
)

// Source is the sender's view of the local journal.
type Source interface {
	// Records returns up to max durable records with LSN ≥ from, in order,
	// as journaled (not coalesced), waiting until there is at least one or
	// ctx is done.
	Records(ctx context.Context, from journal.LSN, max int) ([]journal.Record, error)
	// OpenBlob opens the stored body of a message record by its hash.
	OpenBlob(hash [32]byte) (*os.File, error)
	// Acked is this sender's persisted consumer position: every record at or
	// below it is applied on the partner (or not for it).
	Acked() journal.LSN
	// SetAcked persists a new consumer position (the journal may then drop
	// segments below it).
	SetAcked(lsn journal.LSN) error
	// Durable is the highest durable LSN (a full resync records it before
	// it walks an account).
	Durable() journal.LSN
}

// Sender ships the records of the accounts mastered here to one partner.
type Sender struct {
	Node    string // this node's id
	Partner string // the partner's node id (expected in its certificate)
	Addr    string // the partner's peer address, host:port
	Source  Source
	// Accounts lists the accounts this node masters for the partner, with
	// their epochs (from the role map).
	Accounts func() []AccountEpoch
	TLS      *tls.Config // client config (mutual TLS); nil only in tests
	Dial     func(ctx context.Context, addr string) (net.Conn, error)
	Window   int // records sent and not yet acked, at most (default 8192)
	Logger   *slog.Logger

	// Full resync (resync_send.go). Without Trees and Walk the sender
	// cannot resync: accounts that need one are left alone (logged).
	Trees map[string]string // tree name → this master's backing directory
	// Walk calls fn for every file, directory and symlink of account in
	// Trees (rel is relative to the tree, '/'-separated; fi from Lstat).
	Walk func(account string, fn func(tree, rel string, fi os.FileInfo) error) error
	// KnownFile, when set, persists the applied position the partner
	// acknowledged per account: a partner that reports less has lost its
	// state and is resynced.
	KnownFile string
	// ResyncSettle is waited once after the resyncs of a session read the
	// master's files and before their replay window is closed, so that
	// every change those reads may have seen is durable in the journal
	// (default 1.5 s: the journal syncs at least every second).
	ResyncSettle time.Duration
	// Progress, when set, is told how each resync goes.
	Progress func(ResyncProgress)
	// Unclean, when set, lists the accounts whose changes the local journal
	// may have lost in an unclean stop of the mount (journal.Follower's
	// UncleanAccounts). Each is resynced in full (hash compare: the
	// partner gets what differs), then passed to Verified with the time
	// the resync began, so the mount can clear it. A session that ships an
	// account that becomes unclean ends, so that the next one resyncs it.
	Unclean  func() (accounts []string, listed time.Time)
	Verified func(accounts []string, since time.Time)
	// OnAcked, when set, is told the partner's applied position of every
	// account it acks (and of every account at session start), for the
	// mount's sync mode. It must not block for long: it runs on the read
	// loop.
	OnAcked func(positions map[string]uint64)

	// OnStale, when set, is called when the partner says an account this
	// node ships is mastered there at a higher epoch (a failover while this
	// node was away): epoch is the partner's, applied the last record of
	// this node it applied. The account is left out of the session. It runs
	// during the session's setup, before anything streams, and may call
	// Restart. An error ends the session (the next one calls it again): the
	// account's unreplicated tail must be set aside before the session
	// streams past it.
	OnStale func(account string, epoch, applied uint64) error

	Stats SenderStats

	known knownStore

	verifiedMu sync.Mutex
	verifiedAt map[string]time.Time // unclean accounts verified by this process

	curMu sync.Mutex
	cur   *sconn        // the streaming session, if connected
	gen   uint64        // Restart calls so far
	kick  chan struct{} // Restart: cut a reconnect backoff short
}

// SenderStats are the sender's counters (read with atomic loads).
type SenderStats struct {
	Connects      atomic.Int64
	Records       atomic.Int64 // records sent
	BytesOnWire   atomic.Int64 // frame bytes written
	BodiesByValue atomic.Int64
	BodiesByRef   atomic.Int64
	BlobsServed   atomic.Int64 // bodies sent on a receiver's Need
	Resyncs       atomic.Int64 // accounts resynced in full
	ResyncFiles   atomic.Int64 // files sent by a resync (by value or by reference)
	ResyncBytes   atomic.Int64 // content bytes sent by value by a resync
	Acked         atomic.Uint64
	Connected     atomic.Bool
	Batches       atomic.Int64 // batch frames sent
	Durables      atomic.Int64 // Durable messages received (one per applied batch, version 2)
}

func (s *Sender) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger.With("partner", s.Partner)
}

// Run connects to the partner and ships records until ctx is done,
// reconnecting with backoff. It returns only when ctx is done.
func (s *Sender) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := s.session(ctx)
		s.Stats.Connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errResyncDone) {
			s.logger().Info("full resyncs done; reconnecting to stream those accounts", "addr", s.Addr)
			continue
		}
		if errors.Is(err, errRestart) {
			s.logger().Info("reconnecting: the accounts shipped changed", "addr", s.Addr)
			continue
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		s.logger().Warn("replication link down; reconnecting", "addr", s.Addr, "err", err, "in", backoff)
		select {
		case <-time.After(backoff + time.Duration(rand.Int64N(int64(backoff/4)+1))):
		case <-s.kicked():
			backoff = 100 * time.Millisecond
		case <-ctx.Done():
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

// conn is the sending side of one connection.
type sconn struct {
	s      *Sender
	c      net.Conn
	cancel context.CancelFunc
	ackMu  sync.Mutex // guards ackWant, ackLast, ackTimer
	// ackWant: the consumer position to persist; ackLast: when it last
	// was; ackTimer: a write scheduled or under way (at most one: it
	// serialises SetAcked; see advanceAck).
	ackWant  journal.LSN
	ackLast  time.Time
	ackTimer *time.Timer
	wmu      sync.Mutex
	w        *bufio.Writer

	mu       sync.Mutex
	cond     *sync.Cond
	applied  map[string]uint64      // per account, from Welcome and Acks
	ok       map[string]bool        // accounts this session ships
	inflight []inflightRec          // sent, not yet acked, in LSN order
	readUpTo journal.LSN            // every record ≤ this was read (sent or skipped)
	err      error                  // the ack reader's end
	recent   map[[32]byte]time.Time // bodies sent by value on this link
	replayTo map[string]journal.LSN // per account: end of its replay window (resync, or a receiver's interrupted batch)
	// partnerReplay: the receiver's interrupted-batch windows (MsgReplay).
	partnerReplay map[string]uint64
	floor         journal.LSN // with hasFloor: the consumer position may not pass it
	hasFloor      bool
	fixedP        *journal.LSN                // a side resync's P, recorded before any of its walks
	pending       map[string][]journal.Record // mailbox id → records held until attributed
	// pendingSince: when a mailbox's first record was held; held: how many
	// records are held (they do not count against the window).
	pendingSince map[string]time.Time
	held         int
	lastSent     map[string]journal.LSN // per account: its last record sent in this session
}

// pendingPrefix marks records of a new uuid mailbox whose owner the master
// did not know yet (fs.PendingAccount).
const pendingPrefix = "pending:"

// attribute finds held records of a mailbox that r (a record under a real
// account) lies in, gives them r's account and epoch, and returns those to
// ship (in LSN order). Called with c.mu held.
func (c *sconn) attribute(r *journal.Record) []*journal.Record {
	var out []*journal.Record
	for id, held := range c.pending {
		if !inMailbox(r.Path, id) && !inMailbox(r.NewPath, id) {
			continue
		}
		delete(c.pending, id)
		delete(c.pendingSince, id)
		c.held -= len(held)
		for i := range c.inflight {
			if c.inflight[i].account == pendingPrefix+id {
				c.inflight[i].account = r.Account
			}
		}
		if !c.ok[r.Account] {
			continue // not for this partner: done
		}
		for i := range held {
			h := held[i]
			// Shipped under the attributing record's LSN, as one group
			// with it: an older LSN could be at or below what the replica
			// already applied for the account (a delivery to its INBOX
			// between the mailbox's CREATE and its header) and be skipped.
			// Their paths lie in the new mailbox only, so nothing that
			// came in between depends on them.
			h.Account, h.Epoch, h.LSN = r.Account, r.Epoch, r.LSN
			out = append(out, &h)
		}
	}
	return out
}

// inMailbox reports whether path lies in the mailbox directory named id.
func inMailbox(path, id string) bool {
	for p := path; p != ""; {
		var comp string
		comp, p, _ = strings.Cut(p, "/")
		if comp == id {
			return true
		}
	}
	return false
}

type inflightRec struct {
	lsn     journal.LSN
	account string
}

func (c *sconn) send(t MsgType, body []byte) error {
	f, err := AppendFrame(nil, t, body)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.w.Write(f); err != nil {
		return err
	}
	c.s.Stats.BytesOnWire.Add(int64(len(f)))
	return c.w.Flush()
}

func (s *Sender) dial(ctx context.Context) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var c net.Conn
	var err error
	if s.Dial != nil {
		c, err = s.Dial(dctx, s.Addr)
	} else {
		d := net.Dialer{KeepAlive: 15 * time.Second}
		c, err = d.DialContext(dctx, "tcp", s.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", s.Addr, err)
	}
	if s.TLS != nil {
		tc := tls.Client(c, s.TLS)
		if err := tc.HandshakeContext(dctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", s.Addr, err)
		}
		c = tc
	}
	return c, nil
}

// handshake dials the partner, says Hello for accounts and reads its
// Welcome. The returned context ends the connection when cancelled.
func (s *Sender) handshake(ctx context.Context, accounts []AccountEpoch) (*sconn, *bufio.Reader, Welcome, context.Context, error) {
	c, err := s.dial(ctx)
	if err != nil {
		return nil, nil, Welcome{}, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() { <-ctx.Done(); c.Close() }()
	s.Stats.Connects.Add(1)
	sc := &sconn{s: s, c: c, cancel: cancel, w: bufio.NewWriterSize(c, 256<<10), applied: map[string]uint64{}, ok: map[string]bool{}, recent: map[[32]byte]time.Time{}, pending: map[string][]journal.Record{}, pendingSince: map[string]time.Time{}, replayTo: map[string]journal.LSN{}, lastSent: map[string]journal.LSN{}}
	sc.cond = sync.NewCond(&sc.mu)
	br := bufio.NewReaderSize(c, 64<<10)
	fail := func(err error) (*sconn, *bufio.Reader, Welcome, context.Context, error) {
		cancel()
		return nil, nil, Welcome{}, nil, err
	}
	if err := sc.send(MsgHello, MarshalHello(Hello{Version: Version, Node: s.Node, Accounts: accounts})); err != nil {
		return fail(fmt.Errorf("send hello: %w", err))
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	t, body, err := ReadFrame(br, nil)
	if err != nil {
		return fail(fmt.Errorf("read welcome: %w", err))
	}
	if t == MsgRefuse {
		reason, _ := UnmarshalRefuse(body)
		return fail(fmt.Errorf("partner refused: %s", reason))
	}
	if t != MsgWelcome {
		return fail(fmt.Errorf("%w: expected welcome, got %s", ErrFrame, t))
	}
	w, err := UnmarshalWelcome(body)
	if err != nil {
		return fail(err)
	}
	t, body, err = ReadFrame(br, nil)
	if err != nil {
		return fail(fmt.Errorf("read replay windows: %w", err))
	}
	if t != MsgReplay {
		return fail(fmt.Errorf("%w: expected replay after welcome, got %s", ErrFrame, t))
	}
	ends, err := UnmarshalReplay(body)
	if err != nil {
		return fail(err)
	}
	sc.partnerReplay = ends
	c.SetReadDeadline(time.Time{})
	return sc, br, w, ctx, nil
}

func (s *Sender) session(ctx context.Context) error {
	s.curMu.Lock()
	gen := s.gen
	s.curMu.Unlock()
	accounts := s.Accounts()
	sc, br, w, ctx, err := s.handshake(ctx, accounts)
	if err != nil {
		return err
	}
	defer sc.cancel()
	defer s.saveKnown()
	defer sc.flushAcks()
	// Every record at or below the consumer position was applied for every
	// account this link ships (or was not for it), so an account's applied
	// may trail it.
	from := s.Source.Acked() + 1
	epochs := map[string]uint64{}
	for _, a := range accounts {
		epochs[a.Account] = a.Epoch
	}
	var resync []AccountEpoch
	for _, p := range w.Positions {
		why := s.needsResync(p)
		switch {
		case p.State == StateRefused && p.Epoch > epochs[p.Account]:
			s.logger().Warn("partner masters account at a higher epoch: this node was failed over", "account", p.Account,
				"epoch", epochs[p.Account], "partner_epoch", p.Epoch, "partner_applied", p.Applied)
			if s.OnStale != nil {
				if err := s.OnStale(p.Account, p.Epoch, p.Applied); err != nil {
					return fmt.Errorf("fence failed-over account %s: %w", p.Account, err)
				}
			}
		case why != "" && s.canResync():
			s.logger().Info("account needs a full resync", "account", p.Account, "why", why, "applied", p.Applied)
			resync = append(resync, AccountEpoch{p.Account, epochs[p.Account]})
		case p.State != StateOK:
			s.logger().Warn("partner does not take account", "account", p.Account, "state", p.State.String())
		default:
			if why != "" && p.Applied > 0 {
				s.logger().Warn("account needs a full resync but this sender has no trees to walk", "account", p.Account, "why", why)
			}
			sc.ok[p.Account] = true
			sc.applied[p.Account] = p.Applied
		}
	}
	if len(resync) > 0 {
		// On a connection of their own, so the other accounts stream
		// meanwhile; the consumer position stays at or below P0 until then.
		p0 := s.Source.Durable()
		sc.mu.Lock()
		sc.floor, sc.hasFloor = p0, true
		sc.mu.Unlock()
		go sc.sideResync(ctx, resync, p0)
	}
	sc.readUpTo = from - 1
	sc.mu.Lock()
	sc.replayTo = s.replayBounds(from - 1)
	for acct, l := range sc.partnerReplay {
		if journal.LSN(l) > sc.replayTo[acct] {
			sc.replayTo[acct] = journal.LSN(l)
		}
	}
	sc.mu.Unlock()
	s.Stats.Connected.Store(true)
	s.logger().Info("replication link up", "addr", s.Addr, "accounts", len(sc.ok), "from", from)
	if s.OnAcked != nil {
		pos := make(map[string]uint64, len(sc.ok))
		for a := range sc.ok {
			pos[a] = sc.applied[a]
		}
		s.OnAcked(pos)
	}

	go sc.readLoop(ctx, br)
	go sc.heartbeat(ctx)
	if s.Unclean != nil && s.canResync() {
		go sc.watchUnclean(ctx)
	}
	s.curMu.Lock()
	if s.gen != gen {
		// A Restart came while this session was being set up: its
		// account list may be stale already.
		s.curMu.Unlock()
		return errRestart
	}
	s.cur = sc
	s.curMu.Unlock()
	defer func() {
		s.curMu.Lock()
		if s.cur == sc {
			s.cur = nil
		}
		s.curMu.Unlock()
	}()
	return sc.sendLoop(ctx, from)
}

// sendLoop reads the journal from `from` and ships this partner's records.
func (c *sconn) sendLoop(ctx context.Context, from journal.LSN) error {
	window := c.s.Window
	if window <= 0 {
		window = 8192
	}
	for {
		c.mu.Lock()
		c.releaseStalePending()
		for len(c.inflight)-c.held >= window && c.err == nil {
			c.cond.Wait()
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return err
		}
		recs, err := c.s.Source.Records(ctx, from, 1024)
		if err != nil {
			c.mu.Lock()
			lerr := c.err
			c.mu.Unlock()
			if lerr != nil {
				return lerr
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read journal at %d: %w", from, err)
		}
		var ship []*journal.Record
		c.mu.Lock()
		for i := range recs {
			r := &recs[i]
			from = r.LSN + 1
			if id, ok := strings.CutPrefix(r.Account, pendingPrefix); ok {
				// A new mailbox whose owner is not known yet: hold its records
				// (and the consumer position) until its header says whose it is.
				if _, held := c.pending[id]; !held {
					c.pendingSince[id] = time.Now()
				}
				c.held++
				c.pending[id] = append(c.pending[id], *r)
				c.inflight = append(c.inflight, inflightRec{r.LSN, r.Account})
				continue
			}
			if len(c.pending) > 0 {
				for _, p := range c.attribute(r) {
					ship = append(ship, p)
				}
			}
			if !c.ok[r.Account] || uint64(r.LSN) <= c.applied[r.Account] {
				continue
			}
			c.lastSent[r.Account] = r.LSN
			ship = append(ship, r)
			c.inflight = append(c.inflight, inflightRec{r.LSN, r.Account})
		}
		c.readUpTo = from - 1
		c.mu.Unlock()
		batch := make([]journal.Record, len(ship))
		for i, r := range ship {
			batch[i] = *r
		}
		batch = c.coalesce(batch)
		out := make([][]byte, 0, len(batch))
		for i := range batch {
			b, err := c.encode(&batch[i])
			if err != nil {
				return err
			}
			out = append(out, b)
		}
		if len(out) > 0 {
			// Large bodies go inline: cut the batch into frames of about
			// frameTarget bytes, only between LSN groups (the receiver
			// applies a group whole and never splits a frame).
			start, size := 0, 0
			for i := range out {
				size += len(out[i])
				last := i == len(out)-1
				if last || size >= frameTarget && batch[i+1].LSN != batch[i].LSN {
					if err := c.send(MsgBatch, MarshalBatch(out[start:i+1])); err != nil {
						return fmt.Errorf("send batch: %w", err)
					}
					c.s.Stats.Batches.Add(1)
					start, size = i+1, 0
				}
			}
			c.s.Stats.Records.Add(int64(len(out)))
		} else {
			c.advanceAck()
		}
	}
}

// frameTarget is the size at which a batch is cut into another frame. A
// group of records sharing an LSN, or one message body, may exceed it, up to
// MaxFrame: the largest message replicated by value is just under 64 MiB.
const frameTarget = 8 << 20

// coalesce merges the batch's writes (journal.Coalesce), never across the
// end of a resync's replay window: a merged record carries its last LSN and
// the pre-state of its first, so one straddling the end would be checked
// (not replayed) against a copy already ahead of that pre-state.
func (c *sconn) coalesce(batch []journal.Record) []journal.Record {
	c.mu.Lock()
	rt := c.replayTo
	c.mu.Unlock()
	if len(rt) == 0 {
		return journal.Coalesce(batch)
	}
	var in, after []journal.Record
	for _, r := range batch {
		if r.LSN <= rt[r.Account] {
			in = append(in, r)
		} else {
			after = append(after, r)
		}
	}
	if len(in) == 0 {
		return journal.Coalesce(after)
	}
	return append(journal.Coalesce(in), journal.Coalesce(after)...)
}

// encode attaches a message body by value unless this link sent it lately
// (then the receiver holds it: by reference).
func (c *sconn) encode(r *journal.Record) ([]byte, error) {
	if (r.Op == journal.OpMessage || r.Op == journal.OpReplace) && len(r.Data) == 0 && r.Size > 0 && r.Hash != ([32]byte{}) {
		c.mu.Lock()
		_, known := c.recent[r.Hash]
		c.mu.Unlock()
		if known {
			c.s.Stats.BodiesByRef.Add(1)
		} else {
			data, err := c.blob(r.Hash)
			if err != nil {
				return nil, fmt.Errorf("record %d: %w", r.LSN, err)
			}
			cp := *r
			cp.Data = data
			c.mu.Lock()
			if len(c.recent) > 100000 {
				clear(c.recent)
			}
			c.recent[r.Hash] = time.Now()
			c.mu.Unlock()
			c.s.Stats.BodiesByValue.Add(1)
			return EncodeRecord(nil, &cp), nil
		}
	}
	return EncodeRecord(nil, r), nil
}

func (c *sconn) blob(h [32]byte) ([]byte, error) {
	f, err := c.s.Source.OpenBlob(h)
	if err != nil {
		return nil, fmt.Errorf("open body %x: %w", h[:8], err)
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxFrame))
}

// readLoop handles the receiver's Acks and Needs.
func (c *sconn) readLoop(ctx context.Context, br *bufio.Reader) {
	fail := func(err error) {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		c.cancel()
	}
	for {
		c.c.SetReadDeadline(time.Now().Add(DeadAfter)) // pings are answered: silence means a dead link
		t, body, err := ReadFrame(br, nil)
		if err != nil {
			fail(fmt.Errorf("read from partner: %w", err))
			return
		}
		switch t {
		case MsgAck:
			a, err := UnmarshalAck(body)
			if err != nil {
				fail(err)
				return
			}
			resync := ""
			var acked map[string]uint64
			if c.s.OnAcked != nil {
				acked = make(map[string]uint64, len(a.Positions))
			}
			c.mu.Lock()
			for _, p := range a.Positions {
				if acked != nil && p.State == StateOK {
					acked[p.Account] = p.Applied
				}
				if p.Applied > c.applied[p.Account] {
					c.applied[p.Account] = p.Applied
				}
				if p.State == StateOK {
					c.s.noteKnown(p.Account, p.Applied)
				}
				if p.State != StateOK && c.ok[p.Account] {
					c.ok[p.Account] = false
					c.s.logger().Error("partner stopped account", "account", p.Account, "state", p.State.String())
					if (p.State == StateResync || p.State == StateResyncing) && c.s.canResync() {
						resync = p.Account
					}
				}
			}
			c.mu.Unlock()
			if len(acked) > 0 {
				c.s.OnAcked(acked)
			}
			c.advanceAck()
			if resync != "" {
				// A resync runs at session start, before any batch: end this
				// session; the next one resyncs the account.
				fail(fmt.Errorf("account %s needs a full resync; reconnecting to do it", resync))
				return
			}
		case MsgNeed:
			hs, err := UnmarshalNeed(body)
			if err != nil {
				fail(err)
				return
			}
			for _, h := range hs {
				data, err := c.blob(h)
				if err != nil {
					c.s.logger().Warn("partner needs a body we cannot read", "hash", fmt.Sprintf("%x", h[:8]), "err", err)
					continue
				}
				if err := c.send(MsgBlob, MarshalBlob(Blob{Hash: h, Content: data})); err != nil {
					fail(err)
					return
				}
				c.s.Stats.BlobsServed.Add(1)
			}
		case MsgDurable:
			// Sync mode only: the consumer position moves on the Ack.
			c.s.Stats.Durables.Add(1)
			d, err := UnmarshalDurable(body)
			if err != nil {
				fail(err)
				return
			}
			if c.s.OnAcked != nil && len(d.Positions) > 0 {
				pos := make(map[string]uint64, len(d.Positions))
				for _, p := range d.Positions {
					pos[p.Account] = p.Applied
				}
				c.s.OnAcked(pos)
			}
		case MsgPong, MsgPing:
		case MsgRefuse:
			reason, _ := UnmarshalRefuse(body)
			fail(fmt.Errorf("partner refused: %s", reason))
			return
		default:
			fail(fmt.Errorf("%w: unexpected %s from receiver", ErrFrame, t))
			return
		}
	}
}

// ackPersistEvery bounds how often the consumer position is written (a
// file rewritten with two fsyncs). It only lets the journal drop what the
// partner has; after a crash an older position costs a resend of records
// the receiver skips as applied.
const ackPersistEvery = 100 * time.Millisecond

// advanceAck moves the consumer position past every record the partner
// applied (or that is not for it). It is persisted off the caller's path
// (the ack reader), at most every ackPersistEvery.
func (c *sconn) advanceAck() {
	c.mu.Lock()
	n := 0
	for n < len(c.inflight) {
		f := c.inflight[n]
		if strings.HasPrefix(f.account, pendingPrefix) {
			break // held until attributed
		}
		if uint64(f.lsn) > c.applied[f.account] && c.ok[f.account] {
			break
		}
		n++
	}
	c.inflight = c.inflight[n:]
	acked := c.readUpTo
	if len(c.inflight) > 0 {
		acked = c.inflight[0].lsn - 1
	}
	if c.hasFloor && acked > c.floor {
		acked = c.floor // accounts resyncing on a side connection stream from P0+1
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	if acked <= c.ackWant {
		return
	}
	c.ackWant = acked
	if c.ackTimer == nil {
		c.ackTimer = time.AfterFunc(max(0, ackPersistEvery-time.Since(c.ackLast)), c.persistAck)
	}
}

// persistAck writes the consumer position (advanceAck's timer). The write
// (two fsyncs) runs without ackMu, so the ack reader never waits on it;
// ackTimer stays set meanwhile, so no other write starts.
func (c *sconn) persistAck() {
	c.ackMu.Lock()
	want := c.ackWant
	c.ackMu.Unlock()
	var err error
	if want > c.s.Source.Acked() {
		err = c.s.Source.SetAcked(want)
	}
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	c.ackTimer = nil
	c.ackLast = time.Now()
	if err != nil {
		c.s.logger().Warn("persist acked position (tried again at the next ack)", "err", err)
		if c.ackWant == want {
			c.ackWant = c.s.Source.Acked()
		}
		return
	}
	c.s.Stats.Acked.Store(uint64(max(want, c.s.Source.Acked())))
	if c.ackWant > want { // acks came during the write
		c.ackTimer = time.AfterFunc(ackPersistEvery, c.persistAck)
	}
}

// flushAcks persists a pending consumer position at the session's end
// (instead of a timer firing after it, maybe after the journal closed).
func (c *sconn) flushAcks() {
	c.ackMu.Lock()
	t := c.ackTimer
	pending := t != nil && t.Stop()
	c.ackMu.Unlock()
	if pending {
		c.persistAck()
	}
}

// pendingDeadline bounds how long a new mailbox's records wait for its
// cyrus.header (Cyrus writes it milliseconds after cyrus.index).
const pendingDeadline = 60 * time.Second

// releaseStalePending gives up on mailboxes whose header never came (a
// CREATE cut short, a directory removed): their records stop holding the
// consumer position and the link. If the mailbox does get an owner later,
// its replica lacks these files and the first change to them quarantines
// the account, which a full resync repairs. Called with c.mu held.
func (c *sconn) releaseStalePending() {
	for id, since := range c.pendingSince {
		if time.Since(since) < pendingDeadline {
			continue
		}
		n := len(c.pending[id])
		c.s.logger().Warn("new mailbox never got a cyrus.header: its held records are released unshipped", "mailbox", id, "records", n, "held_for", time.Since(since).Round(time.Second))
		delete(c.pending, id)
		delete(c.pendingSince, id)
		c.held -= n
		for i := range c.inflight {
			if c.inflight[i].account == pendingPrefix+id {
				c.inflight[i].account = "" // done: not for any account
			}
		}
	}
}

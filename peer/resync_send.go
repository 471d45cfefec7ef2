package peer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/internal/durable"
	"mreplfs/journal"
)

// The sending side of a full per-account resync (doc.go, "Full resync").

// ResyncProgress reports how a resync of one account goes.
type ResyncProgress struct {
	Account    string
	Phase      string // "listing", "comparing", "sending", "done"
	Files      int    // files listed (listing) or sent (sending)
	FilesTotal int    // files to send
	Bytes      int64  // content bytes listed or sent
	BytesTotal int64  // bytes to send
}

const (
	manifestChunk = 2048    // entries per Manifest frame
	fileChunk     = 4 << 20 // content bytes per File frame
)

func (s *Sender) canResync() bool { return s.Walk != nil && len(s.Trees) > 0 }

// needsResync says why an account of a Welcome needs a full resync ("" if
// it does not): the receiver asks for one, never applied anything, or
// reports less than it once acknowledged (it lost its state).
func (s *Sender) needsResync(p Position) string {
	switch {
	case p.State == StateResync:
		return "the partner asks for it"
	case p.State == StateResyncing:
		return "a resync was cut short"
	case p.State != StateOK:
		return ""
	}
	if s.isUnclean(p.Account) {
		return "the master's mount stopped uncleanly: its changes are verified"
	}
	k, seen := s.knownApplied(p.Account)
	if p.Applied == 0 && !seen {
		return "never synced"
	}
	if p.Applied < k {
		return fmt.Sprintf("the partner reports position %d, it acknowledged %d before (lost state)", p.Applied, k)
	}
	return ""
}

// isUnclean reports whether account is in the journal's unclean list and
// was not verified by this sender in the last reverifyAfter (if the mount
// could not clear it, the account is not resynced in a loop).
func (s *Sender) isUnclean(account string) bool {
	if s.Unclean == nil || !s.canResync() {
		return false
	}
	list, listed := s.Unclean()
	if !slices.Contains(list, account) {
		return false
	}
	s.verifiedMu.Lock()
	at, ok := s.verifiedAt[account]
	s.verifiedMu.Unlock()
	// Listed again since (another unclean stop), or the clear did not take.
	return !ok || listed.After(at) || time.Since(at) > reverifyAfter
}

// reverifyAfter: an account this sender verified is not verified again
// sooner while it stays listed unclean (the mount was down or could not
// clear it), unless the list was written again since (a new unclean stop).
const reverifyAfter = time.Minute

// noteVerified records that accounts were verified (then calls Verified).
func (s *Sender) noteVerified(accounts []string, began time.Time) {
	if s.Verified != nil {
		s.Verified(accounts, began) // the mount rewrites its list before verifiedAt
	}
	s.verifiedMu.Lock()
	if s.verifiedAt == nil {
		s.verifiedAt = map[string]time.Time{}
	}
	for _, a := range accounts {
		s.verifiedAt[a] = time.Now()
	}
	s.verifiedMu.Unlock()
}

// watchUnclean ends the session when an account it ships becomes unclean
// (the mount restarted after a crash while this peer ran): the next session
// resyncs it.
func (c *sconn) watchUnclean(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		list, _ := c.s.Unclean()
		for _, a := range list {
			c.mu.Lock()
			ok := c.ok[a]
			c.mu.Unlock()
			if ok && c.s.isUnclean(a) {
				c.s.logger().Warn("the mount stopped uncleanly: account to verify by a full resync; reconnecting", "account", a)
				c.stop(fmt.Errorf("account %s must be verified after an unclean stop", a))
				return
			}
		}
	}
}

// --- acknowledged positions per account (KnownFile) -------------------------

type knownStore struct {
	mu     sync.Mutex
	once   sync.Once
	m      map[string]uint64 // account → applied position the partner acknowledged
	replay map[string]uint64 // account → end of its last resync's replay window
	dirty  bool
	saved  time.Time
}

// knownData is KnownFile's content (JSON).
type knownData struct {
	Applied  map[string]uint64 `json:"applied"`
	ReplayTo map[string]uint64 `json:"replay_to,omitempty"`
}

func (s *Sender) knownLoad() *knownStore {
	k := &s.known
	k.once.Do(func() {
		k.m, k.replay = map[string]uint64{}, map[string]uint64{}
		if s.KnownFile == "" {
			return
		}
		b, err := os.ReadFile(s.KnownFile)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				s.logger().Warn("read acknowledged positions", "file", s.KnownFile, "err", err)
			}
			return
		}
		var d knownData
		if err := json.Unmarshal(b, &d); err != nil {
			s.logger().Warn("acknowledged positions unreadable; lost-state detection starts afresh", "file", s.KnownFile, "err", err)
			return
		}
		if d.Applied != nil {
			k.m = d.Applied
		}
		if d.ReplayTo != nil {
			k.replay = d.ReplayTo
		}
	})
	return k
}

// knownApplied returns the position the partner acknowledged for account,
// and whether it ever did (a resync to position 0, of an empty journal,
// counts).
func (s *Sender) knownApplied(account string) (uint64, bool) {
	k := s.knownLoad()
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[account]
	return v, ok
}

// noteKnown records an acknowledged position; it is saved at most every
// second (and at the end of each session).
func (s *Sender) noteKnown(account string, applied uint64) {
	k := s.knownLoad()
	k.mu.Lock()
	if applied > k.m[account] {
		k.m[account], k.dirty = applied, true
	}
	due := k.dirty && time.Since(k.saved) > time.Second
	k.mu.Unlock()
	if due {
		s.saveKnown()
	}
}

// setResynced records the position a resync gave an account (it may be
// lower than an older one) and the end of its replay window.
func (s *Sender) setResynced(account string, applied, replayTo uint64) {
	k := s.knownLoad()
	k.mu.Lock()
	k.m[account], k.replay[account], k.dirty = applied, replayTo, true
	k.mu.Unlock()
	s.saveKnown()
}

// replayBounds returns the end of each account's last resync replay window
// still ahead of the consumer position: writes are never coalesced across
// it (sconn.coalesce).
func (s *Sender) replayBounds(acked journal.LSN) map[string]journal.LSN {
	k := s.knownLoad()
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]journal.LSN{}
	for a, l := range k.replay {
		if journal.LSN(l) > acked {
			out[a] = journal.LSN(l)
		}
	}
	return out
}

func (s *Sender) saveKnown() {
	if s.KnownFile == "" {
		return
	}
	k := s.knownLoad()
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.dirty {
		return
	}
	b, err := json.Marshal(knownData{Applied: k.m, ReplayTo: k.replay})
	if err == nil {
		err = durable.WriteFile(s.KnownFile, b)
	}
	if err != nil {
		s.logger().Warn("save acknowledged positions", "file", s.KnownFile, "err", err)
		return
	}
	k.dirty, k.saved = false, time.Now()
}

// --- the resync itself ----------------------------------------------------

// Resync connects to the partner and resyncs accounts in full whatever
// their state there (`mreplfs peer -resync`: an admin's request, e.g. after
// resolving a quarantine), then closes the connection. No other sender of
// this node may run for the partner meanwhile.
func (s *Sender) Resync(ctx context.Context, accounts []AccountEpoch) error {
	if !s.canResync() {
		return errors.New("peer: resync needs the master's trees and an account walker")
	}
	sc, br, w, ctx, err := s.handshake(ctx, accounts)
	if err != nil {
		return err
	}
	defer sc.cancel()
	defer s.saveKnown()
	for _, p := range w.Positions {
		if p.State == StateRefused {
			return fmt.Errorf("peer: partner refuses account %s (see its log)", p.Account)
		}
	}
	if err := sc.resyncAccounts(ctx, br, accounts); err != nil {
		return err
	}
	for _, a := range accounts {
		if !sc.ok[a.Account] {
			return fmt.Errorf("peer: resync of %s did not complete", a.Account)
		}
	}
	return nil
}

// sideResync resyncs accounts on a connection of its own, with P = p0 for
// all of them (recorded before any walk), while c streams the others. When
// it is done, c ends so that the next session streams the resynced
// accounts from P0+1 (c's consumer position is held at P0 meanwhile).
func (c *sconn) sideResync(ctx context.Context, accounts []AccountEpoch, p0 journal.LSN) {
	retry := 5 * time.Second
	for first := true; ; first = false {
		if !first {
			// A retry: a new P, and the consumer position held there
			// (it is at or below it: nothing beyond durable is read).
			c.mu.Lock()
			p0 = c.s.Source.Durable()
			c.floor, c.hasFloor = p0, true
			c.mu.Unlock()
		}
		done, err := c.sideResyncOnce(ctx, accounts, p0)
		if ctx.Err() != nil {
			return
		}
		if done > 0 {
			c.stop(errResyncDone)
			return
		}
		// Nothing resynced (the accounts could not be listed, the partner
		// could not apply them, or the link failed): the others keep
		// streaming on this session; try again later.
		c.s.logger().Warn("full resync did not complete; retrying", "accounts", len(accounts), "err", err, "in", retry)
		c.mu.Lock()
		c.hasFloor = false // meanwhile the journal may drop what is acked
		c.mu.Unlock()
		c.advanceAck()
		select {
		case <-time.After(retry):
		case <-ctx.Done():
			return
		}
		retry = min(retry*2, 5*time.Minute)
	}
}

// sideResyncOnce makes one attempt and returns how many accounts it
// resynced.
func (c *sconn) sideResyncOnce(ctx context.Context, accounts []AccountEpoch, p0 journal.LSN) (int, error) {
	side, br, w, sctx, err := c.s.handshake(ctx, accounts)
	if err != nil {
		return 0, err
	}
	defer side.cancel()
	var take []AccountEpoch
	for _, p := range w.Positions {
		if c.s.needsResync(p) == "" {
			continue
		}
		for _, a := range accounts {
			if a.Account == p.Account {
				take = append(take, a)
			}
		}
	}
	side.fixedP = &p0
	err = side.resyncAccounts(sctx, br, take)
	n := 0
	for _, a := range take {
		if side.ok[a.Account] {
			n++
		}
	}
	return n, err
}

// errResyncDone ends a session after its side resyncs: the next session
// streams the resynced accounts.
var errResyncDone = errors.New("peer: full resyncs done; reconnecting to stream those accounts")

// stop ends the session with err.
func (c *sconn) stop(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.cancel()
}

// resyncAccounts runs the full resync of accounts, one after the other, and
// then closes their replay windows. On success the accounts stream from
// the position recorded before each walk (sc.ok, sc.applied).
func (c *sconn) resyncAccounts(ctx context.Context, br *bufio.Reader, accounts []AccountEpoch) error {
	began := time.Now() // before any walk: what an unclean stop left is seen by them
	var verified []string
	defer func() {
		if len(verified) > 0 && c.s.Unclean != nil {
			c.s.noteVerified(verified, began)
		}
	}()
	type done struct {
		acct string
		from uint64
	}
	var finished []done
	readAny := false
	for _, a := range accounts {
		from, read, ok, err := c.resyncOne(ctx, br, a)
		if err != nil {
			return fmt.Errorf("account %s: %w", a.Account, err)
		}
		readAny = readAny || read
		if ok {
			finished = append(finished, done{a.Account, from})
		}
	}
	if len(finished) == 0 {
		return nil
	}
	if readAny {
		settle := c.s.ResyncSettle
		if settle == 0 {
			settle = 1500 * time.Millisecond
		}
		select {
		case <-time.After(settle):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	to := uint64(c.s.Source.Durable())
	for _, f := range finished {
		if err := c.send(MsgResyncEnd, MarshalResyncEnd(ResyncEnd{Account: f.acct, From: f.from, ReplayTo: max(to, f.from)})); err != nil {
			return fmt.Errorf("send resync end: %w", err)
		}
	}
	for range finished {
		a, err := c.readResync(br, MsgAck)
		if err != nil {
			return err
		}
		ack, err := UnmarshalAck(a)
		if err != nil {
			return err
		}
		for _, p := range ack.Positions {
			if p.State != StateOK {
				c.s.logger().Error("partner did not complete the resync", "account", p.Account, "state", p.State.String())
				continue
			}
			c.ok[p.Account] = true
			c.applied[p.Account] = p.Applied
			c.s.setResynced(p.Account, p.Applied, max(to, p.Applied))
			c.mu.Lock()
			c.replayTo[p.Account] = journal.LSN(max(to, p.Applied))
			c.mu.Unlock()
			c.s.Stats.Resyncs.Add(1)
			verified = append(verified, p.Account)
			c.s.logger().Info("account resynced", "account", p.Account, "from", p.Applied)
			c.s.progress(ResyncProgress{Account: p.Account, Phase: "done"})
		}
	}
	return nil
}

// readResync reads the next frame of a resync exchange, which must be of
// type want (a Refuse ends the session).
func (c *sconn) readResync(br *bufio.Reader, want MsgType) ([]byte, error) {
	for {
		t, body, err := ReadFrame(br, nil)
		if err != nil {
			return nil, fmt.Errorf("read from partner: %w", err)
		}
		switch t {
		case want:
			return body, nil
		case MsgPing, MsgPong:
		case MsgRefuse:
			reason, _ := UnmarshalRefuse(body)
			return nil, fmt.Errorf("partner refused: %s", reason)
		default:
			return nil, fmt.Errorf("%w: expected %s during a resync, got %s", ErrFrame, want, t)
		}
	}
}

func (s *Sender) progress(p ResyncProgress) {
	if s.Progress != nil {
		s.Progress(p)
	}
}

// resyncOne lists one account to the partner and sends what it wants. It
// returns the position recorded before the walk, whether any file content
// was read, and whether the partner took the resync (false: it refused the
// listing, e.g. a path it does not accept for the account).
func (c *sconn) resyncOne(ctx context.Context, br *bufio.Reader, a AccountEpoch) (uint64, bool, bool, error) {
	log := c.s.logger().With("account", a.Account)
	from := uint64(c.s.Source.Durable()) // P: before the walk
	if c.fixedP != nil {
		from = uint64(*c.fixedP)
	}
	entries, err := c.s.listAccount(ctx, a.Account)
	if err != nil {
		if ctx.Err() != nil {
			return 0, false, false, err
		}
		// This account only: the others resync and stream.
		log.Error("cannot list the account for a full resync; it is not replicated this session", "err", err)
		return 0, false, false, nil
	}
	byPath := map[TreePath]*ManifestEntry{}
	for i := range entries {
		byPath[TreePath{entries[i].Tree, entries[i].Path}] = &entries[i]
	}
	for i := 0; ; i += manifestChunk {
		chunk := entries[i:min(i+manifestChunk, len(entries))]
		last := i+manifestChunk >= len(entries)
		m := Manifest{Account: a.Account, Epoch: a.Epoch, From: from, Last: last, Entries: chunk}
		if err := c.send(MsgManifest, MarshalManifest(m)); err != nil {
			return 0, false, false, fmt.Errorf("send manifest: %w", err)
		}
		if last {
			break
		}
	}
	c.s.progress(ResyncProgress{Account: a.Account, Phase: "comparing", Files: len(entries)})
	// The partner compares (it may take a while: it hashes its copy) and
	// answers with Want frames, or refuses with an Ack.
	var want []TreePath
	for {
		t, body, err := ReadFrame(br, nil)
		if err != nil {
			return 0, false, false, fmt.Errorf("read want: %w", err)
		}
		if t == MsgAck {
			ack, err := UnmarshalAck(body)
			if err != nil {
				return 0, false, false, err
			}
			for _, p := range ack.Positions {
				log.Error("partner refused the resync", "state", p.State.String())
			}
			return 0, false, false, nil
		}
		if t == MsgRefuse {
			reason, _ := UnmarshalRefuse(body)
			return 0, false, false, fmt.Errorf("partner refused: %s", reason)
		}
		if t != MsgWant {
			return 0, false, false, fmt.Errorf("%w: expected want, got %s", ErrFrame, t)
		}
		w, err := UnmarshalWant(body)
		if err != nil {
			return 0, false, false, err
		}
		if w.Account != a.Account {
			return 0, false, false, fmt.Errorf("%w: want for %s during the resync of %s", ErrFrame, w.Account, a.Account)
		}
		want = append(want, w.Paths...)
		if w.Last {
			break
		}
	}
	var total int64
	for _, p := range want {
		e := byPath[p]
		if e == nil || e.Type != EntryFile {
			return 0, false, false, fmt.Errorf("%w: partner wants %s/%s, which is not a listed file", ErrFrame, p.Tree, p.Path)
		}
		total += e.Size
	}
	log.Info("resync: sending what the partner lacks", "listed", len(entries), "wanted", len(want), "bytes", total)
	pr := ResyncProgress{Account: a.Account, Phase: "sending", FilesTotal: len(want), BytesTotal: total}
	c.s.progress(pr)
	for _, p := range want {
		n, err := c.sendFile(ctx, a.Account, byPath[p])
		if err != nil {
			return 0, false, false, err
		}
		pr.Files++
		pr.Bytes += n
		c.s.progress(pr)
	}
	return from, len(entries) > 0, true, nil
}

// listAccount walks the account's files on the master and hashes them.
func (s *Sender) listAccount(ctx context.Context, account string) ([]ManifestEntry, error) {
	var out []ManifestEntry
	links := map[[2]uint64]uint64{} // dev, ino → link group
	var bytes int64
	err := s.Walk(account, func(tree, rel string, fi os.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("peer: %s/%s: no stat", tree, rel)
		}
		e := ManifestEntry{Tree: tree, Path: rel, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, MTime: st.Mtim.Nano()}
		switch {
		case fi.IsDir():
			e.Type = EntryDir
		case fi.Mode()&os.ModeSymlink != 0:
			e.Type = EntrySymlink
			t, err := os.Readlink(filepath.Join(s.Trees[tree], rel))
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil // gone since listed: a journaled change
				}
				return err
			}
			e.Target = t
		case fi.Mode().IsRegular():
			e.Type = EntryFile
			sum, n, err := hashMasterFile(filepath.Join(s.Trees[tree], rel))
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil
				}
				return err
			}
			e.Hash, e.Size = sum, n
			bytes += n
			if st.Nlink > 1 {
				k := [2]uint64{uint64(st.Dev), st.Ino}
				if links[k] == 0 {
					links[k] = uint64(len(links) + 1)
				}
				e.Link = links[k]
			}
		default:
			return nil // sockets, fifos, devices: not mail
		}
		out = append(out, e)
		if len(out)%1000 == 0 {
			s.progress(ResyncProgress{Account: account, Phase: "listing", Files: len(out), Bytes: bytes})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", account, err)
	}
	s.progress(ResyncProgress{Account: account, Phase: "listing", Files: len(out), Bytes: bytes})
	return out, nil
}

func openMasterFile(p string) (*os.File, error) {
	return os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
}

func hashMasterFile(p string) ([32]byte, int64, error) {
	var sum [32]byte
	f, err := openMasterFile(p)
	if err != nil {
		return sum, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return sum, 0, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, n, nil
}

// sendFile sends one wanted file: by reference when this connection sent
// its content already, else by value in chunks, as it is now (changes
// since the listing are journaled and replayed). It returns the content
// bytes sent.
func (c *sconn) sendFile(ctx context.Context, account string, e *ManifestEntry) (int64, error) {
	fc := FileChunk{Account: account, Tree: e.Tree, Path: e.Path}
	if e.Size > 0 {
		c.mu.Lock()
		_, sent := c.recent[e.Hash]
		c.mu.Unlock()
		if sent {
			fc.ByRef, fc.Last, fc.Hash = true, true, e.Hash
			c.s.Stats.ResyncFiles.Add(1)
			return 0, c.send(MsgFile, MarshalFile(fc))
		}
	}
	f, err := openMasterFile(filepath.Join(c.s.Trees[e.Tree], e.Path))
	if errors.Is(err, os.ErrNotExist) {
		fc.Gone, fc.Last = true, true
		return 0, c.send(MsgFile, MarshalFile(fc))
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := sha256.New()
	// A read buffer one byte larger than the listed size finds the end in
	// one read; bigger files go in fileChunk pieces.
	buf := make([]byte, min(fileChunk, max(e.Size+1, 4096)))
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		n, err := io.ReadFull(f, buf)
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return off, fmt.Errorf("read %s/%s: %w", e.Tree, e.Path, err)
		}
		h.Write(buf[:n])
		fc.Offset, fc.Data = uint64(off), buf[:n]
		fc.Last = n < len(buf)
		if fc.Last {
			copy(fc.Hash[:], h.Sum(nil))
		}
		if err := c.send(MsgFile, MarshalFile(fc)); err != nil {
			return off, fmt.Errorf("send file: %w", err)
		}
		off += int64(n)
		if fc.Last {
			break
		}
	}
	c.s.Stats.ResyncFiles.Add(1)
	c.s.Stats.ResyncBytes.Add(off)
	if off > 0 {
		c.mu.Lock()
		c.recent[fc.Hash] = time.Now()
		c.mu.Unlock()
	}
	return off, nil
}

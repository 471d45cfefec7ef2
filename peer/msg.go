package peer

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// Version is the highest protocol version this code speaks. Version 2 adds
// Durable; a session runs at the lower of the two sides' versions.
const Version = 2

// AccountState is a receiver's view of one account (Welcome, Ack).
type AccountState uint8

const (
	StateOK         AccountState = 0
	StateQuarantine AccountState = 1 // diverged replica: no more applies until an admin acts
	StateResync     AccountState = 2 // records are missing: a full per-account resync is needed
	StateRefused    AccountState = 3 // the sender is not this account's master here
	// StateResyncing: a full resync is under way, or was cut short (then it
	// is redone, as for StateResync).
	StateResyncing AccountState = 4
)

func (s AccountState) String() string {
	switch s {
	case StateOK:
		return "ok"
	case StateQuarantine:
		return "quarantined"
	case StateResync:
		return "needs-resync"
	case StateRefused:
		return "refused"
	case StateResyncing:
		return "resyncing"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// AccountEpoch is one account of a Hello.
type AccountEpoch struct {
	Account string
	Epoch   uint64
}

// Hello opens a connection (sender → receiver).
type Hello struct {
	Version  uint64
	Node     string
	Cluster  string
	Accounts []AccountEpoch
}

// Position is one account of a Welcome or an Ack.
type Position struct {
	Account string
	Epoch   uint64 // Welcome only; 0 in an Ack
	Applied uint64 // the last LSN applied durably
	State   AccountState
}

// Welcome answers a Hello (receiver → sender).
type Welcome struct {
	Version   uint64
	Node      string
	Positions []Position
}

// Ack reports applied positions (receiver → sender).
type Ack struct{ Positions []Position }

// Blob carries one message body (sender → receiver).
type Blob struct {
	Hash    [32]byte
	Content []byte
}

// maxList bounds list counts; every item also needs at least one byte, which
// the decoder checks against what remains.
const maxList = 1 << 20

// --- encoding -------------------------------------------------------------

type enc struct{ b []byte }

func (e *enc) uv(v uint64)     { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) u8(v uint8)      { e.b = append(e.b, v) }
func (e *enc) bytes(v []byte)  { e.uv(uint64(len(v))); e.b = append(e.b, v...) }
func (e *enc) str(v string)    { e.uv(uint64(len(v))); e.b = append(e.b, v...) }
func (e *enc) hash(h [32]byte) { e.b = append(e.b, h[:]...) }

// MarshalHello encodes a Hello body.
func MarshalHello(h Hello) []byte {
	var e enc
	e.uv(h.Version)
	e.str(h.Node)
	e.str(h.Cluster)
	e.uv(uint64(len(h.Accounts)))
	for _, a := range h.Accounts {
		e.str(a.Account)
		e.uv(a.Epoch)
	}
	return e.b
}

// MarshalWelcome encodes a Welcome body.
func MarshalWelcome(w Welcome) []byte {
	var e enc
	e.uv(w.Version)
	e.str(w.Node)
	e.uv(uint64(len(w.Positions)))
	for _, p := range w.Positions {
		e.str(p.Account)
		e.uv(p.Epoch)
		e.uv(p.Applied)
		e.u8(uint8(p.State))
	}
	return e.b
}

// MarshalAck encodes an Ack body.
func MarshalAck(a Ack) []byte {
	var e enc
	e.uv(uint64(len(a.Positions)))
	for _, p := range a.Positions {
		e.str(p.Account)
		e.uv(p.Applied)
		e.u8(uint8(p.State))
	}
	return e.b
}

// MarshalRefuse encodes a Refuse body.
func MarshalRefuse(reason string) []byte {
	var e enc
	e.str(reason)
	return e.b
}

// MarshalBatch encodes a Batch body from already-encoded records.
func MarshalBatch(records [][]byte) []byte {
	var e enc
	e.uv(uint64(len(records)))
	for _, r := range records {
		e.bytes(r)
	}
	return e.b
}

// MarshalNeed encodes a Need body.
func MarshalNeed(hashes [][32]byte) []byte {
	var e enc
	e.uv(uint64(len(hashes)))
	for _, h := range hashes {
		e.hash(h)
	}
	return e.b
}

// MarshalBlob encodes a Blob body.
func MarshalBlob(b Blob) []byte {
	var e enc
	e.hash(b.Hash)
	e.bytes(b.Content)
	return e.b
}

// MarshalPing encodes a Ping or Pong body.
func MarshalPing(nonce uint64) []byte {
	var e enc
	e.uv(nonce)
	return e.b
}

// --- decoding -------------------------------------------------------------

// dec reads fields from a body; the first error sticks and later reads
// return zero values, so callers check err once at the end.
type dec struct {
	b   []byte
	msg MsgType
	err error
}

func (d *dec) fail(format string, a ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", ErrFrame, d.msg, fmt.Sprintf(format, a...))
	}
}

func (d *dec) uv(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint for %s", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) u8(what string) uint8 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("missing %s", what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// bytes returns a sub-slice of the body (no copy).
func (d *dec) bytes(what string) []byte {
	n := d.uv(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("%s length %d exceeds the %d bytes left", what, n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) str(what string) string { return string(d.bytes(what)) }

func (d *dec) hash(what string) (h [32]byte) {
	if d.err != nil {
		return h
	}
	if len(d.b) < 32 {
		d.fail("short %s", what)
		return h
	}
	copy(h[:], d.b)
	d.b = d.b[32:]
	return h
}

// count reads a list length that cannot exceed the bytes left, given that
// each item takes at least minItem bytes.
func (d *dec) count(what string, minItem int) int {
	n := d.uv(what + " count")
	if d.err != nil {
		return 0
	}
	if n > maxList || n*uint64(minItem) > uint64(len(d.b)) {
		d.fail("%s count %d impossible with %d bytes left", what, n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *dec) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// UnmarshalHello decodes a Hello body.
func UnmarshalHello(b []byte) (Hello, error) {
	d := dec{b: b, msg: MsgHello}
	h := Hello{Version: d.uv("version"), Node: d.str("node"), Cluster: d.str("cluster")}
	n := d.count("accounts", 2)
	for i := 0; i < n && d.err == nil; i++ {
		h.Accounts = append(h.Accounts, AccountEpoch{Account: d.str("account"), Epoch: d.uv("epoch")})
	}
	return h, d.end()
}

// UnmarshalWelcome decodes a Welcome body.
func UnmarshalWelcome(b []byte) (Welcome, error) {
	d := dec{b: b, msg: MsgWelcome}
	w := Welcome{Version: d.uv("version"), Node: d.str("node")}
	n := d.count("positions", 4)
	for i := 0; i < n && d.err == nil; i++ {
		p := Position{Account: d.str("account"), Epoch: d.uv("epoch"), Applied: d.uv("applied")}
		p.State = AccountState(d.u8("state"))
		w.Positions = append(w.Positions, p)
	}
	return w, d.end()
}

// UnmarshalAck decodes an Ack body.
func UnmarshalAck(b []byte) (Ack, error) {
	d := dec{b: b, msg: MsgAck}
	var a Ack
	n := d.count("positions", 3)
	for i := 0; i < n && d.err == nil; i++ {
		p := Position{Account: d.str("account"), Applied: d.uv("applied")}
		p.State = AccountState(d.u8("state"))
		a.Positions = append(a.Positions, p)
	}
	return a, d.end()
}

// UnmarshalRefuse decodes a Refuse body.
func UnmarshalRefuse(b []byte) (string, error) {
	d := dec{b: b, msg: MsgRefuse}
	s := d.str("reason")
	return s, d.end()
}

// UnmarshalBatch decodes a Batch body into the encoded records (sub-slices
// of b: copy what must outlive b).
func UnmarshalBatch(b []byte) ([][]byte, error) {
	d := dec{b: b, msg: MsgBatch}
	n := d.count("records", 1)
	recs := make([][]byte, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		recs = append(recs, d.bytes("record"))
	}
	return recs, d.end()
}

// UnmarshalNeed decodes a Need body.
func UnmarshalNeed(b []byte) ([][32]byte, error) {
	d := dec{b: b, msg: MsgNeed}
	n := d.count("hashes", 32)
	hs := make([][32]byte, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		hs = append(hs, d.hash("hash"))
	}
	return hs, d.end()
}

// UnmarshalBlob decodes a Blob body; Content is a sub-slice of b.
func UnmarshalBlob(b []byte) (Blob, error) {
	d := dec{b: b, msg: MsgBlob}
	bl := Blob{Hash: d.hash("hash"), Content: d.bytes("content")}
	return bl, d.end()
}

// UnmarshalPing decodes a Ping or Pong body.
func UnmarshalPing(t MsgType, b []byte) (uint64, error) {
	d := dec{b: b, msg: t}
	n := d.uv("nonce")
	return n, d.end()
}

// MarshalReplay encodes a Replay body: per account, the end of the receiver's
// replay window (the Inflight mark of a batch a crash interrupted). Same
// layout as an Ack, Applied holding the window's end.
func MarshalReplay(ends map[string]uint64) []byte {
	a := Ack{}
	for acct, l := range ends {
		a.Positions = append(a.Positions, Position{Account: acct, Applied: l})
	}
	sort.Slice(a.Positions, func(i, j int) bool { return a.Positions[i].Account < a.Positions[j].Account })
	return MarshalAck(a)
}

// UnmarshalReplay decodes a Replay body.
func UnmarshalReplay(b []byte) (map[string]uint64, error) {
	a, err := UnmarshalAck(b)
	if err != nil {
		return nil, fmt.Errorf("%w (replay)", err)
	}
	out := make(map[string]uint64, len(a.Positions))
	for _, p := range a.Positions {
		out[p.Account] = p.Applied
	}
	return out, nil
}

// MarshalDurable encodes a Durable body (the Ack layout, version 2).
func MarshalDurable(a Ack) []byte { return MarshalAck(a) }

// UnmarshalDurable decodes a Durable body.
func UnmarshalDurable(b []byte) (Ack, error) { return UnmarshalAck(b) }

package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Admin requests (doc.go, "Admin connections"): role changes are steered
// over the same mutual-TLS listener as replication. An admin connection
// starts with an Admin frame instead of a Hello; each Admin frame is
// answered by one AdminReply, in order, until the client closes.

// AdminVersion is the version of the admin request layout.
const AdminVersion = 1

// adminIdle is how long an admin connection may sit between requests.
const adminIdle = 2 * time.Minute

// AdminRequest is one admin operation: Op names it, Account is the account
// it is about (may be empty), Args its named arguments.
type AdminRequest struct {
	Version uint64
	Op      string
	Account string
	Args    map[string]string
}

// AdminStatus is an admin reply's outcome.
type AdminStatus uint8

const (
	AdminOK      AdminStatus = 0
	AdminRefused AdminStatus = 1 // not done, for a reason the admin can act on (busy, diverged, ...)
	AdminFailed  AdminStatus = 2 // an error
)

func (s AdminStatus) String() string {
	switch s {
	case AdminOK:
		return "ok"
	case AdminRefused:
		return "refused"
	case AdminFailed:
		return "failed"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// AdminReply answers an AdminRequest.
type AdminReply struct {
	Status AdminStatus
	Reason string
	Values map[string]string
}

// Uint returns a numeric value of the reply (0 when absent or not a number).
func (r AdminReply) Uint(key string) uint64 {
	v, _ := strconv.ParseUint(r.Values[key], 10, 64)
	return v
}

// Uint returns a numeric argument of the request (0 when absent or not a
// number).
func (r AdminRequest) Uint(key string) uint64 {
	v, _ := strconv.ParseUint(r.Args[key], 10, 64)
	return v
}

// Err returns nil for AdminOK, else an error with the reason.
func (r AdminReply) Err() error {
	if r.Status == AdminOK {
		return nil
	}
	return &AdminError{Status: r.Status, Reason: r.Reason}
}

// AdminError is a reply that was not AdminOK.
type AdminError struct {
	Status AdminStatus
	Reason string
}

func (e *AdminError) Error() string { return e.Status.String() + ": " + e.Reason }

// AdminHandler runs one admin request from node (its certificate's common
// name).
type AdminHandler func(ctx context.Context, node string, req AdminRequest) AdminReply

func appendKV(e *enc, m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	e.uv(uint64(len(keys)))
	for _, k := range keys {
		e.str(k)
		e.str(m[k])
	}
}

func (d *dec) kv(what string) map[string]string {
	n := d.count(what, 2)
	if d.err != nil || n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	for range n {
		k := d.str(what + " key")
		v := d.str(what + " value")
		if d.err != nil {
			return nil
		}
		if _, dup := m[k]; dup {
			d.fail("%s: key %q twice", what, k)
			return nil
		}
		m[k] = v
	}
	return m
}

// MarshalAdmin encodes an Admin body: uvarint version, string op, string
// account, list of {string key, string value} (keys sorted, unique).
func MarshalAdmin(r AdminRequest) []byte {
	var e enc
	e.uv(r.Version)
	e.str(r.Op)
	e.str(r.Account)
	appendKV(&e, r.Args)
	return e.b
}

// UnmarshalAdmin decodes an Admin body.
func UnmarshalAdmin(b []byte) (AdminRequest, error) {
	d := dec{b: b, msg: MsgAdmin}
	r := AdminRequest{Version: d.uv("version"), Op: d.str("op"), Account: d.str("account")}
	r.Args = d.kv("args")
	if r.Version == 0 && d.err == nil {
		d.fail("admin version 0")
	}
	return r, d.end()
}

// MarshalAdminReply encodes an AdminReply body: u8 status (0 ok, 1 refused,
// 2 failed), string reason, list of {string key, string value}.
func MarshalAdminReply(r AdminReply) []byte {
	var e enc
	e.u8(uint8(r.Status))
	e.str(r.Reason)
	appendKV(&e, r.Values)
	return e.b
}

// UnmarshalAdminReply decodes an AdminReply body.
func UnmarshalAdminReply(b []byte) (AdminReply, error) {
	d := dec{b: b, msg: MsgAdminReply}
	r := AdminReply{Status: AdminStatus(d.u8("status"))}
	if r.Status > AdminFailed && d.err == nil {
		d.fail("admin status %d", r.Status)
	}
	r.Reason = d.str("reason")
	r.Values = d.kv("values")
	return r, d.end()
}

// serveAdmin answers admin requests on c, the first of which is first.
func (r *Receiver) serveAdmin(ctx context.Context, s *session, br *bufio.Reader, first []byte) error {
	body := first
	for {
		req, err := UnmarshalAdmin(body)
		if err != nil {
			s.send(MsgRefuse, MarshalRefuse(err.Error()))
			return err
		}
		var rep AdminReply
		switch {
		case req.Version != AdminVersion:
			rep = AdminReply{Status: AdminFailed, Reason: fmt.Sprintf("admin version %d (this node speaks %d)", req.Version, AdminVersion)}
		case r.Admin == nil:
			rep = AdminReply{Status: AdminFailed, Reason: "this node takes no admin requests"}
		default:
			s.conn.SetDeadline(time.Time{})
			rep = r.Admin(ctx, s.node, req)
		}
		if err := s.send(MsgAdminReply, MarshalAdminReply(rep)); err != nil {
			return err
		}
		s.conn.SetReadDeadline(time.Now().Add(adminIdle))
		t, b, err := ReadFrame(br, nil)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read admin request: %w", err)
		}
		if t != MsgAdmin {
			return fmt.Errorf("%w: %s on an admin connection", ErrFrame, t)
		}
		body = b
	}
}

// AdminClient is an admin connection to a peer (DialAdmin).
type AdminClient struct {
	Addr string
	mu   sync.Mutex
	c    net.Conn
	br   *bufio.Reader
}

// DialAdmin opens an admin connection to the peer at addr (mutual TLS with
// cfg; nil cfg only in tests). dial may be nil.
func DialAdmin(ctx context.Context, addr string, cfg *tls.Config, dial func(ctx context.Context, addr string) (net.Conn, error)) (*AdminClient, error) {
	s := &Sender{Addr: addr, TLS: cfg, Dial: dial}
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	return &AdminClient{Addr: addr, c: c, br: bufio.NewReaderSize(c, 64<<10)}, nil
}

// Call sends req (Version filled in) and waits for the reply, at most until
// ctx ends (which closes the connection).
func (a *AdminClient) Call(ctx context.Context, req AdminRequest) (AdminReply, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.c == nil {
		return AdminReply{}, errors.New("peer: admin connection closed")
	}
	if req.Version == 0 {
		req.Version = AdminVersion
	}
	stop := context.AfterFunc(ctx, func() { a.c.SetDeadline(time.Now()) })
	defer stop()
	a.c.SetDeadline(time.Time{})
	fail := func(err error) (AdminReply, error) {
		a.c.Close()
		a.c = nil
		if ctx.Err() != nil {
			return AdminReply{}, fmt.Errorf("peer: admin %s at %s: %w", req.Op, a.Addr, ctx.Err())
		}
		return AdminReply{}, fmt.Errorf("peer: admin %s at %s: %w", req.Op, a.Addr, err)
	}
	if err := WriteFrame(a.c, MsgAdmin, MarshalAdmin(req)); err != nil {
		return fail(err)
	}
	t, body, err := ReadFrame(a.br, nil)
	if err != nil {
		return fail(err)
	}
	switch t {
	case MsgAdminReply:
		rep, err := UnmarshalAdminReply(body)
		if err != nil {
			return fail(err)
		}
		return rep, nil
	case MsgRefuse:
		reason, _ := UnmarshalRefuse(body)
		return fail(fmt.Errorf("refused: %s", reason))
	}
	return fail(fmt.Errorf("%w: %s in answer to an admin request", ErrFrame, t))
}

// Close closes the connection.
func (a *AdminClient) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.c == nil {
		return nil
	}
	err := a.c.Close()
	a.c = nil
	return err
}

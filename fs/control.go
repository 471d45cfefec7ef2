package fs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ControlVersion is the control protocol version ("v" of every message).
const ControlVersion = 1

// ControlRequest is one request line on the control socket.
//
//	{"v":1,"cmd":"ping"}
//	{"v":1,"cmd":"status"}
//	{"v":1,"cmd":"reload"}                                      reload the role map
//	{"v":1,"cmd":"forget","tree":"spool","paths":["a/b", ...]}   after the receiver changed them
//	{"v":1,"cmd":"forget","account":"alice"}                     every cached path of alice
//	{"v":1,"cmd":"acked","positions":{"alice":42,...}}          the replica applied (from the peer)
//	{"v":1,"cmd":"positions","account":"alice"}                 last appended and applied LSN
//	{"v":1,"cmd":"verified","accounts":["alice"],"since":N}     resynced after an unclean stop
//	{"v":1,"cmd":"freeze","account":"alice","idle_ms":500,"timeout_ms":10000}
//	                      freeze an inactive account (freeze.go); reply lsn, durable
//	{"v":1,"cmd":"unfreeze","account":"alice"}                   reply count 1 if it was frozen
//	{"v":1,"cmd":"frozen","account":"alice"}                     reply count 1 if it is frozen
//
// "acked" is sent by the peer process on every Ack, on one long-lived
// connection; it wakes the fsyncs of sync-mode accounts (syncrepl.go).
type ControlRequest struct {
	V         int               `json:"v"`
	Cmd       string            `json:"cmd"`
	Tree      string            `json:"tree,omitempty"`
	Paths     []string          `json:"paths,omitempty"`
	Account   string            `json:"account,omitempty"`
	Positions map[string]uint64 `json:"positions,omitempty"`
	Accounts  []string          `json:"accounts,omitempty"`
	Since     int64             `json:"since,omitempty"` // unix nanoseconds
	IdleMS    int64             `json:"idle_ms,omitempty"`
	TimeoutMS int64             `json:"timeout_ms,omitempty"`
}

// ControlReply is the one reply line to a request.
type ControlReply struct {
	V      int            `json:"v"`
	OK     bool           `json:"ok"`
	Error  string         `json:"error,omitempty"`
	Count  int            `json:"count,omitempty"` // forget: entries invalidated
	Status *ControlStatus `json:"status,omitempty"`
	// positions: the account's last appended and replica-applied LSNs.
	Appended uint64 `json:"appended,omitempty"`
	Applied  uint64 `json:"applied,omitempty"`
	// freeze: the account's last LSN appended by this mount, and the
	// journal's durable position after the freeze synced it.
	LSN     uint64 `json:"lsn,omitempty"`
	Durable uint64 `json:"durable,omitempty"`
	// Busy: a freeze was refused because the account is in use.
	Busy bool `json:"busy,omitempty"`
}

// ControlStatus is the state reported by "status".
type ControlStatus struct {
	Pid   int               `json:"pid"`
	Trees []TreeStatus      `json:"trees"`
	Extra map[string]string `json:"extra,omitempty"`
	Sync  *SyncStatus       `json:"sync,omitempty"`
	// RootCreates counts creations that fell back to root (fs/owner.go).
	RootCreates int64 `json:"root_creates,omitempty"`
}

// TreeStatus describes one mounted tree.
type TreeStatus struct {
	Name       string `json:"name"`
	Backing    string `json:"backing"`
	Mountpoint string `json:"mountpoint"`
}

// Control serves the control socket of a mount process (DESIGN.md §8).
type Control struct {
	FS *FS
	// Reload reloads the role map (nil: "reload" answers an error).
	Reload func(ctx context.Context) error
	// Extra adds entries to "status" (may be nil).
	Extra  func() map[string]string
	Logger *slog.Logger
}

// maxControlLine bounds one request line.
const maxControlLine = 1 << 20

// Serve listens on the unix socket path (mode 0600; only root, or the
// mount's own uid, may talk to it) until ctx ends. A stale socket file left
// by a dead process is replaced; a live one is an error.
func (c *Control) Serve(ctx context.Context, path string) error {
	log := c.Logger
	if log == nil {
		log = c.FS.log
	}
	if conn, err := net.Dial("unix", path); err == nil {
		conn.Close()
		return fmt.Errorf("fs: control socket %s is in use by another process", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("fs: remove stale control socket: %w", err)
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("fs: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("fs: control socket: %w", err)
	}
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer wg.Wait()
	defer os.Remove(path)
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("fs: control socket accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.serveConn(ctx, conn.(*net.UnixConn), log)
		}()
	}
}

func (c *Control) serveConn(ctx context.Context, conn *net.UnixConn, log *slog.Logger) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := checkPeer(conn); err != nil {
		log.Warn("control socket: refused peer", "err", err)
		json.NewEncoder(conn).Encode(ControlReply{V: ControlVersion, Error: err.Error()})
		return
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 4096), maxControlLine)
	enc := json.NewEncoder(conn)
	for sc.Scan() {
		var req ControlRequest
		var rep ControlReply
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			rep = ControlReply{Error: fmt.Sprintf("bad request: %v", err)}
		} else {
			rep = c.handle(ctx, req)
		}
		rep.V = ControlVersion
		if err := enc.Encode(rep); err != nil {
			return
		}
	}
}

// checkPeer allows root and the mount's own uid.
func checkPeer(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cerr != nil {
		return fmt.Errorf("peer credentials: %w", cerr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("uid %d may not use the control socket", cred.Uid)
	}
	return nil
}

func (c *Control) handle(ctx context.Context, req ControlRequest) ControlReply {
	if req.V != ControlVersion {
		return ControlReply{Error: fmt.Sprintf("unsupported version %d (want %d)", req.V, ControlVersion)}
	}
	switch req.Cmd {
	case "ping":
		return ControlReply{OK: true}
	case "status":
		st := &ControlStatus{Pid: os.Getpid(), RootCreates: c.FS.RootCreates()}
		for _, t := range c.FS.Trees() {
			st.Trees = append(st.Trees, TreeStatus{Name: t.Name, Backing: t.Backing, Mountpoint: t.Mountpoint})
		}
		if c.Extra != nil {
			st.Extra = c.Extra()
		}
		ss := c.FS.SyncStatus()
		st.Sync = &ss
		return ControlReply{OK: true, Status: st}
	case "acked":
		c.FS.NoteAcked(req.Positions)
		return ControlReply{OK: true}
	case "verified":
		n, err := c.FS.ClearUnclean(req.Accounts, time.Unix(0, req.Since))
		if err != nil {
			return ControlReply{Error: err.Error(), Count: n}
		}
		return ControlReply{OK: true, Count: n}
	case "positions":
		if req.Account == "" {
			return ControlReply{Error: `positions: give "account"`}
		}
		ap, ac := c.FS.AccountPositions(req.Account)
		return ControlReply{OK: true, Appended: ap, Applied: ac}
	case "reload":
		if c.Reload == nil {
			return ControlReply{Error: "reload: no reloadable role map"}
		}
		if err := c.Reload(ctx); err != nil {
			return ControlReply{Error: "reload: " + err.Error()}
		}
		return ControlReply{OK: true}
	case "forget":
		switch {
		case req.Account != "" && len(req.Paths) == 0:
			return ControlReply{OK: true, Count: c.FS.ForgetAccount(req.Account)}
		case req.Account == "" && req.Tree != "" && len(req.Paths) > 0:
			n, err := c.FS.Forget(req.Tree, req.Paths)
			if err != nil {
				return ControlReply{Error: err.Error(), Count: n}
			}
			return ControlReply{OK: true, Count: n}
		}
		return ControlReply{Error: `forget: give "account", or "tree" and "paths"`}
	case "freeze":
		to := time.Duration(req.TimeoutMS) * time.Millisecond
		// Changes under way get at most a second to finish.
		fctx, cancel := context.WithTimeout(ctx, min(to, time.Second))
		defer cancel()
		info, err := c.FS.Freeze(fctx, req.Account, time.Duration(req.IdleMS)*time.Millisecond, to)
		if err != nil {
			return ControlReply{Error: err.Error(), Busy: errors.Is(err, ErrBusy)}
		}
		return ControlReply{OK: true, LSN: uint64(info.LSN), Durable: uint64(info.Durable)}
	case "unfreeze":
		if req.Account == "" {
			return ControlReply{Error: "unfreeze: no account"}
		}
		n := 0
		if c.FS.Unfreeze(req.Account) {
			n = 1
		}
		return ControlReply{OK: true, Count: n}
	case "frozen":
		if _, ok := c.FS.FrozenFor(req.Account); ok {
			return ControlReply{OK: true, Count: 1}
		}
		return ControlReply{OK: true}
	}
	return ControlReply{Error: fmt.Sprintf("unknown command %q", req.Cmd)}
}

// ControlCall sends one request to the control socket at path and returns
// the reply (for mreplfs status, the peer's receiver and tests).
func ControlCall(ctx context.Context, path string, req ControlRequest) (ControlReply, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return ControlReply{}, fmt.Errorf("fs: control socket: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if req.V == 0 {
		req.V = ControlVersion
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return ControlReply{}, fmt.Errorf("fs: control socket: %w", err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 4096), maxControlLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return ControlReply{}, fmt.Errorf("fs: control socket: %w", err)
		}
		return ControlReply{}, errors.New("fs: control socket: no reply")
	}
	var rep ControlReply
	if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
		return ControlReply{}, fmt.Errorf("fs: control socket: bad reply: %w", err)
	}
	return rep, nil
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"mreplfs/fs"
)

// ackPusher tells the local mount what the partners have applied, for sync
// mode (fs/syncrepl.go): positions from every sender's Acks are merged and
// pushed as one "acked" request on a long-lived control connection. Pushes
// never block a sender: a push under way collects what arrives meanwhile
// and sends it next (group commit on the wire to the mount).
type ackPusher struct {
	sock string
	log  *slog.Logger

	mu      sync.Mutex
	pending map[string]uint64
	wake    chan struct{}
}

func newAckPusher(sock string, log *slog.Logger) *ackPusher {
	return &ackPusher{sock: sock, log: log, pending: map[string]uint64{}, wake: make(chan struct{}, 1)}
}

// Note queues positions (the sender's OnAcked).
func (p *ackPusher) Note(pos map[string]uint64) {
	p.mu.Lock()
	for a, l := range pos {
		if l > p.pending[a] {
			p.pending[a] = l
		}
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run pushes until ctx ends, reconnecting to the mount (which may restart)
// every 200 ms while it is away. After a reconnect every position known is
// pushed again: a restarted mount starts empty.
func (p *ackPusher) Run(ctx context.Context) {
	all := map[string]uint64{} // every position pushed, for a reconnect
	var conn net.Conn
	var rd *bufio.Scanner
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-time.After(time.Second):
		}
		p.mu.Lock()
		batch := p.pending
		p.pending = map[string]uint64{}
		p.mu.Unlock()
		for a, l := range batch {
			if l > all[a] {
				all[a] = l
			}
		}
		if conn == nil {
			if len(all) == 0 {
				continue
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", p.sock)
			if err != nil {
				if !warned {
					p.log.Warn("cannot reach the mount's control socket to report applied positions (sync-mode fsyncs will time out)", "socket", p.sock, "err", err)
					warned = true
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
				p.retry()
				continue
			}
			conn, rd, warned = c, bufio.NewScanner(c), false
			rd.Buffer(make([]byte, 4096), 1<<20)
			batch = all // a new mount process knows nothing yet
		}
		if len(batch) == 0 {
			continue
		}
		if err := p.push(conn, rd, batch); err != nil {
			p.log.Warn("reporting applied positions to the mount", "err", err)
			conn.Close()
			conn = nil
			p.retry()
		}
	}
}

// retry makes the next round run at once.
func (p *ackPusher) retry() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// pushChunk bounds one "acked" request (the control socket reads lines of
// at most 1 MiB; an entry is about 25 bytes).
const pushChunk = 2000

// push sends pos in requests of at most pushChunk accounts.
func (p *ackPusher) push(conn net.Conn, rd *bufio.Scanner, pos map[string]uint64) error {
	chunk := make(map[string]uint64, min(len(pos), pushChunk))
	for a, l := range pos {
		chunk[a] = l
		if len(chunk) == pushChunk {
			if err := p.pushOne(conn, rd, chunk); err != nil {
				return err
			}
			clear(chunk)
		}
	}
	if len(chunk) == 0 {
		return nil
	}
	return p.pushOne(conn, rd, chunk)
}

func (p *ackPusher) pushOne(conn net.Conn, rd *bufio.Scanner, pos map[string]uint64) error {
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := json.Marshal(fs.ControlRequest{V: fs.ControlVersion, Cmd: "acked", Positions: pos})
	if err != nil {
		return err
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return err
	}
	if !rd.Scan() {
		if err := rd.Err(); err != nil {
			return err
		}
		return fmt.Errorf("mount closed the control connection")
	}
	var rep fs.ControlReply
	if err := json.Unmarshal(rd.Bytes(), &rep); err != nil {
		return fmt.Errorf("bad reply: %w", err)
	}
	if !rep.OK {
		return fmt.Errorf("mount: %s", rep.Error)
	}
	return nil
}

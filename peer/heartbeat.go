package peer

import (
	"context"
	"sync"
	"time"
)

// Liveness. A link that goes silent (a cable pulled, a partition) is not
// seen by TCP for minutes, and after it heals the old connection waits out
// TCP's retransmission backoff. So the sender pings every PingEvery and
// drops the connection when nothing at all came back for DeadAfter; the
// receiver drops a connection that sent nothing (not even a ping) for
// IdleAfter. A new connection then gets through as soon as the link does.
const (
	PingEvery   = time.Second
	DeadAfter   = 5 * time.Second
	IdleAfter   = 10 * time.Second
	dialTimeout = 3 * time.Second
)

// heartbeat pings the receiver until ctx is done or a ping cannot be sent.
func (c *sconn) heartbeat(ctx context.Context) {
	t := time.NewTicker(PingEvery)
	defer t.Stop()
	var nonce uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			nonce++
			if err := c.send(MsgPing, MarshalPing(nonce)); err != nil {
				return
			}
		}
	}
}

// batchQueue hands batches from a connection's frame reader to its applier
// without ever blocking the reader, so pings are answered and blobs received
// while a long batch applies. The sender's window bounds what it holds.
type batchQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	recs   [][]byte
	closed bool
}

func newBatchQueue() *batchQueue {
	q := &batchQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *batchQueue) put(recs [][]byte) {
	q.mu.Lock()
	q.recs = append(q.recs, recs...)
	q.mu.Unlock()
	q.cond.Signal()
}

func (q *batchQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// take waits for records and returns up to max of them (all there are, under
// load: applying them together costs one round of fsyncs); ok is false once
// the queue is closed and empty.
func (q *batchQueue) take(max int) (recs [][]byte, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.recs) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.recs) == 0 {
		return nil, false
	}
	n := min(max, len(q.recs))
	recs = q.recs[:n:n]
	q.recs = q.recs[n:]
	return recs, true
}

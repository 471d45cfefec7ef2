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
	frames [][][]byte // whole Batch frames: a coalesced group never spans two
	closed bool
}

func newBatchQueue() *batchQueue {
	q := &batchQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *batchQueue) put(recs [][]byte) {
	q.mu.Lock()
	q.frames = append(q.frames, recs)
	q.mu.Unlock()
	q.cond.Signal()
}

func (q *batchQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// take waits for records and returns whole frames, as many as fit in max
// records (at least one frame): applying them together costs one round of
// fsyncs. A frame is never split, so records sharing an LSN (the ranges of
// one coalesced run) apply in the same batch. ok is false once the queue is
// closed and empty.
func (q *batchQueue) take(max int) (recs [][]byte, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.frames) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.frames) == 0 {
		return nil, false
	}
	n := 0
	for n < len(q.frames) && (n == 0 || len(recs)+len(q.frames[n]) <= max) {
		recs = append(recs, q.frames[n]...)
		n++
	}
	q.frames = q.frames[n:]
	return recs, true
}

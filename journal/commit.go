package journal

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// slowSync is the fdatasync duration above which a warning is logged.
const slowSync = time.Second

// run is the committer: it writes what Append buffered and fdatasyncs, when
// kicked (Sync, Activate, back-pressure) and every SyncEvery.
func (l *Log) run() {
	defer close(l.done)
	t := time.NewTicker(l.opts.SyncEvery)
	defer t.Stop()
	for {
		select {
		case <-l.kick:
		case <-t.C:
		case <-l.stop:
			l.commit()
			return
		}
		l.commit()
	}
}

func (l *Log) kickCommit() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// commit makes everything appended so far durable: activity log first (so an
// account is listed before its records can be durable), then the segment
// data, then the blobs directory, then durable advances.
func (l *Log) commit() {
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		return
	}
	chunks := l.pending
	l.pending, l.pendingBytes = nil, 0
	target := l.next - 1
	blobsDirty := l.blobsDirty
	l.blobsDirty = false
	al := l.activitySnapshotLocked(time.Now())
	l.mu.Unlock()

	if len(chunks) == 0 && !blobsDirty && al == nil && target <= l.Durable() {
		return
	}
	err := l.write(chunks, blobsDirty, al)
	if err == nil && target > l.Durable() {
		l.publish(target)
	}
	l.mu.Lock()
	if err != nil {
		// After a failed write or fdatasync nothing more can be trusted
		// (the kernel may have dropped the dirty pages): fail fast.
		l.err = fmt.Errorf("journal: commit: %w", err)
		l.log.Error("journal commit failed; the journal refuses further appends", "err", err)
	} else {
		if al != nil {
			l.alFile = al.set
			for a := range l.active { // re-activated while the snapshot was written
				if !l.alFile[a] {
					l.alNew = true
				}
			}
		}
		l.durable.Store(uint64(target))
	}
	close(l.durableCh)
	l.durableCh = make(chan struct{})
	l.mu.Unlock()
}

func (l *Log) write(chunks []chunk, blobsDirty bool, al *alSnapshot) error {
	if al != nil {
		if err := writeListFile(l.dir, activeFile, al.lines()); err != nil {
			return err
		}
	}
	dirty := false
	for _, c := range chunks {
		if c.newSeg != 0 {
			if dirty {
				if err := l.fdatasync(); err != nil {
					return err
				}
				dirty = false
			}
			f, err := createSegment(l.dir, c.newSeg)
			if err != nil {
				return err
			}
			l.file.Close()
			l.file, l.fileOff = f, segHeaderSize
		}
		if len(c.data) > 0 {
			n, err := l.file.WriteAt(c.data, l.fileOff)
			l.fileOff += int64(n)
			if err != nil {
				return fmt.Errorf("write segment: %w", err)
			}
			dirty = true
		}
	}
	if dirty {
		if err := l.fdatasync(); err != nil {
			return err
		}
	}
	if blobsDirty {
		if err := syncDir(filepath.Join(l.dir, blobDir)); err != nil {
			return err
		}
	}
	return nil
}

// publish tells Followers that target is durable (committer only). A
// failure is logged, not fatal: Followers then lag until it works again.
func (l *Log) publish(target LSN) {
	err := publishDurable(l.durFile, target)
	if err != nil && !l.pubFailing {
		l.log.Warn("journal: followers will lag", "err", err)
	} else if err == nil && l.pubFailing {
		l.log.Info("journal: publishing the durable LSN works again")
	}
	l.pubFailing = err != nil
}

func (l *Log) fdatasync() error {
	start := time.Now()
	l.syncs.Add(1)
	err := unix.Fdatasync(int(l.file.Fd()))
	if d := time.Since(start); d > slowSync {
		l.log.Warn("slow journal fdatasync", "took", d, "expected", slowSync)
	}
	if err != nil {
		return fmt.Errorf("fdatasync %s: %w", l.file.Name(), err)
	}
	return nil
}

// Sync returns once every record ≤ upTo is durable (upTo beyond the last
// appended LSN means "everything appended so far"). Concurrent callers share
// one fdatasync (group commit).
func (l *Log) Sync(ctx context.Context, upTo LSN) error {
	for {
		if l.Durable() >= upTo {
			return nil
		}
		l.mu.Lock()
		if l.err != nil {
			err := l.err
			l.mu.Unlock()
			return err
		}
		if upTo >= l.next {
			upTo = l.next - 1
			if l.Durable() >= upTo {
				l.mu.Unlock()
				return nil
			}
		}
		if l.closed {
			l.mu.Unlock()
			return ErrClosed
		}
		ch := l.durableCh
		l.mu.Unlock()
		l.kickCommit()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("journal: sync: %w", ctx.Err())
		}
	}
}

// waitCh returns the channel closed at the next commit, or an error when no
// commit will come.
func (l *Log) waitCh() (<-chan struct{}, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if l.err != nil {
		return nil, l.err
	}
	return l.durableCh, nil
}

// --- bounded size ---

// degradable: records that the hard limit replaces by OpDirty. Control
// records are always kept.
func degradable(r *Record) bool {
	switch r.Op {
	case OpEpoch, OpBarrier, OpCheckpoint, OpDirty:
		return false
	}
	return r.Account != ""
}

// checkOverflowLocked enters overflow at the hard limit and reports whether
// the journal is in overflow.
func (l *Log) checkOverflowLocked() bool {
	if !l.overflow && l.opts.HardLimit > 0 && l.total >= l.opts.HardLimit {
		l.overflow = true
		l.log.Error("journal at its hard size limit: recording only which accounts change; consumers must resync them",
			"size", l.total, "hard_limit", l.opts.HardLimit)
	}
	return l.overflow
}

func (l *Log) checkSoftLocked() {
	if !l.alarm && l.opts.SoftLimit > 0 && l.total >= l.opts.SoftLimit {
		l.alarm = true
		l.log.Warn("journal above its soft size limit", "size", l.total, "soft_limit", l.opts.SoftLimit)
	}
}

// lowWater is the size under which an overflow episode ends.
func (l *Log) lowWater() int64 {
	if l.opts.SoftLimit > 0 && l.opts.SoftLimit < l.opts.HardLimit {
		return l.opts.SoftLimit
	}
	return l.opts.HardLimit / 4 * 3
}

// sizeChangedLocked clears the alarm and ends an overflow episode when
// retention has shrunk the journal.
func (l *Log) sizeChangedLocked() {
	if l.alarm && (l.opts.SoftLimit == 0 || l.total < l.opts.SoftLimit) {
		l.alarm = false
		l.log.Info("journal back under its soft size limit", "size", l.total)
	}
	if l.overflow && l.total <= l.lowWater() {
		l.overflow = false
		clear(l.episode)
		l.log.Warn("journal left overflow: recording detail again", "size", l.total)
	}
}

// dirtyLocked returns the LSN of account's OpDirty record in this overflow
// episode, appending one the first time.
func (l *Log) dirtyLocked(account string, epoch uint64) (LSN, error) {
	if lsn, ok := l.episode[account]; ok {
		return lsn, nil
	}
	r := Record{Op: OpDirty, Account: account, Epoch: epoch}
	typ, body, err := encodeBody(&r, nil)
	if err != nil {
		return 0, err
	}
	lsn := l.appendLocked(typ, body, &r)
	l.episode[account] = lsn
	return lsn, nil
}

// DirtyAccounts lists, sorted, the accounts with an OpDirty record that not
// every consumer has acked yet: their detail was dropped at the hard limit
// and a consumer must resync them by hash compare.
func (l *Log) DirtyAccounts() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return sortedKeys(l.dirty)
}

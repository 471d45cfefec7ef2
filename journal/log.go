package journal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Options configure a Log. The zero value is usable.
type Options struct {
	// Logger receives warnings (slow fsyncs, repairs, alarms); nil discards.
	Logger *slog.Logger
	// SegmentSize: a new segment is started once the active one would grow
	// past this. Default 64 MiB.
	SegmentSize int64
	// SyncEvery: records nobody waits for are made durable at least this
	// often. Default 1 s.
	SyncEvery time.Duration
	// SoftLimit (bytes of retained segments, 0 = none) raises an alarm.
	SoftLimit int64
	// HardLimit (bytes, 0 = none): at or above it only OpDirty records are
	// stored (doc.go, "Bounded size").
	HardLimit int64
	// ActiveWindow: an account leaves the activity log after this long
	// without records (all durable). Default 10 s.
	ActiveWindow time.Duration
	// MaxPending bounds the bytes appended but not yet written; Append
	// waits for the committer beyond it. Default 16 MiB.
	MaxPending int
	// RetainEvery: how often retention re-reads the consumers (a
	// Follower's acks reach the writer only this way). Default 1 s.
	RetainEvery time.Duration
}

func (o *Options) fill() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = 64 << 20
	}
	if o.SyncEvery <= 0 {
		o.SyncEvery = time.Second
	}
	if o.ActiveWindow <= 0 {
		o.ActiveWindow = 10 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 16 << 20
	}
	if o.RetainEvery <= 0 {
		o.RetainEvery = time.Second
	}
}

// segment is the in-memory view of one segment file. last < first means
// empty. size counts bytes appended, including those not yet written.
type segment struct {
	first, last LSN
	size        int64
}

// chunk is appended bytes waiting for the committer; newSeg != 0 means "create
// the segment starting at newSeg first".
type chunk struct {
	newSeg LSN
	data   []byte
}

// Log is the journal. All methods are safe for concurrent use.
type Log struct {
	dir  string
	opts Options
	log  *slog.Logger
	lock *os.File

	durable atomic.Uint64
	syncs   atomic.Uint64 // fdatasyncs of segment data (for benchmarks)
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}

	retainDone chan struct{}
	ackLock    *ackLock // cross-process lock of consumers.d

	// committer-only state
	file       *os.File
	fileOff    int64
	alAt       time.Time // last activity-log expiry pass
	durFile    *os.File  // <dir>/durable, published after every commit
	pubFailing bool      // publishing the durable LSN fails (logged once)

	mu           sync.Mutex
	closed       bool
	err          error // sticky commit error: nothing more becomes durable
	next         LSN
	segs         []*segment
	total        int64
	pending      []chunk
	pendingBytes int
	durableCh    chan struct{} // closed (and replaced) after every commit
	blobs        map[[32]byte]*blobRef
	blobsDirty   bool
	alarm        bool
	overflow     bool
	episode      map[string]LSN // overflow episode: account → its OpDirty LSN
	dirty        map[string]LSN // retained OpDirty records: account → highest LSN
	active       map[string]*activeAcct
	alFile       map[string]bool // accounts in the durable activity log
	alNew        bool            // active has accounts alFile lacks
	unclean      map[string]bool
	acked        map[string]LSN

	ackMu sync.Mutex // serializes writes of the consumers and unclean files
}

// Open opens (creating if needed) the journal in dir. It repairs a torn tail
// of the last segment (keeping <name>.broken) and refuses other damage with a
// *CorruptError (see Repair).
func Open(dir string, o Options) (*Log, error) {
	o.fill()
	if err := os.MkdirAll(filepath.Join(dir, blobDir), 0o700); err != nil {
		return nil, fmt.Errorf("journal: open: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: open: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrLocked, dir, err)
	}
	l := &Log{
		dir: dir, opts: o, log: o.Logger.With("journal", dir), lock: lock,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		retainDone: make(chan struct{}), durableCh: make(chan struct{}),
		blobs:   make(map[[32]byte]*blobRef),
		episode: make(map[string]LSN), dirty: make(map[string]LSN),
		active: make(map[string]*activeAcct), alFile: make(map[string]bool),
		unclean: make(map[string]bool), acked: make(map[string]LSN),
	}
	l.ackLock, err = openAckLock(dir)
	if err != nil {
		lock.Close()
		return nil, err
	}
	if err := l.load(false); err != nil {
		l.closeFiles()
		return nil, err
	}
	go l.run()
	go l.runRetention()
	return l, nil
}

// load scans every segment, repairs a torn tail (and, when fixCorrupt, any
// damage), and sets up the writer state.
func (l *Log) load(fixCorrupt bool) error {
	removeTemps(l.dir)
	names, err := listSegments(l.dir)
	if err != nil {
		return err
	}
	fresh := len(names) == 0
	for i := 0; i < len(names); i++ {
		name := names[i]
		seg, err := l.scanSegment(name)
		var ce *CorruptError
		if err != nil && errors.As(err, &ce) && (fixCorrupt || (i == len(names)-1 && isTorn(err))) {
			if seg == nil { // the header itself: the segment holds nothing
				if i != len(names)-1 && !fixCorrupt {
					return err
				}
				seg = &segment{}
				seg.first, _ = parseSegName(name)
				seg.last = seg.first - 1
			}
			if err := l.repairAt(name, ce, names[i+1:]); err != nil {
				return err
			}
			names = names[:i+1]
			if seg.size == 0 { // nothing valid is left: drop the file, start afresh at its LSN
				if err := os.Remove(filepath.Join(l.dir, name)); err != nil {
					return fmt.Errorf("journal: repair: %w", err)
				}
				names = names[:i]
				if len(l.segs) == 0 {
					l.next = seg.first
				}
				break
			}
		} else if err != nil {
			return err
		}
		if len(l.segs) > 0 {
			if prev := l.segs[len(l.segs)-1]; prev.last+1 != seg.first {
				return &CorruptError{Segment: name, Err: fmt.Errorf("%w: gap: previous segment ends at LSN %d", ErrCorrupt, prev.last)}
			}
		}
		l.segs = append(l.segs, seg)
		l.total += seg.size
		l.next = seg.last + 1
	}
	if l.next == 0 {
		l.next = 1
	}
	if len(l.segs) == 0 {
		f, err := createSegment(l.dir, l.next)
		if err != nil {
			return err
		}
		l.file, l.fileOff = f, segHeaderSize
		l.segs = []*segment{{first: l.next, last: l.next - 1, size: segHeaderSize}}
		l.total = segHeaderSize
	} else {
		last := l.segs[len(l.segs)-1]
		f, err := os.OpenFile(filepath.Join(l.dir, segName(last.first)), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("journal: open active segment: %w", err)
		}
		// What survived on disk becomes durable now, before anyone reads it.
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("journal: sync active segment: %w", err)
		}
		l.file, l.fileOff = f, last.size
	}
	l.durable.Store(uint64(l.next - 1))
	// Followers learn the durable end from here on (and forget a value an
	// OS crash left behind).
	if l.durFile, err = openDurable(l.dir); err != nil {
		return err
	}
	if err := publishDurable(l.durFile, l.Durable()); err != nil {
		return err
	}
	if err := migrateConsumers(l.dir); err != nil {
		return err
	}
	if err := l.startActivity(fresh); err != nil {
		return err
	}
	l.gcOrphanBlobs()
	return l.retain()
}

// closeFiles closes what Open opened (after a failed load, or at Close).
func (l *Log) closeFiles() {
	for _, f := range []*os.File{l.file, l.durFile} {
		if f != nil {
			f.Close()
		}
	}
	if l.ackLock != nil {
		l.ackLock.close()
	}
	l.lock.Close()
}

// scanSegment reads a whole segment, indexing what the Log tracks. On error
// the returned segment describes the valid prefix (nil if the header is bad).
func (l *Log) scanSegment(name string) (*segment, error) {
	s, err := openSegScan(l.dir, name)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	seg := &segment{first: s.first, last: s.first - 1, size: segHeaderSize}
	var r Record
	for {
		err := s.nextRecord(&r)
		if err == io.EOF {
			return seg, nil
		}
		if err != nil {
			return seg, err
		}
		seg.last, seg.size = r.LSN, s.off
		l.indexRecord(&r)
	}
}

// indexRecord notes what a retained record means for blobs and dirty
// accounts.
func (l *Log) indexRecord(r *Record) {
	if isBlobRef(r) {
		b := l.blobs[r.Hash]
		if b == nil {
			b = &blobRef{}
			l.blobs[r.Hash] = b
		}
		b.lastRef = r.LSN
	}
	if r.Op == OpDirty {
		l.dirty[r.Account] = r.LSN
	}
}

// repairAt keeps evidence and cuts the log at the damage described by ce;
// segments after it (only when repairing corruption) become evidence too.
func (l *Log) repairAt(name string, ce *CorruptError, later []string) error {
	ev, err := keepEvidence(l.dir, name)
	if err != nil {
		return err
	}
	off := max(ce.Offset, segHeaderSize)
	if err := truncateSegment(l.dir, name, off); err != nil {
		return err
	}
	for _, n := range later {
		if err := os.Rename(filepath.Join(l.dir, n), filepath.Join(l.dir, n+".broken")); err != nil {
			return fmt.Errorf("journal: repair: %w", err)
		}
	}
	if err := syncDir(l.dir); err != nil {
		return err
	}
	lvl := slog.LevelWarn
	if !isTorn(ce) {
		lvl = slog.LevelError
	}
	l.log.Log(context.Background(), lvl, "journal repaired: log cut at damage, evidence kept",
		"segment", name, "offset", off, "evidence", ev, "later_segments_moved", len(later), "damage", ce.Err)
	return nil
}

// Repair opens the journal in dir, cutting it at the first damage of any kind
// (not only a torn tail): the damaged segment is copied to <name>.broken and
// truncated before the damaged frame, later segments are renamed to
// <name>.broken. Records after the damage are lost to readers (they stay in
// the evidence). An admin action: Open refuses corruption instead.
func Repair(dir string, o Options) error {
	o.fill()
	l := &Log{dir: dir, opts: o, log: o.Logger.With("journal", dir),
		blobs: make(map[[32]byte]*blobRef), episode: make(map[string]LSN), dirty: make(map[string]LSN),
		active: make(map[string]*activeAcct), alFile: make(map[string]bool),
		unclean: make(map[string]bool), acked: make(map[string]LSN)}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("journal: repair: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrLocked, dir, err)
	}
	removeTemps(dir)
	names, err := listSegments(dir)
	if err != nil {
		return err
	}
	for i, name := range names {
		s, err := l.scanSegment(name)
		if err == nil {
			if len(l.segs) > 0 && l.segs[len(l.segs)-1].last+1 != s.first {
				err = &CorruptError{Segment: name, Err: fmt.Errorf("%w: gap", ErrCorrupt)}
			} else {
				l.segs = append(l.segs, s)
				continue
			}
		}
		var ce *CorruptError
		if !errors.As(err, &ce) {
			return err
		}
		last := LSN(0)
		if len(l.segs) > 0 {
			last = l.segs[len(l.segs)-1].last
		}
		if s == nil || s.size <= segHeaderSize {
			// Nothing valid in this one: it is evidence as a whole.
			if err := l.moveAside(names[i:], ce); err != nil {
				return err
			}
		} else {
			if err := l.repairAt(name, ce, names[i+1:]); err != nil {
				return err
			}
			if ce.Offset > segHeaderSize { // s.last is the last whole frame before the damage
				last = s.last
			}
		}
		// The log is shorter now: Followers must not wait for, or read,
		// the records cut off.
		return writeDurable(dir, last)
	}
	return nil
}

func (l *Log) moveAside(names []string, ce *CorruptError) error {
	for _, n := range names {
		if err := os.Rename(filepath.Join(l.dir, n), filepath.Join(l.dir, n+".broken")); err != nil {
			return fmt.Errorf("journal: repair: %w", err)
		}
	}
	l.log.Error("journal repaired: damaged segments moved aside", "first", names[0], "count", len(names), "damage", ce.Err)
	return syncDir(l.dir)
}

func removeTemps(dir string) {
	m, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
	for _, p := range m {
		os.Remove(p)
	}
}

// Append adds r to the journal and returns its LSN (also set in r.LSN). It
// encodes r into a buffer and returns without I/O; r and r.Data are not
// retained. The record becomes durable at the next commit (Sync, or within
// Options.SyncEvery). At the hard size limit it stores an OpDirty record for
// r.Account instead and returns that record's LSN (doc.go).
func (l *Log) Append(ctx context.Context, r *Record) (LSN, error) {
	if r.Op == OpInvalid || r.Op > opMax {
		return 0, fmt.Errorf("journal: append: invalid op %d", r.Op)
	}
	typ, body, err := encodeBody(r, nil)
	if err != nil {
		return 0, fmt.Errorf("journal: append: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.pendingBytes > l.opts.MaxPending && !l.closed && l.err == nil {
		ch := l.durableCh
		l.mu.Unlock()
		l.kickCommit()
		select {
		case <-ch:
		case <-ctx.Done():
			l.mu.Lock()
			return 0, fmt.Errorf("journal: append: %w", ctx.Err())
		}
		l.mu.Lock()
	}
	if l.closed {
		return 0, ErrClosed
	}
	if l.err != nil {
		return 0, l.err
	}
	if l.checkOverflowLocked() && degradable(r) {
		lsn, err := l.dirtyLocked(r.Account, r.Epoch)
		if err != nil {
			return 0, err
		}
		if isBlobRef(r) {
			l.unpinLocked(r.Hash)
		}
		r.LSN = lsn
		return lsn, nil
	}
	lsn := l.appendLocked(typ, body, r)
	r.LSN = lsn
	return lsn, nil
}

// appendLocked assigns the next LSN and buffers the frame.
func (l *Log) appendLocked(typ byte, body []byte, r *Record) LSN {
	lsn := l.next
	l.next++
	fsz := int64(frameHeader + len(body))
	seg := l.segs[len(l.segs)-1]
	if seg.last >= seg.first && seg.size+fsz > l.opts.SegmentSize {
		seg = &segment{first: lsn, last: lsn - 1, size: segHeaderSize}
		l.segs = append(l.segs, seg)
		l.total += segHeaderSize
		l.pending = append(l.pending, chunk{newSeg: lsn})
	}
	if len(l.pending) == 0 {
		l.pending = append(l.pending, chunk{})
	}
	c := &l.pending[len(l.pending)-1]
	var h [frameHeader]byte
	putFrameHeader(h[:], typ, lsn, body)
	c.data = append(append(c.data, h[:]...), body...)
	l.pendingBytes += int(fsz)
	seg.last = lsn
	seg.size += fsz
	l.total += fsz

	r.LSN = lsn
	// Record the reference before dropping PutBlob's pin: unpinning an
	// unreferenced blob removes it.
	l.indexRecord(r)
	if isBlobRef(r) {
		l.unpinLocked(r.Hash)
	}
	if r.Account != "" {
		l.noteActiveLocked(r.Account, lsn)
	}
	l.checkSoftLocked()
	return lsn
}

// Close makes everything appended durable, marks the stop clean and releases
// the directory. Blocked readers get ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	<-l.retainDone
	l.mu.Lock()
	err := l.err
	close(l.durableCh)
	l.durableCh = make(chan struct{})
	l.mu.Unlock()
	if cerr := l.file.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("journal: close: %w", cerr)
	}
	l.file = nil
	if err == nil {
		err = l.markClean()
	}
	l.ackMu.Lock() // a SetAcked under way finishes with the ack lock open
	l.closeFiles()
	l.ackMu.Unlock()
	return err
}

// Durable returns the highest LSN known durable.
func (l *Log) Durable() LSN { return LSN(l.durable.Load()) }

// Stats is a snapshot for status and metrics.
type Stats struct {
	Next      LSN   // LSN the next Append gets
	Durable   LSN   // highest durable LSN
	First     LSN   // first retained LSN
	Size      int64 // bytes of retained segments (including unwritten appends)
	Segments  int
	SoftLimit int64
	HardLimit int64
	Alarm     bool // Size is at or above SoftLimit
	Overflow  bool // at the hard limit: only OpDirty records are stored
}

// Stats returns the journal's state.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Next: l.next, Durable: l.Durable(), First: l.segs[0].first, Size: l.total,
		Segments: len(l.segs), SoftLimit: l.opts.SoftLimit, HardLimit: l.opts.HardLimit,
		Alarm: l.alarm, Overflow: l.overflow}
}

// Alarm reports whether the journal is at or above its soft limit (or in
// overflow at the hard limit).
func (l *Log) Alarm() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.alarm || l.overflow
}

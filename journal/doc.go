// Package journal is mreplfs's durable, crash-safe log of mutations: one
// journal per `mreplfs mount` process, covering all its trees, so that the
// records of one account stay in one order. The fs layer appends (Append) and
// waits for durability on fsync (Sync, group commit); the peer and backup
// tail it (NewReader, NextBatch) and acknowledge (SetAcked); whole segments
// are removed once every consumer has acked past them. The peer, a separate
// process, reads the journal through a Follower (OpenFollower): the
// directory is its only link to the writer.
//
// # Directory layout
//
//	<dir>/%016x.seg        segments, named by their first LSN (lexical = log order)
//	<dir>/%016x.seg.broken evidence kept by a repair (never read again)
//	<dir>/blobs/<hex>      message bodies by SHA-256 (hard links; PutBlob)
//	<dir>/durable          the durable LSN, published by the writer for Followers
//	<dir>/consumers.d/<name>.ack  one consumer's acked LSN
//	<dir>/consumers.d/LOCK flock: acks and retention, across processes
//	<dir>/consumers        (older layout: all consumers; moved to consumers.d by Open)
//	<dir>/active           activity log: accounts with possibly unsynced records
//	<dir>/unclean          accounts to verify after an unclean stop
//	<dir>/clean            present only while the journal is closed cleanly
//	<dir>/LOCK             flock: one process at a time
//
// # Segment format (version 1)
//
// All integers are little-endian. CRC is CRC-32C (Castagnoli). A segment is
// a 32-byte header followed by frames, back to back:
//
//	segment header:
//	  0  [8]byte  magic "MRFSJRNL"
//	  8  u32      format version (1)
//	 12  u32      reserved, 0
//	 16  u64      first LSN (equals the file name)
//	 24  u32      reserved, 0
//	 28  u32      CRC of bytes 0..28
//
//	frame (24-byte header + body):
//	  0  u32      body length n (≤ MaxRecordSize)
//	  4  u8       type: 1 = raw payload, 2 = zstd-compressed payload
//	  5  [3]byte  reserved, 0
//	  8  u64      LSN (the previous frame's + 1; the first frame's is the
//	              segment's first LSN)
//	 16  u32      CRC of the body as stored (compressed bytes for type 2)
//	 20  u32      CRC of header bytes 0..20
//	 24  [n]byte  body
//
// The header CRC is checked first, so a damaged length is never trusted; the
// length is then checked against the bytes left in the file before anything
// is allocated; the body CRC is checked before decompression; zstd decodes
// with WithDecoderMaxMemory(MaxRecordSize). Compression is used only when it
// makes the body smaller, and never for payloads under 128 bytes.
//
// We chose a header CRC over etcd's chained CRC and 8-byte alignment: the
// length word is protected by the header CRC (so a flipped length is
// corruption, not a torn tail), and the LSN in every header plus the
// consecutive-LSN rule catch misplaced frames, which is what chaining guards
// against.
//
// # Record payload (version 1)
//
//	u8       op (Op values; 0 and values above the highest known are corrupt)
//	uvarint  field mask: bit i set = field i present (zero fields are omitted)
//	fields present, in bit order:
//	  0 Account  string    5 Offset  varint    10 MTime    varint   15 PrevHash [32]byte
//	  1 Epoch    uvarint   6 Size    varint    11 ATime    varint   16 Data     bytes
//	  2 Tree     string    7 Mode    uvarint   12 Flags    uvarint
//	  3 Path     string    8 UID     uvarint   13 Hash     [32]byte
//	  4 NewPath  string    9 GID     uvarint   14 PrevSize varint
//
// string and bytes are a uvarint length then the bytes; varint is zig-zag
// (encoding/binary). No bytes may follow the last field. The LSN is not in the
// payload (the frame carries it), so a payload is encoded, and compressed,
// before the record gets its LSN.
//
// # Evolution rule
//
// The version in the segment header governs every frame of that segment. A
// reader reads every version from 1 to Version and refuses newer segments
// (ErrUnsupported); a writer always writes Version into new segments and never
// changes the version of an existing one. A change of the bytes (a new frame
// type, a new field bit, a new Op, new meaning of a field) needs a new
// version; within a version, unknown ops, field bits, frame types and non-zero
// reserved bytes are corruption. Op numbers and field bits are only ever
// appended. Every version has frozen sample segments in testdata/v<N>/,
// committed once and never regenerated, that every later build must still
// read (TestGolden).
//
// # Damage: torn writes versus corruption
//
// Only the last segment can have a torn tail (a segment is fdatasynced before
// the next one is created, durably: temp file, fsync, rename, fsync dir). A
// frame is torn when the file ends inside it, when its header is all zeros, or
// when a checksum fails over a span holding an all-zero 512-byte sector. Open
// repairs a torn tail: it copies the segment to <name>.broken and truncates it
// at the last whole frame. Any other damage (a checksum mismatch, an impossible
// field, a non-consecutive LSN, damage in a segment before the last) is a
// *CorruptError wrapping ErrCorrupt naming the segment and offset; Open refuses
// it and Repair (an explicit, logged admin action) cuts the log there, keeping
// the evidence.
//
// # Durability and group commit
//
// Append encodes the record into a buffer and returns its LSN without I/O.
// One committer goroutine writes the buffer and fdatasyncs: when a Sync caller
// waits, and at least every Options.SyncEvery (default 1 s), so records nobody
// waits for are durable within one cycle. Callers that wait concurrently share
// one fdatasync. Durable() is the highest LSN known durable; readers never see
// a record beyond it (a record is shipped only once durable, so an LSN is never
// reused for other data after a crash).
//
// # Readers and coalescing
//
// A Reader returns durable records only, in LSN order, and blocks at the end
// (ctx-cancellable). NextBatch coalesces what it returns (Coalesce): writes
// to one file between related records merge into one write per contiguous
// range, writes made moot by a later replace, unlink or rename onto the file
// are dropped; a merged record carries the LSN of the last raw record it
// stands for, so several records may share an LSN. Acknowledge
// Reader.Position()-1 after applying a batch, not the LSN of a record within
// it.
//
// # Message bodies (blobs)
//
// PutBlob hard-links a message file into blobs/<hex of SHA-256> (copies when a
// link is impossible), fsyncs its data, and the next commit fsyncs the blobs
// directory before any later record becomes durable. An OpMessage or OpReplace
// record with a non-zero Hash, Size > 0 and empty Data refers to such a blob. A
// blob is removed when no retained record refers to it any more.
//
// # Consumers and retention
//
// Consumers (peers, backup) are registered by name; each one's acked LSN is
// kept in its own file, consumers.d/<name>.ack (the state-file format of
// listfile.go, kind "consumer", one entry `"<name>" <lsn>`), replaced
// atomically through <name>.ack~ ('~' is never in a name). One file per
// consumer lets the writer (Log.SetAcked) and Followers in other processes
// (Follower.SetAcked) ack without talking to each other. An ack is a
// read-compare-write of the file under an exclusive flock of
// consumers.d/LOCK, so a position only moves forward whichever process acks.
//
// A segment is removed only when every registered consumer has acked its
// last record; the active segment is never removed. With no consumer
// registered nothing is removed (the size limits below then apply).
// Retention re-reads every consumer file, and runs after each Log.SetAcked
// and every Options.RetainEvery (default 1 s; a Follower's acks reach the
// writer only this way), holding the same flock from the read until the
// segments are gone: once a Follower's SetAcked has returned, no segment
// that consumer has not acked is removed, even by a pass already under way,
// and a consumer registered while the writer was down counts from the
// writer's Open on.
//
// # Bounded size
//
// Options.SoftLimit: crossing it raises an alarm (logged, Alarm()).
// Options.HardLimit: at or above it the journal stops storing record detail:
// each account changed from then on gets a single OpDirty record (deduplicated
// per overflow episode) and Append returns that record's LSN, so Append never
// fails or blocks the mail server because of size. Control records (epoch,
// barrier, checkpoint) are always kept. The episode ends when retention brings
// the size back under the soft limit (or 3/4 of the hard limit without one).
// A consumer that reads OpDirty{Account} must resync that account by hash
// compare (it has lost detail of unknown extent); DirtyAccounts lists the
// accounts with an OpDirty record not yet acked by every consumer.
//
// # Unclean stops and the activity log
//
// A crash loses the records appended after the last fdatasync, but the
// backing store may already hold those changes. So, like DRBD's activity log,
// the journal keeps <dir>/active: the accounts that may have records in the
// unsynced tail. An account enters the durable activity log before, or in the
// same commit as, the first of its records after a quiet period:
// Activate(ctx, account) waits for that (the fs layer calls it before the
// first mutation of an account; it costs nothing while the account is
// active), and Append adds the account for the next commit in any case. An
// account leaves the activity log once it has been quiet, with all its
// records durable, for Options.ActiveWindow. Close writes <dir>/clean; Open
// removes it. Opening without it finds the stop unclean: the accounts of the
// activity log are added to <dir>/unclean, listed by UncleanAccounts until
// ClearUnclean after verification.
//
// # Followers
//
// A Follower (OpenFollower) reads the journal from another process than
// the writer, which need not be running. It never takes LOCK and never
// writes segments; it writes only consumer files. Its Readers are the same
// Reader type with the same contract (durable records only, in order,
// blocking at the end, ErrCompacted, ErrFuture, NextBatch).
//
// Durable position. After every commit's fdatasync (and at Open, after
// repairing the tail) the writer pwrites the durable LSN into <dir>/durable:
//
//	0  u64  durable LSN
//	8  u32  CRC of bytes 0..8
//
// rewritten in place, never fsynced. It is a hint that may lag the truth,
// never lead it: it is written only after the data it announces is
// durable; after an OS crash it may hold an older value, or bytes failing
// the CRC (ignored); every Open rewrites it before anything else, and Repair
// rewrites it when it cuts the log. A Follower returns no record beyond the
// value it read, so bytes past it (frames written but not yet synced, a
// torn frame a crash left) are never returned. Its cost on the commit path
// is one 12-byte pwrite (BenchmarkPublishDurable: about 1 µs, against a
// fdatasync of hundreds of µs).
//
// Wake-up. The Follower watches the file with inotify (IN_MODIFY on the
// file, IN_CREATE and IN_MOVED_TO on the directory for its (re)creation),
// reading the inotify descriptor through Go's poller with a read deadline
// of FollowerOptions.Poll (default 50 ms): each event re-reads the file at
// once, and each deadline re-reads it anyway (and reopens it if it was
// replaced), so a missed event costs at most one poll interval; without
// inotify it polls. A read racing the writer's pwrite fails the CRC and is
// dropped: the kernel queues IN_MODIFY after the write completes, so the
// next event brings the value.
//
// Segments. A Follower lists the directory when a Reader opens a segment
// (at the start and at each segment boundary), so it sees segments the
// writer adds and misses those its retention removed: a missing segment is
// ErrCompacted. A segment a Reader has open stays readable after removal.
// ErrFuture is "from > Durable()+1" (the Follower cannot know appends that
// are not durable). After an OS crash, until the writer has reopened the
// journal, Durable may be below a consumer's acked LSN (the file lost its
// last values): NewReader then fails with ErrFuture, which a caller
// retries later.
//
// Writer restarts. A Reader's buffer may hold bytes past the durable end,
// e.g. a torn frame of a writer killed mid-write; the restarted writer cuts
// it and writes other records at those LSNs. So a Reader that meets damage
// reads once more from a fresh open of the segment before reporting it: a
// stale buffer is gone then, real damage is found again. The durable file
// keeps its inode across restarts; the Follower keeps following it.
//
// A Follower's Durable can go back only when the log was cut by Repair (it
// logs a warning); records it already returned beyond the cut were then
// lost to every reader.
package journal

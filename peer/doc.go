// Package peer replicates the journal between servers: a sender per partner
// server for the accounts mastered here, a receiver for the accounts
// replicated here (DESIGN.md §2, §5).
//
// This file is the wire specification. The code that implements it is
// frame.go (framing) and msg.go (message bodies); golden frames of every
// message type are in testdata/v1 and must decode forever.
//
// # Connection
//
// TCP with mutual TLS 1.3 (tls.go). Each node has a certificate whose
// subject common name is its node id (e.g. "srv-a"), signed by the site's CA;
// `mreplfs cert` makes a test CA and node certificates. The dialler is the
// sender (the master side of the accounts it ships); the listener is the
// receiver. A receiver accepts records for an account only from the node its
// role map names as that account's partner at the account's current epoch.
//
// # Frames
//
// Every message is one frame:
//
//	u32  length   big-endian: the number of bytes of flags+type+body (≥ 2)
//	u8   flags    bit 0: body is zstd-compressed; other bits must be 0
//	u8   type     message type (below)
//	...  body     length-2 bytes
//	u32  crc      big-endian CRC-32C (Castagnoli) of flags, type and body
//	              as sent (compressed bytes when bit 0 is set)
//
// A reader checks length against MaxFrame before allocating, checks the CRC
// before decompressing, and decompresses with bounded memory (MaxFrame). Any
// violation ends the connection with an error naming what was wrong; nothing
// of a bad frame is ever applied.
//
// # Body encoding
//
// Bodies are sequences of fields: uvarint (encoding/binary), u8, fixed 32-byte
// hashes, and byte strings as uvarint length + bytes (strings are UTF-8 byte
// strings). Lists are a uvarint count followed by the items. Every count and
// length is checked against the bytes remaining before anything is allocated.
// Trailing bytes after the last field are an error in version 1.
//
// # Messages (version 1)
//
//	Hello     (1) sender → receiver, first frame:
//	              uvarint version, string node, string cluster,
//	              list of {string account, uvarint epoch}: accounts the sender
//	              masters for this receiver, with its epoch for each.
//	Welcome   (2) receiver → sender, answer to Hello:
//	              uvarint version, string node,
//	              list of {string account, uvarint epoch, uvarint applied,
//	              u8 state}: per account the receiver's epoch, the last LSN
//	              it applied durably (resume from applied+1), and its state
//	              (0 ok, 1 quarantined, 2 needs full resync, 3 refused:
//	              the sender is not that account's master here, 4 a full
//	              resync is under way or was cut short).
//	Refuse    (3) either way, then close: string reason.
//	Batch     (4) sender → receiver: uvarint count, then count records, each
//	              a byte string holding uvarint LSN followed by the journal's
//	              record payload (journal.MarshalRecord, versioned by the
//	              journal's format; record.go).
//	              A message record whose body the sender believes the receiver
//	              holds carries its hash and no data ("by reference").
//	Ack       (5) receiver → sender: list of {string account, uvarint applied,
//	              u8 state}: cumulative, sent after the receiver fsynced the
//	              applies and persisted its positions.
//	Need      (6) receiver → sender: list of 32-byte hashes whose bodies the
//	              receiver lacks (a by-reference record it could not resolve).
//	Blob      (7) sender → receiver: hash (32 bytes), byte string content.
//	Ping      (8) either way: uvarint nonce.   Pong (9): uvarint nonce.
//
// Full resync messages (below, "Full resync"):
//
//	Manifest  (10) sender → receiver: string account, uvarint epoch,
//	              uvarint from (P), u8 last (0 or 1: the last chunk of this
//	              account's listing), list of entries, each:
//	              u8 type (1 file, 2 directory, 3 symlink), string tree,
//	              string path, uvarint mode (≤ 07777), uvarint uid,
//	              uvarint gid, varint size, varint mtime (ns since the
//	              epoch), uvarint link (0: one name on the master; else the
//	              same number for every entry naming the same inode), then
//	              for a file its 32-byte SHA-256, for a symlink string
//	              target (a directory has nothing more).
//	Want      (11) receiver → sender: string account, u8 last, list of
//	              {string tree, string path}: files the receiver lacks or
//	              holds with other content and cannot make from content it
//	              holds (content index, or another listed file it has).
//	File      (12) sender → receiver: string account, string tree, string
//	              path, uvarint offset, u8 flags (bit 0 last chunk, bit 1 by
//	              reference, bit 2 gone; others must be 0), 32-byte hash
//	              (of the whole content: in the last chunk or by reference,
//	              else zero), byte string data (≤ 4 MiB; empty by reference
//	              or gone, which are single, last chunks).
//	ResyncEnd (13) sender → receiver: string account, uvarint from (P),
//	              uvarint replay_to. The receiver answers with an Ack.
//	Replay    (14) receiver → sender, right after every Welcome: the Ack
//	              layout, Applied holding the end of the account's replay
//	              window (a batch in flight when the receiver stopped; only
//	              accounts that have one). The sender never merges writes
//	              (journal.Coalesce) across that end: a merged write carries
//	              its last LSN and its first write's pre-state, so one that
//	              straddled the end would be checked, not replayed, against a
//	              copy already past that pre-state.
//
// Version 2 adds (sent only in a session whose Welcome version is ≥ 2):
//
//	Durable   (15) receiver → sender: the Ack layout, sent for a batch as
//	              soon as its applies are fsynced, before the positions are
//	              committed and the Ack sent. The files are on disk and the
//	              batch's replay window (persisted before it was applied)
//	              covers them, so a crash of the replica cannot lose them.
//	              The sender reports these positions to the mount's sync
//	              mode (Sender.OnAcked) and does nothing else with them: the
//	              consumer position advances on the Ack only.
//
// Admin connections (admin.go; role changes, cmd/mreplfs):
//
//	Admin      (16) client → peer, the first frame instead of a Hello, and
//	              every later frame of the connection: uvarint version (1),
//	              string op, string account, list of {string key, string
//	              value} (keys unique; sorted when sent).
//	AdminReply (17) peer → client, one per Admin, in order: u8 status (0
//	              ok, 1 refused, 2 failed), string reason, list of {string
//	              key, string value}.
//
// The client presents its node certificate: a peer takes admin requests
// from itself (the promote command on its own server) and its partners.
// The ops (query, accounts, freeze, unfreeze, drain, prepare, commit,
// abort, takeover, digest, reconnect) and their keys are cmd/mreplfs's
// (switch.go); the admin layout has its own version (AdminVersion),
// independent of the replication Version: an admin connection never says
// Hello.
// A Welcome position in state 3 (refused) carries the receiver's epoch and
// applied position when its epoch is higher than the sender's: a master
// that was failed over learns it on its next handshake (Sender.OnStale).
//
// # Full resync
//
// An account is resynced in full when the journal cannot bring its replica
// up to date: the receiver never applied anything for it (Welcome applied 0:
// an existing spool mounted for the first time, a new replica), it asks for
// one (state 2: the journal recorded only OpDirty at its size limit, or an
// admin asked), or it reports a position below the one it acknowledged
// before (it lost its state; the sender keeps the acknowledged position per
// account in Sender.KnownFile), or on demand (`mreplfs peer -resync
// ACCOUNT`, Sender.Resync, which also takes a quarantined account: the
// admin's resolution). The account stays live on the master throughout.
//
// When a session's Welcome shows accounts needing a resync, the sender
// records P = the journal's durable position, streams the other accounts on
// that connection (its consumer position is held at or below P meanwhile),
// and resyncs those accounts on a second connection of their own (Hello
// naming only them), one after the other; when done it ends the session,
// and the next streams them too. A resync needed mid-session (an Ack with
// state 2) ends the session; the next one resyncs. On a resync connection
// no Batch is sent. For each account:
//
//  1. With P recorded before any of the walks, the sender walks
//     the account's files on the master (Sender.Walk: the paths the
//     classifier gives to the account), hashes them, and sends the listing
//     in Manifest chunks.
//  2. The receiver checks every listed path as it checks a record's
//     (relative, beneath its tree, the account's by CheckPath); one bad path
//     refuses the whole listing and quarantines the account (it answers an
//     Ack with state 1 instead of Want). Otherwise it persists state 4
//     (so a resync cut short is redone; status shows it), removes the account's files the
//     master lacks (deepest first, confined), creates directories and
//     symlinks, gives same-content files the master's attributes, makes
//     what it can from content it holds (a hard link when the master's file
//     has several names and the held one has the same attributes, else a
//     copy), and answers Want for the rest.
//  3. The sender sends each wanted file as it is now: by reference when
//     this connection already sent that content, else by value in chunks.
//     The receiver writes each into a temporary file, checks its hash, sets
//     the listed attributes, fsyncs and renames it into place.
//  4. After the last account's files, the sender waits Sender.ResyncSettle
//     (default 1.5 s: everything the mount changed before is then durable
//     in the journal; skipped when nothing was read) and sends ResyncEnd
//     with replay_to = the durable position then. The receiver makes names
//     the master holds as one inode one inode again, fsyncs, and persists
//     applied = P, the batch-in-flight mark (replay mode) = replay_to,
//     state ok; it acks applied = P.
//  5. Streaming resumes from P+1: records up to replay_to apply in replay
//     mode (their effect may already be in what the resync copied), so no
//     change made during the walk is lost and none is taken for divergence.
//
// The receiver's own files of the account are listed by
// ApplierOptions.Walk (the classifier), never by the sender's word.
//
// Writes are never coalesced across replay_to (sconn.coalesce; the sender
// keeps each account's replay_to in Sender.KnownFile): a merged write
// carries the pre-state of its first record and the LSN of its last, so one
// straddling the end would be checked, not replayed, against a copy already
// past that pre-state.
//
// A resync that fails stops only its account: an account the master cannot
// list is left out of the session (logged); one the receiver cannot bring
// in line (an I/O error, a file it cannot remove) is answered with an Ack in
// state 4 and its remaining frames are ignored, while the others resync and
// stream. A protocol violation ends the connection, as everywhere.
//
// Known limit: the accounts of one resync connection go one after the
// other, and stream only once all of them are done; while a resync runs the
// journal keeps everything after P (the consumer position is held there).
//
// # Evolution
//
// The version in Hello/Welcome is the highest the node speaks; both use the
// lower of the two. A new message type or a new trailing field needs a new
// version; a node never sends a type the agreed version lacks. Existing types
// and field orders never change meaning. testdata/v1 stays as it is forever.
package peer

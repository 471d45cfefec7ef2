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
//	              the sender is not that account's master here).
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
// # Evolution
//
// The version in Hello/Welcome is the highest the node speaks; both use the
// lower of the two. A new message type or a new trailing field needs a new
// version; a node never sends a type the agreed version lacks. Existing types
// and field orders never change meaning. testdata/v1 stays as it is forever.
package peer

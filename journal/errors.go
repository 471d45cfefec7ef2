package journal

import (
	"errors"
	"fmt"
)

// Sentinel errors. Test with errors.Is.
var (
	// ErrCorrupt: bytes that a writer of this format never produces (a CRC
	// mismatch, an impossible field). Never repaired silently.
	ErrCorrupt = errors.New("journal: corrupt record")
	// ErrUnsupported: a segment written by a newer format version.
	ErrUnsupported = errors.New("journal: unsupported format version")
	// ErrClosed: the Log was closed.
	ErrClosed = errors.New("journal: closed")
	// ErrTooLarge: a record whose encoding exceeds MaxRecordSize. Large
	// contents go to blobs (PutBlob) instead.
	ErrTooLarge = errors.New("journal: record too large")
	// ErrCompacted: the requested LSN lies in segments already removed
	// (every consumer had acked past it); the reader must resync by other
	// means (per-account hash compare).
	ErrCompacted = errors.New("journal: position already removed")
	// ErrLocked: another process has the journal open.
	ErrLocked = errors.New("journal: directory in use by another process")
	// ErrBadConsumer: a consumer name that cannot be stored.
	ErrBadConsumer = errors.New("journal: invalid consumer name")
	// ErrFuture: an LSN beyond what the journal holds (e.g. acking a
	// record that is not durable yet).
	ErrFuture = errors.New("journal: position beyond the durable end")
	// ErrNotJournal: OpenFollower on a directory no journal was ever
	// opened in.
	ErrNotJournal = errors.New("journal: not a journal directory")
)

// CorruptError says where damage was found. It unwraps to ErrCorrupt (or
// io.ErrUnexpectedEOF for a torn tail), so errors.Is works on both.
type CorruptError struct {
	Segment string // file name, e.g. "0000000000000001.seg"
	Offset  int64  // byte offset of the damaged frame in Segment
	Err     error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("journal: segment %s offset %d: %v", e.Segment, e.Offset, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

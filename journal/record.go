package journal

// LSN is a journal position: the sequence number of a record, starting at 1.
// Zero means "no record".
type LSN uint64

// Op is the kind of a record. Values are part of the on-disk format (doc.go):
// never renumber, only append.
type Op uint8

const (
	OpInvalid Op = iota
	// Message file born (write-once "<uid>." file): by link() from stage./,
	// by rename, or by create+write+close. Hash is the SHA-256 of the content,
	// Size its length; Data holds the content (or is empty when BlobRef is set).
	OpMessage
	// Byte-range write of an in-place file (cyrus.index, cyrus.cache, twoskip
	// DBs, ...): Data written at Offset.
	OpWrite
	// Truncate an in-place file to Size.
	OpTruncate
	// Replace a file with these bytes (the "X.NEW -> X" pattern): Path gets
	// Data (whole content), Mode, MTime.
	OpReplace
	// Namespace operations on account paths.
	OpMkdir   // Path, Mode
	OpRmdir   // Path
	OpUnlink  // Path
	OpRename  // Path -> NewPath
	OpLink    // Path (existing) -> NewPath (new name)
	OpSymlink // NewPath is the link, Data the target
	OpSetattr // Path; Mode/MTime/ATime/Size as flagged in Flags
	OpCreate  // empty file created (O_CREAT) at Path with Mode
	// Control records.
	OpEpoch      // the account's epoch changed to Epoch
	OpBarrier    // promote/migrate barrier for Account
	OpCheckpoint // periodic checkpoint (no account)
	// OpDirty marks Account as changed without detail (the bounded-size
	// "bitmap" fallback): the peer must resync the account by hash compare.
	OpDirty
)

// Setattr flags (Record.Flags) say which attributes an OpSetattr carries.
const (
	SetMode  uint32 = 1 << iota // Mode
	SetMTime                    // MTime
	SetATime                    // ATime
	SetSize                     // Size (truncate)
	SetOwner                    // UID, GID
)

// Record is one journaled mutation. Paths are relative to their tree and use
// '/' separators; Tree names the tree (e.g. "conf", "spool", "meta").
type Record struct {
	LSN     LSN
	Op      Op
	Account string // "" only for control records that concern no account
	Epoch   uint64 // the account's epoch when the mutation happened
	Tree    string
	Path    string
	NewPath string // OpRename, OpLink, OpSymlink

	Offset int64  // OpWrite
	Size   int64  // OpMessage/OpReplace content length, OpTruncate new size
	Mode   uint32 // permission and type bits
	UID    uint32
	GID    uint32
	MTime  int64 // nanoseconds since the epoch
	ATime  int64
	Flags  uint32 // OpSetattr: Set* flags

	Hash [32]byte // OpMessage/OpReplace: SHA-256 of the content

	// Pre-state, so the replica can check it has what the master had before
	// this change (DESIGN.md invariant 5). PrevSize < 0 means "no check".
	// PrevHash, zero when not known: for OpWrite the SHA-256 of the bytes
	// the write overwrites, [Offset, min(Offset+len(Data), PrevSize)) — so a
	// replica byte flipped where the master writes again is caught; for
	// OpReplace the SHA-256 of the whole file before.
	PrevSize int64
	PrevHash [32]byte

	Data []byte
}

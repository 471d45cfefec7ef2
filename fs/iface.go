package fs

import (
	"context"

	"mreplfs/journal"
	"mreplfs/rolemap"
)

// RoleSource says what this server does with an account. rolemap.Live
// implements it; Lookup must be cheap and safe for concurrent use (it runs on
// every mutating operation). ok is false for an account the map lacks
// (treated as rolemap.Unknown: refused).
type RoleSource interface {
	Lookup(account string) (e rolemap.Entry, ok bool)
}

// Kind is what a path of a Cyrus tree is, as far as the guard cares.
type Kind uint8

const (
	// KindNone: not an account path (stage./, shared databases, sockets,
	// locks, intermediate directories). Passed through, never journaled.
	KindNone Kind = iota
	// KindAccount: the path belongs to Class.Account.
	KindAccount
	// KindPending: a new uuid mailbox directory whose cyrus.header has not
	// appeared yet; Class.MailboxID names it. Allowed and journaled under
	// PendingAccount(MailboxID) (see doc.go).
	KindPending
	// KindUnresolved: looks like account data but its owner cannot be
	// found. Refused like an unknown account (nothing unreplicated may
	// slip through).
	KindUnresolved
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindAccount:
		return "account"
	case KindPending:
		return "pending"
	case KindUnresolved:
		return "unresolved"
	}
	return "kind?"
}

// Class is the classifier's answer for one path.
type Class struct {
	Kind      Kind
	Account   string // KindAccount
	MailboxID string // KindPending (and KindAccount when known)
}

// Classifier maps a path "<tree>/<rel>" (tree is the logical tree name: conf,
// spool, meta, sieve, or whatever the mount was told) to its Class. It must be
// safe for concurrent use. NoteHeader is called with the bytes of a
// cyrus.header that was just put in place (renamed into place or written) in
// the uuid mailbox directory mailboxID, so that later paths of that mailbox
// classify as its owner's. rolemap/classify implements it (through a small
// adapter in cmd/mreplfs).
type Classifier interface {
	Classify(path string) Class
	NoteHeader(mailboxID string, header []byte) error
}

// Appender is the journal as the filesystem uses it; *journal.Log
// implements it.
//
// Append buffers r (it does not retain it) and returns its LSN; it does not
// wait for durability. Sync returns once every record up to and including
// upTo is durable (group commit). PutBlob hard-links the file at srcPath into
// the journal's blob store under its SHA-256 hash (idempotent); OpMessage
// records refer to blobs by Hash.
type Appender interface {
	Append(ctx context.Context, r *journal.Record) (journal.LSN, error)
	Sync(ctx context.Context, upTo journal.LSN) error
	PutBlob(ctx context.Context, hash [32]byte, srcPath string) error
}

// PendingAccount is the Account field of records journaled for a pending
// mailbox directory (KindPending). The ':' cannot occur in a Cyrus user name.
func PendingAccount(mailboxID string) string { return "pending:" + mailboxID }

package classify

import "strconv"

// Kind says what a path of a Cyrus tree is.
type Kind uint8

// The kinds. Only Mailbox, UserDB, Quota and Sieve belong to an account
// (Result.IsAccount); Pending may turn out to belong to one.
const (
	// Unresolved: the path fits no known Cyrus layout. The fs must treat it
	// as not ours (refuse writes).
	Unresolved Kind = iota
	// Structure: an intermediate directory Cyrus creates on demand (tree
	// roots, hash letters, uuid/c1/c2, domain/…, user/, quota/). No account.
	Structure
	// Shared: a server-global file (mailboxes.db, deliver.db, annotations.db,
	// conf/db/*, a domain's quota root, global sieve scripts). Passed through,
	// never journaled.
	Shared
	// Stage: the partition staging area stage./ where message bodies are
	// written before being linked into each recipient mailbox.
	Stage
	// Runtime: sockets, lock, proc, log and msg files under configdirectory.
	Runtime
	// Mailbox: a mailbox directory or a file in it (message "12.", cyrus.*).
	Mailbox
	// UserDB: a per-user database in configdirectory (seen, sub,
	// conversations, counters, dav, mboxkey ...), or its uuid directory.
	UserDB
	// Quota: a quota root file (quota/<h>/<root>[.NEW]).
	Quota
	// Sieve: a per-user sieve directory or a file in it.
	Sieve
	// Pending: a uuid mailbox (or a per-user uuid directory) whose
	// cyrus.header has not been seen yet, so its owner is not known.
	// Result.MailboxID is set. See the package doc for what the fs does.
	Pending
)

var kindNames = [...]string{
	Unresolved: "unresolved",
	Structure:  "structure",
	Shared:     "shared",
	Stage:      "stage",
	Runtime:    "runtime",
	Mailbox:    "mailbox",
	UserDB:     "userdb",
	Quota:      "quota",
	Sieve:      "sieve",
	Pending:    "pending",
}

// String returns the kind's lower-case name ("mailbox", "pending" ...).
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// IsAccount reports whether paths of this kind belong to an account.
func (k Kind) IsAccount() bool {
	return k == Mailbox || k == UserDB || k == Quota || k == Sieve
}

// Result is the classification of one path.
type Result struct {
	Kind Kind
	// Account is set for the account kinds: "alice", "john.doe",
	// "alice@example.com", or a shared-folder pseudo-account "%shared"
	// (see AccountFromMailboxName).
	Account string
	// MailboxID is the 24-character mailbox id of a uuid-layout path (a
	// mailbox dir, or the INBOX id naming a per-user uuid dir); also set for
	// Pending.
	MailboxID string
	// File is the last path element when the path is a file of a mailbox, a
	// per-user db, a quota file or a sieve file ("12.", "cyrus.index",
	// "seen.db", "alice.seen", "user.alice.NEW"), else "".
	File string
}

// IsAccount reports whether the path belongs to an account (Mailbox,
// UserDB, Quota, Sieve).
func (r Result) IsAccount() bool { return r.Kind.IsAccount() }

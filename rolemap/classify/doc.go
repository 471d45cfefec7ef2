// Package classify says which account a path of a Cyrus IMAP 3.6 tree
// belongs to: the input of the fs role guard (DESIGN.md §2 invariant 2) and
// of every journal record's account.
//
// # Paths
//
// A path is "<tree>/<rel>" with a logical tree name: "conf"
// (configdirectory), "spool" (partition-default), "meta"
// (metapartition-default), "sieve" (sievedir); further partitions may be
// named "spool-<x>"/"meta-<x>". The layouts recognised (CYRUS.md §2; the
// executable spec was pathmap.py):
//
//	spool|meta  uuid/<c1>/<c2>/<id>[/<file>]                     Mailbox, owner from the id map (else Pending)
//	            [domain/[<d1>/]<dom>/][<h>/][DELETED/]user/<local>[/<folder>...][/<file>]   Mailbox (legacy)
//	            [domain/[<d1>/]<dom>/][<h>/][DELETED/]<top>[/...]  Mailbox of shared folders: "%<top>"
//	            stage./...                                       Stage
//	conf        user/<h>/<user>.{seen,sub,conversations,counters,dav,mboxkey,...,mreplfs-annotations}[.NEW]    UserDB
//	            domain/<d1>/<dom>/user/<h>/<local>.<db>          UserDB local@dom
//	            user/uuid/<c1>/<c2>/<inbox id>[/<db>.db[.NEW]]   UserDB, owner of the INBOX id (else Pending)
//	            [domain/<d1>/<dom>/]quota/<h>/<root>[.NEW]       Quota, account of the quota root
//	            domain/<d1>/<dom>/quota/root                     Shared (a whole domain's quota)
//	            mailboxes.db deliver.db ... (any file directly in conf), db/..., ptclient/...   Shared
//	            socket/ proc/ lock/ log/ msg/ sync/               Runtime
//	sieve       <h>/<user>[/...]  uuid/<c1>/<c2>/<inbox id>[/...]  domain/<d1>/<dom>/<h>/<local>[/...]  Sieve
//	            global/...                                        Shared
//
// Intermediate directories (tree roots, hash letters, uuid/c1/c2, domain/…,
// user/, DELETED/) are Structure. Anything else is Unresolved, which the fs
// must treat as not ours. "<h>" is a one-character hash directory
// (hashimapspool, fulldirhash); it is recognised from the path, so one
// Classifier serves every layout and a server mixing legacy and uuid
// mailboxes. Legacy names map '^' in a path back to '.' ("john^doe" →
// john.doe). Legacy owners always come from the path, never from the
// header's N, which a legacy RENAME leaves stale (CYRUS.md §7.4). Per-user
// files of users without an INBOX (conf/user/a/admin.seen) use the legacy
// naming in every layout and belong to that user (admin).
//
// Accounts are named as the role map keys them: "alice", "john.doe",
// "alice@example.com", and "%<top>[@domain]" for shared folders (see
// AccountFromMailboxName).
//
// # Uuid layout and the owner map
//
// In the 3.6 default layout a mailbox directory is named by its mailbox id
// only. The Classifier keeps a mailbox id → owner map built from the N field
// of each mailbox's cyrus.header: Scan fills it at start-up, NoteHeader
// updates it whenever the fs sees a cyrus.header written or renamed into
// place (CREATE, RENAME, user RENAME, DELETE to DELETED.user.…), Forget drops
// an id when its directory is removed. The per-user directories
// conf/user/uuid/…/<id>/ and sieve/uuid/…/<id>/ are named by the INBOX id,
// so the same map resolves them. Owner and MailboxIDs answer the reverse
// questions (whose is this id; which ids are this account's).
//
// # Pending: a new mailbox before its header
//
// CREATE makes the mailbox directory and writes cyrus.index before it
// renames cyrus.header.NEW into place, so the first mutations of a new
// uuid mailbox have no known owner. Such paths (and files in them) are
// Pending, with Result.MailboxID set; cyrus.header.NEW itself is Pending too.
// What the fs must do (DESIGN.md §2 invariant 2): allow the mutation (it is
// not an unknown account), journal it under the mailbox id, and when the
// header appears — the rename of cyrus.header.NEW onto cyrus.header, after
// which the fs reads the header and calls NoteHeader(id, bytes) — attribute
// the pending records to the owner it names. If that owner is a replica-role
// or unknown account, raise a divergence alarm for that account: a local
// writer created a mailbox in an account this server does not master. The fs
// may also read the pending cyrus.header.NEW's bytes at rename time; it must
// not guess an owner before that.
//
// # Speed
//
// Classify does no regexp and allocates only when it must build an account
// name (a domain, a '^' in a legacy name, a shared-folder pseudo-account);
// uuid lookups take a sharded read lock. See BenchmarkClassify.
package classify

// Package cyruscat keeps a Cyrus IMAP 3.6 server's own catalogue in step
// with the files mreplfs replicates. Cyrus's view of which mailboxes exist
// (mailboxes.db) and its mailbox annotations (annotations.db) are
// server-wide databases, never replicated as files (DESIGN.md §4). This
// package reads and writes them with Cyrus's own tools, with Cyrus running:
//
//   - Register: make this server's Cyrus know an account's mailboxes from
//     the account's replicated cyrus.header and cyrus.index files (CYRUS.md
//     §7): delete the account's N/I records, then `reconstruct -P
//     <headers>`; a legacy mailbox whose header keeps an old name (where -P
//     segfaults) gets its records written with `cyr_dbtool ... batch`, the
//     name taken from its directory. A replica account registered on its
//     replica server makes misrouted mail get a temporary 451 (the mount
//     refuses the write) rather than a permanent 550 User unknown, and a
//     promote needs no registration step.
//   - Export and WriteSidecar (the master side): an account's mailbox
//     annotations (SPECIAL-USE, METADATA), as raw annotations.db records,
//     into a per-account sidecar file in configdirectory
//     (user/<h>/<user>.mreplfs-annotations), written through the mount so
//     that it is journaled and replicated as the account's.
//   - Apply (the replica side): make annotations.db hold exactly the
//     sidecar's records for the account's mailboxes. Only annotations.db
//     changes: no modseq, no cyrus.index write (which the mount would refuse
//     on a replica anyway).
//
// Duplicate suppression (deliver.db) is not carried: after a promote, a
// message whose Message-ID the old master had already delivered is
// delivered again if it arrives again.
//
// All database access goes through `cyr_dbtool <db> twoskip batch`, whose
// commands and output use IMAP literals, so keys with NUL and \x1f and
// binary values pass intact. The tools run as the Cyrus user (they refuse
// root) with the server's imapd.conf; they must reach the databases through
// the same paths (the mount) as the running Cyrus, so that their fcntl
// locks meet Cyrus's.
package cyruscat

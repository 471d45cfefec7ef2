// Package fs is the intercepting filesystem Cyrus runs on: a go-fuse v2
// loopback over each backing tree that passes every syscall through, guards
// every mutation by the owning account's role and journals the mutations of
// master accounts.
//
// # Shape
//
// Node embeds *fusefs.LoopbackNode and re-wraps every child (WrapChild); it
// overrides every mutating operation (node.go, node_mutate.go). File keeps
// the *fusefs.LoopbackFile in a named field and refuses kernel passthrough,
// so every WRITE reaches File.Write (a passthrough regression test proves
// it). api_check.go lists every interface implemented.
//
// Mount options (root.go) are the measured set of FUSE.md §3 with the team's
// corrections: passthrough and writeback cache disabled, EnableLocks off (the
// kernel keeps POSIX lock semantics on the FUSE inode, FUSE.md §2.2), no
// direct_io (AUTO_INVAL_DATA keeps mmap readers coherent), xattrs kept,
// MaxWrite 1 MiB, MaxBackground 64, entry/attr timeouts 1 s by default and
// no negative caching, default_permissions (the kernel checks the caller's
// permissions: the daemon itself runs as root, and with allow_other any
// user could otherwise write anything). FSYNC, FSYNCDIR and FLUSH are always implemented
// (never ENOSYS). What a caller creates (file, directory, node, symlink) is
// made with the caller's file system identity (owner.go), so that it is never
// seen owned by root between go-fuse's create and its chown.
//
// # Role guard (guard.go)
//
// Each mutating operation classifies "<tree>/<rel>" (Classifier) and looks
// the account up (RoleSource). Write opens (O_WRONLY, O_RDWR, O_CREAT,
// O_TRUNC) are refused at open time, and every mutating operation again:
//
//   - master: forwarded, then journaled;
//   - local: forwarded, not journaled;
//   - replica, unknown (not in the map), unresolved: EROFS, backing
//     untouched, logged once per account per minute with path and op;
//   - not an account (stage./, shared DBs, sockets, locks, structure):
//     forwarded, not journaled;
//   - pending (a uuid mailbox dir whose cyrus.header is not there yet):
//     forwarded and journaled under Account "pending:<mailboxid>"
//     (PendingAccount). When a cyrus.header is renamed into place (or written
//     and closed) the mount hands it to Classifier.NoteHeader; from then on
//     the directory's paths are the owner's, and the header's own OpReplace
//     record — the first record of that mailbox directory under a real
//     account — is what the peer uses to attribute the earlier
//     "pending:<id>" records (same Tree, path prefix of the mailbox dir) to
//     that account, in journal order. If the owner proves to be a
//     replica-role or unknown account, a divergence alarm is logged (error
//     level); nothing more is journaled for it.
//
// # Records (records.go; DESIGN.md §4)
//
// The backing mutation happens first, then the record is appended (never a
// record for a change the backing store lacks). Per inode a mutex orders data
// writes with their records; one namespace mutex orders journaled namespace
// operations.
//
//   - Message files "<uid>.": born by link() (stage./ → mailbox, COPY), by
//     rename, or by create+write → one OpMessage with SHA-256, size, mode,
//     mtime; the bytes go to the journal's blob store by hard link (PutBlob),
//     hashed once per inode version (a 3-recipient delivery reads the body
//     once).
//   - Scratch files "X.NEW" are never journaled; the rename over X is one
//     OpReplace carrying X's whole new content (inline up to InlineLimit, by
//     blob hash above).
//   - In-place files: OpWrite (Offset, Data, PrevSize = size before),
//     OpTruncate (Size, PrevSize), fallocate as truncate/zero writes,
//     copy_file_range as a write of the copied bytes.
//   - Namespace: OpCreate (also mknod, with type bits in Mode), OpMkdir,
//     OpRmdir, OpUnlink, OpRename (Flags carries renameat2 flags, e.g.
//     RENAME_EXCHANGE), OpLink (within one account), OpSymlink (NewPath is
//     the link, Data the target), OpSetattr (mode, owner, times: utimensat on
//     message files), all with the values the backing file ended up with.
//   - A rename or link between account streams is split: OpUnlink in the
//     source account, OpMessage/OpReplace in the destination. A directory
//     cannot change stream (EXDEV; Cyrus never renames directories).
//   - xattr changes on account paths are OpDirty (the peer resyncs the path).
//
// fsync and fdatasync (also on O_RDONLY descriptors) and fsyncdir sync the
// backing file and, at the same time, wait for Appender.Sync up to the last
// LSN that changed that inode or directory (DESIGN.md invariant 3); the reply
// goes out when both are done. A journal error
// is EIO (EINTR if the request was interrupted) and is logged with account
// and path.
//
// # The receiver's write path (forget.go)
//
// The peer's receiver writes replica accounts straight into the backing
// directory (openat2 RESOLVE_BENEATH there, DESIGN.md invariant 6) and then
// asks this mount, over the control socket, to forget what it changed
// ("forget" with paths or an account). Forget invalidates the kernel's
// dentries (NotifyEntry/NotifyDelete) and page cache (NotifyContent), so
// open descriptors and mmaps see the new bytes at once. Chosen over
// "privileged identity through the mount" because: the receiver then needs
// no special case in the guard (no caller-pid or uid exemption a local
// process could spoof), its writes are never journaled back, it avoids the
// FUSE round trips (≈2× the work per byte), and it keeps peer and fs apart
// (they meet only through the journal and the control socket, DESIGN.md §3).
// The cost: until forget runs, the kernel may serve old bytes for up to the
// attr timeout to new opens and indefinitely to open descriptors; the
// receiver must call forget before acking.
//
// # Control socket (control.go)
//
// A unix socket (mode 0600, peer uid 0 only), one JSON request and one JSON
// reply per line, versioned ("v":1): ping, status, reload, forget, freeze,
// unfreeze.
//
// # Freeze (freeze.go)
//
// A role change freezes an account on its master: granted only if the
// account has no open file handle and no mutation within an idle time;
// then every new mutation of the account waits in the guard (before the
// role lookup) until unfreeze or the freeze's timeout, and the freeze waits
// for the mutations already past the guard (each guarded operation enters
// the account's gate and leaves it once its record is appended) and syncs
// the journal. It reports the account's last LSN and the journal's durable
// position. Held mutations then meet the role as it is: EROFS after a flip.
package fs

// Package rolemap says what this server does with each account: the role map
// of DESIGN.md §3, a CDB file (package rolemap/cdb) built from a text source.
//
// # Roles
//
// Every account (as Cyrus names it: alice, john.doe, alice@example.com, or a
// shared-folder pseudo-account such as %shared.news) has a Role: master
// (writable here, journaled, shipped to the partner), replica (read-only
// here: only the replication receiver changes it) or local (writable, not
// replicated). An account that is not in the map is Unknown and treated as
// not ours: Lookup returns (Entry{Role: Unknown}, false) and the filesystem
// refuses writes to it like a replica's.
//
// # Text source format
//
// One account per line, four fields separated by spaces or tabs:
//
//	# account              role     partner          epoch
//	alice                  master   10.0.0.2:7000    3
//	bob@example.com        replica  10.0.0.1:7000    12
//	admin                  local    -                0
//
// role is master, replica or local; partner is the peer address
// (host:port, port 1..65535) of the other server, required for master and
// replica and written "-" for local; epoch is a decimal uint64, bumped by
// every promote or failover of the account. A field starting with '#' starts
// a comment that runs to the end of the line; blank lines are ignored.
// Account names are valid UTF-8, non-empty, without whitespace, control
// characters or '/', and do not start with '#'. An account may appear once.
// Parse reports every wrong line (up to 20) as a *ParseError naming the line
// and what is wrong. `mreplfs rolemap dump` prints a map back in this format
// in file order, so building the dump gives the same map.
//
// # CDB layout (format version 1)
//
// Keys are account names. The empty key, which no account can have, holds
// the header; it is the first record. Integers below are unsigned LEB128
// varints ("uvarint", encoding/binary) unless sized.
//
//	header  "MRRM" | version (1 byte, = 1) | uvarint accounts |
//	        uvarint P | P × (uvarint len | partner address bytes)
//	account version (1 byte, = 1) | role (1 byte: 1 master, 2 replica,
//	        3 local) | uvarint epoch | uvarint partner
//
// partner is 0 for local accounts and i (1..P) for the header's i-th
// partner address otherwise. An account value is therefore never empty
// (at least 4 bytes), so a missing key is never confused with an empty
// value. Partner addresses are stored once, so a lookup returns the header's
// string and allocates nothing.
//
// Version rule: a change to either layout bumps the version byte (the header
// and every value carry it). A binary refuses, at Open, a version it does
// not know (ErrVersion), so a Live map keeps its previous map when an older
// binary meets a newer file; every binary reads all older versions, checked
// against the frozen files in testdata/v1/.
//
// Open checks the whole file (header, every name and value, the account
// count) before it is used, so a truncated or foreign file is refused up
// front rather than discovered at a lookup.
//
// # Building and replacing
//
// Build writes a temporary file in the destination's directory, fsyncs it,
// renames it over the destination and fsyncs the directory: a reader sees
// the old or the new map, never a mix, and a crash leaves one of the two.
// A map file must never be rewritten in place: it is mapped by readers.
//
// # Live maps
//
// Live holds the current *Map in an atomic pointer. Lookup loads it and
// never blocks or fails. Run polls the file's inode, size and mtime (every
// second by default) and reloads on SIGHUP; Reload does it on demand (after a
// promote). A new file that does not open keeps the old map in service and
// is logged; it is not retried until the file changes again (or Reload or
// SIGHUP asks). An old map is closed when it is replaced, but its mapping is
// only released after the last lookup that was using it returns (a counter
// of lookups in progress), and a lookup that loses that race retries on the
// current map, so no lookup ever reads unmapped memory.
//
// Update rebuilds the map with some entries changed (a promote, demote or
// failover), atomically like Build; calls in one process are serialised.
//
// # Not yet here: the overlay
//
// A CDB is immutable, and rebuilding a million-account file for every role
// change would blow the promote budget (DESIGN.md §3). A small overlay of
// recent role changes (bbolt) will sit in front of the CDB: a Live lookup
// will consult the overlay first, then the CDB, and a background fold will
// build a new CDB (Build) and clear the folded overlay entries. It belongs in
// this package (overlay.go), behind the same Lookup.
package rolemap

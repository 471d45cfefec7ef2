// Package cyrustest runs a real, self-contained Debian Cyrus IMAP 3.6 for
// tests: Start lays out a Cyrus instance on any directory DIR (conf, spool,
// meta, sieve under DIR — DIR may be a FUSE mount) with its transient files
// (imapd.conf, cyrus.conf, pid file, proc/, lock/, sockets, logs) in a
// RunDir outside DIR, starts master on free 127.0.0.1 ports, and stops it in
// t.Cleanup. It follows CYRUS.md §1 (the gotchas of cyrus-instance.sh):
// Cyrus refuses to run as root, so as root it runs as user "cyrus" (looked
// up, never assumed) and DIR and RunDir are chowned to it; conf/db and
// conf/socket must exist; `master -d` returns before the first connection
// can succeed, so Start polls for the IMAP banner; master SIGTERMs its
// process group on stop and is re-parented to PID 1, which reaps late, so
// Stop waits on /proc state rather than on kill -0.
//
// Minimal protocol clients come with it: IMAPClient (tagged commands,
// literals for APPEND and in responses) and LMTPClient (one reply per
// accepted recipient after DATA, RFC 2033). RunScenario drives the IMAP/LMTP
// scenario of CYRUS.md (CREATE, SETQUOTA, LMTP to 1 and 3 recipients,
// SELECT, FETCH, STORE, COPY, MOVE, EXPUNGE, APPEND, SUBSCRIBE, RENAME,
// DELETE, SETACL, user RENAME and DELETE) and fails the test on any step
// that does not answer OK.
//
// RequireCyrus fails the test under CI=true when it cannot run Cyrus (not
// root, Cyrus not installed) and skips it otherwise.
package cyrustest

// Package fsident runs a file system call with another file system
// identity: setfsuid(2) and setfsgid(2) on the calling goroutine's locked
// OS thread, so that a directory or file a root process makes for Cyrus is
// born owned by Cyrus's user. Made as root and chowned afterwards, it would
// exist for a moment as root's, mode 0700, and a Cyrus process meeting it
// then (its own mkdir failing with EEXIST) could not create what it needs
// beneath it: "Permission denied", an IMAP "NO System I/O error".
//
// Only this thread's identity changes; it is restored before As returns,
// and a thread whose identity could not be restored is never reused (it
// stays locked and ends with its goroutine).
package fsident

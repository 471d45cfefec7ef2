package main

// Exit codes of mreplfs. They are a stable ABI (documented in the README):
// never renumber one; retire a number by leaving a comment.
const (
	ExitOK       = 0 // success
	ExitFailure  = 1 // the operation failed (I/O error, bad input file, ...)
	ExitUsage    = 2 // wrong invocation: unknown command, bad flags or arguments
	ExitNotFound = 3 // the thing asked about does not exist (rolemap get: no such account)
	ExitMount    = 4 // mount: the mount point is busy, stale or not usable
	ExitBusy     = 5 // promote/demote: the account is in use (open files, recent changes); try again
	ExitRefused  = 6 // promote/demote/failover refused (roles disagree, diverged, a peer down or up, ...); rolemap build lowering an epoch
)

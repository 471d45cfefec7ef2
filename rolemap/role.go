package rolemap

import "fmt"

// Role is what this server does with an account's files.
type Role uint8

const (
	// Unknown: the account is not in the map. It is treated as not ours:
	// writes to it are refused like a replica's.
	Unknown Role = iota
	// Master: writable here, every mutation journaled and shipped to Partner.
	Master
	// Replica: read-only here; only the peer receiver applying the master's
	// records may change it.
	Replica
	// Local: writable here and not replicated (admin users, accounts a site
	// does not want replicated).
	Local
)

// String returns the role's name as the text source format writes it.
func (r Role) String() string {
	switch r {
	case Master:
		return "master"
	case Replica:
		return "replica"
	case Local:
		return "local"
	default:
		return "unknown"
	}
}

// ParseRole parses "master", "replica" or "local".
func ParseRole(s string) (Role, error) {
	switch s {
	case "master":
		return Master, nil
	case "replica":
		return Replica, nil
	case "local":
		return Local, nil
	}
	return Unknown, fmt.Errorf("rolemap: unknown role %q (want master, replica or local)", s)
}

// Writable reports whether local processes (Cyrus) may change the account.
func (r Role) Writable() bool { return r == Master || r == Local }

// Entry is one account's line of the role map.
type Entry struct {
	Role    Role
	Partner string // the partner server's peer address (host:port); empty for local
	Epoch   uint64 // bumped by every promote/failover of the account
}

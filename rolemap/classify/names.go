package classify

import "strings"

// SharedPrefix starts every pseudo-account of shared (non-user) folders.
// Cyrus refuses '%' in mailbox names (it is the IMAP LIST wildcard), so no
// user name can start with it.
const SharedPrefix = "%"

// AccountFromMailboxName returns the account that owns the mailbox with the
// given Cyrus internal name (as in cyrus.header N, mailboxes.db keys and
// quota root file names):
//
//	user.alice, user.alice.Sent           → alice
//	user.john^doe.Sub^Folder              → john.doe ('^' stands for '.')
//	example.com!user.alice.Sent           → alice@example.com
//	DELETED.user.alice.Trash.6B119CCC     → alice (delayed-delete names)
//	example.com!DELETED.user.alice.X.6B11 → alice@example.com
//	shared.news.x, DELETED.shared.x.6B11  → %shared
//	example.com!shared.news               → %shared@example.com
//
// Shared folders: every top-level mailbox outside user.* is a pseudo-account
// named SharedPrefix + that top-level name (its first hierarchy component),
// with "@domain" under virtdomains. So shared.news and shared.support both
// belong to %shared, while a top-level "news" hierarchy is %news: each
// top-level shared hierarchy replicates as one unit, which is what a site
// can reasonably assign to one master.
//
// ok is false for names that name no account: empty, "user" alone, empty
// components.
func AccountFromMailboxName(internal string) (account string, ok bool) {
	domain := ""
	if i := strings.IndexByte(internal, '!'); i >= 0 {
		domain, internal = internal[:i], internal[i+1:]
		if domain == "" {
			return "", false
		}
	}
	first, rest, _ := strings.Cut(internal, ".")
	if first == "DELETED" {
		first, rest, _ = strings.Cut(rest, ".")
	}
	if first == "" {
		return "", false
	}
	if first == "user" {
		local, _, _ := strings.Cut(rest, ".")
		if local == "" {
			return "", false
		}
		return joinAccount("", local, domain), true
	}
	return joinAccount(SharedPrefix, first, domain), true
}

// joinAccount builds prefix + local ('^' → '.') [+ "@" + domain], allocating
// only when it must.
func joinAccount(prefix, local, domain string) string {
	if prefix == "" && domain == "" && strings.IndexByte(local, '^') < 0 {
		return local
	}
	var b strings.Builder
	b.Grow(len(prefix) + len(local) + 1 + len(domain))
	b.WriteString(prefix)
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c == '^' {
			c = '.'
		}
		b.WriteByte(c)
	}
	if domain != "" {
		b.WriteByte('@')
		b.WriteString(domain)
	}
	return b.String()
}

package classify

import "strings"

// classifyPartition handles spool and meta partitions:
//
//	uuid/<c1>/<c2>/<id>[/<file>]                      uuid layout (owner from the id map)
//	stage./[<pid>-<epoch>-<seq>]                      staging area
//	[domain/[<d1>/]<domain>/][<h>/][DELETED/]user/<local>[/<folder>...][/<HEX8>][/<file>]
//	[domain/[<d1>/]<domain>/][<h>/][DELETED/]<top>[/<folder>...][/<file>]    shared folders
func (c *Classifier) classifyPartition(p cursor) Result {
	if p.done() {
		return Result{Kind: Structure}
	}
	switch p.peek() {
	case "uuid":
		p.next()
		id, k := uuidPath(&p)
		if k != Mailbox {
			return Result{Kind: k}
		}
		file := ""
		if !p.done() {
			if p.count() != 1 {
				return Result{}
			}
			file = p.next()
		}
		return c.ownedByID(Mailbox, id, file)
	case "stage.":
		return Result{Kind: Stage}
	case "sync.":
		return Result{Kind: Runtime}
	}
	domain, k := domainPrefix(&p)
	if k != Mailbox {
		return Result{Kind: k}
	}
	// Optional hash directory: one character with more path below it that
	// is not itself a mailbox file.
	if c.hash == HashAuto && isHashDir(p.peek()) {
		if p.count() == 1 {
			return Result{Kind: Structure}
		}
		q := p
		q.next()
		if !isMailboxFile(q.peek()) {
			p = q
		}
	}
	if p.done() {
		return Result{Kind: Structure}
	}
	top := p.next()
	if top == "DELETED" {
		if p.done() {
			return Result{Kind: Structure}
		}
		top = p.next()
	}
	var account string
	if top == "user" {
		if p.done() {
			return Result{Kind: Structure}
		}
		local := p.next()
		if isMailboxFile(local) {
			return Result{}
		}
		account = joinAccount("", local, domain)
	} else {
		if isMailboxFile(top) {
			return Result{}
		}
		account = joinAccount(SharedPrefix, top, domain)
	}
	file := ""
	if !p.done() {
		if l := p.last(); isMailboxFile(l) {
			file = l
		}
	}
	return Result{Kind: Mailbox, Account: account, File: file}
}

// domainPrefix consumes "domain/[<d1>/]<domain>" when the path starts with
// "domain". It returns the domain and Mailbox to go on, or the kind of the
// path when it ends inside the prefix (Structure).
func domainPrefix(p *cursor) (string, Kind) {
	if p.peek() != "domain" {
		return "", Mailbox
	}
	p.next()
	if p.done() {
		return "", Structure
	}
	d := p.next()
	if isHashDir(d) { // a domain name is never one character
		if p.done() {
			return "", Structure
		}
		d = p.next()
	}
	if p.done() {
		return "", Structure
	}
	return d, Mailbox
}

// classifyConf handles configdirectory.
func (c *Classifier) classifyConf(p cursor) Result {
	if p.done() {
		return Result{Kind: Structure}
	}
	if p.count() == 1 {
		switch p.peek() {
		case "user", "quota", "domain", "db", "ptclient":
			return Result{Kind: Structure}
		case "socket", "proc", "lock", "log", "msg", "sync":
			return Result{Kind: Runtime}
		}
		// Every file directly in configdirectory is server-global:
		// mailboxes.db, deliver.db, annotations.db, caldav_alarm.sqlite3,
		// their .NEW and -journal files ...
		return Result{Kind: Shared}
	}
	switch p.peek() {
	case "db", "ptclient":
		return Result{Kind: Shared}
	case "socket", "proc", "lock", "log", "msg", "sync":
		return Result{Kind: Runtime}
	case "user", "quota":
		return c.confAccountDir(p, "")
	case "domain":
		domain, k := domainPrefix(&p)
		if k != Mailbox {
			return Result{Kind: k}
		}
		switch p.peek() {
		case "user", "quota":
			return c.confAccountDir(p, domain)
		}
	}
	return Result{}
}

// confAccountDir handles user/... and quota/... (cursor at "user"/"quota").
func (c *Classifier) confAccountDir(p cursor, domain string) Result {
	dir := p.next()
	if p.done() {
		return Result{Kind: Structure}
	}
	h := p.next()
	if dir == "user" && h == "uuid" && domain == "" {
		id, k := uuidPath(&p)
		if k != Mailbox {
			return Result{Kind: k}
		}
		file := ""
		if !p.done() {
			file = p.last()
		}
		return c.ownedByID(UserDB, id, file)
	}
	if dir == "quota" && h == "root" && domain != "" && p.done() {
		return Result{Kind: Shared} // the quota of a whole domain
	}
	if !isHashDir(h) {
		return Result{}
	}
	if p.done() {
		return Result{Kind: Structure}
	}
	name := p.next()
	if !p.done() {
		return Result{}
	}
	if dir == "quota" {
		root := strings.TrimSuffix(name, ".NEW")
		a, ok := accountFromName(root, domain)
		if !ok {
			return Result{}
		}
		return Result{Kind: Quota, Account: a, File: name}
	}
	user, ok := userFileOwner(name)
	if !ok {
		return Result{}
	}
	return Result{Kind: UserDB, Account: joinAccount("", user, domain), File: name}
}

// userDBSuffixes are the per-user files of configdirectory/user/<h>/, and
// mreplfs's own per-account annotations sidecar (rolemap/cyruscat).
var userDBSuffixes = [...]string{"seen", "sub", "conversations", "counters", "dav",
	"mboxkey", "xapianactive", "sieve", "jmap", "mreplfs-annotations"}

// userFileOwner returns the user of a legacy per-user file name
// ("john.doe.sub", "alice.seen.NEW", "alice.dav-journal").
func userFileOwner(name string) (string, bool) {
	name = strings.TrimSuffix(name, ".NEW")
	for _, s := range [...]string{"-journal", "-wal", "-shm"} {
		name = strings.TrimSuffix(name, s)
	}
	i := strings.LastIndexByte(name, '.')
	if i <= 0 {
		return "", false
	}
	ext := name[i+1:]
	for _, s := range userDBSuffixes {
		if ext == s {
			return name[:i], true
		}
	}
	return "", false
}

// accountFromName is AccountFromMailboxName for a name found under
// domain/<d1>/<domain>/ (the name then carries no "domain!" prefix).
func accountFromName(internal, domain string) (string, bool) {
	if domain == "" {
		return AccountFromMailboxName(internal)
	}
	if strings.IndexByte(internal, '!') >= 0 {
		return "", false
	}
	return AccountFromMailboxName(domain + "!" + internal)
}

// classifySieve handles sievedir:
//
//	<h>/<user>[/...]  uuid/<c1>/<c2>/<inbox id>[/...]  domain/<d1>/<domain>/<h>/<local>[/...]  global/...
func (c *Classifier) classifySieve(p cursor) Result {
	if p.done() {
		return Result{Kind: Structure}
	}
	switch p.peek() {
	case "uuid":
		p.next()
		id, k := uuidPath(&p)
		if k != Mailbox {
			return Result{Kind: k}
		}
		file := ""
		if !p.done() {
			file = p.last()
		}
		return c.ownedByID(Sieve, id, file)
	case "global":
		return Result{Kind: Shared}
	}
	domain, k := domainPrefix(&p)
	if k != Mailbox {
		return Result{Kind: k}
	}
	h := p.next()
	if h == "global" {
		return Result{Kind: Shared}
	}
	if !isHashDir(h) {
		return Result{}
	}
	if p.done() {
		return Result{Kind: Structure}
	}
	user := p.next()
	file := ""
	if !p.done() {
		file = p.last()
	}
	return Result{Kind: Sieve, Account: joinAccount("", user, domain), File: file}
}

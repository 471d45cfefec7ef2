package classify

import (
	"log/slog"
	"strings"
)

// The logical tree names (also journal.Record.Tree).
const (
	TreeConf  = "conf"  // configdirectory
	TreeSpool = "spool" // partition-default
	TreeMeta  = "meta"  // metapartition-default
	TreeSieve = "sieve" // sievedir
)

// HashMode says how to read a single-character directory at the top of a
// legacy partition path (or below domain/<domain>/).
type HashMode uint8

const (
	// HashAuto (the default): a one-character directory with more path
	// below it is a hash directory (hashimapspool). User and DELETED paths
	// are unambiguous either way; only a one-character top-level shared
	// folder would be misread, and Cyrus sites do not name them so.
	HashAuto HashMode = iota
	// HashOff: hashimapspool is off; every component is a mailbox name.
	HashOff
)

// Options configure a Classifier.
type Options struct {
	Logger *slog.Logger // nil: discard
	Hash   HashMode     // legacy partition hash directories; see HashMode
}

// Classifier maps paths of Cyrus trees to accounts. It is safe for
// concurrent use.
type Classifier struct {
	log    *slog.Logger
	hash   HashMode
	owners ownerMap
}

// New returns a Classifier with an empty mailbox-id → owner map; fill it
// with Scan and keep it current with NoteHeader and Forget.
func New(o Options) *Classifier {
	l := o.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	c := &Classifier{log: l, hash: o.Hash}
	c.owners.init()
	return c
}

// Classify says what path is and whose it is. path is "<tree>/<rel>", e.g.
// "meta/uuid/i/g/ig5qudig5xhk5lij9pw6dcgx/cyrus.index"; "<tree>" alone is the
// tree root. Trees: conf, sieve, and partitions: spool, meta, and any name
// starting with "spool-" or "meta-" (further partitions). A path with empty,
// "." or ".." components is Unresolved.
func (c *Classifier) Classify(path string) Result {
	tree, rel, _ := strings.Cut(strings.TrimSuffix(path, "/"), "/")
	p := cursor{s: rel}
	if !p.valid() {
		return Result{}
	}
	switch {
	case tree == TreeConf:
		return c.classifyConf(p)
	case tree == TreeSieve:
		return c.classifySieve(p)
	case tree == TreeSpool || tree == TreeMeta ||
		strings.HasPrefix(tree, TreeSpool+"-") || strings.HasPrefix(tree, TreeMeta+"-"):
		return c.classifyPartition(p)
	}
	return Result{}
}

// cursor walks the '/'-separated components of a relative path without
// allocating.
type cursor struct{ s string }

// valid reports whether every component is non-empty and not "." or "..".
func (p cursor) valid() bool {
	if p.s == "" {
		return true
	}
	s := p.s
	for {
		c, rest, more := strings.Cut(s, "/")
		if c == "" || c == "." || c == ".." {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

func (p *cursor) done() bool { return p.s == "" }

// next returns the next component, "" at the end.
func (p *cursor) next() string {
	c, rest, _ := strings.Cut(p.s, "/")
	p.s = rest
	return c
}

// peek returns the next component without consuming it.
func (p *cursor) peek() string {
	c, _, _ := strings.Cut(p.s, "/")
	return c
}

// count returns how many components are left.
func (p *cursor) count() int {
	if p.s == "" {
		return 0
	}
	return strings.Count(p.s, "/") + 1
}

// last returns the last component.
func (p *cursor) last() string {
	if i := strings.LastIndexByte(p.s, '/'); i >= 0 {
		return p.s[i+1:]
	}
	return p.s
}

// isHashDir reports whether s can be a hash directory: one ASCII letter or
// digit (first-letter hash: a-z and 'q' for the rest; fulldirhash: A-W).
func isHashDir(s string) bool {
	if len(s) != 1 {
		return false
	}
	c := s[0]
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// isMailboxID reports whether s is a 24-character [0-9a-z] mailbox id.
func isMailboxID(s string) bool {
	if len(s) != 24 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// isMailboxFile reports whether a legacy path's last component is a file of
// the mailbox (a message "<uid>." or "cyrus.<something>") rather than a
// child folder. Folder names cannot look like either: a '.' in a folder
// name is stored as '^'.
func isMailboxFile(s string) bool {
	if strings.HasPrefix(s, "cyrus.") {
		return true
	}
	if len(s) < 2 || s[len(s)-1] != '.' {
		return false
	}
	for i := 0; i < len(s)-1; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// uuidPath parses "uuid/<c1>/<c2>/<id>" at the cursor (the "uuid" already
// consumed). It returns the id, or "" and a kind for the shorter prefixes:
// Structure for "uuid", "uuid/c1", "uuid/c1/c2"; Unresolved for anything
// malformed.
func uuidPath(p *cursor) (id string, k Kind) {
	if p.done() {
		return "", Structure
	}
	c1 := p.next()
	if !isIDChar(c1) {
		return "", Unresolved
	}
	if p.done() {
		return "", Structure
	}
	c2 := p.next()
	if !isIDChar(c2) {
		return "", Unresolved
	}
	if p.done() {
		return "", Structure
	}
	id = p.next()
	if !isMailboxID(id) || id[0] != c1[0] || id[1] != c2[0] {
		return "", Unresolved
	}
	return id, Mailbox
}

func isIDChar(s string) bool {
	return len(s) == 1 && (s[0] >= '0' && s[0] <= '9' || s[0] >= 'a' && s[0] <= 'z')
}

// ownedByID resolves a uuid path through the owner map.
func (c *Classifier) ownedByID(k Kind, id, file string) Result {
	if a, ok := c.owners.get(id); ok {
		return Result{Kind: k, Account: a, MailboxID: id, File: file}
	}
	return Result{Kind: Pending, MailboxID: id, File: file}
}

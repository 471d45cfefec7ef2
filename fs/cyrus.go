package fs

import (
	"strings"

	"mreplfs/rolemap/classify"
)

// CyrusClassifier adapts the Cyrus path classifier (rolemap/classify) to
// Classifier. Trees named in rootTrees hold the Cyrus trees one level down
// (a single root with conf/, spool/, meta/, sieve/): their paths are
// classified without the tree name, so "root/spool/uuid/…" is "spool/uuid/…".
func CyrusClassifier(c *classify.Classifier, rootTrees ...string) Classifier {
	a := &cyrusClassifier{c: c, roots: map[string]bool{}}
	for _, r := range rootTrees {
		a.roots[r] = true
	}
	return a
}

type cyrusClassifier struct {
	c     *classify.Classifier
	roots map[string]bool
}

func (a *cyrusClassifier) Classify(p string) Class {
	if len(a.roots) > 0 {
		tree, rel, _ := strings.Cut(p, "/")
		if a.roots[tree] {
			if rel == "" {
				return Class{} // the root itself: structure
			}
			p = rel
			if !strings.Contains(p, "/") {
				switch p {
				case classify.TreeConf, classify.TreeSpool, classify.TreeMeta, classify.TreeSieve:
					return Class{} // a tree root: structure
				}
			}
		}
	}
	r := a.c.Classify(p)
	switch {
	case r.IsAccount():
		return Class{Kind: KindAccount, Account: r.Account, MailboxID: r.MailboxID}
	case r.Kind == classify.Pending:
		return Class{Kind: KindPending, MailboxID: r.MailboxID}
	case r.Kind == classify.Unresolved:
		return Class{Kind: KindUnresolved}
	}
	return Class{Kind: KindNone, MailboxID: r.MailboxID}
}

func (a *cyrusClassifier) NoteHeader(id string, hdr []byte) error { return a.c.NoteHeader(id, hdr) }

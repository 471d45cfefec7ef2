package fs

import (
	"fmt"
	"os"
	"path"
	"strings"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
)

// Forget drops what the kernel caches for the given tree-relative paths of
// tree: names (dentries) and bytes (page cache, attributes). The receiver
// calls it (through the control socket) after it changed the backing tree,
// so that readers through the mount — including already-open descriptors
// and mmaps — see the new state. A path that is a directory is forgotten
// with everything below it that the kernel knows.
func (f *FS) Forget(tree string, paths []string) (int, error) {
	t := f.Tree(tree)
	if t == nil {
		return 0, fmt.Errorf("fs: forget: no tree %q", tree)
	}
	n := 0
	for _, p := range paths {
		rel := strings.Trim(path.Clean("/"+p), "/")
		if strings.HasPrefix(rel, "..") {
			return n, fmt.Errorf("fs: forget: bad path %q", p)
		}
		n += t.forgetPath(rel)
		if path.Base(rel) == "cyrus.header" {
			f.learnHeader(t, rel)
		}
	}
	return n, nil
}

// learnHeader hands a cyrus.header the receiver put in place to the
// classifier: it names the owner of a uuid mailbox the mount has not seen
// created. Without it a replica account's new mailbox would stay pending
// here, and pending paths are writable: a misrouted delivery would be
// accepted and diverge the replica instead of being refused.
func (f *FS) learnHeader(t *Tree, rel string) {
	id := f.classify.Classify(classPath(t.Name, path.Dir(rel))).MailboxID
	if id == "" {
		return
	}
	hdr, err := os.ReadFile(t.backing(rel))
	if err != nil {
		return // removed again: nothing to learn
	}
	if err := f.classify.NoteHeader(id, hdr); err != nil {
		f.log.Warn("classifier refused a replicated cyrus.header", "tree", t.Name, "path", rel, "err", err)
	}
}

// ForgetAccount forgets every path of account the kernel knows, in every
// tree (after a promote, or when the receiver changed much of an account).
func (f *FS) ForgetAccount(account string) int {
	n := 0
	for _, t := range f.Trees() {
		var walk func(in *fusefs.Inode, rel string)
		walk = func(in *fusefs.Inode, rel string) {
			for name, ch := range in.Children() {
				r := name
				if rel != "" {
					r = rel + "/" + name
				}
				c := f.classify.Classify(classPath(t.Name, r))
				if c.Kind == KindAccount && c.Account == account {
					n += t.forgetEntry(in, name, ch, r)
				} else {
					walk(ch, r)
				}
			}
		}
		walk(t.root.EmbeddedInode(), "")
	}
	return n
}

// forgetPath forgets rel in t; it returns the number of entries touched.
func (t *Tree) forgetPath(rel string) int {
	if rel == "" {
		root := t.root.EmbeddedInode()
		root.NotifyContent(0, 0)
		n := 1
		for name, ch := range root.Children() {
			n += t.forgetEntry(root, name, ch, name)
		}
		return n
	}
	parent := t.root.EmbeddedInode()
	parts := strings.Split(rel, "/")
	for _, name := range parts[:len(parts)-1] {
		parent = parent.GetChild(name)
		if parent == nil {
			return 0 // nothing cached below here
		}
	}
	name := parts[len(parts)-1]
	ch := parent.GetChild(name)
	if ch == nil {
		parent.NotifyEntry(name) // a dentry the kernel may hold without our tree knowing
		return 1
	}
	return t.forgetEntry(parent, name, ch, rel)
}

// forgetEntry invalidates parent/name (known as ch, at rel). If the backing
// name is gone or now names another inode, the entry is deleted from the
// kernel and from go-fuse's tree; otherwise its bytes and attributes are
// dropped. Directories are walked.
func (t *Tree) forgetEntry(parent *fusefs.Inode, name string, ch *fusefs.Inode, rel string) int {
	n := 0
	if ch.IsDir() {
		for cn, cc := range ch.Children() {
			n += t.forgetEntry(ch, cn, cc, rel+"/"+cn)
		}
	}
	var st syscall.Stat_t
	err := syscall.Lstat(t.backing(rel), &st)
	same := err == nil && st.Ino == ch.StableAttr().Ino && st.Mode&syscall.S_IFMT == ch.StableAttr().Mode&syscall.S_IFMT
	if !same {
		parent.NotifyDelete(name, ch)
		parent.RmChild(name)
		return n + 1
	}
	ch.NotifyContent(0, 0)
	parent.NotifyEntry(name)
	return n + 1
}

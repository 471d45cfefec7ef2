package classify

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Scan fills the owner map at start-up from every uuid-layout cyrus.header
// under the partition trees (spool, meta, spool-*, meta-*) of trees, a map
// of tree name → directory. Other trees are ignored (the per-user uuid
// directories of conf and sieve are named by the INBOX id, whose header is
// in a partition). A missing uuid directory is fine. A header that cannot be
// read or parsed is logged and skipped (its mailbox stays Pending); Scan then
// returns those errors joined, after loading all the others.
func (c *Classifier) Scan(trees map[string]string) error {
	var errs []error
	for name, dir := range trees {
		if !isPartition(name) {
			continue
		}
		if err := c.scanPartition(filepath.Join(dir, "uuid")); err != nil {
			errs = append(errs, err)
		}
	}
	c.log.Info("scanned cyrus headers", "mailboxes", c.owners.len(), "errors", len(errs))
	return errors.Join(errs...)
}

func isPartition(tree string) bool {
	return tree == TreeSpool || tree == TreeMeta ||
		strings.HasPrefix(tree, TreeSpool+"-") || strings.HasPrefix(tree, TreeMeta+"-")
}

func (c *Classifier) scanPartition(root string) error {
	var errs []error
	c1s, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("classify: scan: %w", err)
	}
	for _, e1 := range c1s {
		if !e1.IsDir() || !isIDChar(e1.Name()) {
			continue
		}
		c2s, err := os.ReadDir(filepath.Join(root, e1.Name()))
		if err != nil {
			errs = append(errs, fmt.Errorf("classify: scan: %w", err))
			continue
		}
		for _, e2 := range c2s {
			if !e2.IsDir() || !isIDChar(e2.Name()) {
				continue
			}
			dir := filepath.Join(root, e1.Name(), e2.Name())
			ids, err := os.ReadDir(dir)
			if err != nil {
				errs = append(errs, fmt.Errorf("classify: scan: %w", err))
				continue
			}
			for _, e := range ids {
				id := e.Name()
				if !e.IsDir() || !isMailboxID(id) {
					continue
				}
				hp := filepath.Join(dir, id, "cyrus.header")
				b, err := os.ReadFile(hp)
				if errors.Is(err, fs.ErrNotExist) {
					continue // spool dir of a meta-partition mailbox, or header not written yet
				}
				if err == nil {
					err = c.NoteHeader(id, b)
				}
				if err != nil {
					c.log.Warn("unusable cyrus.header", "path", hp, "err", err)
					errs = append(errs, fmt.Errorf("classify: scan %s: %w", hp, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

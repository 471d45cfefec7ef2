package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"mreplfs/peer"
)

// accountDigest hashes everything of account in this server's trees: per
// path (sorted) its type, permissions, size, content SHA-256 (files),
// target (symlinks) and, for message files, mtime — what a replica must
// hold as its master does (directory times and inode numbers differ by
// nature). promote -verify compares the master's and the replica's.
func (w *roleSwitch) accountDigest(account string) (string, int, error) {
	type ent struct{ key, val string }
	var ents []ent
	byTree := map[string]string{}
	for _, t := range w.cfg.trees {
		byTree[t.name] = t.backing
	}
	walk := accountWalker(w.cfg.trees, w.log)
	err := walk(account, func(tree, rel string, fi os.FileInfo) error {
		v := fmt.Sprintf("%o", fi.Mode().Perm())
		switch {
		case fi.IsDir():
			v = "dir " + v
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(filepath.Join(byTree[tree], rel))
			if err != nil {
				return err
			}
			v = "symlink " + target
		case fi.Mode().IsRegular():
			f, err := os.Open(filepath.Join(byTree[tree], rel))
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			v = fmt.Sprintf("file %s %d %x", v, fi.Size(), h.Sum(nil))
			if strings.HasSuffix(rel, ".") {
				v += fmt.Sprintf(" mtime %d", fi.ModTime().UnixNano())
			}
		default:
			v = "other " + v
		}
		ents = append(ents, ent{tree + "/" + rel, v})
		return nil
	})
	if err != nil {
		return "", 0, err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].key < ents[j].key })
	h := sha256.New()
	for _, e := range ents {
		fmt.Fprintf(h, "%s\x00%s\n", e.key, e.val)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), len(ents), nil
}

func (w *roleSwitch) digest(account string) peer.AdminReply {
	d, n, err := w.accountDigest(account)
	if err != nil {
		return failed(err)
	}
	return ok(map[string]string{"digest": d, "entries": u(uint64(n))})
}

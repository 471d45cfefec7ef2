package peer

import (
	"crypto/sha256"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The content index (SHA-256 → a replica file with those bytes) lives in
// state.db. If it is lost (state.db restored from an old backup, or the
// bucket emptied) the replica still holds every message: RebuildIndex walks
// the trees and indexes the message files ("<uid>." names) again, so bodies
// keep crossing the wire by reference. OpenDirApplier runs it in the
// background when the index is empty but the trees are not.

// isMessageFile reports whether name is a Cyrus message file, "<digits>.".
func isMessageFile(name string) bool {
	n := strings.TrimSuffix(name, ".")
	if n == name || n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// RebuildIndex indexes every message file of the replica's trees and
// returns how many it indexed.
func (a *DirApplier) RebuildIndex() (int, error) {
	n := 0
	for name, t := range a.trees {
		batch := map[[32]byte]hashRef{}
		err := filepath.WalkDir(t.dir, func(p string, d fs.DirEntry, err error) error {
			if a.closing.Load() {
				return filepath.SkipAll
			}
			if err != nil || !d.Type().IsRegular() || !isMessageFile(d.Name()) {
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				return nil
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return nil
			}
			rel, err := filepath.Rel(t.dir, p)
			if err != nil {
				return nil
			}
			var sum [32]byte
			copy(sum[:], h.Sum(nil))
			batch[sum] = hashRef{tree: name, rel: filepath.ToSlash(rel)}
			if len(batch) >= 1000 {
				if err := a.st.putHashes(batch); err != nil {
					return err
				}
				n += len(batch)
				clear(batch)
			}
			return nil
		})
		if err == nil {
			err = a.st.putHashes(batch)
			n += len(batch)
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// rebuildIndexIfLost starts RebuildIndex when the index is empty.
func (a *DirApplier) rebuildIndexIfLost() {
	if a.st.hashCount() > 0 {
		return
	}
	a.rebuilding.Add(1)
	go func() {
		defer a.rebuilding.Done()
		n, err := a.RebuildIndex()
		if err != nil {
			a.log.Warn("content index rebuild failed", "err", err)
			return
		}
		if n > 0 {
			a.log.Info("content index rebuilt from the replica's message files", "files", n)
		}
	}()
}

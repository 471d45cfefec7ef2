package journaltest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"mreplfs/journal"
)

// BlobSource opens the content of a blob by its SHA-256 (e.g. Log.OpenBlob).
type BlobSource func(hash [32]byte) (io.ReadCloser, error)

// ApplyToDir applies r to the tree under root, where record paths live at
// root/<Tree>/<Path>: the reference meaning of every op, for tests (and a
// model for the peer's applier; it checks no pre-state and is not
// crash-safe). Message and replace contents come from r.Data, or from blobs
// when r refers to a blob (Hash set, Size > 0, Data empty). Control records
// and OpDirty change nothing. Paths must stay inside root.
func ApplyToDir(root string, r journal.Record, blobs BlobSource) error {
	p, err := recPath(root, r.Tree, r.Path)
	if err != nil && needsPath(r.Op) {
		return err
	}
	var np string
	if needsNewPath(r.Op) {
		if np, err = recPath(root, r.Tree, r.NewPath); err != nil {
			return err
		}
	}
	fail := func(err error) error {
		if err == nil {
			return nil
		}
		return fmt.Errorf("journaltest: apply LSN %d op %d %q: %w", r.LSN, r.Op, r.Path, err)
	}
	perm := fs.FileMode(r.Mode & 0o7777)
	switch r.Op {
	case journal.OpMessage, journal.OpReplace:
		data := r.Data
		if len(data) == 0 && r.Size > 0 && r.Hash != [32]byte{} {
			if blobs == nil {
				return fail(errors.New("record refers to a blob and no BlobSource was given"))
			}
			rc, err := blobs(r.Hash)
			if err != nil {
				return fail(err)
			}
			data, err = io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return fail(err)
			}
		}
		if perm == 0 {
			perm = 0o600
		}
		tmp := p + ".apply-tmp"
		if err := os.WriteFile(tmp, data, perm); err != nil {
			return fail(err)
		}
		if err := os.Chmod(tmp, perm); err != nil {
			return fail(err)
		}
		if r.MTime != 0 {
			t := time.Unix(0, r.MTime)
			if err := os.Chtimes(tmp, t, t); err != nil {
				return fail(err)
			}
		}
		return fail(os.Rename(tmp, p))
	case journal.OpWrite:
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return fail(err)
		}
		_, err = f.WriteAt(r.Data, r.Offset)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return fail(err)
	case journal.OpTruncate:
		return fail(os.Truncate(p, r.Size))
	case journal.OpCreate:
		if perm == 0 {
			perm = 0o600
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, perm)
		if err != nil {
			return fail(err)
		}
		return fail(f.Close())
	case journal.OpMkdir:
		if perm == 0 {
			perm = 0o700
		}
		return fail(os.Mkdir(p, perm))
	case journal.OpRmdir:
		return fail(syscall.Rmdir(p))
	case journal.OpUnlink:
		return fail(syscall.Unlink(p))
	case journal.OpRename:
		return fail(os.Rename(p, np))
	case journal.OpLink:
		return fail(os.Link(p, np))
	case journal.OpSymlink:
		return fail(os.Symlink(string(r.Data), np))
	case journal.OpSetattr:
		if r.Flags&journal.SetMode != 0 {
			if err := os.Chmod(p, perm); err != nil {
				return fail(err)
			}
		}
		if r.Flags&journal.SetSize != 0 {
			if err := os.Truncate(p, r.Size); err != nil {
				return fail(err)
			}
		}
		if r.Flags&journal.SetOwner != 0 {
			if err := os.Lchown(p, int(r.UID), int(r.GID)); err != nil {
				return fail(err)
			}
		}
		if r.Flags&(journal.SetMTime|journal.SetATime) != 0 {
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil {
				return fail(err)
			}
			at, mt := time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix())
			if r.Flags&journal.SetATime != 0 {
				at = time.Unix(0, r.ATime)
			}
			if r.Flags&journal.SetMTime != 0 {
				mt = time.Unix(0, r.MTime)
			}
			return fail(os.Chtimes(p, at, mt))
		}
		return nil
	case journal.OpEpoch, journal.OpBarrier, journal.OpCheckpoint, journal.OpDirty:
		return nil
	}
	return fail(fmt.Errorf("unknown op"))
}

func needsPath(op journal.Op) bool { return op != journal.OpSymlink && !isControl(op) }
func needsNewPath(op journal.Op) bool {
	return op == journal.OpRename || op == journal.OpLink || op == journal.OpSymlink
}
func isControl(op journal.Op) bool {
	return op == journal.OpEpoch || op == journal.OpBarrier || op == journal.OpCheckpoint || op == journal.OpDirty
}

// recPath joins root, tree and a record path, refusing anything that would
// leave root.
func recPath(root, tree, p string) (string, error) {
	if !filepath.IsLocal(tree) || !filepath.IsLocal(filepath.FromSlash(p)) {
		return "", fmt.Errorf("journaltest: path %q in tree %q leaves the root", p, tree)
	}
	return filepath.Join(root, tree, filepath.FromSlash(p)), nil
}

// DiffTrees compares two trees: names, types, permission bits, file contents
// and symlink targets (not times or owners). It returns one line per
// difference, sorted; none means equal.
func DiffTrees(a, b string) ([]string, error) {
	ma, err := snapshot(a)
	if err != nil {
		return nil, err
	}
	mb, err := snapshot(b)
	if err != nil {
		return nil, err
	}
	var diffs []string
	for p, ea := range ma {
		eb, ok := mb[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s: only in %s", p, a))
		case ea.mode != eb.mode:
			diffs = append(diffs, fmt.Sprintf("%s: mode %v vs %v", p, ea.mode, eb.mode))
		case !bytes.Equal(ea.content, eb.content):
			diffs = append(diffs, fmt.Sprintf("%s: content %q vs %q", p, ea.content, eb.content))
		}
	}
	for p := range mb {
		if _, ok := ma[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only in %s", p, b))
		}
	}
	slices.Sort(diffs)
	return diffs, nil
}

type entry struct {
	mode    fs.FileMode
	content []byte
}

func snapshot(root string) (map[string]entry, error) {
	m := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := entry{mode: fi.Mode() & (fs.ModeType | fs.ModePerm)}
		switch {
		case fi.Mode().IsRegular():
			e.content, err = os.ReadFile(p)
		case fi.Mode()&fs.ModeSymlink != 0:
			var t string
			t, err = os.Readlink(p)
			e.content = []byte(t)
		}
		m[filepath.ToSlash(rel)] = e
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("journaltest: snapshot %s: %w", root, err)
	}
	return m, nil
}

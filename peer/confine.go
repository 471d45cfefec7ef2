package peer

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"mreplfs/internal/fsident"
)

// Confinement (DESIGN.md invariant 6): every path a record names is resolved
// beneath its tree's root directory with openat2 RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, and every change is made with
// the *at syscalls on the parent directory's fd and a single, checked final
// name. A record with "..", an absolute path, or a symlink anywhere on the
// way can therefore never reach outside its tree.

// ErrEscape is wrapped by every refusal of a path that tries to leave its
// tree (or is not a plain relative path).
var ErrEscape = errors.New("peer: path escapes its tree")

const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// treeRoot is an open tree root; all access to the tree goes through fd.
type treeRoot struct {
	name string
	dir  string
	fd   int
}

func openTree(name, dir string) (*treeRoot, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open tree %s (%s): %w", name, dir, err)
	}
	return &treeRoot{name: name, dir: dir, fd: fd}, nil
}

func (t *treeRoot) close() { unix.Close(t.fd) }

// checkRel validates a record path: relative, '/'-separated, no empty, "."
// or ".." component, no NUL.
func checkRel(rel string) error {
	if rel == "" || strings.HasPrefix(rel, "/") || strings.IndexByte(rel, 0) >= 0 {
		return fmt.Errorf("%w: %q", ErrEscape, rel)
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("%w: %q", ErrEscape, rel)
		}
	}
	return nil
}

// open opens rel beneath the tree.
func (t *treeRoot) open(rel string, flags int, mode uint32) (*os.File, error) {
	if err := checkRel(rel); err != nil {
		return nil, err
	}
	fd, err := unix.Openat2(t.fd, rel, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Mode: uint64(mode), Resolve: resolveFlags})
	if err != nil {
		return nil, confineErr("open", t, rel, err)
	}
	return os.NewFile(uintptr(fd), t.dir+"/"+rel), nil
}

// parent opens the directory holding rel and returns it with rel's final
// name. With mkParents, missing intermediate directories are created (they
// are "structure" paths the master never journals, e.g. uuid/i/g), owned like
// the directory they are made in.
func (t *treeRoot) parent(rel string, mkParents bool) (*os.File, string, error) {
	if err := checkRel(rel); err != nil {
		return nil, "", err
	}
	dir, base := ".", rel
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		dir, base = rel[:i], rel[i+1:]
	}
	flags := uint64(unix.O_DIRECTORY | unix.O_RDONLY | unix.O_CLOEXEC)
	fd, err := unix.Openat2(t.fd, dir, &unix.OpenHow{Flags: flags, Resolve: resolveFlags})
	if err == unix.ENOENT && mkParents && dir != "." {
		if err = t.mkdirAll(dir); err == nil {
			fd, err = unix.Openat2(t.fd, dir, &unix.OpenHow{Flags: flags, Resolve: resolveFlags})
		}
	}
	if err != nil {
		return nil, "", confineErr("open parent of", t, rel, err)
	}
	return os.NewFile(uintptr(fd), t.dir+"/"+dir), base, nil
}

// mkdirAll creates dir (relative) and its missing ancestors beneath the root,
// each owned like its parent from its birth, mode 0700 (Cyrus's own).
func (t *treeRoot) mkdirAll(dir string) error {
	parts := strings.Split(dir, "/")
	// Start from a readable fd of the root (t.fd is O_PATH: no fsync on it).
	cur, err := unix.Openat2(t.fd, ".", &unix.OpenHow{Flags: unix.O_DIRECTORY | unix.O_RDONLY | unix.O_CLOEXEC, Resolve: resolveFlags})
	if err != nil {
		return err
	}
	defer func() { unix.Close(cur) }()
	for _, p := range parts {
		var st unix.Stat_t
		if err := unix.Fstat(cur, &st); err != nil {
			return err
		}
		// Born its parent's owner's: made by root and chowned after, the
		// local Cyrus could meet it root-owned 0700 in between (a shared
		// directory such as meta/u/DELETED/user, which both sides make) and
		// fail its own mkdir beneath it: "NO System I/O error".
		err := fsident.As(int(st.Uid), int(st.Gid), func() error { return unix.Mkdirat(cur, p, 0o700) })
		if err == unix.EACCES { // the owner cannot write there: as root, then chown
			if err = unix.Mkdirat(cur, p, 0o700); err == nil {
				unix.Fchownat(cur, p, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
			}
		}
		if err == nil {
			// The new entry must be durable before any position that
			// covers a file beneath it is persisted.
			if err := unix.Fsync(cur); err != nil {
				return err
			}
		} else if err != unix.EEXIST {
			return err
		}
		next, err := unix.Openat2(cur, p, &unix.OpenHow{Flags: unix.O_DIRECTORY | unix.O_RDONLY | unix.O_CLOEXEC, Resolve: resolveFlags})
		if err != nil {
			return err
		}
		unix.Close(cur)
		cur = next
	}
	return nil
}

func confineErr(op string, t *treeRoot, rel string, err error) error {
	if err == unix.EXDEV || err == unix.ELOOP {
		// openat2 says EXDEV for an escape by "..", ELOOP for a symlink.
		return fmt.Errorf("%w: %s %s/%s: %w", ErrEscape, op, t.name, rel, err)
	}
	return &os.PathError{Op: op, Path: t.name + "/" + rel, Err: err}
}

package peer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"mreplfs/journal"
)

// apply applies one record. replay: the record may already have been
// applied before a crash, so "already done" passes the pre-state checks.
func (b *batch) apply(r *journal.Record, replay bool, setState func(AccountState)) error {
	t, ok := b.a.trees[r.Tree]
	if !ok && r.Op != journal.OpEpoch && r.Op != journal.OpBarrier && r.Op != journal.OpCheckpoint && r.Op != journal.OpDirty {
		return fmt.Errorf("%w: unknown tree %q", ErrEscape, r.Tree)
	}
	for _, p := range []string{r.Path, r.NewPath} {
		if p == "" || t == nil {
			continue
		}
		if err := checkRel(p); err != nil {
			return err
		}
		if b.a.check != nil {
			if err := b.a.check(r.Account, r.Tree, p); err != nil {
				return fmt.Errorf("%w: %s/%s: %w", ErrNotOwned, r.Tree, p, err)
			}
		}
	}
	switch r.Op {
	case journal.OpMessage:
		return b.message(t, r, replay)
	case journal.OpReplace:
		return b.replace(t, r, replay)
	case journal.OpCreate:
		return b.create(t, r)
	case journal.OpWrite:
		return b.write(t, r, replay)
	case journal.OpTruncate:
		return b.truncate(t, r, replay)
	case journal.OpMkdir:
		return b.mkdir(t, r)
	case journal.OpRmdir:
		return b.remove(t, r.Path, unix.AT_REMOVEDIR)
	case journal.OpUnlink:
		return b.remove(t, r.Path, 0)
	case journal.OpRename:
		return b.rename(t, r, replay)
	case journal.OpLink:
		return b.link(t, r, replay)
	case journal.OpSymlink:
		return b.symlink(t, r, replay)
	case journal.OpSetattr:
		return b.setattr(t, r)
	case journal.OpEpoch, journal.OpBarrier, journal.OpCheckpoint:
		return nil // the epoch is taken from the record by ApplyBatch
	case journal.OpDirty:
		setState(StateResync)
		return fmt.Errorf("journal recorded only that the account changed (size limit): full resync needed")
	}
	return fmt.Errorf("%w: unknown op %d", ErrEscape, r.Op)
}

func diverged(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrDiverged, fmt.Sprintf(format, a...))
}

func (b *batch) touchFile(t *treeRoot, rel string) { b.files[[2]string{t.name, rel}] = true }
func (b *batch) touchDir(t *treeRoot, rel string)  { b.dirs[[2]string{t.name, rel}] = true }

// hashFile returns the SHA-256 and size of rel, or ok=false if it is absent.
func hashFile(t *treeRoot, rel string) (sum [32]byte, size int64, ok bool, err error) {
	f, err := t.open(rel, unix.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return sum, 0, false, nil
	}
	if err != nil {
		return sum, 0, false, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return sum, 0, false, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, n, true, nil
}

// content returns the bytes of a message or replace record: inline Data,
// or by hash from the content index (re-verified), or from the sender.
// linkFrom is set when an identical file with the same attributes exists
// on the replica, so the caller can hard-link it instead.
func (b *batch) content(r *journal.Record) (data []byte, linkFrom *hashRef, err error) {
	if int64(len(r.Data)) == r.Size && (len(r.Data) > 0 || r.Hash == sha256.Sum256(nil) || r.Hash == [32]byte{}) {
		if r.Hash != ([32]byte{}) && sha256.Sum256(r.Data) != r.Hash {
			return nil, nil, fmt.Errorf("%w: inline content does not match its hash", ErrDiverged)
		}
		if len(r.Data) > 0 {
			// Sent by value, but held here already (another recipient's copy
			// applied in an earlier session, or by a resync): a caller may
			// hard-link it, as the master's names share one inode.
			if ref, ok := b.heldRef(r.Hash); ok {
				return r.Data, &ref, nil
			}
		}
		return r.Data, nil, nil
	}
	if ref, ok := b.heldRef(r.Hash); ok {
		return nil, &ref, nil
	}
	if b.fetch == nil {
		return nil, nil, fmt.Errorf("peer: body %x not held here and no sender to fetch it from", r.Hash[:8])
	}
	data, err = b.fetch(b.ctx, r.Hash)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch body %x: %w", r.Hash[:8], err)
	}
	if sha256.Sum256(data) != r.Hash || int64(len(data)) != r.Size {
		return nil, nil, fmt.Errorf("fetched body %x: hash or size mismatch", r.Hash[:8])
	}
	return data, nil, nil
}

// heldRef finds a file of the replica holding content h: written by this
// batch, or in the content index (re-verified; a stale entry is dropped).
func (b *batch) heldRef(h [32]byte) (hashRef, bool) {
	if h == ([32]byte{}) {
		return hashRef{}, false // no hash: nothing to find by it
	}
	if ref, ok := b.hashes[h]; ok {
		return ref, true
	}
	if ref, ok := b.a.st.lookupHash(h); ok {
		if t := b.a.trees[ref.tree]; t != nil {
			if sum, _, ok, err := hashFile(t, ref.rel); err == nil && ok && sum == h {
				return ref, true
			}
		}
		b.a.st.dropHash(h) // stale entry: the file changed or is gone
	}
	return hashRef{}, false
}

// sameAttrs reports whether the file at ref has r's mode, owner and mtime, so
// a hard link to it is indistinguishable from a fresh copy.
func sameAttrs(t *treeRoot, rel string, r *journal.Record) bool {
	d, base, err := t.parent(rel, false)
	if err != nil {
		return false
	}
	defer d.Close()
	var st unix.Stat_t
	if unix.Fstatat(int(d.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return false
	}
	return st.Mode&0o7777 == r.Mode&0o7777 && st.Uid == r.UID && st.Gid == r.GID &&
		(r.MTime == 0 || st.Mtim.Nano() == r.MTime)
}

// message creates a write-once message file. It must not exist yet, unless it
// already holds exactly these bytes (a replay, or a retried batch).
func (b *batch) message(t *treeRoot, r *journal.Record, replay bool) error {
	sum, _, exists, err := hashFile(t, r.Path)
	if err != nil {
		return err
	}
	if exists {
		if sum == r.Hash {
			// Already there, perhaps from an earlier try whose flush never
			// ran: made durable with this batch before its position is.
			b.touchFile(t, r.Path)
			b.touchDir(t, r.Path)
			return nil
		}
		if !replay {
			return diverged("message file %s/%s exists with other content", t.name, r.Path)
		}
		// A replay: this applier may have renamed it into place before a
		// crash lost its unsynced data. Write it again.
	}
	data, ref, err := b.content(r)
	if err != nil {
		return err
	}
	if ref != nil {
		// A hard link only to a replica account's file (as on the master,
		// where Cyrus links one body into every recipient's mailbox); never
		// to a file this server masters or keeps local, which a record's
		// later change to the shared inode would reach. Else: a copy.
		if src := b.a.trees[ref.tree]; src != nil && b.linkable(ref) && sameAttrs(src, ref.rel, r) {
			if err := b.hardlink(src, ref.rel, t, r.Path); err == nil {
				return nil
			}
		}
	}
	if ref != nil && data == nil {
		// Different attributes or tree: copy within the replica.
		if data, err = b.readRef(ref); err != nil {
			return err
		}
	}
	if err := b.writeNew(t, r.Path, data, r, exists); err != nil {
		return err
	}
	if r.Hash != ([32]byte{}) {
		b.hashes[r.Hash] = hashRef{t.name, r.Path}
	}
	return nil
}

// linkable reports whether a content-index entry may be hard-linked.
func (b *batch) linkable(ref *hashRef) bool {
	return b.a.linkable == nil || b.a.linkable(ref.tree, ref.rel)
}

func (b *batch) hardlink(st *treeRoot, srel string, dt *treeRoot, drel string) error {
	sd, sbase, err := st.parent(srel, false)
	if err != nil {
		return err
	}
	defer sd.Close()
	dd, dbase, err := dt.parent(drel, true)
	if err != nil {
		return err
	}
	defer dd.Close()
	if err := unix.Linkat(int(sd.Fd()), sbase, int(dd.Fd()), dbase, 0); err != nil {
		return &os.LinkError{Op: "link", Old: st.name + "/" + srel, New: dt.name + "/" + drel, Err: err}
	}
	b.touchDir(dt, drel)
	return nil
}

// writeNew writes data to a temp file beside rel, sets r's attributes,
// fsyncs it and renames it into place (over an existing file only when
// replace is set).
func (b *batch) writeNew(t *treeRoot, rel string, data []byte, r *journal.Record, replace bool) error {
	d, base, err := t.parent(rel, true)
	if err != nil {
		return err
	}
	defer d.Close()
	tmp := ".mreplfs." + strconv.FormatUint(uint64(r.LSN), 10) + ".tmp"
	unix.Unlinkat(int(d.Fd()), tmp, 0)
	fd, err := unix.Openat(int(d.Fd()), tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: t.name + "/" + rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), tmp)
	ok := false
	defer func() {
		if !ok {
			f.Close()
			unix.Unlinkat(int(d.Fd()), tmp, 0)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := setAttrs(int(f.Fd()), r); err != nil {
		return err
	}
	// No fsync here: the batch fsyncs every file it touched before it
	// persists positions (flush), one round for the whole batch.
	if err := f.Close(); err != nil {
		return err
	}
	flags := uint(unix.RENAME_NOREPLACE)
	if replace {
		flags = 0
	}
	if err := unix.Renameat2(int(d.Fd()), tmp, int(d.Fd()), base, flags); err != nil {
		return &os.LinkError{Op: "rename", Old: tmp, New: t.name + "/" + rel, Err: err}
	}
	ok = true
	b.touchFile(t, rel)
	b.touchDir(t, rel)
	return nil
}

// setAttrs gives an open file r's mode, owner and times.
func setAttrs(fd int, r *journal.Record) error {
	if r.Mode&0o7777 != 0 {
		if err := unix.Fchmod(fd, r.Mode&0o7777); err != nil {
			return err
		}
	}
	if err := unix.Fchown(fd, int(r.UID), int(r.GID)); err != nil {
		return err
	}
	if r.MTime != 0 {
		at := r.ATime
		if at == 0 {
			at = r.MTime
		}
		ts := []unix.Timespec{unix.NsecToTimespec(at), unix.NsecToTimespec(r.MTime)}
		if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
			return err
		}
	}
	return nil
}

// replace swaps a whole file's content (the X.NEW → X pattern).
func (b *batch) replace(t *treeRoot, r *journal.Record, replay bool) error {
	sum, _, exists, err := hashFile(t, r.Path)
	if err != nil {
		return err
	}
	if exists && sum == r.Hash && r.Hash != ([32]byte{}) {
		// already there: durable with this batch (as in message)
		b.touchFile(t, r.Path)
		b.touchDir(t, r.Path)
		return nil
	}
	if !replay && r.PrevHash != ([32]byte{}) && (!exists || sum != r.PrevHash) {
		return diverged("%s/%s is not the file the master replaced", t.name, r.Path)
	}
	data, ref, err := b.content(r)
	if err != nil {
		return err
	}
	if ref != nil && data == nil {
		if data, err = b.readRef(ref); err != nil {
			return err
		}
	}
	return b.writeNew(t, r.Path, data, r, true)
}

// create makes an empty file (O_CREAT|O_TRUNC semantics, as on the master).
func (b *batch) create(t *treeRoot, r *journal.Record) error {
	d, base, err := t.parent(r.Path, true)
	if err != nil {
		return err
	}
	defer d.Close()
	fd, err := unix.Openat(int(d.Fd()), base, unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: t.name + "/" + r.Path, Err: err}
	}
	defer unix.Close(fd)
	if err := setAttrs(fd, r); err != nil {
		return err
	}
	b.touchFile(t, r.Path)
	b.touchDir(t, r.Path)
	return nil
}

// openExisting opens an in-place file for writing; absent in replay mode
// means a later record of the batch removed it (skip).
func (b *batch) openExisting(t *treeRoot, r *journal.Record, replay bool) (*os.File, error) {
	f, err := t.open(r.Path, unix.O_RDWR, 0) // read too: pre-image and retry checks
	if errors.Is(err, os.ErrNotExist) {
		if replay {
			return nil, nil
		}
		return nil, diverged("%s/%s is missing on the replica", t.name, r.Path)
	}
	return f, err
}

func checkPrevSize(f *os.File, r *journal.Record, replay bool) error {
	if replay {
		return nil
	}
	if r.PrevSize < 0 {
		return checkRangePreimage(f, r)
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != r.PrevSize {
		return diverged("%s is %d bytes on the replica, the master had %d before this change", r.Path, fi.Size(), r.PrevSize)
	}
	return checkRangePreimage(f, r)
}

// checkRangePreimage compares the bytes an OpWrite overwrites with the
// master's (PrevHash: SHA-256 of [Offset, min(Offset+len, PrevSize))), so a
// replica byte changed behind replication's back is caught when the master
// writes there again.
func checkRangePreimage(f *os.File, r *journal.Record) error {
	if r.Op != journal.OpWrite || r.PrevHash == ([32]byte{}) {
		return nil
	}
	// Without PrevSize (a later range of a coalesced run) the pre-image
	// covers the whole range (journal.Coalesce keeps it only then).
	n := int64(len(r.Data))
	if r.PrevSize >= 0 {
		if r.Offset >= r.PrevSize {
			return nil
		}
		n = min(n, r.PrevSize-r.Offset)
	}
	cur := make([]byte, n)
	if _, err := f.ReadAt(cur, r.Offset); err != nil {
		if errors.Is(err, io.EOF) {
			return diverged("%s is shorter on the replica than the bytes the master overwrote (%d..%d)", r.Path, r.Offset, r.Offset+n)
		}
		return fmt.Errorf("read pre-image of %s: %w", r.Path, err)
	}
	if sha256.Sum256(cur) != r.PrevHash {
		return diverged("%s bytes %d..%d differ from the master's before this change", r.Path, r.Offset, r.Offset+n)
	}
	return nil
}

func (b *batch) write(t *treeRoot, r *journal.Record, replay bool) error {
	f, err := b.openExisting(t, r, replay)
	if f == nil || err != nil {
		return err
	}
	defer f.Close()
	if err := checkPrevSize(f, r, replay); err != nil {
		// A retried batch: the bytes may already be there.
		cur := make([]byte, len(r.Data))
		if n, _ := f.ReadAt(cur, r.Offset); n == len(cur) && bytes.Equal(cur, r.Data) {
			return nil
		}
		return err
	}
	if _, err := f.WriteAt(r.Data, r.Offset); err != nil {
		return err
	}
	b.touchFile(t, r.Path)
	return nil
}

func (b *batch) truncate(t *treeRoot, r *journal.Record, replay bool) error {
	f, err := b.openExisting(t, r, replay)
	if f == nil || err != nil {
		return err
	}
	defer f.Close()
	if err := checkPrevSize(f, r, replay); err != nil {
		if fi, e := f.Stat(); e == nil && fi.Size() == r.Size {
			return nil
		}
		return err
	}
	if err := f.Truncate(r.Size); err != nil {
		return err
	}
	b.touchFile(t, r.Path)
	return nil
}

func (b *batch) mkdir(t *treeRoot, r *journal.Record) error {
	d, base, err := t.parent(r.Path, true)
	if err != nil {
		return err
	}
	defer d.Close()
	mode := r.Mode & 0o7777
	if mode == 0 {
		mode = 0o700
	}
	err = unix.Mkdirat(int(d.Fd()), base, mode)
	if err == unix.EEXIST {
		var st unix.Stat_t
		if unix.Fstatat(int(d.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return nil
		}
		return diverged("%s/%s exists and is not a directory", t.name, r.Path)
	}
	if err != nil {
		return &os.PathError{Op: "mkdir", Path: t.name + "/" + r.Path, Err: err}
	}
	unix.Fchownat(int(d.Fd()), base, int(r.UID), int(r.GID), unix.AT_SYMLINK_NOFOLLOW)
	b.touchDir(t, r.Path)
	return nil
}

func (b *batch) remove(t *treeRoot, rel string, flags int) error {
	d, base, err := t.parent(rel, false)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	err = unix.Unlinkat(int(d.Fd()), base, flags)
	switch {
	case err == nil:
		b.touchDir(t, rel)
		return nil
	case err == unix.ENOENT:
		return nil // idempotent
	case err == unix.ENOTEMPTY || err == unix.EEXIST:
		return diverged("directory %s/%s holds files the master does not have", t.name, rel)
	}
	return &os.PathError{Op: "remove", Path: t.name + "/" + rel, Err: err}
}

func (b *batch) rename(t *treeRoot, r *journal.Record, replay bool) error {
	sd, sbase, err := t.parent(r.Path, false)
	if err != nil && !(replay && errors.Is(err, os.ErrNotExist)) {
		if errors.Is(err, os.ErrNotExist) {
			return diverged("rename source %s/%s is missing", t.name, r.Path)
		}
		return err
	}
	if sd == nil {
		return nil
	}
	defer sd.Close()
	dd, dbase, err := t.parent(r.NewPath, true)
	if err != nil {
		return err
	}
	defer dd.Close()
	// Flags carries renameat2's flags (RENAME_EXCHANGE, RENAME_NOREPLACE).
	err = unix.Renameat2(int(sd.Fd()), sbase, int(dd.Fd()), dbase, uint(r.Flags))
	if err == unix.ENOENT {
		if replay {
			return nil
		}
		return diverged("rename source %s/%s is missing", t.name, r.Path)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: t.name + "/" + r.Path, New: t.name + "/" + r.NewPath, Err: err}
	}
	b.touchDir(t, r.Path)
	b.touchDir(t, r.NewPath)
	b.moveTouched(t, r.Path, r.NewPath, r.Flags&unix.RENAME_EXCHANGE != 0)
	return nil
}

// moveTouched keeps the batch's fsync list true across a rename: files this
// batch wrote under the old name (or under a renamed directory) are synced
// under their new name (both ways for an exchange).
func (b *batch) moveTouched(t *treeRoot, from, to string, exchange bool) {
	move := func(m map[[2]string]bool, from, to string) {
		for k := range m {
			if k[0] != t.name {
				continue
			}
			if k[1] == from {
				m[[2]string{t.name, to}] = true
			} else if rest, ok := strings.CutPrefix(k[1], from+"/"); ok {
				m[[2]string{t.name, to + "/" + rest}] = true
			}
		}
	}
	for _, m := range []map[[2]string]bool{b.files, b.dirs, b.flushedFiles, b.flushedDirs} {
		move(m, from, to)
		if exchange {
			move(m, to, from)
		}
	}
}

func (b *batch) link(t *treeRoot, r *journal.Record, replay bool) error {
	err := b.hardlink(t, r.Path, t, r.NewPath)
	var le *os.LinkError
	if errors.As(err, &le) && le.Err == unix.EEXIST {
		if replay || sameInode(t, r.Path, r.NewPath) {
			return nil
		}
		return diverged("link target %s/%s exists", t.name, r.NewPath)
	}
	if err != nil && (errors.Is(err, os.ErrNotExist) || errors.As(err, &le) && le.Err == unix.ENOENT) {
		if replay {
			return nil
		}
		return diverged("link source %s/%s is missing", t.name, r.Path)
	}
	return err
}

func sameInode(t *treeRoot, a, b string) bool {
	fa, err := t.open(a, unix.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer fa.Close()
	fb, err := t.open(b, unix.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer fb.Close()
	sa, err1 := fa.Stat()
	sb, err2 := fb.Stat()
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

func (b *batch) symlink(t *treeRoot, r *journal.Record, replay bool) error {
	d, base, err := t.parent(r.NewPath, true)
	if err != nil {
		return err
	}
	defer d.Close()
	target := string(r.Data)
	err = unix.Symlinkat(target, int(d.Fd()), base)
	if err == unix.EEXIST {
		buf := make([]byte, 4096)
		if n, e := unix.Readlinkat(int(d.Fd()), base, buf); e == nil && string(buf[:n]) == target {
			return nil
		}
		if replay {
			unix.Unlinkat(int(d.Fd()), base, 0)
			err = unix.Symlinkat(target, int(d.Fd()), base)
		} else {
			return diverged("symlink %s/%s exists with another target", t.name, r.NewPath)
		}
	}
	if err != nil {
		return &os.PathError{Op: "symlink", Path: t.name + "/" + r.NewPath, Err: err}
	}
	unix.Fchownat(int(d.Fd()), base, int(r.UID), int(r.GID), unix.AT_SYMLINK_NOFOLLOW)
	b.touchDir(t, r.NewPath)
	return nil
}

func (b *batch) setattr(t *treeRoot, r *journal.Record) error {
	d, base, err := t.parent(r.Path, false)
	if err != nil {
		return err
	}
	defer d.Close()
	dfd := int(d.Fd())
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return diverged("setattr target %s/%s: %v", t.name, r.Path, err)
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	if r.Flags&journal.SetMode != 0 && !isLink {
		if err := unix.Fchmodat(dfd, base, r.Mode&0o7777, 0); err != nil {
			return err
		}
	}
	if r.Flags&journal.SetOwner != 0 {
		if err := unix.Fchownat(dfd, base, int(r.UID), int(r.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if r.Flags&journal.SetSize != 0 && !isLink {
		f, err := t.open(r.Path, unix.O_WRONLY, 0)
		if err != nil {
			return err
		}
		err = f.Truncate(r.Size)
		f.Close()
		if err != nil {
			return err
		}
		b.touchFile(t, r.Path)
	}
	if r.Flags&(journal.SetMTime|journal.SetATime) != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if r.Flags&journal.SetATime != 0 {
			ts[0] = unix.NsecToTimespec(r.ATime)
		}
		if r.Flags&journal.SetMTime != 0 {
			ts[1] = unix.NsecToTimespec(r.MTime)
		}
		if err := unix.UtimesNanoAt(dfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if !isLink && st.Mode&unix.S_IFMT == unix.S_IFREG {
		b.touchFile(t, r.Path) // the inode's new mode, owner and times must be durable
	}
	b.touchDir(t, r.Path)
	return nil
}

// readRef reads the bytes of a replica file the content index names.
func (b *batch) readRef(ref *hashRef) ([]byte, error) {
	src := b.a.trees[ref.tree]
	if src == nil {
		return nil, fmt.Errorf("peer: content index names unknown tree %q", ref.tree)
	}
	f, err := src.open(ref.rel, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

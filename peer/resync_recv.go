package peer

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/journal"
)

// The receiving side of a full per-account resync (doc.go, "Full resync"):
// compare the master's listing with the replica's files of the account,
// remove what the master lacks, make what can be made from content held
// here, ask for the rest, write it atomically, then resume the account's
// stream from the position the master recorded before its walk, replaying
// the records up to the end of the walk.

// localEntry is one of the replica's files of an account.
type localEntry struct {
	typ  EntryType
	size int64
	mode uint32
	uid  uint32
	gid  uint32
	mt   int64
}

// resyncJob is one account's resync under way on the receiver.
type resyncJob struct {
	a       *DirApplier
	account string
	epoch   uint64
	from    journal.LSN
	entries map[TreePath]*ManifestEntry
	groups  map[uint64][]TreePath // link group → its names, listing order
	wanted  map[TreePath]bool
	local   map[[32]byte]hashRef // verified content held here (this connection's resyncs)
	b       *batch
	failed  error // the resync of this account failed here; the rest of its frames are ignored

	// the file being received
	cur   TreePath
	f     *os.File
	dir   *os.File
	tmp   string
	h     hash.Hash
	off   uint64
	stats ResyncStats
}

// ResyncStats counts what a resync did on the receiver.
type ResyncStats struct {
	Listed, Same, Removed, MadeLocally, Wanted, Received int
}

func entryRecord(e *ManifestEntry, lsn journal.LSN) *journal.Record {
	return &journal.Record{LSN: lsn, Mode: e.Mode, UID: e.UID, GID: e.GID, MTime: e.MTime, ATime: e.MTime}
}

// listLocal lists the replica's files of account.
func (a *DirApplier) listLocal(account string) (map[TreePath]localEntry, error) {
	out := map[TreePath]localEntry{}
	add := func(tree, rel string, fi os.FileInfo) error {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		le := localEntry{size: fi.Size(), mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid, mt: st.Mtim.Nano()}
		switch {
		case fi.IsDir():
			le.typ = EntryDir
		case fi.Mode()&os.ModeSymlink != 0:
			le.typ = EntrySymlink
		case fi.Mode().IsRegular():
			le.typ = EntryFile
		default:
			return nil
		}
		out[TreePath{tree, rel}] = le
		return nil
	}
	if a.walk != nil {
		return out, a.walk(account, add)
	}
	for name, t := range a.trees {
		err := filepath.WalkDir(t.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if p == t.dir {
				return nil
			}
			rel := filepath.ToSlash(strings.TrimPrefix(p, t.dir+"/"))
			if a.check != nil && a.check(account, name, rel) != nil {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			return add(name, rel, fi)
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// beginResync starts an account's resync from the master's full listing.
// It removes what the master does not have, fixes directories, symlinks and
// attributes, makes the files it can from content held here, and returns
// the files the sender must send. A listing with a path outside the
// account (hostile or confused) quarantines the account.
//
// held is content verified on the replica during this connection, shared by
// its resyncs (a body that arrived for one account serves the next).
func (a *DirApplier) beginResync(ctx context.Context, account string, epoch uint64, from journal.LSN, list []ManifestEntry, held map[[32]byte]hashRef) (*resyncJob, []TreePath, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if held == nil {
		held = map[[32]byte]hashRef{}
	}
	j := &resyncJob{a: a, account: account, epoch: epoch, from: from, entries: map[TreePath]*ManifestEntry{},
		groups: map[uint64][]TreePath{}, wanted: map[TreePath]bool{}, local: held}
	j.b = &batch{a: a, ctx: ctx}
	j.b.init()
	j.stats.Listed = len(list)
	for i := range list {
		e := &list[i]
		if err := a.resyncPathOK(account, e.Tree, e.Path); err != nil {
			a.quarantine(account, fmt.Errorf("resync listing: %w", err))
			return nil, nil, err
		}
		k := TreePath{e.Tree, e.Path}
		if j.entries[k] != nil {
			err := fmt.Errorf("%w: resync listing names %s/%s twice", ErrFrame, e.Tree, e.Path)
			return nil, nil, err
		}
		j.entries[k] = e
		if e.Type == EntryFile && e.Link != 0 {
			j.groups[e.Link] = append(j.groups[e.Link], k)
		}
	}
	if err := a.SetState(account, StateResyncing, "full resync under way"); err != nil {
		return nil, nil, err
	}
	local, err := a.listLocal(account)
	if err != nil {
		return nil, nil, fmt.Errorf("list the replica's files of %s: %w", account, err)
	}

	// 1. Remove what the master does not have (or has as another type),
	// deepest first.
	var gone []TreePath
	for k, le := range local {
		if e := j.entries[k]; e == nil || e.Type != le.typ {
			gone = append(gone, k)
		}
	}
	sort.Slice(gone, func(i, k int) bool {
		di, dk := strings.Count(gone[i].Path, "/"), strings.Count(gone[k].Path, "/")
		if di != dk {
			return di > dk
		}
		return gone[i].Path > gone[k].Path
	})
	for _, k := range gone {
		flags := 0
		if local[k].typ == EntryDir {
			flags = unix.AT_REMOVEDIR
		}
		if err := j.b.remove(a.trees[k.Tree], k.Path, flags); err != nil {
			return nil, nil, fmt.Errorf("remove %s/%s: %w", k.Tree, k.Path, err)
		}
		delete(local, k)
		j.stats.Removed++
	}

	// 2. Directories (parents first), symlinks, then files.
	keys := make([]TreePath, 0, len(j.entries))
	for k := range j.entries {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, k int) bool {
		if keys[i].Tree != keys[k].Tree {
			return keys[i].Tree < keys[k].Tree
		}
		return keys[i].Path < keys[k].Path
	})
	var differ []TreePath
	for _, k := range keys {
		e, t := j.entries[k], a.trees[k.Tree]
		le, exists := local[k]
		switch e.Type {
		case EntryDir:
			if err := j.mkdir(t, e, exists); err != nil {
				return nil, nil, err
			}
		case EntrySymlink:
			if err := j.symlink(t, e); err != nil {
				return nil, nil, err
			}
		case EntryFile:
			if exists && le.size == e.Size {
				sum, _, ok, err := hashFile(t, e.Path)
				if err != nil {
					return nil, nil, err
				}
				if ok && sum == e.Hash {
					j.local[e.Hash] = hashRef{t.name, e.Path}
					j.stats.Same++
					if le.mode != e.Mode || le.uid != e.UID || le.gid != e.GID || le.mt != e.MTime {
						if err := j.fixAttrs(t, e); err != nil {
							return nil, nil, err
						}
					}
					continue
				}
			}
			differ = append(differ, k)
		}
	}
	// 3. Files: from content held here, else from the sender.
	var want []TreePath
	for _, k := range differ {
		e := j.entries[k]
		ok, err := j.makeLocally(e)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			j.stats.MadeLocally++
			continue
		}
		j.wanted[k] = true
		want = append(want, k)
	}
	j.stats.Wanted = len(want)
	return j, want, nil
}

// resyncPathOK is the confinement of a resync listing: a plain relative
// path in a known tree that the classifier gives to the account.
func (a *DirApplier) resyncPathOK(account, tree, rel string) error {
	if a.trees[tree] == nil {
		return fmt.Errorf("%w: unknown tree %q", ErrEscape, tree)
	}
	if err := checkRel(rel); err != nil {
		return err
	}
	if a.check != nil {
		if err := a.check(account, tree, rel); err != nil {
			return fmt.Errorf("%w: %s/%s: %w", ErrNotOwned, tree, rel, err)
		}
	}
	return nil
}

func (a *DirApplier) quarantine(account string, err error) {
	a.log.Error("hostile or confused resync: account quarantined", "account", account, "err", err)
	if e := a.SetState(account, StateQuarantine, err.Error()); e != nil {
		a.log.Error("persist quarantine", "account", account, "err", e)
	}
}

func (j *resyncJob) mkdir(t *treeRoot, e *ManifestEntry, exists bool) error {
	d, base, err := t.parent(e.Path, true)
	if err != nil {
		return err
	}
	defer d.Close()
	if !exists {
		if err := unix.Mkdirat(int(d.Fd()), base, e.Mode); err != nil && err != unix.EEXIST {
			return &os.PathError{Op: "mkdir", Path: t.name + "/" + e.Path, Err: err}
		}
		j.b.touchDir(t, e.Path)
	}
	if err := unix.Fchmodat(int(d.Fd()), base, e.Mode, 0); err != nil {
		return &os.PathError{Op: "chmod", Path: t.name + "/" + e.Path, Err: err}
	}
	return unix.Fchownat(int(d.Fd()), base, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW)
}

func (j *resyncJob) symlink(t *treeRoot, e *ManifestEntry) error {
	d, base, err := t.parent(e.Path, true)
	if err != nil {
		return err
	}
	defer d.Close()
	buf := make([]byte, 4096)
	if n, err := unix.Readlinkat(int(d.Fd()), base, buf); err == nil && string(buf[:n]) == e.Target {
		return unix.Fchownat(int(d.Fd()), base, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW)
	}
	unix.Unlinkat(int(d.Fd()), base, 0)
	if err := unix.Symlinkat(e.Target, int(d.Fd()), base); err != nil {
		return &os.PathError{Op: "symlink", Path: t.name + "/" + e.Path, Err: err}
	}
	j.b.touchDir(t, e.Path)
	return unix.Fchownat(int(d.Fd()), base, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW)
}

// fixAttrs gives an existing file the master's mode, owner and mtime.
func (j *resyncJob) fixAttrs(t *treeRoot, e *ManifestEntry) error {
	f, err := t.open(e.Path, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := setAttrs(int(f.Fd()), entryRecord(e, 0)); err != nil {
		return fmt.Errorf("attributes of %s/%s: %w", t.name, e.Path, err)
	}
	j.b.touchFile(t, e.Path)
	return nil
}

// localRef finds verified content for h on the replica: written by this
// resync, found equal by it, or in the content index (re-verified).
func (j *resyncJob) localRef(h [32]byte) (hashRef, bool) {
	if r, ok := j.b.hashes[h]; ok {
		return r, true
	}
	if r, ok := j.local[h]; ok {
		if t := j.a.trees[r.tree]; t != nil {
			if sum, _, ok, err := hashFile(t, r.rel); err == nil && ok && sum == h {
				return r, true
			}
		}
		delete(j.local, h)
	}
	if r, ok := j.a.st.lookupHash(h); ok {
		if t := j.a.trees[r.tree]; t != nil {
			if sum, _, ok, err := hashFile(t, r.rel); err == nil && ok && sum == h {
				return r, true
			}
		}
		j.a.st.dropHash(h)
	}
	return hashRef{}, false
}

// makeLocally makes e from content held on the replica, if there is any: a
// hard link when the master's file has several names and the held one has
// the same attributes, else a copy.
func (j *resyncJob) makeLocally(e *ManifestEntry) (bool, error) {
	t := j.a.trees[e.Tree]
	rec := entryRecord(e, j.from)
	if e.Size == 0 {
		return true, j.b.writeNew(t, e.Path, nil, rec, true)
	}
	ref, ok := j.localRef(e.Hash)
	if !ok {
		return false, nil
	}
	return true, j.fromRef(t, e, ref)
}

func (j *resyncJob) fromRef(t *treeRoot, e *ManifestEntry, ref hashRef) error {
	src := j.a.trees[ref.tree]
	rec := entryRecord(e, j.from)
	if ref.tree == t.name && ref.rel == e.Path {
		return nil
	}
	if e.Link != 0 && sameAttrs(src, ref.rel, rec) {
		if err := j.linkOver(src, ref.rel, t, e.Path); err == nil {
			return nil
		}
	}
	f, err := src.open(ref.rel, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return err
	}
	if sha256.Sum256(data) != e.Hash {
		return fmt.Errorf("peer: %s/%s changed while copied", ref.tree, ref.rel)
	}
	if err := j.b.writeNew(t, e.Path, data, rec, true); err != nil {
		return err
	}
	j.b.hashes[e.Hash] = hashRef{t.name, e.Path}
	j.local[e.Hash] = hashRef{t.name, e.Path}
	return nil
}

// linkOver makes drel another name of srel, replacing whatever drel was.
func (j *resyncJob) linkOver(st *treeRoot, srel string, dt *treeRoot, drel string) error {
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
	tmp := ".mreplfs.resync.link"
	unix.Unlinkat(int(dd.Fd()), tmp, 0)
	if err := unix.Linkat(int(sd.Fd()), sbase, int(dd.Fd()), tmp, 0); err != nil {
		return err
	}
	if err := unix.Renameat(int(dd.Fd()), tmp, int(dd.Fd()), dbase); err != nil {
		unix.Unlinkat(int(dd.Fd()), tmp, 0)
		return err
	}
	j.b.touchDir(dt, drel)
	return nil
}

// write takes one File chunk.
func (j *resyncJob) write(fc FileChunk) error {
	k := TreePath{fc.Tree, fc.Path}
	if !j.wanted[k] {
		return fmt.Errorf("%w: file %s/%s was not wanted", ErrFrame, fc.Tree, fc.Path)
	}
	j.a.mu.Lock()
	defer j.a.mu.Unlock()
	e, t := j.entries[k], j.a.trees[fc.Tree]
	switch {
	case fc.Gone:
		delete(j.wanted, k) // removed on the master since: a journaled unlink follows
		return nil
	case fc.ByRef:
		ref, ok := j.localRef(fc.Hash)
		if !ok {
			return fmt.Errorf("peer: by-reference content %x for %s/%s not held here", fc.Hash[:8], fc.Tree, fc.Path)
		}
		if err := j.fromRef(t, e, ref); err != nil {
			return err
		}
		delete(j.wanted, k)
		j.stats.Received++
		return nil
	}
	if fc.Offset == 0 {
		j.abortFile()
		d, _, err := t.parent(fc.Path, true)
		if err != nil {
			return err
		}
		j.tmp = ".mreplfs.resync.tmp"
		unix.Unlinkat(int(d.Fd()), j.tmp, 0)
		fd, err := unix.Openat(int(d.Fd()), j.tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			d.Close()
			return &os.PathError{Op: "create", Path: t.name + "/" + fc.Path, Err: err}
		}
		j.cur, j.dir, j.f, j.h, j.off = k, d, os.NewFile(uintptr(fd), j.tmp), sha256.New(), 0
	}
	if j.f == nil || j.cur != k || fc.Offset != j.off {
		return fmt.Errorf("%w: file chunk %s/%s at %d out of order", ErrFrame, fc.Tree, fc.Path, fc.Offset)
	}
	if _, err := j.f.Write(fc.Data); err != nil {
		return err
	}
	j.h.Write(fc.Data)
	j.off += uint64(len(fc.Data))
	if !fc.Last {
		return nil
	}
	var sum [32]byte
	copy(sum[:], j.h.Sum(nil))
	if sum != fc.Hash {
		j.abortFile()
		return fmt.Errorf("%w: content of %s/%s does not match its hash", ErrFrame, fc.Tree, fc.Path)
	}
	if err := setAttrs(int(j.f.Fd()), entryRecord(e, 0)); err != nil {
		return err
	}
	// No fsync here: finish makes the whole resync durable at once.
	if err := j.f.Close(); err != nil {
		j.f = nil
		j.abortFile()
		return err
	}
	j.f = nil
	base := fc.Path[strings.LastIndexByte(fc.Path, '/')+1:]
	if err := unix.Renameat(int(j.dir.Fd()), j.tmp, int(j.dir.Fd()), base); err != nil {
		j.abortFile()
		return &os.LinkError{Op: "rename", Old: j.tmp, New: t.name + "/" + fc.Path, Err: err}
	}
	j.dir.Close()
	j.dir = nil
	j.b.touchFile(t, fc.Path)
	j.b.touchDir(t, fc.Path)
	j.b.hashes[sum] = hashRef{t.name, fc.Path}
	j.local[sum] = hashRef{t.name, fc.Path}
	delete(j.wanted, k)
	j.stats.Received++
	return nil
}

// durable makes everything the resync changed durable: file by file for a
// few, else one syncfs per filesystem of the trees (hundreds of fsyncs of a
// seeding cost far more than one filesystem sync).
func (j *resyncJob) durable() error {
	if len(j.b.files)+len(j.b.dirs) <= 64 {
		return j.b.flush()
	}
	for _, t := range j.a.trees {
		fd, err := unix.Openat(t.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: t.dir, Err: err}
		}
		err = unix.Syncfs(fd)
		unix.Close(fd)
		if err != nil {
			return &os.PathError{Op: "syncfs", Path: t.dir, Err: err}
		}
	}
	return nil
}

// abortFile drops a file being received.
func (j *resyncJob) abortFile() {
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
	if j.dir != nil {
		unix.Unlinkat(int(j.dir.Fd()), j.tmp, 0)
		j.dir.Close()
		j.dir = nil
	}
}

// finish ends the resync: names the master holds as one file become one
// file here, everything is made durable, and the account's position becomes
// end.From with records up to end.ReplayTo in replay mode.
func (j *resyncJob) finish(end ResyncEnd) (AccountPos, map[string][]string, error) {
	j.a.mu.Lock()
	defer j.a.mu.Unlock()
	j.abortFile()
	if len(j.wanted) > 0 {
		return AccountPos{}, nil, fmt.Errorf("peer: resync of %s ended with %d wanted files not received", j.account, len(j.wanted))
	}
	if journal.LSN(end.From) != j.from {
		return AccountPos{}, nil, fmt.Errorf("%w: resync end position %d, listing said %d", ErrFrame, end.From, j.from)
	}
	for _, names := range j.groups {
		if len(names) < 2 {
			continue
		}
		first := names[0]
		ft := j.a.trees[first.Tree]
		for _, n := range names[1:] {
			nt := j.a.trees[n.Tree]
			if n.Tree == first.Tree && sameInode(ft, first.Path, n.Path) {
				continue
			}
			if err := j.linkOver(ft, first.Path, nt, n.Path); err != nil && !errors.Is(err, unix.ENOENT) {
				return AccountPos{}, nil, fmt.Errorf("link %s/%s to %s/%s: %w", n.Tree, n.Path, first.Tree, first.Path, err)
			}
		}
	}
	if err := j.durable(); err != nil {
		return AccountPos{}, nil, fmt.Errorf("make resync durable: %w", err)
	}
	if err := j.a.st.putHashes(j.b.hashes); err != nil {
		j.a.log.Warn("content index update failed", "err", err)
	}
	var pos AccountPos
	err := j.a.st.update(func(get func(string) AccountPos, put func(string, AccountPos)) {
		p := get(j.account)
		p.Applied, p.Inflight, p.Epoch = j.from, 0, j.epoch
		if end.ReplayTo > end.From {
			p.Inflight = journal.LSN(end.ReplayTo)
		}
		p.State, p.Reason, p.Since = StateOK, "", time.Now()
		put(j.account, p)
		pos = p
	})
	if err != nil {
		return AccountPos{}, nil, fmt.Errorf("persist resync position: %w", err)
	}
	j.a.log.Info("account resynced", "account", j.account, "from", j.from, "replay_to", end.ReplayTo,
		"listed", j.stats.Listed, "same", j.stats.Same, "removed", j.stats.Removed, "made_locally", j.stats.MadeLocally,
		"received", j.stats.Received)
	return pos, j.b.touched(), nil
}

// resyncFrame handles a resync message of a session (read loop; the sender
// sends them before any batch).
func (s *session) resyncFrame(ctx context.Context, t MsgType, body []byte) error {
	switch t {
	case MsgManifest:
		m, err := UnmarshalManifest(body)
		if err != nil {
			return err
		}
		epoch, ok := s.admitted[m.Account]
		if !ok || m.Epoch != epoch {
			s.send(MsgRefuse, MarshalRefuse("resync of an account not accepted in this session: "+m.Account))
			return fmt.Errorf("peer: resync of %s (epoch %d) not accepted in this session", m.Account, m.Epoch)
		}
		if s.jobs[m.Account] != nil {
			return fmt.Errorf("%w: a second listing of %s during its resync", ErrFrame, m.Account)
		}
		s.amu.Lock()
		delete(s.allowed, m.Account)
		s.amu.Unlock()
		s.lists[m.Account] = append(s.lists[m.Account], m.Entries...)
		if len(s.lists[m.Account]) > 64*maxList {
			return fmt.Errorf("peer: resync listing of %s is too long", m.Account)
		}
		if !m.Last {
			return nil
		}
		list := s.lists[m.Account]
		delete(s.lists, m.Account)
		s.log.Info("full resync: comparing", "account", m.Account, "listed", len(list), "from", m.From)
		j, want, err := s.r.Applier.beginResync(ctx, m.Account, m.Epoch, journal.LSN(m.From), list, s.held)
		if err != nil {
			if errors.Is(err, ErrFrame) {
				return fmt.Errorf("resync of %s: %w", m.Account, err)
			}
			// This account only: the others go on (a hostile listing has
			// quarantined it; anything else leaves it to resync again).
			if !errors.Is(err, ErrEscape) && !errors.Is(err, ErrNotOwned) {
				s.resyncFailed(m.Account, err)
			}
			return s.ackResync(m.Account)
		}
		s.jobs[m.Account] = j
		for i := 0; ; i += manifestChunk {
			chunk := want[i:min(i+manifestChunk, len(want))]
			last := i+manifestChunk >= len(want)
			if err := s.send(MsgWant, MarshalWant(Want{Account: m.Account, Last: last, Paths: chunk})); err != nil {
				return err
			}
			if last {
				return nil
			}
		}
	case MsgFile:
		fc, err := UnmarshalFile(body)
		if err != nil {
			return err
		}
		j := s.jobs[fc.Account]
		if j == nil {
			return fmt.Errorf("%w: file for %s outside a resync", ErrFrame, fc.Account)
		}
		if j.failed != nil {
			return nil
		}
		if err := j.write(fc); err != nil {
			if errors.Is(err, ErrFrame) {
				return fmt.Errorf("resync of %s: %w", fc.Account, err)
			}
			j.failed = err
			j.abortFile()
			s.resyncFailed(fc.Account, err)
		}
		return nil
	case MsgResyncEnd:
		end, err := UnmarshalResyncEnd(body)
		if err != nil {
			return err
		}
		j := s.jobs[end.Account]
		if j == nil {
			return fmt.Errorf("%w: resync end for %s outside a resync", ErrFrame, end.Account)
		}
		delete(s.jobs, end.Account)
		if j.failed != nil {
			return s.ackResync(end.Account)
		}
		pos, touched, err := j.finish(end)
		if err != nil {
			if errors.Is(err, ErrFrame) {
				return fmt.Errorf("resync of %s: %w", end.Account, err)
			}
			s.resyncFailed(end.Account, err)
			return s.ackResync(end.Account)
		}
		s.amu.Lock()
		s.allowed[end.Account] = j.epoch
		s.amu.Unlock()
		if s.r.OnApplied != nil && len(touched) > 0 {
			s.r.OnApplied(touched)
		}
		return s.send(MsgAck, MarshalAck(Ack{Positions: []Position{{Account: end.Account, Applied: uint64(pos.Applied), State: pos.State}}}))
	}
	return fmt.Errorf("%w: %s is not a resync message", ErrFrame, t)
}

// resyncFailed records that an account's resync failed here (it stays in
// state resyncing: the next session resyncs it again).
func (s *session) resyncFailed(account string, err error) {
	s.log.Error("full resync failed; the account waits for the next attempt", "account", account, "err", err)
	if e := s.r.Applier.SetState(account, StateResyncing, "full resync failed: "+err.Error()); e != nil {
		s.log.Error("persist resync state", "account", account, "err", e)
	}
}

// ackResync tells the sender an account's state after a resync that did
// not complete.
func (s *session) ackResync(account string) error {
	p, err := s.r.Applier.Position(account)
	if err != nil {
		return err
	}
	return s.send(MsgAck, MarshalAck(Ack{Positions: []Position{{Account: account, Applied: uint64(p.Applied), State: p.State}}}))
}

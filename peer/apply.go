package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/journal"
)

// DirApplier is the receiver's applier: it applies journal records to the
// replica's backing trees (DESIGN.md §5, STYLE.md hop 10).
//
//   - Confinement: every path is resolved beneath its tree (confine.go), and
//     CheckPath (the classifier) must agree that it belongs to the record's
//     account: shared files are never touched.
//   - Idempotence: records at or below an account's persisted Applied are
//     skipped. A batch's last LSN is persisted as Inflight before it is
//     applied; after a crash the records up to Inflight are applied in replay
//     mode, where "already done" is accepted in place of the pre-state check.
//   - Never apply to a diverged replica (invariant 5): a record whose expected
//     pre-state (PrevSize, PrevHash, a message file that must not exist yet,
//     a rename source that must exist) does not match quarantines the
//     account: no more applies for it, state persisted, alert logged. Other
//     accounts go on.
//   - Durability: a batch's files and directories are fsynced before the new
//     positions are persisted in one transaction; only then is it acked.
//   - By reference: message bodies are found by SHA-256 in the content index
//     (re-verified before use) and hard-linked, or fetched from the sender.
type DirApplier struct {
	trees    map[string]*treeRoot
	st       *stateStore
	log      *slog.Logger
	check    func(account, tree, rel string) error
	observe  func(r *journal.Record)
	linkable func(tree, rel string) bool
	walk     func(account string, fn func(tree, rel string, fi os.FileInfo) error) error

	mu sync.Mutex // one batch at a time

	rebuilding sync.WaitGroup // RebuildIndex in the background (index.go)
	closing    atomic.Bool

	crashAfter journal.LSN  // tests: ApplyBatch stops dead after applying this LSN
	fsyncs     atomic.Int64 // fsync calls of flushes (tests, benchmarks)
}

// ApplierOptions configure a DirApplier.
type ApplierOptions struct {
	Trees    map[string]string // tree name → the replica's backing directory
	StateDir string            // where state.db lives
	Logger   *slog.Logger
	// CheckPath returns nil when tree/rel belongs to account on this server
	// (or is a new, unowned mailbox directory that will be the account's).
	// Nil: no ownership check (confinement still applies).
	CheckPath func(account, tree, rel string) error
	// Observe, when set, sees every record after it was applied (e.g. to
	// feed a new cyrus.header to the classifier).
	Observe func(r *journal.Record)
	// Linkable, when set, says whether a replica file may be the source of
	// a hard link for a new message with the same content: it must belong
	// to an account that is a replica here (nil: any file of the trees).
	Linkable func(tree, rel string) bool
	// Walk, when set, lists the replica's files of an account for a full
	// resync (rel relative to the tree, fi from Lstat); it must name only
	// paths that are the account's. Nil: every tree is walked and CheckPath
	// decides.
	Walk func(account string, fn func(tree, rel string, fi os.FileInfo) error) error
}

// BlobFetcher returns the content for hash from the sender (a Need/Blob
// round trip). The applier verifies the hash of what it gets.
type BlobFetcher func(ctx context.Context, hash [32]byte) ([]byte, error)

var (
	// ErrDiverged is wrapped when the replica's state is not what the record
	// expects: the account is quarantined.
	ErrDiverged = errors.New("peer: replica diverged from master")
	// ErrQuarantined: the account is quarantined; its records are not applied.
	ErrQuarantined = errors.New("peer: account is quarantined")
	// ErrNotOwned: the path is not the record's account's (a shared file, or
	// another account's).
	ErrNotOwned = errors.New("peer: path does not belong to the account")
	// ErrStaleEpoch: the record comes from an older epoch than the account's.
	ErrStaleEpoch = errors.New("peer: record from a stale epoch")
)

// OpenDirApplier opens the trees and the state in o.StateDir.
func OpenDirApplier(o ApplierOptions) (*DirApplier, error) {
	if len(o.Trees) == 0 {
		return nil, errors.New("peer: applier needs at least one tree")
	}
	a := &DirApplier{trees: map[string]*treeRoot{}, log: o.Logger, check: o.CheckPath, observe: o.Observe, linkable: o.Linkable, walk: o.Walk}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	for name, dir := range o.Trees {
		t, err := openTree(name, dir)
		if err != nil {
			a.Close()
			return nil, err
		}
		a.trees[name] = t
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		a.Close()
		return nil, fmt.Errorf("state dir: %w", err)
	}
	st, err := openState(o.StateDir)
	if err != nil {
		a.Close()
		return nil, err
	}
	a.st = st
	a.rebuildIndexIfLost()
	return a, nil
}

// Close releases the trees and the state file.
func (a *DirApplier) Close() error {
	if a.closing.Swap(true) {
		return nil // closed already: never close the tree fds twice
	}
	a.rebuilding.Wait()
	for _, t := range a.trees {
		t.close()
	}
	if a.st != nil {
		return a.st.close()
	}
	return nil
}

// Position returns an account's persisted position and state.
func (a *DirApplier) Position(account string) (AccountPos, error) { return a.st.get(account) }

// Positions returns every account's persisted position.
func (a *DirApplier) Positions() (map[string]AccountPos, error) { return a.st.all() }

// SetState changes an account's state by hand (e.g. an admin releases a
// quarantine after resolving it, or a full resync completes).
func (a *DirApplier) SetState(account string, s AccountState, reason string) error {
	return a.st.update(func(get func(string) AccountPos, put func(string, AccountPos)) {
		p := get(account)
		p.State, p.Reason, p.Since = s, reason, time.Now()
		put(account, p)
	})
}

// BatchResult says what a batch did per account.
type BatchResult struct {
	// Positions holds the persisted position of every account the batch named.
	Positions map[string]AccountPos
	// Errors holds, per account that stopped short of its last record in the
	// batch, why: ErrQuarantined/ErrDiverged (quarantined), or a transient
	// error (I/O, missing body) after which the sender resends from Applied+1.
	Errors map[string]error
	// Touched lists, per tree, the paths the batch changed (files, and the
	// directories whose entries changed): what a mount must forget.
	Touched map[string][]string
}

// batch is the work state of one ApplyBatch call.
type batch struct {
	a      *DirApplier
	ctx    context.Context
	fetch  BlobFetcher
	files  map[[2]string]bool // touched and not fsynced yet
	dirs   map[[2]string]bool
	hashes map[[32]byte]hashRef
	// flushedFiles and flushedDirs: touched and already fsynced (by a
	// checkpoint's flush), kept for touched().
	flushedFiles, flushedDirs map[[2]string]bool
}

// ApplyBatch applies recs (in journal order) and makes them durable. Records
// of one account apply in order; an account that fails stops there while
// the others go on. It returns an error only when nothing could be persisted.
func (a *DirApplier) ApplyBatch(ctx context.Context, recs []journal.Record, fetch BlobFetcher) (BatchResult, error) {
	return a.ApplyBatchDurable(ctx, recs, fetch, nil)
}

// ApplyBatchDurable is ApplyBatch that also calls durable, if not nil, as
// soon as the batch's applies are fsynced and before its positions are
// committed, with the last LSN applied per account (protocol version 2's
// Durable: what sync mode waits for). The replay window persisted before
// the batch covers those records, so a crash after this point loses none.
func (a *DirApplier) ApplyBatchDurable(ctx context.Context, recs []journal.Record, fetch BlobFetcher, durable func(map[string]journal.LSN)) (BatchResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	res := BatchResult{Positions: map[string]AccountPos{}, Errors: map[string]error{}}

	// 1. Remember what was in flight before (a crash), and mark this batch.
	last := map[string]journal.LSN{}
	for i := range recs {
		if recs[i].Account != "" && recs[i].LSN > last[recs[i].Account] {
			last[recs[i].Account] = recs[i].LSN
		}
	}
	before := map[string]AccountPos{}
	err := a.st.update(func(get func(string) AccountPos, put func(string, AccountPos)) {
		for acct, l := range last {
			p := get(acct)
			before[acct] = p
			if p.State == StateOK && l > p.Applied && l > p.Inflight {
				p.Inflight = l
				put(acct, p)
			}
		}
	})
	if err != nil {
		return res, fmt.Errorf("persist batch start: %w", err)
	}

	// 2. Apply, then make it all durable with one round of fsyncs.
	b := &batch{a: a, ctx: ctx, fetch: fetch}
	b.init()
	uses := &pathUses{} // indexed at the first rename that asks
	// Coalesced outputs of one run share an LSN (a group): an LSN counts as
	// applied only once its whole group is, so done holds the last complete
	// group and cur the group under way.
	applied := map[string]journal.LSN{}
	done := map[string]journal.LSN{}
	cur := map[string]journal.LSN{}
	failed := map[string]journal.LSN{}
	epochs := map[string]uint64{}
	newState := map[string]AccountState{}
	stopped := map[string]bool{}
	for i := range recs {
		r := &recs[i]
		if r.Account == "" {
			continue // control records without an account carry nothing to apply
		}
		p := before[r.Account]
		if stopped[r.Account] || r.LSN <= p.Applied {
			continue
		}
		if p.State == StateQuarantine {
			res.Errors[r.Account] = fmt.Errorf("%w: %s", ErrQuarantined, p.Reason)
			stopped[r.Account] = true
			continue
		}
		if p.State == StateResync || p.State == StateResyncing {
			res.Errors[r.Account] = fmt.Errorf("peer: account %s needs a full resync: %s", r.Account, p.Reason)
			stopped[r.Account] = true
			continue
		}
		ep := p.Epoch
		if e, ok := epochs[r.Account]; ok {
			ep = e
		}
		if r.Epoch < ep {
			res.Errors[r.Account] = fmt.Errorf("%w: record %d has epoch %d, account is at %d", ErrStaleEpoch, r.LSN, r.Epoch, ep)
			stopped[r.Account] = true
			continue
		}
		if c, ok := cur[r.Account]; ok && r.LSN != c {
			done[r.Account] = c
		}
		// A rename is not idempotent under replay (rename A→B, C→A replayed
		// moves C's file to B): checkpoint just before and just after it, so
		// a crash leaves at most this one rename in doubt, where "source
		// gone" means done. The checkpoint after it is needed only when a
		// later record of the batch names A again (or a path above or
		// under it), or for an exchange: otherwise replaying the rename
		// finds A gone, or still the file it moves. Replays are
		// checkpointed too: a replay batch may carry a backlog that names
		// A again, and a second crash must not find the rename in doubt.
		checkpointed := r.Op == journal.OpRename && cur[r.Account] != r.LSN
		if checkpointed {
			if err := a.checkpoint(b, r.Account, applied[r.Account]); err != nil {
				return res, err
			}
		}
		err := b.apply(r, r.LSN <= p.Inflight, bState(newState, r.Account))
		if err != nil {
			stopped[r.Account] = true
			failed[r.Account] = r.LSN
			if cur[r.Account] == r.LSN { // its group is half applied: not applied
				if d, ok := done[r.Account]; ok {
					applied[r.Account] = d
				} else {
					delete(applied, r.Account)
				}
			}
			res.Errors[r.Account] = fmt.Errorf("record %d (%s %s/%s): %w", r.LSN, opName(r.Op), r.Tree, r.Path, err)
			if errors.Is(err, ErrDiverged) || errors.Is(err, ErrEscape) || errors.Is(err, ErrNotOwned) {
				newState[r.Account] = StateQuarantine
				a.log.Error("replica diverged or hostile record: account quarantined", "account", r.Account, "lsn", r.LSN, "op", opName(r.Op), "path", r.Tree+"/"+r.Path, "err", err)
			} else {
				a.log.Warn("apply failed; will retry", "account", r.Account, "lsn", r.LSN, "err", err)
			}
			continue
		}
		applied[r.Account] = r.LSN
		cur[r.Account] = r.LSN
		epochs[r.Account] = max(ep, r.Epoch)
		if checkpointed && (i+1 == len(recs) || recs[i+1].LSN != r.LSN) &&
			(r.Flags&unix.RENAME_EXCHANGE != 0 || uses.namedAfter(recs, i, r.Tree, r.Path)) {
			if err := a.checkpoint(b, r.Account, r.LSN); err != nil {
				return res, err
			}
		}
		if a.crashAfter != 0 && r.LSN == a.crashAfter {
			return res, errSimulatedCrash // tests: die here, persisting nothing more
		}
		if a.observe != nil {
			a.observe(r)
		}
	}
	if err := b.flush(); err != nil {
		// Nothing is persisted: the batch stays in flight and is replayed.
		return res, fmt.Errorf("make batch durable: %w", err)
	}
	if durable != nil && len(applied) > 0 {
		durable(applied)
	}
	res.Touched = b.touched()

	// 3. Persist positions (the files are already fsynced by flush), and
	// the content index entries of the batch in the same commit.
	err = a.st.updateWithHashes(b.hashes, func(get func(string) AccountPos, put func(string, AccountPos)) {
		accts := make([]string, 0, len(last))
		for acct := range last {
			accts = append(accts, acct)
		}
		sort.Strings(accts)
		for _, acct := range accts {
			p := get(acct)
			if l, ok := applied[acct]; ok && l > p.Applied {
				p.Applied = l
				p.Epoch = epochs[acct]
			}
			if f, ok := failed[acct]; ok {
				// Stopped: only the failing record's group can be half
				// applied; what follows was never applied and is checked
				// normally when it comes again. A window from before this
				// batch (a crash, a full resync's copy) still holds.
				p.Inflight = max(f, before[acct].Inflight)
			}
			if p.Inflight <= p.Applied {
				p.Inflight = 0
			}
			if s, ok := newState[acct]; ok && s != p.State {
				p.State, p.Since = s, time.Now()
				if e := res.Errors[acct]; e != nil {
					p.Reason = e.Error()
				}
			}
			put(acct, p)
			res.Positions[acct] = p
		}
	})
	if err != nil {
		return res, fmt.Errorf("persist positions: %w", err)
	}
	return res, nil
}

// checkpoint makes everything the batch did so far durable and records
// account as applied up to lsn (its replay window stays as marked).
func (a *DirApplier) checkpoint(b *batch, account string, lsn journal.LSN) error {
	if err := b.flush(); err != nil {
		return fmt.Errorf("checkpoint before a rename: %w", err)
	}
	err := a.st.update(func(get func(string) AccountPos, put func(string, AccountPos)) {
		p := get(account)
		if lsn > p.Applied {
			p.Applied = lsn
			put(account, p)
		}
	})
	if err != nil {
		return fmt.Errorf("checkpoint before a rename: %w", err)
	}
	return nil
}

// pathUses indexes which paths a batch's records name: for each (tree,
// path), the last record naming exactly it (exact) and the last naming it
// or anything under it (under).
type pathUses struct{ exact, under map[[2]string]int }

func indexPaths(recs []journal.Record) *pathUses {
	u := &pathUses{exact: map[[2]string]int{}, under: map[[2]string]int{}}
	for i := range recs {
		r := &recs[i]
		for _, p := range [2]string{r.Path, r.NewPath} {
			if p == "" {
				continue
			}
			u.exact[[2]string{r.Tree, p}] = i
			for q := p; ; {
				u.under[[2]string{r.Tree, q}] = i
				j := strings.LastIndexByte(q, '/')
				if j < 0 {
					break
				}
				q = q[:j]
			}
		}
	}
	return u
}

// namedAfter reports whether a record of recs after index i names p, a
// path under it, or one of its parent directories (in tree). *u is the
// index of recs, built on the first call.
func (u *pathUses) namedAfter(recs []journal.Record, i int, tree, p string) bool {
	if u.exact == nil {
		*u = *indexPaths(recs)
	}
	if j, ok := u.under[[2]string{tree, p}]; ok && j > i {
		return true
	}
	for q := p; ; {
		k := strings.LastIndexByte(q, '/')
		if k < 0 {
			return false
		}
		q = q[:k]
		if j, ok := u.exact[[2]string{tree, q}]; ok && j > i {
			return true
		}
	}
}

// errSimulatedCrash is returned when the crashAfter test hook fires.
var errSimulatedCrash = errors.New("peer: simulated crash (test hook)")

// bState lets an applied record change its account's state (OpDirty).
func bState(m map[string]AccountState, acct string) func(AccountState) {
	return func(s AccountState) { m[acct] = s }
}

func (b *batch) init() {
	b.files = map[[2]string]bool{}
	b.dirs = map[[2]string]bool{}
	b.flushedFiles = map[[2]string]bool{}
	b.flushedDirs = map[[2]string]bool{}
	b.hashes = map[[32]byte]hashRef{}
}

// touched lists the changed paths per tree: files, and for directory
// changes the changed entry itself (its parent's listing changed too).
func (b *batch) touched() map[string][]string {
	out := map[string][]string{}
	seen := map[[2]string]bool{}
	for _, m := range []map[[2]string]bool{b.files, b.dirs, b.flushedFiles, b.flushedDirs} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				out[k[0]] = append(out[k[0]], k[1])
			}
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

func opName(op journal.Op) string {
	names := map[journal.Op]string{
		journal.OpMessage: "message", journal.OpWrite: "write", journal.OpTruncate: "truncate",
		journal.OpReplace: "replace", journal.OpMkdir: "mkdir", journal.OpRmdir: "rmdir",
		journal.OpUnlink: "unlink", journal.OpRename: "rename", journal.OpLink: "link",
		journal.OpSymlink: "symlink", journal.OpSetattr: "setattr", journal.OpCreate: "create",
		journal.OpEpoch: "epoch", journal.OpBarrier: "barrier", journal.OpCheckpoint: "checkpoint",
		journal.OpDirty: "dirty",
	}
	if n, ok := names[op]; ok {
		return n
	}
	return fmt.Sprintf("op(%d)", op)
}

package fs

import (
	"context"
	"path"
	"syscall"
	"time"

	"mreplfs/rolemap"
)

// target is the guard's verdict for one path: where it is, whom it belongs
// to, and whether its mutations are journaled.
type target struct {
	tree    string
	rel     string // relative to the tree root, '/'-separated, "" for the root
	class   Class
	account string // the record's Account ("" for non-account paths)
	epoch   uint64
	journal bool // master or pending: mutations become records
	// gate: the account's activity gate this mutation entered (freeze.go);
	// done leaves it once the record is appended.
	gate *gate
}

// classPath is the classifier's path for rel in tree t.
func classPath(tree, rel string) string {
	if rel == "" {
		return tree
	}
	return tree + "/" + rel
}

// guard classifies tree/rel for the mutating operation op and applies the
// role guard (DESIGN.md invariant 2): master → journaled, local and
// non-account → passed through, pending → journaled under
// PendingAccount, replica/unknown/unresolved → EROFS (logged once per
// account per RefusalLogInterval). When it allows the operation the caller
// must call tg.done() once the operation and its record are done
// (freeze.go); a refusal needs no done.
//
// A journaled account is first made active in the journal's durable
// activity log (journal.Log.Activate: at once while it is active, one
// commit after a quiet period), so that a crash between the change of the
// backing store and its record being durable lists the account for
// verification after restart.
func (f *FS) guard(ctx context.Context, op, tree, rel string) (target, syscall.Errno) {
	tg, e := f.classifyGuard(op, tree, rel)
	if e != 0 || !tg.journal || tg.class.Kind != KindAccount {
		return tg, e
	}
	if a, ok := f.journal.(activator); ok {
		if err := a.Activate(ctx, tg.account); err != nil {
			tg.done()
			f.log.Error("journal activity log failed", "account", tg.account, "op", op, "path", path.Join(tree, rel), "err", err)
			return tg, errnoOf(ctx, err)
		}
	}
	return tg, 0
}

// activator is the journal's activity log (journal.Log).
type activator interface {
	Activate(ctx context.Context, account string) error
}

// classifyGuard is guard without the activity log.
func (f *FS) classifyGuard(op, tree, rel string) (target, syscall.Errno) {
	c := f.classify.Classify(classPath(tree, rel))
	tg := target{tree: tree, rel: rel, class: c}
	switch c.Kind {
	case KindNone:
		return tg, 0
	case KindPending:
		tg.account = PendingAccount(c.MailboxID)
		tg.journal = true
		return tg, 0
	case KindAccount:
		// Wait out a freeze first, then look the role up: a mutation
		// held across a flip meets the new role.
		g := f.gateOf(c.Account)
		g.enter()
		e, ok := f.roles.Lookup(c.Account)
		role := rolemap.Unknown
		if ok {
			role = e.Role
		}
		switch role {
		case rolemap.Master:
			tg.account, tg.epoch, tg.journal, tg.gate = c.Account, e.Epoch, true, g
			return tg, 0
		case rolemap.Local:
			tg.account, tg.gate = c.Account, g
			return tg, 0
		}
		g.leave()
		f.refuse(op, tree, rel, c.Account, role.String())
		return tg, syscall.EROFS
	default:
		f.refuse(op, tree, rel, "", "unresolved")
		return tg, syscall.EROFS
	}
}

// guard2 guards an operation that touches two paths (rename, link): both
// must be allowed. On success the caller must call done on both.
func (f *FS) guard2(ctx context.Context, op, tree, rel1, rel2 string) (target, target, syscall.Errno) {
	t1, e := f.guard(ctx, op, tree, rel1)
	if e != 0 {
		return t1, target{}, e
	}
	t2, e := f.guard(ctx, op, tree, rel2)
	if e != 0 {
		t1.done()
	}
	return t1, t2, e
}

// refuse logs a refused mutation, at most once per account per interval.
func (f *FS) refuse(op, tree, rel, account, why string) {
	key := account
	if key == "" {
		key = "?" + why
	}
	now := time.Now()
	f.refusedMu.Lock()
	last, seen := f.refused[key]
	logIt := !seen || now.Sub(last) >= f.opts.RefusalLogInterval
	if logIt {
		f.refused[key] = now
	}
	f.refusedMu.Unlock()
	if logIt {
		f.log.Warn("refused write (EROFS)", "account", account, "role", why, "op", op,
			"path", path.Join(tree, rel))
	}
}

// isWriteOpen reports whether open flags ask for write access: such opens
// are guarded at open time, as a read-only mount would.
func isWriteOpen(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&(syscall.O_CREAT|syscall.O_TRUNC) != 0
}

package main

import (
	"context"
	"errors"
	iofs "io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"mreplfs/fs"
	"mreplfs/journal"
	"mreplfs/rolemap"
	"mreplfs/rolemap/classify"
	"mreplfs/rolemap/cyruscat"
)

// The peer keeps this server's Cyrus catalogue in step with replication
// (DESIGN.md §4, rolemap/cyruscat), when the peer config names Cyrus's
// imapd.conf (cyrus_conf):
//
//   - replica side: after the receiver applied a batch that created,
//     removed or renamed one of an account's cyrus.header files, the account
//     is registered in this server's mailboxes.db (debounced per account:
//     register_delay after its last such batch); after it applied an
//     account's annotations sidecar, the sidecar is applied to
//     annotations.db. At start every replica account is registered once.
//   - master side: annotations.db is checked every annotations_poll; when
//     it changed, every master account's annotations are exported to its
//     sidecar, written through the mount (so journaled and replicated) when
//     different.
type catalogueKeeper struct {
	cat   *cyruscat.Catalogue
	roles interface {
		Lookup(string) (rolemap.Entry, bool)
	}
	rolesMap string // the role map file (to list replica accounts)
	delay    time.Duration
	poll     time.Duration
	log      *slog.Logger
	uid, gid int

	mu    sync.Mutex
	reg   map[string]bool // accounts to register
	ann   map[string]bool // accounts whose sidecar to apply
	all   bool            // every replica account, both
	kick  chan struct{}
	stats catalogueStats
}

// catalogueStats are counters for status.json.
type catalogueStats struct {
	Registered      int64  `json:"registrations"`
	RegisterErrors  int64  `json:"registration_errors"`
	SidecarsApplied int64  `json:"sidecars_applied"`
	SidecarsWritten int64  `json:"sidecars_written"`
	LastError       string `json:"last_error,omitempty"`
}

func newCatalogueKeeper(cfg *peerConfig, roles interface {
	Lookup(string) (rolemap.Entry, bool)
}, log *slog.Logger) (*catalogueKeeper, error) {
	cat, err := cyruscat.New(cyruscat.Options{Conf: cfg.cyrusConf, BinDir: cfg.cyrusBin, User: cfg.cyrusUser, Logger: log})
	if err != nil {
		return nil, err
	}
	k := &catalogueKeeper{cat: cat, roles: roles, rolesMap: cfg.roles, delay: cfg.registerDelay, poll: cfg.annotationsPoll,
		log: log.With("part", "catalogue"), reg: map[string]bool{}, ann: map[string]bool{}, all: true,
		kick: make(chan struct{}, 1)}
	k.uid, k.gid = cat.UserIDs()
	return k, nil
}

// observe notes the accounts whose headers or sidecar a record touched.
func (k *catalogueKeeper) observe(r *journal.Record) {
	for _, p := range []string{r.Path, r.NewPath} {
		hdr := path.Base(p) == "cyrus.header"
		side := strings.HasSuffix(strings.TrimSuffix(p, ".NEW"), cyruscat.SidecarSuffix)
		if !hdr && !side {
			continue
		}
		k.mu.Lock()
		switch {
		case r.Account == "":
			k.all = true
		case hdr:
			k.reg[r.Account] = true
		default:
			k.ann[r.Account] = true
		}
		k.mu.Unlock()
	}
}

// applied is called after each applied batch or resync step. A resync
// reports no records, so the accounts of the headers and sidecars among its
// paths are found by resolve (tree, rel → account, "" when unknown: then
// every replica account is looked at).
func (k *catalogueKeeper) applied(touched map[string][]string, resolve func(tree, rel string) string) {
	for tree, paths := range touched {
		for _, p := range paths {
			hdr := path.Base(p) == "cyrus.header"
			side := strings.HasSuffix(p, cyruscat.SidecarSuffix)
			if !hdr && !side {
				continue
			}
			a := resolve(tree, p)
			k.mu.Lock()
			switch {
			case a == "":
				k.all = true
			case hdr:
				k.reg[a] = true
			default:
				k.ann[a] = true
			}
			k.mu.Unlock()
		}
	}
	k.mu.Lock()
	pending := k.all || len(k.reg) > 0 || len(k.ann) > 0
	k.mu.Unlock()
	if pending {
		select {
		case k.kick <- struct{}{}:
		default:
		}
	}
}

// resolver returns the account of an applied path: the classifier's
// answer, or for a header of a mailbox it does not know yet, the owner the
// header names.
func resolver(c fs.Classifier, trees map[string]string) func(tree, rel string) string {
	return func(tree, rel string) string {
		cl := c.Classify(tree + "/" + rel)
		if cl.Kind == fs.KindAccount {
			return cl.Account
		}
		if path.Base(rel) != "cyrus.header" {
			return ""
		}
		b, err := os.ReadFile(filepath.Join(trees[tree], rel))
		if err != nil {
			return ""
		}
		h, err := classify.ParseHeader(b)
		if err != nil {
			return ""
		}
		a, _ := classify.AccountFromMailboxName(h.Name)
		return a
	}
}

// run registers and applies what was noted, debounced, until ctx ends.
func (k *catalogueKeeper) run(ctx context.Context) {
	k.applied(nil, nil) // the start-up pass (all)
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.kick:
		}
		// debounce: wait until no batch noted anything for delay
		for quiet := false; !quiet; {
			select {
			case <-ctx.Done():
				return
			case <-k.kick:
			case <-time.After(k.delay):
				quiet = true
			}
		}
		k.mu.Lock()
		reg, ann, all := k.reg, k.ann, k.all
		k.reg, k.ann, k.all = map[string]bool{}, map[string]bool{}, false
		k.mu.Unlock()
		if all {
			for _, a := range k.replicaAccounts() {
				reg[a], ann[a] = true, true
			}
		}
		failed := false
		for _, a := range sortedSet(reg) {
			if !k.isReplica(a) {
				continue
			}
			r, err := k.cat.Register(ctx, a)
			if err != nil {
				failed = true
				k.note(func(s *catalogueStats) { s.RegisterErrors++; s.LastError = err.Error() })
				k.log.Warn("replica account not registered in Cyrus's mailboxes.db; retrying", "account", a, "err", err)
				k.mu.Lock()
				k.reg[a] = true
				k.mu.Unlock()
				continue
			}
			k.note(func(s *catalogueStats) { s.Registered++ })
			k.log.Info("replica account registered", "account", a, "mailboxes", r.Registered,
				"reconstruct", r.Reconstruct, "written", r.Written, "removed", r.Removed)
		}
		for _, a := range sortedSet(ann) {
			if !k.isReplica(a) {
				continue
			}
			s, err := cyruscat.ReadSidecar(cyruscat.SidecarPath(k.cat.Imapd().ConfigDir, a))
			if errors.Is(err, iofs.ErrNotExist) {
				continue
			}
			if err == nil && s.Account != a {
				err = errors.New("the sidecar names account " + s.Account)
			}
			var res cyruscat.Applied
			if err == nil {
				res, err = k.cat.Apply(ctx, s)
			}
			if err != nil {
				failed = true
				k.note(func(st *catalogueStats) { st.LastError = err.Error() })
				k.log.Warn("annotations sidecar not applied; retrying", "account", a, "err", err)
				k.mu.Lock()
				k.ann[a] = true
				k.mu.Unlock()
				continue
			}
			k.note(func(st *catalogueStats) { st.SidecarsApplied++ })
			if res.Set+res.Deleted > 0 {
				k.log.Info("annotations sidecar applied", "account", a, "set", res.Set, "deleted", res.Deleted)
			}
		}
		if failed {
			time.AfterFunc(2*time.Second, func() { k.applied(nil, nil) })
		}
	}
}

// export runs the master side: annotations.db watched, sidecars written.
func (k *catalogueKeeper) export(ctx context.Context) {
	if k.poll <= 0 {
		return
	}
	db := filepath.Join(k.cat.Imapd().ConfigDir, "annotations.db")
	var last fileStamp
	t := time.NewTicker(k.poll)
	defer t.Stop()
	for {
		if st, ok := stampOf(db); ok && st != last {
			if err := k.exportOnce(ctx); err != nil {
				k.log.Warn("annotations export failed", "err", err)
				k.note(func(s *catalogueStats) { s.LastError = err.Error() })
			} else {
				last = st
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (k *catalogueKeeper) exportOnce(ctx context.Context) error {
	sc, err := k.cat.Export(ctx, func(a string) bool {
		e, ok := k.roles.Lookup(a)
		return ok && e.Role == rolemap.Master
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range sortedKeysOf(sc) {
		wrote, err := k.cat.WriteSidecar(sc[a], k.uid, k.gid)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if wrote {
			k.note(func(s *catalogueStats) { s.SidecarsWritten++ })
			k.log.Info("annotations sidecar written", "account", a, "annotations", len(sc[a].Annotations))
		}
	}
	return errors.Join(errs...)
}

type fileStamp struct {
	ino, size int64
	mtime     int64
}

func stampOf(p string) (fileStamp, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return fileStamp{}, false
	}
	return fileStamp{int64(st.Ino), st.Size, st.Mtim.Nano()}, true
}

func (k *catalogueKeeper) isReplica(a string) bool {
	e, ok := k.roles.Lookup(a)
	return ok && e.Role == rolemap.Replica
}

// replicaAccounts lists the accounts the role map makes replicas here.
func (k *catalogueKeeper) replicaAccounts() []string {
	m, err := rolemap.Open(k.rolesMap)
	if err != nil {
		k.log.Warn("role map unreadable", "err", err)
		return nil
	}
	defer m.Close()
	var out []string
	for r, err := range m.All() {
		if err != nil {
			break
		}
		if r.Entry.Role == rolemap.Replica {
			out = append(out, r.Account)
		}
	}
	return out
}

func (k *catalogueKeeper) note(f func(*catalogueStats)) {
	k.mu.Lock()
	f(&k.stats)
	k.mu.Unlock()
}

func (k *catalogueKeeper) snapshot() *catalogueStats {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.stats
	return &s
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

func sortedKeysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

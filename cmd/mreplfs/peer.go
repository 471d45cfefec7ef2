package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"mreplfs/fs"
	"mreplfs/journal"
	"mreplfs/peer"
	"mreplfs/rolemap"
)

const peerSynopsis = `-config FILE [flags]

Run the replication peer of this server: a sender per partner server for the
accounts mastered here (tailing the local mount's journal), and a receiver for
the accounts replicated here (applying the partners' records to the backing
trees and telling the local mount to forget what changed). It is a process of
its own: killing or restarting it never disturbs the mount or Cyrus.

Settings come from the config file (Cyrus imapd.conf style: "key: value",
'#' comments; tree and partner may repeat), then flags.

An account the partner never received (an existing spool mounted for the
first time, a new replica), whose journal detail was lost (the journal's
size limit), or whose replica lost its state is resynced in full by the
running daemon, while it stays live. -resync ACCOUNT does it on demand (e.g.
after an admin resolved a quarantine): stop this node's peer daemon first;
it shows progress on stderr and exits when the account is in sync.`

// peerSettings lists every key of a peer config with its default.
var peerSettings = []mountSetting{
	{"node", "", "this server's node id (its certificate's common name)"},
	{"listen", "", "address the receiver listens on (host:port); empty: no receiver"},
	{"partner", "", "NODE=HOST:PORT of a partner server (repeat); its address is what the role map names"},
	{"roles", "", "the CDB role map (reloaded when it changes)"},
	{"journal", "", "the local mount's journal directory (what the senders ship); 'none': no sender"},
	{"state", "", "directory for the receiver's state (positions, content index, status.json)"},
	{"tree", "", "NAME=BACKING[:MOUNTPOINT] of a tree the receiver applies to (repeat; names as the mount's)"},
	{"control", "", "the local mount's control socket, told to forget applied paths and what the partners applied (sync mode) (default JOURNAL/control.sock; 'none')"},
	{"tls_cert", "", "this node's certificate (PEM)"},
	{"tls_key", "", "this node's key (PEM)"},
	{"tls_ca", "", "the CA that signs every node's certificate (PEM)"},
	{"window", "8192", "records sent and not yet acknowledged, at most, per partner"},
	{"rolemap_poll", "1s", "how often the role map file is checked for a change"},
	{"cyrus_conf", "", "this server's Cyrus imapd.conf: keep replica accounts registered in its mailboxes.db and carry annotations (empty: off)"},
	{"cyrus_bin", "/usr/lib/cyrus/bin", "where the Cyrus tools (reconstruct, cyr_dbtool) are"},
	{"cyrus_user", "", "the user the Cyrus tools run as (default: imapd.conf's cyrus_user, else cyrus)"},
	{"register_delay", "300ms", "a replica account is registered this long after the last batch that changed one of its cyrus.header files"},
	{"annotations_poll", "1s", "how often annotations.db is checked for changes to export to the master accounts' sidecars (0: never)"},
}

type peerConfig struct {
	node, listen, roles, journal, state, control string
	partners                                     map[string]string // node → addr
	trees                                        []treeSpec
	tls                                          peer.TLSFiles
	window                                       int
	rolemapPoll                                  time.Duration
	cyrusConf, cyrusBin, cyrusUser               string
	registerDelay, annotationsPoll               time.Duration
}

// readKeyValues parses a Cyrus-style config file ("key: value" lines, '#'
// comments; a key may repeat), accepting only the keys of settings.
func readKeyValues(p string, settings []mountSetting, cmd string) (map[string][]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	known := map[string]bool{}
	for _, s := range settings {
		known[s.key] = true
	}
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want 'key: value'", p, n)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !known[k] {
			return nil, fmt.Errorf("%s:%d: unknown setting %q (mreplfs %s -h lists them)", p, n, k, cmd)
		}
		out[k] = append(out[k], v)
	}
	return out, sc.Err()
}

// loadPeerConfig reads and checks a peer config file (the peer, promote,
// demote and failover commands).
func loadPeerConfig(path string) (*peerConfig, error) {
	vals, err := readKeyValues(path, peerSettings, "peer")
	if err != nil {
		return nil, withCode(ExitFailure, err)
	}
	return buildPeerConfig(vals)
}

func buildPeerConfig(vals map[string][]string) (*peerConfig, error) {
	get := func(k string) string {
		if v := vals[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		for _, s := range peerSettings {
			if s.key == k {
				return s.def
			}
		}
		return ""
	}
	c := &peerConfig{node: get("node"), listen: get("listen"), roles: get("roles"), journal: get("journal"),
		state: get("state"), control: get("control"), partners: map[string]string{},
		tls: peer.TLSFiles{Cert: get("tls_cert"), Key: get("tls_key"), CA: get("tls_ca")}}
	var errs []string
	need := func(k string) {
		if get(k) == "" {
			errs = append(errs, k+" is required")
		}
	}
	for _, k := range []string{"node", "roles", "state", "tls_cert", "tls_key", "tls_ca"} {
		need(k)
	}
	for _, p := range vals["partner"] {
		n, a, ok := strings.Cut(p, "=")
		if !ok || n == "" || a == "" {
			errs = append(errs, fmt.Sprintf("partner %q: want NODE=HOST:PORT", p))
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Sprintf("partner %q: %v", p, err))
		}
		c.partners[n] = a
	}
	for _, t := range vals["tree"] {
		name, rest, ok := strings.Cut(t, "=")
		backing, _, _ := strings.Cut(rest, ":")
		if !ok || name == "" || backing == "" {
			errs = append(errs, fmt.Sprintf("tree %q: want NAME=BACKING[:MOUNTPOINT]", t))
			continue
		}
		c.trees = append(c.trees, treeSpec{name: name, backing: backing})
	}
	if c.listen != "" && len(c.trees) == 0 {
		errs = append(errs, "a receiver (listen) needs at least one tree")
	}
	if c.journal == "" {
		errs = append(errs, "journal is required ('none' for a receive-only peer)")
	}
	if c.control == "" && c.journal != "none" {
		c.control = filepath.Join(c.journal, "control.sock")
	}
	if _, err := fmt.Sscan(get("window"), &c.window); err != nil || c.window <= 0 {
		errs = append(errs, "window: want a positive number")
	}
	d, err := time.ParseDuration(get("rolemap_poll"))
	if err != nil {
		errs = append(errs, "rolemap_poll: "+err.Error())
	}
	c.rolemapPoll = d
	c.cyrusConf, c.cyrusBin, c.cyrusUser = get("cyrus_conf"), get("cyrus_bin"), get("cyrus_user")
	for _, x := range []struct {
		key string
		to  *time.Duration
	}{{"register_delay", &c.registerDelay}, {"annotations_poll", &c.annotationsPoll}} {
		if *x.to, err = time.ParseDuration(get(x.key)); err != nil {
			errs = append(errs, x.key+": "+err.Error())
		}
	}
	if len(errs) > 0 {
		return nil, usagef("%s", strings.Join(errs, "; "))
	}
	return c, nil
}

func runPeer(ctx context.Context, e *env, args []string) error {
	fset := newFlagSet(e, "peer", peerSynopsis)
	cfgPath := fset.String("config", "", "config file (required)")
	resync := fset.String("resync", "", "resync `ACCOUNT` (mastered here) in full to its partner, then exit (the peer daemon must be stopped)")
	fset.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: mreplfs peer %s\n\nFlags:\n", peerSynopsis)
		fset.PrintDefaults()
		fmt.Fprintf(e.stderr, "\nConfig settings (default in brackets):\n")
		for _, s := range peerSettings {
			fmt.Fprintf(e.stderr, "  %-13s %s [%s]\n", s.key+":", s.help, s.def)
		}
	}
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *cfgPath == "" || fset.NArg() != 0 {
		return usagef("need -config FILE and no arguments")
	}
	cfg, err := loadPeerConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *resync != "" {
		return resyncNow(ctx, e, cfg, *resync)
	}
	return servePeer(ctx, e, cfg)
}

// openJournalFollower opens the local mount's journal for reading from this
// process (the mount writes it).
func openJournalFollower(dir string, log *slog.Logger) (peer.Journal, func() error, error) {
	f, err := journal.OpenFollower(dir, journal.FollowerOptions{Logger: log})
	if err != nil {
		return nil, nil, err
	}
	return f, f.Close, nil
}

func servePeer(ctx context.Context, e *env, cfg *peerConfig) error {
	log := e.log.With("node", cfg.node)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	live, err := rolemap.NewLive(cfg.roles, rolemap.LiveOptions{Logger: log, Poll: cfg.rolemapPoll})
	if err != nil {
		return fmt.Errorf("role map: %w", err)
	}
	defer live.Close()
	wg.Add(1)
	go func() { defer wg.Done(); live.Run(ctx) }()
	if err := os.MkdirAll(cfg.state, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}

	st := &peerStatus{Node: cfg.node, Started: time.Now()}
	var keeper *catalogueKeeper
	if cfg.cyrusConf != "" {
		if keeper, err = newCatalogueKeeper(cfg, live, log); err != nil {
			return fmt.Errorf("cyrus catalogue: %w", err)
		}
		st.keeper = keeper
		wg.Add(2)
		go func() { defer wg.Done(); keeper.run(ctx) }()
		go func() { defer wg.Done(); keeper.export(ctx) }()
	}
	var senders []*peer.Sender
	sw := &roleSwitch{cfg: cfg, log: log, live: live, senders: map[string]*peer.Sender{}, fenceRetry: map[string]fenceBackoff{}}
	sw.fence = sw.fenceAccount
	if cfg.journal != "none" {
		j, closeJ, err := openJournalFollower(cfg.journal, log)
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		defer closeJ()
		var acks *ackPusher
		if cfg.control != "" && cfg.control != "none" {
			acks = newAckPusher(cfg.control, log)
			wg.Add(1)
			go func() { defer wg.Done(); acks.Run(ctx) }()
		}
		sw.jrnl = j
		names := make([]string, 0, len(cfg.partners))
		for n := range cfg.partners {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			addr := cfg.partners[n]
			cli, err := cfg.tls.ClientConfig(n)
			if err != nil {
				return fmt.Errorf("tls: %w", err)
			}
			unlock, err := lockSender(cfg.state, n)
			if err != nil {
				return err
			}
			defer unlock()
			s := &peer.Sender{Node: cfg.node, Partner: n, Addr: addr, TLS: cli, Window: cfg.window, Logger: log,
				Source:    &peer.JournalSource{Log: j, Consumer: "peer:" + n},
				Accounts:  func() []peer.AccountEpoch { return mastersFor(cfg.roles, addr, log) },
				KnownFile: knownFile(cfg.state, n), Progress: st.progress(n),
				OnStale: func(account string, epoch, applied uint64) error { return sw.stale(ctx, account, epoch, applied) }}
			if acks != nil {
				s.OnAcked = acks.Note
			}
			// Verification needs the mount to clear what was verified:
			// without its control socket an unclean account would be
			// resynced again and again.
			if uf, ok := j.(interface {
				UncleanAccounts() ([]string, time.Time, error)
			}); ok && acks != nil {
				s.Unclean = func() ([]string, time.Time) {
					u, at, err := uf.UncleanAccounts()
					if err != nil {
						log.Warn("reading the journal's unclean accounts", "err", err)
					}
					return u, at
				}
				s.Verified = func(accounts []string, since time.Time) { verifiedUnclean(ctx, cfg.control, accounts, since, log) }
			}
			if len(cfg.trees) > 0 {
				s.Trees, s.Walk = treeDirs(cfg.trees), accountWalker(cfg.trees, log)
			} else {
				log.Warn("no tree: settings: accounts needing a full resync cannot be resynced", "partner", n)
			}
			senders = append(senders, s)
			sw.senders[addr] = s
		}
	}

	var applier *peer.DirApplier
	if cfg.listen != "" {
		trees := treeDirs(cfg.trees)
		cc := treeClassifier(cfg.trees, log)
		applier, err = peer.OpenDirApplier(peer.ApplierOptions{Trees: trees, StateDir: cfg.state, Logger: log,
			CheckPath: func(account, tree, rel string) error { return checkReplicaPath(cc, account, tree, rel) },
			Linkable: func(tree, rel string) bool {
				cl := cc.Classify(tree + "/" + rel)
				if cl.Kind != fs.KindAccount {
					return false
				}
				e, ok := live.Lookup(cl.Account)
				return ok && e.Role == rolemap.Replica
			},
			Walk: accountWalker(cfg.trees, log),
			Observe: func(r *journal.Record) {
				for _, p := range []string{r.Path, r.NewPath} {
					if path.Base(p) == "cyrus.header" {
						noteHeader(cc, trees[r.Tree], r.Tree, p, log)
					}
				}
				if keeper != nil {
					keeper.observe(r)
				}
			}})
		if err != nil {
			return err
		}
		defer applier.Close()
		srv, err := cfg.tls.ServerConfig()
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		ln, err := net.Listen("tcp", cfg.listen)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		recv := &peer.Receiver{Node: cfg.node, Applier: applier, Roles: live, Partners: cfg.partners, TLS: srv, Logger: log,
			OnApplied: func(touched map[string][]string) {
				forgetApplied(ctx, cfg.control, touched, log)
				if keeper != nil {
					keeper.applied(touched, resolver(cc, trees))
				}
			},
			Admin: sw.handle}
		sw.applier, sw.recv = applier, recv
		wg.Add(1)
		go func() { defer wg.Done(); recv.Serve(ctx, ln) }()
		log.Info("receiver listening", "addr", ln.Addr().String())
	}

	// The senders start once the applier is set: a stale handshake fences
	// at once, and the fence holds the account through the applier.
	for _, s := range senders {
		wg.Add(1)
		go func() { defer wg.Done(); s.Run(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); sw.resolveLoop(ctx, cfg.dialAdmin) }()

	// status.json: what `mreplfs status` and the demo show.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		st.write(cfg.state, senders, applier, log)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// mastersFor lists the accounts this server masters whose partner is addr.
func mastersFor(roles, addr string, log interface{ Warn(string, ...any) }) []peer.AccountEpoch {
	m, err := rolemap.Open(roles)
	if err != nil {
		log.Warn("role map unreadable; shipping nothing this session", "err", err)
		return nil
	}
	defer m.Close()
	var out []peer.AccountEpoch
	for r, err := range m.All() {
		if err != nil {
			log.Warn("role map", "err", err)
			break
		}
		if r.Entry.Role == rolemap.Master && r.Entry.Partner == addr {
			out = append(out, peer.AccountEpoch{Account: r.Account, Epoch: r.Entry.Epoch})
		}
	}
	return out
}

// checkReplicaPath lets a record touch tree/rel only if it is the account's
// (or a new uuid mailbox whose owner is not known yet).
func checkReplicaPath(c fs.Classifier, account, tree, rel string) error {
	cl := c.Classify(tree + "/" + rel)
	switch cl.Kind {
	case fs.KindAccount:
		if cl.Account == account {
			return nil
		}
		return fmt.Errorf("it is %s's", cl.Account)
	case fs.KindPending:
		return nil
	}
	return errors.New("not an account path (shared, stage, runtime or unknown)")
}

// noteHeader feeds a cyrus.header the receiver just put in place to the
// classifier, so the mailbox's later paths are attributed.
func noteHeader(c fs.Classifier, backing, tree, rel string, log interface{ Warn(string, ...any) }) {
	cl := c.Classify(tree + "/" + rel)
	if cl.MailboxID == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(backing, rel))
	if err != nil {
		return
	}
	if err := c.NoteHeader(cl.MailboxID, b); err != nil {
		log.Warn("replicated cyrus.header not understood", "path", tree+"/"+rel, "err", err)
	}
}

// forgetApplied tells the local mount to drop cached names and pages of the
// paths the receiver changed underneath it.
func forgetApplied(ctx context.Context, sock string, touched map[string][]string, log interface{ Warn(string, ...any) }) {
	if sock == "" || sock == "none" {
		return
	}
	for tree, paths := range touched {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rep, err := fs.ControlCall(cctx, sock, fs.ControlRequest{V: fs.ControlVersion, Cmd: "forget", Tree: tree, Paths: paths})
		cancel()
		if err == nil && !rep.OK {
			err = errors.New(rep.Error)
		}
		if err != nil {
			log.Warn("could not make the mount forget replicated paths (readers may see stale data until the kernel cache expires)", "tree", tree, "err", err)
		}
	}
}

// verifiedUnclean tells the mount that accounts were resynced in full after
// its unclean stop (the resync began at since).
func verifiedUnclean(ctx context.Context, sock string, accounts []string, since time.Time, log *slog.Logger) {
	if sock == "" || sock == "none" {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rep, err := fs.ControlCall(cctx, sock, fs.ControlRequest{Cmd: "verified", Accounts: accounts, Since: since.UnixNano()})
	if err == nil && !rep.OK {
		err = errors.New(rep.Error)
	}
	if err != nil {
		log.Warn("could not tell the mount that accounts were verified (they will be resynced again)", "accounts", accounts, "err", err)
		return
	}
	log.Info("accounts verified after the mount's unclean stop", "accounts", accounts, "cleared", rep.Count)
}

// peerStatus is written to STATE/status.json.
type peerStatus struct {
	Node     string                     `json:"node"`
	Started  time.Time                  `json:"started"`
	Updated  time.Time                  `json:"updated"`
	Senders  []senderStatus             `json:"senders"`
	Accounts map[string]peer.AccountPos `json:"replicated_accounts,omitempty"`
	Cyrus    *catalogueStats            `json:"cyrus_catalogue,omitempty"`

	resync *resyncTracker
	keeper *catalogueKeeper
}

// resyncTracker holds each partner's resync under way.
type resyncTracker struct {
	mu sync.Mutex
	m  map[string]peer.ResyncProgress
}

// progress returns a sender's Progress callback that keeps its resync's
// progress for status.json.
func (st *peerStatus) progress(partner string) func(peer.ResyncProgress) {
	if st.resync == nil {
		st.resync = &resyncTracker{m: map[string]peer.ResyncProgress{}}
	}
	r := st.resync
	return func(p peer.ResyncProgress) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if p.Phase == "done" {
			delete(r.m, partner)
			return
		}
		r.m[partner] = p
	}
}

type senderStatus struct {
	Partner       string               `json:"partner"`
	Addr          string               `json:"addr"`
	Connected     bool                 `json:"connected"`
	Acked         uint64               `json:"acked_lsn"`
	Records       int64                `json:"records_sent"`
	BytesOnWire   int64                `json:"bytes_on_wire"`
	BodiesByValue int64                `json:"bodies_by_value"`
	BodiesByRef   int64                `json:"bodies_by_reference"`
	Connects      int64                `json:"connects"`
	Resync        *peer.ResyncProgress `json:"resync,omitempty"` // the resync under way
	Resyncs       int64                `json:"accounts_resynced"`
	ResyncFiles   int64                `json:"resync_files_sent"`
	ResyncBytes   int64                `json:"resync_bytes_sent"`
	Batches       int64                `json:"batches_sent"`
	Durables      int64                `json:"durables_received"`
}

func (st *peerStatus) write(dir string, senders []*peer.Sender, a *peer.DirApplier, log interface{ Warn(string, ...any) }) {
	st.Updated = time.Now()
	st.Cyrus = st.keeper.snapshot()
	st.Senders = st.Senders[:0]
	for _, s := range senders {
		var rp *peer.ResyncProgress
		if r := st.resync; r != nil {
			r.mu.Lock()
			if p, ok := r.m[s.Partner]; ok {
				rp = &p
			}
			r.mu.Unlock()
		}
		st.Senders = append(st.Senders, senderStatus{Resync: rp, Partner: s.Partner, Addr: s.Addr, Connected: s.Stats.Connected.Load(),
			Acked: s.Stats.Acked.Load(), Records: s.Stats.Records.Load(), BytesOnWire: s.Stats.BytesOnWire.Load(),
			BodiesByValue: s.Stats.BodiesByValue.Load(), BodiesByRef: s.Stats.BodiesByRef.Load(), Connects: s.Stats.Connects.Load(),
			Resyncs: s.Stats.Resyncs.Load(), ResyncFiles: s.Stats.ResyncFiles.Load(), ResyncBytes: s.Stats.ResyncBytes.Load(),
			Batches: s.Stats.Batches.Load(), Durables: s.Stats.Durables.Load()})
	}
	if a != nil {
		if pos, err := a.Positions(); err == nil {
			st.Accounts = pos
		}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return
	}
	tmp := filepath.Join(dir, ".status.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err == nil {
		err = os.Rename(tmp, filepath.Join(dir, "status.json"))
		if err != nil {
			log.Warn("status.json", "err", err)
		}
	}
}

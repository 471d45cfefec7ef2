package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/fs"
	"mreplfs/journal"
	"mreplfs/rolemap"
	"mreplfs/rolemap/classify"
)

const mountSynopsis = `[-config FILE] [flags]

Mount the intercepting filesystem over one or more trees (backing directory →
mount point) and serve them until SIGTERM or SIGINT, then unmount cleanly.

Settings come from defaults, then the config file (Cyrus imapd.conf style:
"key: value" lines, '#' comments; "tree" may repeat), then flags. A tree is
NAME=BACKING:MOUNTPOINT. NAME is conf, spool, meta, sieve, spool-* or meta-*
for one Cyrus tree; any other name is a single root holding conf/, spool/,
meta/ and sieve/.

Readiness: with -ready-fd N the line "ready" is written to descriptor N
(then closed) once every tree is mounted and the control socket listens; with
-notify-pid PID that process gets SIGUSR1.

Exit status: 0 after a clean unmount, 1 on failure, 2 on a usage error, 4
when a mount point is busy or a stale mount (the message says what to run).`

// mountSetting is one config key: its default and help.
type mountSetting struct {
	key, def, help string
}

var mountSettings = []mountSetting{
	{"tree", "", "NAME=BACKING:MOUNTPOINT (repeat for several trees; at least one)"},
	{"roles", "", "the CDB role map (reloaded when it changes, on SIGHUP and on 'reload')"},
	{"roles_all", "", "TESTING ONLY: give every account this role (master or local) instead of a role map"},
	{"journal", "", "journal directory; 'none' mounts without a journal (nothing is replicated)"},
	{"control", "", "control socket path (default JOURNAL/control.sock; 'none' for no socket)"},
	{"allow_other", "yes", "let other users (Cyrus runs as user cyrus) use the mounts"},
	{"entry_timeout", "1s", "kernel dentry cache lifetime"},
	{"attr_timeout", "1s", "kernel attribute cache lifetime"},
	{"refusal_log_interval", "1m", "log a refused write at most this often per account"},
	{"journal_sync_every", "1s", "make unsynced journal records durable at least this often"},
	{"rolemap_poll", "1s", "how often the role map file is checked for a change"},
	{"debug", "no", "log the FUSE protocol (very verbose)"},
	{"sync_mode", "async", "default replication mode: async (fsync waits for the local journal) or sync (and for the replica)"},
	{"sync_policy", "degrade", "when the replica's ack times out in sync mode: degrade (succeed, alert, async until caught up) or refuse (EIO)"},
	{"sync_timeout", "3s", "how long a sync-mode fsync waits for the replica"},
	{"sync_account", "", "ACCOUNT MODE [POLICY] [TIMEOUT] for one account (repeat). The sync_* settings are re-read on SIGHUP and 'reload'"},
}

// mountConfig is the parsed settings.
type mountConfig struct {
	trees        []treeSpec
	roles        string
	rolesAll     string
	journal      string
	control      string
	allowOther   bool
	entryTimeout time.Duration
	attrTimeout  time.Duration
	refusalLog   time.Duration
	syncEvery    time.Duration
	rolemapPoll  time.Duration
	debug        bool
	sync         *fs.SyncSettings
}

type treeSpec struct{ name, backing, mountpoint string }

func parseTree(s string) (treeSpec, error) {
	name, rest, ok := strings.Cut(s, "=")
	backing, mnt, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || name == "" || backing == "" || mnt == "" {
		return treeSpec{}, fmt.Errorf("tree %q: want NAME=BACKING:MOUNTPOINT", s)
	}
	return treeSpec{name, backing, mnt}, nil
}

// readMountConfig parses a config file into key → values.
func readMountConfig(path string) (map[string][]string, error) {
	return readKeyValues(path, mountSettings, "mount")
}

func parseBool(k, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "yes", "true", "on", "1":
		return true, nil
	case "no", "false", "off", "0":
		return false, nil
	}
	return false, fmt.Errorf("%s: %q is not yes or no", k, v)
}

// buildMountConfig applies defaults, then file values, then set flags.
func buildMountConfig(file map[string][]string, flags map[string][]string) (*mountConfig, error) {
	vals := map[string][]string{}
	for _, s := range mountSettings {
		if s.def != "" {
			vals[s.key] = []string{s.def}
		}
	}
	for k, v := range file {
		vals[k] = v
	}
	for k, v := range flags {
		vals[k] = v
	}
	last := func(k string) string {
		if v := vals[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	c := &mountConfig{roles: last("roles"), rolesAll: last("roles_all"), journal: last("journal"), control: last("control")}
	for _, t := range vals["tree"] {
		ts, err := parseTree(t)
		if err != nil {
			return nil, err
		}
		c.trees = append(c.trees, ts)
	}
	var err error
	if c.allowOther, err = parseBool("allow_other", last("allow_other")); err != nil {
		return nil, err
	}
	if c.debug, err = parseBool("debug", last("debug")); err != nil {
		return nil, err
	}
	for _, d := range []struct {
		k string
		p *time.Duration
	}{{"entry_timeout", &c.entryTimeout}, {"attr_timeout", &c.attrTimeout}, {"refusal_log_interval", &c.refusalLog},
		{"journal_sync_every", &c.syncEvery}, {"rolemap_poll", &c.rolemapPoll}} {
		if *d.p, err = time.ParseDuration(last(d.k)); err != nil || *d.p <= 0 {
			return nil, fmt.Errorf("%s: %q is not a positive duration", d.k, last(d.k))
		}
	}
	if c.sync, err = parseSyncSettings(last("sync_mode"), last("sync_policy"), last("sync_timeout"), vals["sync_account"]); err != nil {
		return nil, err
	}
	switch {
	case len(c.trees) == 0:
		return nil, errors.New("no tree given (-tree NAME=BACKING:MOUNTPOINT)")
	case c.roles == "" && c.rolesAll == "":
		return nil, errors.New("no role map given (-roles FILE.cdb)")
	case c.roles != "" && c.rolesAll != "":
		return nil, errors.New("give -roles or -roles-all, not both")
	case c.rolesAll != "" && c.rolesAll != "master" && c.rolesAll != "local":
		return nil, fmt.Errorf("roles_all: %q is not master or local", c.rolesAll)
	case c.journal == "":
		return nil, errors.New("no journal given (-journal DIR, or -journal none)")
	}
	if c.control == "" && c.journal != "none" {
		c.control = filepath.Join(c.journal, "control.sock")
	}
	if c.control == "none" {
		c.control = ""
	}
	return c, nil
}

// parseSyncSettings builds the sync modes from the sync_* settings.
func parseSyncSettings(mode, policy, timeout string, accounts []string) (*fs.SyncSettings, error) {
	var def fs.SyncRule
	var err error
	if def.Mode, err = fs.ParseSyncMode(mode); err != nil {
		return nil, fmt.Errorf("sync_mode: %w", err)
	}
	if def.Policy, err = fs.ParseSyncPolicy(policy); err != nil {
		return nil, fmt.Errorf("sync_policy: %w", err)
	}
	if def.Timeout, err = time.ParseDuration(timeout); err != nil || def.Timeout <= 0 {
		return nil, fmt.Errorf("sync_timeout: %q is not a positive duration", timeout)
	}
	set := &fs.SyncSettings{Default: def, Accounts: map[string]fs.SyncRule{}}
	for _, line := range accounts {
		a, r, err := fs.ParseSyncAccount(line, def)
		if err != nil {
			return nil, fmt.Errorf("sync_account: %w", err)
		}
		set.Accounts[a] = r
	}
	return set, nil
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runMount(ctx context.Context, e *env, args []string) error {
	fl := newFlagSet(e, "mount", mountSynopsis)
	config := fl.String("config", "", "config file (key: value lines)")
	var trees multiFlag
	fl.Var(&trees, "tree", "NAME=BACKING:MOUNTPOINT (repeatable)")
	roles := fl.String("roles", "", "CDB role map")
	rolesAll := fl.String("roles-all", "", "TESTING ONLY: every account gets this role (master|local)")
	jdir := fl.String("journal", "", "journal directory, or none")
	control := fl.String("control", "", "control socket path, or none")
	allowOther := fl.String("allow-other", "", "yes|no")
	debug := fl.Bool("debug", false, "log the FUSE protocol")
	readyFD := fl.Int("ready-fd", -1, "write \"ready\" to this descriptor once mounted")
	notifyPID := fl.Int("notify-pid", 0, "send SIGUSR1 to this process once mounted")
	usage := fl.Usage
	fl.Usage = func() {
		usage()
		fmt.Fprintln(e.stderr, "\nConfig file settings (default in brackets):")
		for _, s := range mountSettings {
			fmt.Fprintf(e.stderr, "  %-22s [%s] %s\n", s.key, s.def, s.help)
		}
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if fl.NArg() > 0 {
		return usagef("unexpected argument %q", fl.Arg(0))
	}
	var file map[string][]string
	if *config != "" {
		var err error
		if file, err = readMountConfig(*config); err != nil {
			return usagef("config: %v", err)
		}
	}
	flags := map[string][]string{}
	if len(trees) > 0 {
		flags["tree"] = trees
	}
	for k, v := range map[string]string{"roles": *roles, "roles_all": *rolesAll, "journal": *jdir,
		"control": *control, "allow_other": *allowOther} {
		if v != "" {
			flags[k] = []string{v}
		}
	}
	if *debug {
		flags["debug"] = []string{"yes"}
	}
	cfg, err := buildMountConfig(file, flags)
	if err != nil {
		return usagef("%v", err)
	}
	ready := func() error {
		if *readyFD >= 0 {
			f := os.NewFile(uintptr(*readyFD), "ready-fd")
			_, err := io.WriteString(f, "ready\n")
			f.Close()
			if err != nil {
				return fmt.Errorf("ready-fd %d: %w", *readyFD, err)
			}
		}
		if *notifyPID > 0 {
			if err := syscall.Kill(*notifyPID, syscall.SIGUSR1); err != nil {
				return fmt.Errorf("notify-pid %d: %w", *notifyPID, err)
			}
		}
		return nil
	}
	// The sync_* settings are re-read from the config file on SIGHUP and
	// "reload"; other settings need a remount.
	var reconfig func() (*fs.SyncSettings, error)
	if *config != "" {
		reconfig = func() (*fs.SyncSettings, error) {
			file, err := readMountConfig(*config)
			if err != nil {
				return nil, err
			}
			c, err := buildMountConfig(file, flags)
			if err != nil {
				return nil, err
			}
			return c.sync, nil
		}
	}
	return serveMount(ctx, e, cfg, ready, reconfig)
}

// allRoles is the roles_all role source (testing only).
type allRoles struct{ role rolemap.Role }

func (a allRoles) Lookup(string) (rolemap.Entry, bool) {
	return rolemap.Entry{Role: a.role, Epoch: 1}, true
}

// serveMount mounts every tree of cfg, calls ready, and serves until ctx
// ends or a tree is unmounted from outside; then it unmounts everything and
// closes the journal. Every goroutine it starts has ended when it returns.
func serveMount(ctx context.Context, e *env, cfg *mountConfig, ready func() error, reconfig func() (*fs.SyncSettings, error)) (err error) {
	log := e.log
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	var roles fs.RoleSource
	var reload func(context.Context) error
	if cfg.rolesAll != "" {
		r, _ := rolemap.ParseRole(cfg.rolesAll)
		roles = allRoles{r}
		log.Warn("roles_all: every account is " + cfg.rolesAll + " (testing only)")
	} else {
		live, err := rolemap.NewLive(cfg.roles, rolemap.LiveOptions{Logger: log, Poll: cfg.rolemapPoll})
		if err != nil {
			return fmt.Errorf("role map: %w", err)
		}
		defer live.Close()
		wg.Add(1)
		go func() { defer wg.Done(); live.Run(ctx) }()
		roles = live
		reload = func(context.Context) error { return live.Reload() }
	}

	cl := classify.New(classify.Options{Logger: log})
	scan := map[string]string{}
	var rootTrees []string
	for _, t := range cfg.trees {
		if isCyrusTree(t.name) {
			scan[t.name] = t.backing
			continue
		}
		rootTrees = append(rootTrees, t.name)
		for _, sub := range []string{classify.TreeConf, classify.TreeSpool, classify.TreeMeta, classify.TreeSieve} {
			scan[sub] = filepath.Join(t.backing, sub)
		}
	}
	if err := cl.Scan(scan); err != nil {
		log.Warn("some cyrus.header files could not be read (their mailboxes stay pending)", "err", err)
	}

	var jrnl fs.Appender
	if cfg.journal != "none" {
		lg, err := journal.Open(cfg.journal, journal.Options{Logger: log, SyncEvery: cfg.syncEvery})
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		defer func() {
			if cerr := lg.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("journal: close: %w", cerr)
			}
		}()
		jrnl = lg
	} else {
		log.Warn("journal: none — mutations of master accounts are not recorded")
	}

	fsys, err := fs.New(fs.Options{Roles: roles, Classifier: fs.CyrusClassifier(cl, rootTrees...), Journal: jrnl,
		Logger: log, EntryTimeout: cfg.entryTimeout, AttrTimeout: cfg.attrTimeout, AllowOther: cfg.allowOther,
		Debug: cfg.debug, RefusalLogInterval: cfg.refusalLog})
	if err != nil {
		return err
	}
	defer func() {
		if uerr := unmountAll(fsys, log); uerr != nil && err == nil {
			err = uerr
		}
	}()
	fsys.SetSyncSettings(cfg.sync)
	reloadSync := func() error {
		if reconfig == nil {
			return nil
		}
		set, err := reconfig()
		if err != nil {
			log.Error("config reload: sync settings kept as they were", "err", err)
			return fmt.Errorf("config: %w", err)
		}
		fsys.SetSyncSettings(set)
		log.Info("sync settings reloaded", "default", set.Default.Mode.String(), "accounts", len(set.Accounts))
		return nil
	}
	if reconfig != nil {
		reloadRoles := reload
		reload = func(ctx context.Context) error {
			var errs []error
			if reloadRoles != nil {
				errs = append(errs, reloadRoles(ctx))
			}
			errs = append(errs, reloadSync())
			return errors.Join(errs...)
		}
		// SIGHUP re-reads the sync settings (the role map's Live reloads
		// itself on SIGHUP too).
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		hctx, hcancel := context.WithCancel(ctx)
		defer hcancel() // before wg.Wait: an early return must not wait on this goroutine
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer signal.Stop(hup)
			for {
				select {
				case <-hctx.Done():
					return
				case <-hup:
					reloadSync()
				}
			}
		}()
	}
	ended := make(chan string, len(cfg.trees))
	for _, t := range cfg.trees {
		tr, err := fsys.Mount(t.name, t.backing, t.mountpoint)
		if err != nil {
			if errors.Is(err, fs.ErrBusyMount) || isBusyMountErr(err) {
				return withCode(ExitMount, fmt.Errorf("%w (if it is a stale mount: umount -l %s)", err, t.mountpoint))
			}
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); tr.Wait(); ended <- tr.Name }()
	}

	ctlErr := make(chan error, 1)
	if cfg.control != "" {
		ctl := &fs.Control{FS: fsys, Reload: reload, Logger: log, Extra: func() map[string]string {
			return map[string]string{"journal": cfg.journal, "roles": cfg.roles + cfg.rolesAll}
		}}
		listening := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctlErr <- ctl.Serve(ctx, cfg.control)
		}()
		go func() {
			for range 500 {
				if _, err := os.Stat(cfg.control); err == nil {
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
			close(listening)
		}()
		select {
		case err := <-ctlErr:
			return fmt.Errorf("control socket: %w", err)
		case <-listening:
		}
	}
	if err := ready(); err != nil {
		return err
	}
	log.Info("ready", "trees", len(cfg.trees), "control", cfg.control, "journal", cfg.journal)
	select {
	case <-ctx.Done():
		log.Info("signal: unmounting")
		return nil
	case name := <-ended:
		return fmt.Errorf("tree %s was unmounted from outside", name)
	case err := <-ctlErr:
		if err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
		return nil
	}
}

func isCyrusTree(name string) bool {
	return name == classify.TreeConf || name == classify.TreeSpool || name == classify.TreeMeta ||
		name == classify.TreeSieve || strings.HasPrefix(name, classify.TreeSpool+"-") ||
		strings.HasPrefix(name, classify.TreeMeta+"-")
}

func isBusyMountErr(err error) bool {
	return errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.ENOTCONN) ||
		strings.Contains(err.Error(), "transport endpoint is not connected")
}

// unmountAll unmounts every tree, retrying for a few seconds while a tree is
// busy (a client still has files open), then detaching it lazily.
func unmountAll(fsys *fs.FS, log interface {
	Warn(string, ...any)
}) error {
	var errs []error
	for _, t := range fsys.Trees() {
		var err error
		for i := 0; i < 10; i++ {
			if err = t.Unmount(); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			log.Warn("mount busy at shutdown; detaching it (umount -l)", "mountpoint", t.Mountpoint, "err", err)
			if derr := unix.Unmount(t.Mountpoint, unix.MNT_DETACH); derr != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", t.Mountpoint, derr))
			}
		}
	}
	return errors.Join(errs...)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"mreplfs/fs"
	"mreplfs/peer"
	"mreplfs/rolemap"
	"mreplfs/rolemap/classify"
)

// Full per-account resync support of `mreplfs peer` (peer/doc.go, "Full
// resync"): listing an account's files with the Cyrus classifier, the
// per-partner sender lock, and `-resync ACCOUNT`.

// treeClassifier scans the trees' cyrus.header files and returns the
// classifier the mount would use for them.
func treeClassifier(trees []treeSpec, log *slog.Logger) fs.Classifier {
	scan := map[string]string{}
	var roots []string
	for _, t := range trees {
		if isCyrusTree(t.name) {
			scan[t.name] = t.backing
			continue
		}
		roots = append(roots, t.name)
		for _, sub := range []string{classify.TreeConf, classify.TreeSpool, classify.TreeMeta, classify.TreeSieve} {
			scan[sub] = filepath.Join(t.backing, sub)
		}
	}
	cl := classify.New(classify.Options{Logger: log})
	if err := cl.Scan(scan); err != nil {
		log.Warn("some cyrus.header files could not be read (their mailboxes stay pending)", "err", err)
	}
	return fs.CyrusClassifier(cl, roots...)
}

// accountWalker lists an account's files, directories and symlinks in
// trees: every path the classifier gives to the account (headers are
// scanned afresh at each walk, so mailboxes created since are known). A
// directory of another account is not entered.
func accountWalker(trees []treeSpec, log *slog.Logger) func(string, func(tree, rel string, fi os.FileInfo) error) error {
	return func(account string, fn func(tree, rel string, fi os.FileInfo) error) error {
		cc := treeClassifier(trees, log)
		for _, t := range trees {
			base := filepath.Clean(t.backing)
			err := filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
				if err != nil {
					if errors.Is(err, os.ErrNotExist) {
						return nil // removed while listed: its change is journaled
					}
					return err
				}
				if p == base {
					return nil
				}
				rel := filepath.ToSlash(strings.TrimPrefix(p, base+"/"))
				c := cc.Classify(t.name + "/" + rel)
				if c.Kind != fs.KindAccount {
					return nil
				}
				if c.Account != account {
					if fi.IsDir() {
						return filepath.SkipDir
					}
					return nil
				}
				return fn(t.name, rel, fi)
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
}

func treeDirs(trees []treeSpec) map[string]string {
	m := map[string]string{}
	for _, t := range trees {
		m[t.name] = t.backing
	}
	return m
}

// lockSender takes the lock that lets one process at a time ship to a
// partner (the daemon, or -resync).
func lockSender(state, partner string) (func(), error) {
	p := filepath.Join(state, "sender-"+partner+".lock")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another mreplfs peer process ships to %s (%s is locked): stop it first", partner, p)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

func knownFile(state, partner string) string {
	return filepath.Join(state, "acked-"+partner+".json")
}

// resyncNow is `mreplfs peer -resync ACCOUNT`: resync one account mastered
// here to its partner in full, with a progress line, then exit.
func resyncNow(ctx context.Context, e *env, cfg *peerConfig, account string) error {
	if cfg.journal == "none" {
		return usagef("-resync needs a journal (this node ships nothing)")
	}
	if len(cfg.trees) == 0 {
		return usagef("-resync needs the trees (tree: settings) to list the account")
	}
	m, err := rolemap.Open(cfg.roles)
	if err != nil {
		return withCode(ExitFailure, fmt.Errorf("role map: %w", err))
	}
	ent, ok := m.Lookup(account)
	m.Close()
	if !ok || ent.Role != rolemap.Master {
		return withCode(ExitFailure, fmt.Errorf("%s is not mastered here (role map %s)", account, cfg.roles))
	}
	partner := ""
	for n, a := range cfg.partners {
		if a == ent.Partner {
			partner = n
		}
	}
	if partner == "" {
		return withCode(ExitFailure, fmt.Errorf("%s's partner %s is not a configured partner", account, ent.Partner))
	}
	if err := os.MkdirAll(cfg.state, 0o700); err != nil {
		return withCode(ExitFailure, err)
	}
	unlock, err := lockSender(cfg.state, partner)
	if err != nil {
		return withCode(ExitFailure, err)
	}
	defer unlock()
	j, closeJ, err := openJournalFollower(cfg.journal, e.log)
	if err != nil {
		return withCode(ExitFailure, fmt.Errorf("journal: %w", err))
	}
	defer closeJ()
	cli, err := cfg.tls.ClientConfig(partner)
	if err != nil {
		return withCode(ExitFailure, fmt.Errorf("tls: %w", err))
	}
	s := &peer.Sender{Node: cfg.node, Partner: partner, Addr: ent.Partner, TLS: cli, Logger: e.log,
		Source: &peer.JournalSource{Log: j, Consumer: "peer:" + partner},
		Trees:  treeDirs(cfg.trees), Walk: accountWalker(cfg.trees, e.log), KnownFile: knownFile(cfg.state, partner),
		Progress: progressLine(e.stderr)}
	start := time.Now()
	if err := s.Resync(ctx, []peer.AccountEpoch{{Account: account, Epoch: ent.Epoch}}); err != nil {
		fmt.Fprintln(e.stderr)
		return withCode(ExitFailure, err)
	}
	fmt.Fprintf(e.stderr, "\nresync of %s to %s done in %v: %d files sent, %d bytes by value, %d bytes on the wire\n",
		account, partner, time.Since(start).Round(time.Millisecond), s.Stats.ResyncFiles.Load(), s.Stats.ResyncBytes.Load(), s.Stats.BytesOnWire.Load())
	return nil
}

// progressLine draws a resync's progress on one terminal line.
func progressLine(w io.Writer) func(peer.ResyncProgress) {
	last := time.Time{}
	return func(p peer.ResyncProgress) {
		if p.Phase == "sending" && p.Files < p.FilesTotal && time.Since(last) < 100*time.Millisecond {
			return
		}
		last = time.Now()
		mb := func(n int64) float64 { return float64(n) / (1 << 20) }
		switch p.Phase {
		case "listing":
			fmt.Fprintf(w, "\rresync %s: listing %d files, %.1f MB    ", p.Account, p.Files, mb(p.Bytes))
		case "comparing":
			fmt.Fprintf(w, "\rresync %s: partner compares %d entries    ", p.Account, p.Files)
		case "sending":
			fmt.Fprintf(w, "\rresync %s: sending %d/%d files, %.1f/%.1f MB    ", p.Account, p.Files, p.FilesTotal, mb(p.Bytes), mb(p.BytesTotal))
		case "done":
			fmt.Fprintf(w, "\rresync %s: done                                        ", p.Account)
		}
	}
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"mreplfs/fs"
	"mreplfs/internal/durable"
	"mreplfs/journal"
	"mreplfs/peer"
	"mreplfs/rolemap"
)

// Fencing a failed-over master (DESIGN.md §6, invariant 7). When this node
// comes back after its partner took an account over at a higher epoch (the
// partner's Welcome says so), the peer:
//
//  0. writes a fence marker (STATE/roles/ACCOUNT.fence) and holds the
//     account's replica state (quarantined: no apply, no resync) until the
//     fence is done; a fence cut short is finished by the resolver;
//  1. makes the account replica at the partner's epoch in the role map and
//     the mount (writes get EROFS from then on), and waits for the
//     account's changes under way (a freeze of the mount syncs the
//     journal);
//  2. reads this node's unreplicated tail — the account's journal records
//     above the position the partner applied — and moves it aside into
//     STATE/quarantine/ACCOUNT-eOLD-TIME/: report.json and report.txt list
//     every record (account, mailbox, file, operation, byte range) and
//     every file touched, and files/TREE/PATH keeps this node's copy of
//     each (from the tree, or the journal's blob store for a message file
//     gone since). A message whose file the partner applied but whose
//     index record it did not is kept too (quarantine_index.go). Nothing is
//     discarded and nothing is applied over the new master;
//  3. marks the account's replica as needing a full resync, removes the
//     marker, and asks the partner to reconnect, which resyncs it from the
//     new master.

// quarantineReport is report.json.
type quarantineReport struct {
	Account        string            `json:"account"`
	Node           string            `json:"node"`
	OldEpoch       uint64            `json:"old_epoch"`
	NewEpoch       uint64            `json:"new_epoch"`
	Partner        string            `json:"partner"`
	PartnerApplied uint64            `json:"partner_applied"` // the last record of ours the new master applied
	Created        time.Time         `json:"created"`
	Records        []quarantinedRec  `json:"records"`
	Files          []quarantinedFile `json:"files"`
}

// quarantinedRec is one record of the tail.
type quarantinedRec struct {
	LSN     uint64 `json:"lsn"`
	Op      string `json:"op"`
	Tree    string `json:"tree"`
	Path    string `json:"path"`
	NewPath string `json:"new_path,omitempty"`
	Mailbox string `json:"mailbox"`
	Offset  int64  `json:"offset,omitempty"`
	Length  int64  `json:"length,omitempty"` // bytes written (write), content length (message, replace)
	Size    int64  `json:"size,omitempty"`   // truncate: the new size
}

// quarantinedFile is one file (or directory) the tail touched.
type quarantinedFile struct {
	Tree    string     `json:"tree"`
	Path    string     `json:"path"`
	Mailbox string     `json:"mailbox"`
	Ops     []string   `json:"ops"`
	Ranges  [][2]int64 `json:"ranges,omitempty"` // [offset, end) written in place
	Whole   bool       `json:"whole,omitempty"`  // the whole content is this node's (message, replace, create)
	Copy    string     `json:"copy,omitempty"`   // this node's copy, relative to the quarantine dir
}

// fenceMarker is STATE/roles/ACCOUNT.fence: a fence under way. Written
// before anything changes and removed only once the quarantine is on disk,
// so a fence cut short (an error, a crash) after the role flip — when the
// handshake no longer offers the account, and nothing would fence it again
// — is finished by the resolver (resolveFences: after 1 s, doubling up to a minute), and the
// account stays held (quarantined, never resynced over its tail) until then.
type fenceMarker struct {
	Account  string    `json:"account"`
	Epoch    uint64    `json:"epoch"`   // the new master's
	Applied  uint64    `json:"applied"` // what the new master applied of ours
	OldEpoch uint64    `json:"old_epoch"`
	Partner  string    `json:"partner"`
	Created  time.Time `json:"created"`  // names the quarantine directory
	Consumer string    `json:"consumer"` // the journal consumer pinning the tail
}

// fenceConsumer names the journal consumer that keeps the account's tail
// (the records above what the partner applied) from retention while a
// fence is under way: the partner acknowledges them all the same.
func fenceConsumer(account string) string {
	safe := []byte(account)
	for i, c := range safe {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '@' || c == '-') {
			safe[i] = '_'
		}
	}
	if len(safe) > 100 {
		safe = safe[:100]
	}
	h := fnv.New32a()
	h.Write([]byte(account))
	return fmt.Sprintf("fence:%s-%08x", safe, h.Sum32())
}

// consumerRemover is the journal follower's RemoveConsumer.
type consumerRemover interface {
	RemoveConsumer(consumer string) error
}

// endFence removes a fence's marker and its journal pin.
func (w *roleSwitch) endFence(m *fenceMarker) error {
	if err := os.Remove(w.fencePath(m.Account)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	durable.SyncDir(w.dir())
	if rm, ok := w.jrnl.(consumerRemover); ok && m.Consumer != "" {
		if err := rm.RemoveConsumer(m.Consumer); err != nil {
			w.log.Warn("fencing: could not remove the journal pin (it holds retention back)", "consumer", m.Consumer, "err", err)
		}
	}
	return nil
}

func (w *roleSwitch) fencePath(account string) string {
	return filepath.Join(w.dir(), url.PathEscape(account)+".fence")
}

func (w *roleSwitch) readFence(account string) (*fenceMarker, error) {
	return readRoleState[fenceMarker](w.fencePath(account))
}

// fenceAccount is the stale-epoch handler (see the top of the file).
func (w *roleSwitch) fenceAccount(ctx context.Context, account string, epoch, applied uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	m, err := w.readFence(account)
	if err != nil {
		return err
	}
	e, found, err := w.entry(account)
	if err != nil {
		return err
	}
	if m == nil {
		if !found || e.Role != rolemap.Master || e.Epoch >= epoch {
			return nil // fenced already
		}
		m = &fenceMarker{Account: account, Epoch: epoch, Applied: applied, OldEpoch: e.Epoch, Partner: e.Partner,
			Created: time.Now().UTC(), Consumer: fenceConsumer(account)}
		// Pin the tail first: from here on retention keeps it, whatever the
		// partner acknowledges.
		if w.jrnl != nil {
			if err := w.jrnl.SetAcked(m.Consumer, journal.LSN(min(applied, uint64(w.jrnl.Durable())))); err != nil {
				return fmt.Errorf("pin the unreplicated tail of %s in the journal: %w", account, err)
			}
		}
		b, _ := json.Marshal(m)
		if err := os.MkdirAll(w.dir(), 0o700); err != nil {
			return err
		}
		if err := durable.WriteFile(w.fencePath(account), b); err != nil {
			return fmt.Errorf("fence marker of %s: %w", account, err)
		}
		w.log.Warn("fencing: the partner took this account over; becoming its replica and quarantining what it lacks",
			"account", account, "epoch", e.Epoch, "partner_epoch", epoch, "partner_applied", applied)
	} else {
		// A fence cut short: finish it, unless it is done (a crash before
		// the marker went) or overtaken (the roles changed since).
		flipPending := found && e.Role == rolemap.Master && e.Epoch < m.Epoch
		held := found && e.Role == rolemap.Replica && e.Epoch == m.Epoch
		if held && w.applier != nil {
			p, err := w.applier.Position(account)
			held = err == nil && p.Epoch == m.Epoch && p.State == peer.StateQuarantine
		}
		if !flipPending && !held {
			w.log.Info("fencing: a fence marker no longer applies (done, or the roles changed since); removed",
				"account", account, "marker_epoch", m.Epoch, "role", e.Role.String(), "epoch", e.Epoch)
			return w.endFence(m)
		}
		w.log.Warn("fencing: finishing a fence cut short", "account", account, "partner_epoch", m.Epoch, "partner_applied", m.Applied)
	}
	os.Remove(w.preparePath(account)) // superseded
	// Before the role map admits the new master's records: they must find
	// the account held (quarantined: no apply, no resync) until its tail is
	// set aside, never an older position.
	if w.applier != nil {
		if err := w.applier.SetPosition(account, peer.AccountPos{Epoch: m.Epoch, State: peer.StateQuarantine,
			Reason: fmt.Sprintf("failed over to the partner at epoch %d; fencing: setting the unreplicated tail aside", m.Epoch)}); err != nil {
			return err
		}
	}
	if found && e.Role == rolemap.Master && e.Epoch < m.Epoch {
		if err := w.setRole(ctx, account, rolemap.Entry{Role: rolemap.Replica, Partner: m.Partner, Epoch: m.Epoch}, nil); err != nil {
			return err
		}
	}
	// Changes that passed the guard before the reload: let them finish and
	// reach the journal.
	durableLSN := journal.LSN(0)
	if rep, err := w.control(ctx, fs.ControlRequest{Cmd: "freeze", Account: account, TimeoutMS: 5000}); err == nil {
		durableLSN = journal.LSN(rep.Durable)
		w.control(ctx, fs.ControlRequest{Cmd: "unfreeze", Account: account})
	} else {
		w.log.Warn("fencing: the mount did not settle the account (reading the journal as it is)", "account", account, "err", err)
	}
	old := rolemap.Entry{Role: rolemap.Master, Partner: m.Partner, Epoch: m.OldEpoch}
	dir, n, err := w.quarantine(ctx, account, old, m.Epoch, m.Applied, durableLSN, m.Created)
	if err != nil {
		return fmt.Errorf("quarantine the unreplicated tail of %s (the account stays held; tried again later): %w", account, err)
	}
	reason := fmt.Sprintf("failed over to the partner at epoch %d; no unreplicated change here", m.Epoch)
	if n > 0 {
		reason = fmt.Sprintf("failed over to the partner at epoch %d; this node's %d unreplicated record(s) are in %s", m.Epoch, n, dir)
	}
	if w.applier != nil {
		if err := w.applier.SetState(account, peer.StateResync, reason); err != nil {
			return err
		}
	}
	if err := w.endFence(m); err != nil {
		return err
	}
	w.log.Warn("fenced: account is a replica here now; it resyncs from the new master", "account", account, "epoch", m.Epoch, "quarantined_records", n, "dir", dir)
	// The partner's sender was refused the account until now: reconnect.
	go func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		c, err := w.cfg.dialAdmin(rctx, m.Partner)
		if err == nil {
			_, err = c.Call(rctx, peer.AdminRequest{Op: "reconnect"})
			c.Close()
		}
		if err != nil {
			w.log.Warn("fencing: could not ask the partner to reconnect (it will on its own)", "err", err)
		}
	}()
	return nil
}

// listFences reads the fence markers under state/roles.
func listFences(state string) ([]fenceMarker, error) {
	return listRoleState[fenceMarker](state, ".fence")
}

// resolveFences finishes every fence cut short (see fenceMarker).
func (w *roleSwitch) resolveFences(ctx context.Context) {
	if w.fenceRetry == nil {
		w.fenceRetry = map[string]fenceBackoff{}
	}
	accounts, _ := roleStateAccounts(w.dir(), ".fence")
	for _, account := range accounts {
		m, err := w.readFence(account)
		if err != nil || m == nil {
			if err != nil {
				w.log.Error("fencing: unreadable fence marker (left for the admin)", "account", account, "err", err)
			}
			continue
		}
		if time.Now().Before(w.fenceRetry[account].at) {
			continue
		}
		if err := w.fenceAccount(ctx, account, m.Epoch, m.Applied); err != nil {
			// Each try holds the role switch through a freeze and a journal
			// scan: back off (1 s, doubling, at most a minute).
			r := w.fenceRetry[account]
			r.wait = min(max(2*r.wait, time.Second), time.Minute)
			r.at = time.Now().Add(r.wait)
			w.fenceRetry[account] = r
			w.log.Error("fencing a failed-over account; tried again later", "account", account, "in", r.wait, "err", err)
			continue
		}
		delete(w.fenceRetry, account)
	}
}

// fenceBackoff is when resolveFences tries a failing fence again.
type fenceBackoff struct {
	at   time.Time
	wait time.Duration
}

// quarantine moves the account's records above applied (through upTo,
// 0: what is durable) aside; it returns the directory and how many records
// it holds (0: nothing to keep, no directory).
func (w *roleSwitch) quarantine(ctx context.Context, account string, old rolemap.Entry, epoch, applied uint64, upTo journal.LSN, created time.Time) (_ string, _ int, err error) {
	if w.jrnl == nil {
		return "", 0, nil
	}
	upTo = max(upTo, w.jrnl.Durable())
	// The tail lies above what the partner applied of this account. Not
	// above the partner's consumer position: once it masters the account,
	// the partner drops this node's records of it but still acknowledges
	// them, so the consumer position can pass the very records the tail is
	// made of (a returning old master's sender streams them before the
	// handshake fences it). Only when the journal no longer holds them
	// (segments acknowledged by every consumer are deleted) does the scan
	// start at the consumer position, and say so.
	from := journal.LSN(applied) + 1
	r, err := w.jrnl.NewReader(from)
	if err != nil {
		for n, a := range w.cfg.partners {
			if a == old.Partner {
				if l, ok := w.jrnl.Acked("peer:" + n); ok && l+1 > from {
					from = l + 1
				}
			}
		}
		w.log.Warn("fencing: the journal no longer holds all the account's records above what the partner applied; the quarantine may miss some",
			"account", account, "partner_applied", applied, "from", from, "err", err)
		r, err = nil, nil
		if from <= upTo {
			if r, err = w.jrnl.NewReader(from); err != nil {
				return "", 0, fmt.Errorf("read the journal from %d: %w", from, err)
			}
		}
	}
	var recs []journal.Record
	scanned := 0
	if from > upTo && r != nil {
		r.Close()
	}
	if from <= upTo {
		// Through upTo, which the mount reported durable: this process's
		// view of the journal may lag it by a moment.
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		for {
			rec, err := r.Next(rctx)
			if err != nil {
				cancel()
				r.Close()
				return "", 0, fmt.Errorf("read the journal from %d through %d: %w", from, upTo, err)
			}
			scanned++
			if rec.Account == account && uint64(rec.LSN) > applied {
				recs = append(recs, rec)
			}
			if rec.LSN >= upTo {
				break
			}
		}
		cancel()
		r.Close()
	}
	w.log.Info("fencing: read the unreplicated tail", "account", account, "from", from, "through", upTo, "scanned", scanned, "tail", len(recs))
	if len(recs) == 0 {
		return "", 0, nil
	}
	// Named by the fence, so a retry rewrites its own directory; removed
	// when this try fails (nothing half-written is left to look complete).
	dir := filepath.Join(w.cfg.state, "quarantine", fmt.Sprintf("%s-e%d-%s", pathSafe(account), old.Epoch, created.UTC().Format("20060102T150405")))
	os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "files"), 0o700); err != nil {
		return "", 0, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	rep := quarantineReport{Account: account, Node: w.cfg.node, OldEpoch: old.Epoch, NewEpoch: epoch, Partner: old.Partner,
		PartnerApplied: applied, Created: time.Now().UTC()}
	files := map[[2]string]*quarantinedFile{}
	file := func(tree, p string) *quarantinedFile {
		k := [2]string{tree, p}
		if files[k] == nil {
			files[k] = &quarantinedFile{Tree: tree, Path: p, Mailbox: path.Dir(p)}
		}
		return files[k]
	}
	blobs := map[[2]string][32]byte{}
	for _, r := range recs {
		q := quarantinedRec{LSN: uint64(r.LSN), Op: opString(r.Op), Tree: r.Tree, Path: r.Path, NewPath: r.NewPath, Mailbox: path.Dir(r.Path)}
		f := file(r.Tree, r.Path)
		f.Ops = append(f.Ops, q.Op)
		switch r.Op {
		case journal.OpWrite:
			q.Offset, q.Length = r.Offset, int64(len(r.Data))
			f.Ranges = append(f.Ranges, [2]int64{r.Offset, r.Offset + int64(len(r.Data))})
		case journal.OpTruncate:
			q.Size = r.Size
		case journal.OpMessage, journal.OpReplace:
			q.Length, f.Whole = r.Size, true
			if r.Hash != ([32]byte{}) {
				blobs[[2]string{r.Tree, r.Path}] = r.Hash
			}
		case journal.OpCreate, journal.OpMkdir, journal.OpSymlink:
			f.Whole = true
		}
		if r.NewPath != "" {
			nf := file(r.Tree, r.NewPath)
			nf.Ops = append(nf.Ops, q.Op+" (new name)")
			nf.Whole = true
		}
		rep.Records = append(rep.Records, q)
	}
	// Messages the new master has as files but not in its index.
	for _, m := range indexAppends(recs, w.readIndexHeader) {
		f := file(m.Tree, m.Path)
		f.Ops = append(f.Ops, "indexed in the tail")
		f.Whole = true
	}
	for _, f := range files {
		f.Ranges = mergeRanges(f.Ranges)
		c, err := w.keepCopy(dir, f, blobs)
		if err != nil {
			// This node's copy may be the only one: the fence waits.
			return "", 0, fmt.Errorf("keep %s/%s: %w", f.Tree, f.Path, err)
		}
		f.Copy = c
		rep.Files = append(rep.Files, *f)
	}
	sort.Slice(rep.Files, func(i, j int) bool {
		a, b := rep.Files[i], rep.Files[j]
		return a.Tree < b.Tree || a.Tree == b.Tree && a.Path < b.Path
	})
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", 0, err
	}
	if err := durable.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n')); err != nil {
		return "", 0, err
	}
	if err := durable.WriteFile(filepath.Join(dir, "report.txt"), []byte(formatQuarantine(&rep))); err != nil {
		return "", 0, err
	}
	return dir, len(recs), nil
}

// readIndexHeader reads the start of this node's copy of an index file.
func (w *roleSwitch) readIndexHeader(tree, p string) []byte {
	for _, t := range w.cfg.trees {
		if t.name != tree {
			continue
		}
		f, err := os.Open(filepath.Join(t.backing, filepath.FromSlash(p)))
		if err != nil {
			return nil
		}
		defer f.Close()
		b := make([]byte, indexHeaderMin)
		if _, err := io.ReadFull(f, b); err != nil {
			return nil
		}
		return b
	}
	return nil
}

// keepCopy copies this node's version of f into dir/files (from the tree,
// or from the blob store for a message file gone since); it returns the
// copy's path relative to dir ("" for a directory or nothing to copy).
func (w *roleSwitch) keepCopy(dir string, f *quarantinedFile, blobs map[[2]string][32]byte) (string, error) {
	rel := filepath.Join("files", f.Tree, filepath.FromSlash(f.Path))
	dst := filepath.Join(dir, rel)
	var src io.ReadCloser
	for _, t := range w.cfg.trees {
		if t.name != f.Tree {
			continue
		}
		p := filepath.Join(t.backing, filepath.FromSlash(f.Path))
		fi, err := os.Lstat(p)
		if err == nil && fi.IsDir() {
			return "", os.MkdirAll(dst, 0o700)
		}
		if err == nil && fi.Mode().IsRegular() {
			if fh, err := os.Open(p); err == nil {
				src = fh
			}
		}
	}
	if h, ok := blobs[[2]string{f.Tree, f.Path}]; src == nil && ok && w.jrnl != nil {
		if fh, err := w.jrnl.OpenBlob(h); err == nil {
			src = fh
		}
	}
	if src == nil {
		return "", nil
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(out, src)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return rel, err
}

// mergeRanges sorts and merges overlapping or adjacent ranges.
func mergeRanges(rs [][2]int64) [][2]int64 {
	if len(rs) < 2 {
		return rs
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i][0] < rs[j][0] })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r[0] <= last[1] {
			last[1] = max(last[1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

func pathSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '%' || r < ' ' {
			return '_'
		}
		return r
	}, s)
}

func opString(op journal.Op) string {
	names := map[journal.Op]string{journal.OpMessage: "message", journal.OpWrite: "write", journal.OpTruncate: "truncate",
		journal.OpReplace: "replace", journal.OpMkdir: "mkdir", journal.OpRmdir: "rmdir", journal.OpUnlink: "unlink",
		journal.OpRename: "rename", journal.OpLink: "link", journal.OpSymlink: "symlink", journal.OpSetattr: "setattr",
		journal.OpCreate: "create", journal.OpDirty: "dirty"}
	if n, ok := names[op]; ok {
		return n
	}
	return fmt.Sprintf("op%d", op)
}

// formatQuarantine is report.txt: what an admin reads first.
func formatQuarantine(r *quarantineReport) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "quarantine of %s on %s, %s\n", r.Account, r.Node, r.Created.Format(time.RFC3339))
	fmt.Fprintf(&sb, "failed over: epoch %d → %d (new master %s); it had applied our records through LSN %d\n",
		r.OldEpoch, r.NewEpoch, r.Partner, r.PartnerApplied)
	fmt.Fprintf(&sb, "%d unreplicated record(s), %d file(s); this node's copies under files/\n\n", len(r.Records), len(r.Files))
	for _, f := range r.Files {
		what := strings.Join(f.Ops, ",")
		if len(f.Ranges) > 0 {
			var rs []string
			for _, x := range f.Ranges {
				rs = append(rs, fmt.Sprintf("%d-%d", x[0], x[1]))
			}
			what += " bytes " + strings.Join(rs, ",")
		}
		if f.Whole {
			what += " (whole file)"
		}
		fmt.Fprintf(&sb, "  %-5s %-40s mailbox %-30s %s\n", f.Tree, f.Path, f.Mailbox, what)
	}
	return sb.String()
}

// listQuarantines reads every report under state/quarantine.
func listQuarantines(state string) ([]quarantineReport, []string, error) {
	ents, err := os.ReadDir(filepath.Join(state, "quarantine"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var out []quarantineReport
	var dirs []string
	for _, de := range ents {
		d := filepath.Join(state, "quarantine", de.Name())
		b, err := os.ReadFile(filepath.Join(d, "report.json"))
		if err != nil {
			continue
		}
		var r quarantineReport
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", d, err)
		}
		out = append(out, r)
		dirs = append(dirs, d)
	}
	return out, dirs, nil
}

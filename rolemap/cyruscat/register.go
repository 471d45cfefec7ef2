package cyruscat

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"mreplfs/rolemap/classify"
)

// Mailbox is one mailbox of an account, found from its cyrus.header.
type Mailbox struct {
	Name      string // internal name ("user.alice.Sent", "DELETED.user.alice.Trash.6B119DEE")
	Header    string // path of its cyrus.header
	Partition string
	ID        string // uniqueid
	Type      string // T: "e", "el" (legacy layout) ...
	// StaleName: a legacy mailbox whose header still names it by an old
	// name (3.6.1 does not update N on a legacy RENAME or delayed DELETE);
	// reconstruct -P crashes on such a header (CYRUS.md §7.4).
	StaleName bool
	line      string // the header's dlist line
}

// Mailboxes finds every mailbox of account under the partitions: its own
// cyrus.header files (uuid layout: named by the header's N; legacy layout:
// by the directory, never by N). It walks the whole header trees.
func (c *Catalogue) Mailboxes(account string) ([]Mailbox, error) {
	all, err := c.allMailboxes(func(name string) bool {
		a, ok := classify.AccountFromMailboxName(name)
		return ok && a == account
	})
	return all, err
}

// allMailboxes returns the mailboxes whose internal name keep accepts.
func (c *Catalogue) allMailboxes(keep func(name string) bool) ([]Mailbox, error) {
	var out []Mailbox
	var errs []error
	for _, part := range c.cfg.partitions() {
		root := c.cfg.HeaderRoots[part]
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				errs = append(errs, err)
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if d.IsDir() && (d.Name() == "stage." || d.Name() == "sync.") {
				return fs.SkipDir
			}
			if d.IsDir() || d.Name() != "cyrus.header" {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, err)
				}
				return nil
			}
			h, err := classify.ParseHeader(b)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p, err))
				return nil
			}
			mb := Mailbox{Name: h.Name, Header: p, Partition: part, ID: h.UniqueID, Type: h.Type, line: dlistLine(b)}
			if strings.Contains(h.Type, "l") {
				if n := c.legacyName(root, filepath.Dir(p)); n != "" {
					mb.StaleName = n != h.Name
					mb.Name = n
				}
			}
			if mb.Name != "" && keep(mb.Name) {
				out = append(out, mb)
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if da, db := strings.HasPrefix(a.Name, "DELETED."), strings.HasPrefix(b.Name, "DELETED."); da != db {
			return db
		}
		if na, nb := strings.Count(a.Name, "."), strings.Count(b.Name, "."); na != nb {
			return na < nb
		}
		return a.Name < b.Name
	})
	return out, errors.Join(errs...)
}

// legacyName derives a legacy mailbox's internal name from its directory
// below a partition root: [domain/[<d1>/]<dom>/][<h>/]user/alice/Sent →
// [dom!]user.alice.Sent; "" when the directory is not a mailbox's.
func (c *Catalogue) legacyName(root, dir string) string {
	rel, err := filepath.Rel(root, dir)
	if err != nil {
		return ""
	}
	comps := strings.Split(filepath.ToSlash(rel), "/")
	domain := ""
	if len(comps) > 2 && comps[0] == "domain" {
		if len(comps[1]) == 1 {
			comps = comps[1:]
		}
		domain, comps = comps[1], comps[2:]
	}
	if (c.cfg.Hash || c.cfg.FullDirHash) && len(comps) > 1 && len(comps[0]) == 1 {
		comps = comps[1:]
	}
	if len(comps) == 0 || (comps[0] != "user" && comps[0] != "DELETED") {
		return ""
	}
	n := strings.Join(comps, ".")
	if domain != "" {
		n = domain + "!" + n
	}
	return n
}

// dlistLine returns a header's "%(...)" line.
func dlistLine(b []byte) string {
	for _, l := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("%(")) {
			return string(l)
		}
	}
	return ""
}

// dbName turns an internal name into its mailboxes.db form: hierarchy
// separators become \x1f (the domain part keeps its dots).
func dbName(internal string) string {
	dom, rest, ok := strings.Cut(internal, "!")
	if !ok {
		return strings.ReplaceAll(internal, ".", "\x1f")
	}
	return dom + "!" + strings.ReplaceAll(rest, ".", "\x1f")
}

// internalName is dbName's inverse.
func internalName(db string) string {
	return strings.ReplaceAll(strings.ReplaceAll(db, "\x1f", "."), "\x1d", "!")
}

var recField = regexp.MustCompile(`[ (]([A-Z]) ("(?:[^"\\]|\\.)*"|[^ )]+)`)

// field returns a top-level field of a mailboxes.db or cyrus.header dlist.
func field(dl, name string) string {
	for _, m := range recField.FindAllStringSubmatch(dl, -1) {
		if m[1] == name {
			return strings.Trim(m[2], `"`)
		}
	}
	return ""
}

// Records returns the account's N and I records in mailboxes.db (I records
// whose N names the account).
func (c *Catalogue) Records(ctx context.Context, account string) ([]KV, error) {
	mine := func(name string) bool {
		a, ok := classify.AccountFromMailboxName(name)
		return ok && a == account
	}
	var cmds [][]byte
	for _, p := range c.namePrefixes(account) {
		cmds = append(cmds, batchCmd("SHOW", []byte(p)))
	}
	kvs, err := c.batch(ctx, "mailboxes.db", cmds)
	if err != nil {
		return nil, err
	}
	var out []KV
	ids := map[string]bool{}
	for _, kv := range kvs {
		if len(kv.Key) > 1 && kv.Key[0] == 'N' && mine(internalName(string(kv.Key[1:]))) {
			out = append(out, kv)
			if id := field(string(kv.Value), "I"); id != "" {
				ids[id] = true
			}
		}
	}
	// the I records: those named by the N records, plus those of the
	// account's headers (an I record can outlive its N record)
	mbs, _ := c.Mailboxes(account)
	for _, m := range mbs {
		ids[m.ID] = true
	}
	if len(ids) == 0 {
		return out, nil
	}
	cmds = cmds[:0]
	for _, id := range sortedKeys(ids) {
		cmds = append(cmds, batchCmd("GET", []byte("I"+id)))
	}
	kvs, err = c.batch(ctx, "mailboxes.db", cmds)
	if err != nil {
		return nil, err
	}
	for _, kv := range kvs {
		if n := field(internalName(string(kv.Value)), "N"); mine(n) {
			out = append(out, kv)
		}
	}
	return out, nil
}

// namePrefixes returns the mailboxes.db key prefixes under which the
// account's N records lie.
func (c *Catalogue) namePrefixes(account string) []string {
	if strings.HasPrefix(account, classify.SharedPrefix) || strings.Contains(account, "@") {
		return []string{"N"} // shared folders, virtual domains: filter all names
	}
	local := strings.ReplaceAll(account, ".", "^")
	return []string{"Nuser\x1f" + local, "NDELETED\x1fuser\x1f" + local}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Registration says what Register did.
type Registration struct {
	Mailboxes   int // found from the account's headers
	Removed     int // records of names and ids the account no longer has, deleted
	Reconstruct int // registered by reconstruct -P
	Written     int // legacy mailboxes with a stale header name, written directly
	Registered  int // N records of the account afterwards
}

// Register makes this server's Cyrus know account's mailboxes from the
// account's own files, with Cyrus running (CYRUS.md §7): `reconstruct -P
// <headers>` rebuilds each mailbox's N/I records from its cyrus.header and
// cyrus.index; a mailbox it did not register (its index is read-only
// through the mount on a replica server; a legacy mailbox whose header keeps
// an old name, where -P crashes) gets the same records written with
// cyr_dbtool, name from the path, the rest from the header and index. Then
// the account's records of names and ids it no longer has are deleted. The
// account stays known throughout. It fails when, afterwards, a mailbox is
// not registered.
func (c *Catalogue) Register(ctx context.Context, account string) (Registration, error) {
	var reg Registration
	mbs, err := c.Mailboxes(account)
	if err != nil {
		return reg, fmt.Errorf("cyruscat: register %s: %w", account, err)
	}
	reg.Mailboxes = len(mbs)
	var headers []string
	var direct []Mailbox
	for _, m := range mbs {
		if m.StaleName {
			direct = append(direct, m)
		} else {
			headers = append(headers, m.Header)
		}
	}
	if len(headers) > 0 {
		// reconstruct -P skips a mailbox it cannot open for writing
		// (through the mount, a replica account's cyrus.index is
		// read-only) and stops at a header it cannot take (a crash on a
		// non-canonical path); what it did not report registering is
		// written directly below.
		out, err := c.run(ctx, nil, "reconstruct", append([]string{"-P"}, headers...)...)
		if err != nil {
			c.log.Debug("reconstruct -P failed", "account", account, "err", err, "output", string(out))
		}
		done := map[string]bool{}
		for _, m := range createdRe.FindAllStringSubmatch(string(out), -1) {
			done[m[1]+" "+m[2]] = true
		}
		for _, m := range mbs {
			if m.StaleName {
				continue
			}
			if done[m.Name+" "+m.ID] {
				reg.Reconstruct++
			} else {
				direct = append(direct, m)
			}
		}
	}
	if len(direct) > 0 {
		cmds := [][]byte{batchCmd("BEGIN")}
		now := time.Now().Unix()
		for _, m := range direct {
			n, i, err := directRecords(m, now)
			if err != nil {
				return reg, fmt.Errorf("cyruscat: register %s: %w", account, err)
			}
			cmds = append(cmds, batchCmd("SET", n.Key, n.Value), batchCmd("SET", i.Key, i.Value))
		}
		cmds = append(cmds, batchCmd("COMMIT"))
		if _, err := c.batch(ctx, "mailboxes.db", cmds); err != nil {
			return reg, fmt.Errorf("cyruscat: register %s: %w", account, err)
		}
		reg.Written = len(direct)
	}
	// Only now the records of names and ids the account no longer has
	// (renamed, deleted, tombstones): reconstruct -P never removes them,
	// and removing them first would open a window in which this Cyrus
	// does not know the account (LMTP 550, a bounce).
	names, ids := map[string]bool{}, map[string]bool{}
	for _, m := range mbs {
		names[m.Name], ids[m.ID] = true, true
	}
	recs, err := c.Records(ctx, account)
	if err != nil {
		return reg, fmt.Errorf("cyruscat: register %s: %w", account, err)
	}
	var stale [][]byte
	for _, kv := range recs {
		switch k := string(kv.Key); {
		case k[0] == 'N' && !names[internalName(k[1:])]:
			stale = append(stale, kv.Key)
		case k[0] == 'N':
			reg.Registered++
		case k[0] == 'I' && !ids[k[1:]]:
			stale = append(stale, kv.Key)
		}
	}
	if len(stale) > 0 {
		cmds := [][]byte{batchCmd("BEGIN")}
		for _, k := range stale {
			cmds = append(cmds, batchCmd("DELETE", k))
		}
		cmds = append(cmds, batchCmd("COMMIT"))
		if _, err := c.batch(ctx, "mailboxes.db", cmds); err != nil {
			return reg, fmt.Errorf("cyruscat: register %s: removing stale records: %w", account, err)
		}
		reg.Removed = len(stale)
	}
	if reg.Registered != reg.Mailboxes {
		return reg, fmt.Errorf("cyruscat: register %s: %d of %d mailboxes registered", account, reg.Registered, reg.Mailboxes)
	}
	return reg, nil
}

// createdRe matches what reconstruct -P prints for each mailbox it
// registered.
var createdRe = regexp.MustCompile(`created mbentry for (\S+) \(([0-9a-z]+)\)`)

// directRecords builds a mailbox's N and I records the way Cyrus 3.6
// writes them: uniqueid, ACL and type from the header, uidvalidity,
// createdmodseq and highestmodseq (as foldermodseq) from cyrus.index.
func directRecords(m Mailbox, now int64) (n, i KV, err error) {
	idx := make([]byte, 160)
	f, err := os.Open(filepath.Join(filepath.Dir(m.Header), "cyrus.index"))
	if err != nil {
		return n, i, err
	}
	_, err = f.ReadAt(idx, 0)
	f.Close()
	if err != nil {
		return n, i, fmt.Errorf("%s: cyrus.index: %w", m.Name, err)
	}
	uv := binary.BigEndian.Uint32(idx[44:48])
	hms := binary.BigEndian.Uint64(idx[68:76])
	cms := binary.BigEndian.Uint64(idx[128:136])
	typ := m.Type
	if typ == "" {
		typ = "e"
	}
	common := fmt.Sprintf("P %s V %d C %d F %d M %d", m.Partition, uv, cms, hms, now)
	if a := aclOf(m.line); a != "" {
		common += " A " + a
	}
	db := dbName(m.Name)
	n = KV{[]byte("N" + db), []byte(fmt.Sprintf("%%(T %s I %s %s)", typ, m.ID, common))}
	i = KV{[]byte("I" + m.ID), []byte(fmt.Sprintf("%%(T %s N %s %s H ())", typ, db, common))}
	return n, i, nil
}

var aclRe = regexp.MustCompile(` A (%\([^)]*\))`)

func aclOf(line string) string {
	if m := aclRe.FindStringSubmatch(line); m != nil {
		return m[1]
	}
	return ""
}

// Unregister deletes account's N/I records from mailboxes.db (its files
// stay): this Cyrus then no longer serves the account, and LMTP answers
// 550 User unknown for it — a permanent bounce, so only do it once mail is
// routed elsewhere (CYRUS.md §7.5).
func (c *Catalogue) Unregister(ctx context.Context, account string) (int, error) {
	old, err := c.Records(ctx, account)
	if err != nil || len(old) == 0 {
		return 0, err
	}
	cmds := [][]byte{batchCmd("BEGIN")}
	for _, kv := range old {
		cmds = append(cmds, batchCmd("DELETE", kv.Key))
	}
	cmds = append(cmds, batchCmd("COMMIT"))
	if _, err := c.batch(ctx, "mailboxes.db", cmds); err != nil {
		return 0, fmt.Errorf("cyruscat: unregister %s: %w", account, err)
	}
	return len(old), nil
}

package cyruscat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"mreplfs/internal/durable"
	"mreplfs/internal/fsident"
	"mreplfs/rolemap/classify"
)

// SidecarSuffix ends the name of an account's annotations sidecar, a
// legacy-style per-user file of configdirectory
// (user/<h>/<user>.mreplfs-annotations), so the path classifier attributes
// it to the account and it replicates like the account's own files.
const SidecarSuffix = ".mreplfs-annotations"

// Sidecar is an account's mailbox annotations (annotations.db records keyed
// by one of its mailboxes' uniqueid: SPECIAL-USE, METADATA, private and
// shared), as the master exported them.
type Sidecar struct {
	Version int    `json:"version"`
	Account string `json:"account"`
	// Mailboxes are the account's mailbox ids at export time: on apply, an
	// annotation of one of them that the sidecar lacks is deleted.
	Mailboxes   []string `json:"mailboxes"`
	Annotations []KV     `json:"annotations"` // raw annotations.db keys and values, sorted by key
}

// SidecarPath returns where account's sidecar lives in configdirectory:
// user/<h>/<local>.mreplfs-annotations, or
// domain/<d1>/<domain>/user/<h>/<local>.mreplfs-annotations under virtual
// domains. <h> is the first letter of the local part ('q' for others), as
// Cyrus names its own per-user files; the classifier accepts any hash.
func SidecarPath(configDir, account string) string {
	local, domain, _ := strings.Cut(account, "@")
	h := "q"
	if l := strings.ToLower(strings.TrimPrefix(local, "%")); l != "" && l[0] >= 'a' && l[0] <= 'z' {
		h = l[:1]
	}
	p := filepath.Join("user", h, local+SidecarSuffix)
	if domain != "" {
		p = filepath.Join("domain", domain[:1], domain, p)
	}
	return filepath.Join(configDir, p)
}

// Export reads annotations.db and returns the sidecar of every account
// master(account) accepts that has a mailbox here (empty when it has no
// annotation).
func (c *Catalogue) Export(ctx context.Context, master func(account string) bool) (map[string]*Sidecar, error) {
	owner := map[string]string{}
	out := map[string]*Sidecar{}
	mbs, err := c.allMailboxes(func(name string) bool {
		a, ok := accountOf(name)
		return ok && master(a)
	})
	if err != nil {
		c.log.Warn("some mailboxes could not be read", "err", err)
	}
	for _, m := range mbs {
		a, _ := accountOf(m.Name)
		owner[m.ID] = a
		s := out[a]
		if s == nil {
			s = &Sidecar{Version: 1, Account: a, Mailboxes: []string{}, Annotations: []KV{}}
			out[a] = s
		}
		s.Mailboxes = append(s.Mailboxes, m.ID)
	}
	if len(out) == 0 {
		return out, nil
	}
	kvs, err := c.batch(ctx, "annotations.db", [][]byte{batchCmd("SHOW", nil)})
	if err != nil {
		return nil, fmt.Errorf("cyruscat: export annotations: %w", err)
	}
	for _, kv := range kvs {
		id, _, ok := bytes.Cut(kv.Key, []byte{0})
		if !ok || len(id) == 0 {
			continue // a server annotation
		}
		if a, ok := owner[string(id)]; ok {
			out[a].Annotations = append(out[a].Annotations, kv)
		}
	}
	for _, s := range out {
		sort.Strings(s.Mailboxes)
		sort.Slice(s.Annotations, func(i, j int) bool { return bytes.Compare(s.Annotations[i].Key, s.Annotations[j].Key) < 0 })
	}
	return out, nil
}

func accountOf(name string) (string, bool) {
	return classify.AccountFromMailboxName(name)
}

// Marshal encodes a sidecar (deterministic: same annotations, same bytes).
func (s *Sidecar) Marshal() []byte {
	b, _ := json.MarshalIndent(s, "", " ")
	return append(b, '\n')
}

// ReadSidecar reads a sidecar file.
func ReadSidecar(path string) (*Sidecar, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Sidecar
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("cyruscat: sidecar %s: %w", path, err)
	}
	if s.Version != 1 {
		return nil, fmt.Errorf("cyruscat: sidecar %s: version %d not supported", path, s.Version)
	}
	return &s, nil
}

// WriteSidecar writes s to its path under configdirectory (through the
// mount, so that it is journaled as the account's) unless the file already
// holds the same bytes: X.NEW, fsync, rename, fsync of the directory. New
// files and directories are given to uid:gid. It reports whether it wrote.
func (c *Catalogue) WriteSidecar(s *Sidecar, uid, gid int) (bool, error) {
	p := SidecarPath(c.cfg.ConfigDir, s.Account)
	b := s.Marshal()
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, b) {
		return false, nil
	}
	dir := filepath.Dir(p)
	if err := mkdirOwned(dir, uid, gid); err != nil {
		return false, fmt.Errorf("cyruscat: sidecar: %w", err)
	}
	if err := durable.Replace(p, p+".NEW", b, uid, gid); err != nil {
		return false, fmt.Errorf("cyruscat: sidecar: %w", err)
	}
	return true, nil
}

func mkdirOwned(dir string, uid, gid int) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := mkdirOwned(filepath.Dir(dir), uid, gid); err != nil {
		return err
	}
	// Born the owner's (package fsident): made by root and chowned, Cyrus
	// could meet it root-owned in between ("Permission denied" on a .sub).
	err := fsident.As(uid, gid, func() error { return os.Mkdir(dir, 0o750) })
	if errors.Is(err, fs.ErrPermission) { // the owner cannot reach it: as root, then chown
		if err = os.Mkdir(dir, 0o750); err == nil {
			err = os.Chown(dir, uid, gid)
		}
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// Applied says what Apply did.
type Applied struct {
	Set, Deleted int
}

// Apply makes this server's annotations.db hold exactly the sidecar's
// annotations for the sidecar's mailboxes: records it lacks or holds with
// other bytes are set, records of those mailboxes it does not list are
// deleted, in one cyr_dbtool transaction. Cyrus may run; nothing else
// (cyrus.index, modseqs) changes.
func (c *Catalogue) Apply(ctx context.Context, s *Sidecar) (Applied, error) {
	var res Applied
	var show [][]byte
	for _, id := range s.Mailboxes {
		show = append(show, batchCmd("SHOW", []byte(id+"\x00")))
	}
	if len(show) == 0 {
		return res, nil
	}
	have, err := c.batch(ctx, "annotations.db", show)
	if err != nil {
		return res, fmt.Errorf("cyruscat: apply annotations of %s: %w", s.Account, err)
	}
	cur := map[string][]byte{}
	for _, kv := range have {
		cur[string(kv.Key)] = kv.Value
	}
	cmds := [][]byte{batchCmd("BEGIN")}
	want := map[string]bool{}
	for _, kv := range s.Annotations {
		want[string(kv.Key)] = true
		if v, ok := cur[string(kv.Key)]; ok && bytes.Equal(v, kv.Value) {
			continue
		}
		cmds = append(cmds, batchCmd("SET", kv.Key, kv.Value))
		res.Set++
	}
	for _, kv := range have {
		if !want[string(kv.Key)] {
			cmds = append(cmds, batchCmd("DELETE", kv.Key))
			res.Deleted++
		}
	}
	if res.Set+res.Deleted == 0 {
		return res, nil
	}
	cmds = append(cmds, batchCmd("COMMIT"))
	if _, err := c.batch(ctx, "annotations.db", cmds); err != nil {
		return Applied{}, fmt.Errorf("cyruscat: apply annotations of %s: %w", s.Account, err)
	}
	return res, nil
}

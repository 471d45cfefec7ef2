package classify

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"mreplfs/rolemap/cyrustest"
)

// TestRealCyrus runs the IMAP/LMTP scenario on a real Cyrus in several
// layouts, stops it, scans the headers and classifies every file and
// directory of the resulting tree: no path may be unresolved or pending,
// and the owners must be the ones the headers and the scenario say.
func TestRealCyrus(t *testing.T) {
	immediate := []string{"expunge_mode: immediate", "delete_mode: immediate"}
	for _, v := range []struct {
		name string
		o    cyrustest.Options
	}{
		{"uuid-meta", cyrustest.Options{Layout: cyrustest.UUID, Meta: true}},
		{"legacy-hash-virtdomains", cyrustest.Options{Layout: cyrustest.Legacy, Hash: true, VirtDomains: true}},
		{"uuid-hash-virtdomains-meta", cyrustest.Options{Layout: cyrustest.UUID, Hash: true, VirtDomains: true, Meta: true}},
		{"legacy-fulldirhash-meta-immediate", cyrustest.Options{Layout: cyrustest.Legacy, Hash: true, FullDirHash: true,
			Meta: true, ExtraConf: immediate}},
		{"legacy-nohash", cyrustest.Options{Layout: cyrustest.Legacy}},
	} {
		t.Run(v.name, func(t *testing.T) {
			dir := filepath.Join(cyrustest.TempDir(t), "cyrus")
			in := cyrustest.Start(t, dir, v.o)
			res := cyrustest.RunScenario(t, in)
			extra := extraAccounts(t, in)
			dump, err := in.Tool(context.Background(), "ctl_mboxlist", "-d")
			if err != nil {
				t.Fatal(err)
			}
			if err := in.Stop(); err != nil {
				t.Fatal(err)
			}
			c := checkTree(t, dir, v.o.Layout == cyrustest.Legacy, res, extra)
			if v.o.Layout == cyrustest.UUID {
				checkMboxlist(t, c, dump)
			}
		})
	}
}

// extraAccounts adds what the scenario lacks: a dotted user name (stored as
// '^' in legacy paths) with a quota and a subscription, and a shared folder
// with a quota root and a message.
func extraAccounts(t *testing.T, in *cyrustest.Instance) []string {
	t.Helper()
	q := cyrustest.Quote
	adm := in.IMAP(t, cyrustest.Admin)
	shared := "shared/news"
	if d := in.Domain(); d != "" {
		shared += "@" + d
	}
	john := in.Account("john.doe")
	for _, c := range []string{
		"CREATE " + q(in.MailboxName("john.doe", "")),
		"CREATE " + q(in.MailboxName("john.doe", "Sub.Folder")),
		"SETQUOTA " + q(in.MailboxName("john.doe", "")) + " (STORAGE 5000)",
		"CREATE " + q(shared),
		"SETACL " + q(shared) + " admin lrswipkxtecdan",
		"SETQUOTA " + q(shared) + " (STORAGE 5000)",
	} {
		if _, err := adm.Cmd("%s", c); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, in.Log())
		}
	}
	if err := adm.Append(shared, "", cyrustest.Message("to shared", 500)); err != nil {
		t.Fatalf("APPEND %s: %v", shared, err)
	}
	in.Deliver(t, []string{john}, cyrustest.Message("to john", 500))
	jd := in.IMAP(t, john)
	for _, c := range []string{"SUBSCRIBE INBOX/Sub.Folder", "SELECT INBOX", `STORE 1 +FLAGS (\Seen)`} {
		if _, err := jd.Cmd("%s", c); err != nil {
			t.Fatalf("john: %s: %v", c, err)
		}
	}
	if err := jd.Append("INBOX/Sub.Folder", "", cyrustest.Message("to sub", 500)); err != nil {
		t.Fatal(err)
	}
	jd.Logout()
	adm.Logout()
	if d := in.Domain(); d != "" {
		// Cyrus 3.6 creates the parent of shared/news@example.com as the
		// top-level mailbox "shared" of the default domain (its header says
		// N shared): so %shared appears too.
		return []string{john, "%shared@" + d, "%shared"}
	}
	return []string{john, "%shared"}
}

// headerOwner is the test's own reading of a header name, independent of
// AccountFromMailboxName: the accounts this test creates, by name prefix.
func headerOwner(name string) string {
	domain := ""
	if d, n, ok := strings.Cut(name, "!"); ok {
		domain, name = "@"+d, n
	}
	name = strings.TrimPrefix(name, "DELETED.")
	for _, p := range []struct{ prefix, account string }{
		{"user.alice", "alice"}, {"user.bob", "bob"}, {"user.carol", "carol"}, {"user.dave", "dave"},
		{"user.john^doe", "john.doe"}, {"shared", "%shared"},
	} {
		if name == p.prefix || strings.HasPrefix(name, p.prefix+".") {
			return p.account + domain
		}
	}
	return "?" + name
}

// checkMboxlist compares the owner map built from the headers with Cyrus's
// own mailboxes.db (ctl_mboxlist -d): every live mailbox's id must map to
// the account its name says.
func checkMboxlist(t *testing.T, c *Classifier, dump []byte) {
	t.Helper()
	var mboxes map[string]struct {
		Type string `json:"mbtype"`
		ID   string `json:"uniqueid"`
	}
	if err := json.Unmarshal(dump, &mboxes); err != nil {
		t.Fatalf("ctl_mboxlist -d: %v", err)
	}
	n := 0
	perAccount := map[string]int{}
	for name, m := range mboxes {
		if strings.Contains(m.Type, "d") { // tombstone of a renamed/deleted name
			continue
		}
		n++
		perAccount[headerOwner(name)]++
		if got, ok := c.Owner(m.ID); !ok || got != headerOwner(name) {
			t.Errorf("mailboxes.db %s (%s): owner map says %q, %v; want %q", name, m.ID, got, ok, headerOwner(name))
		}
	}
	for a, want := range perAccount {
		if ids := c.MailboxIDs(a); len(ids) != want {
			t.Errorf("MailboxIDs(%s) = %v, mailboxes.db has %d", a, ids, want)
		}
	}
	if perAccount[headerOwner("user.alice")]+perAccount[headerOwner("example.com!user.alice")] != 4 {
		t.Errorf("alice has %v mailboxes, want 4 (INBOX, Sent, Archive2, DELETED Trash)", perAccount)
	}
	if n != c.Mailboxes() || n < 8 {
		t.Errorf("mailboxes.db has %d live mailboxes, owner map %d", n, c.Mailboxes())
	}
}

func checkTree(t *testing.T, dir string, legacy bool, res cyrustest.ScenarioResult, extra []string) *Classifier {
	t.Helper()
	trees := map[string]string{}
	for _, tr := range []string{TreeConf, TreeSpool, TreeMeta, TreeSieve} {
		if _, err := os.Stat(filepath.Join(dir, tr)); err == nil {
			trees[tr] = filepath.Join(dir, tr)
		}
	}
	c := New(Options{Logger: nil})
	if err := c.Scan(trees); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if !legacy && c.Mailboxes() == 0 {
		t.Fatal("Scan found no uuid mailbox")
	}
	if legacy && c.Mailboxes() != 0 {
		t.Errorf("Scan found %d uuid mailboxes in a legacy tree", c.Mailboxes())
	}
	// Header of each mailbox dir, read independently: dir path → header.
	headers := map[string]Header{}
	inbox := map[string]string{} // INBOX id → owner (uuid per-user dirs)
	seen := map[string]bool{}
	kinds := map[Kind]int{}
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		paths = append(paths, rel)
		if d.Name() == "cyrus.header" {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h, err := ParseHeader(b)
			if err != nil {
				t.Errorf("%s: %v", rel, err)
				return nil
			}
			headers[filepath.Dir(rel)] = h
			if os.Getenv("MREPLFS_DUMP") != "" {
				t.Logf("header %s: %+v", rel, h)
			}
			if n := strings.TrimPrefix(h.Name, strings.Split(h.Name, "!")[0]+"!"); strings.Count(n, ".") == 1 && strings.HasPrefix(n, "user.") {
				inbox[h.UniqueID] = headerOwner(h.Name)
			}
			if os.Getenv("MREPLFS_SAVE_HEADERS") != "" {
				saveHeader(t, h, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range paths {
		r := c.Classify(rel)
		kinds[r.Kind]++
		if os.Getenv("MREPLFS_DUMP") != "" {
			t.Logf("%-12s %-24s %s", r.Kind, r.Account, rel)
		}
		switch r.Kind {
		case Unresolved, Pending:
			t.Errorf("%s: %+v", rel, r)
			continue
		}
		if r.IsAccount() {
			seen[r.Account] = true
		}
		// A mailbox dir or file: same owner as its header says.
		if r.Kind == Mailbox {
			mdir := rel
			if r.File != "" {
				mdir = filepath.Dir(rel)
			}
			h, ok := headers[mdir]
			if !ok {
				// uuid: the spool dir of a meta-partition mailbox holds no
				// header; the meta one does.
				h, ok = headers[strings.Replace(mdir, "spool/", "meta/", 1)]
			}
			if !ok {
				if !legacy || !intermediateLegacy(rel, headers) {
					t.Errorf("%s: mailbox path %+v without a cyrus.header", rel, r)
				}
				continue
			}
			want := headerOwner(h.Name)
			// Legacy: a user RENAME carol→dave leaves N at carol (CYRUS.md §7.4).
			if r.Account != want && !(legacy && strings.Replace(want, "carol", "dave", 1) == r.Account) {
				t.Errorf("%s: account %q, header N %q says %q", rel, r.Account, h.Name, want)
			}
			if !legacy && r.MailboxID != h.UniqueID {
				t.Errorf("%s: mailbox id %q, header I %q", rel, r.MailboxID, h.UniqueID)
			}
		}
		if r.Kind == Mailbox && strings.HasSuffix(rel, ".") && r.File == "" {
			t.Errorf("%s: message file without File: %+v", rel, r)
		}
		if r.Kind == Quota {
			base := strings.TrimSuffix(filepath.Base(rel), ".NEW")
			want := map[string]string{"user.alice": "alice", "user.john^doe": "john.doe", "shared.news": "%shared", "shared": "%shared"}[base]
			if res.Domain != "" {
				want += "@" + res.Domain
			}
			if r.Account != want {
				t.Errorf("%s: quota account %q, want %q", rel, r.Account, want)
			}
		}
		if r.Kind == UserDB && r.MailboxID != "" {
			if want, ok := inbox[r.MailboxID]; !ok || want != r.Account {
				t.Errorf("%s: per-user dir of INBOX %s: account %q, INBOX header says %q", rel, r.MailboxID, r.Account, want)
			}
		}
	}
	t.Logf("%d paths: %v; accounts %v", len(paths), kinds, keys(seen))
	for _, a := range append(append([]string{}, res.Live...), extra...) {
		if !seen[a] {
			t.Errorf("account %q owns no path", a)
		}
	}
	allowed := append(append(append([]string{}, res.Live...), res.Gone...), extra...)
	for a := range seen {
		if !slices.Contains(allowed, a) {
			t.Errorf("unexpected account %q", a)
		}
	}
	if kinds[Mailbox] == 0 || kinds[Quota] == 0 || kinds[UserDB] == 0 || kinds[Shared] == 0 {
		t.Errorf("kinds %v: want mailbox, quota, userdb and shared paths", kinds)
	}
	return c
}

// intermediateLegacy reports whether a legacy mailbox path is a directory
// above real mailboxes (user/alice when only its folders remain, a DELETED
// folder level) rather than a mailbox itself.
func intermediateLegacy(rel string, headers map[string]Header) bool {
	meta := strings.Replace(rel, "spool/", "meta/", 1)
	for d := range headers {
		if strings.HasPrefix(d, rel+"/") || strings.HasPrefix(d, meta+"/") {
			return true
		}
	}
	return false
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// saveHeader writes a real header into testdata (seeds for the fuzz target
// and TestHeaderTestdata) when MREPLFS_SAVE_HEADERS is set.
func saveHeader(t *testing.T, h Header, b []byte) {
	name := strings.NewReplacer("!", "_", "^", "_").Replace(h.Name) + ".header"
	if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

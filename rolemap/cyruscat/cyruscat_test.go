package cyruscat_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"mreplfs/rolemap/cyruscat"
	"mreplfs/rolemap/cyrustest"
)

// setup starts a real Cyrus and gives alice INBOX, Sent and Archive (a
// message in each, \Sent on Sent, a comment on Archive) and bob an INBOX.
func setup(t *testing.T, o cyrustest.Options) (*cyrustest.Instance, *cyruscat.Catalogue) {
	t.Helper()
	in := cyrustest.Start(t, cyrustest.TempDir(t), o)
	adm := in.IMAP(t, cyrustest.Admin)
	for _, m := range []string{"user/alice", "user/alice/Sent", "user/alice/Archive", "user/bob"} {
		if _, err := adm.Cmd("CREATE %s", cyrustest.Quote(m)); err != nil {
			t.Fatal(err)
		}
	}
	in.Deliver(t, []string{"alice", "bob"}, cyrustest.Message("hello", 3000))
	al := in.IMAP(t, "alice")
	for _, f := range []string{"INBOX/Sent", "INBOX/Archive"} {
		if err := al.Append(f, `(\Seen)`, cyrustest.Message("in "+f, 1500)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{`SETMETADATA INBOX/Sent (/private/specialuse "\\Sent")`,
		`SETMETADATA INBOX (/private/comment "alice archive")`} {
		if _, err := al.Cmd("%s", c); err != nil {
			t.Fatal(err)
		}
	}
	al.Logout()
	cat, err := cyruscat.New(cyruscat.Options{Conf: in.Conf, Logger: nil})
	if err != nil {
		t.Fatal(err)
	}
	return in, cat
}

// view is what alice sees over IMAP: LIST with SPECIAL-USE, and each
// folder's UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and messages.
func view(t *testing.T, in *cyrustest.Instance) string {
	t.Helper()
	c := in.IMAP(t, "alice")
	defer c.Logout()
	list, err := c.Cmd(`LIST "" "*" RETURN (SPECIAL-USE)`)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, l := range list {
		b.WriteString(l + "\n")
	}
	for _, l := range list {
		_, f, _ := strings.Cut(l, `"/" `)
		st, err := c.Cmd("STATUS %s (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)", cyrustest.Quote(f))
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(strings.Join(st, "\n") + "\n")
	}
	md, err := c.Cmd(`GETMETADATA "INBOX" /private/comment`)
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString(strings.Join(md, "\n") + "\n")
	return b.String()
}

func lmtpTo(t *testing.T, in *cyrustest.Instance, rcpt string) error {
	t.Helper()
	c, err := cyrustest.DialLMTP(context.Background(), in.LMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.Deliver("x@example.org", []string{rcpt}, cyrustest.Message("probe", 500))[0]
}

func TestRegisterUnregister(t *testing.T) {
	for _, l := range []struct {
		name string
		o    cyrustest.Options
	}{
		{"uuid", cyrustest.Options{Meta: true}},
		{"legacy-hash", cyrustest.Options{Layout: cyrustest.Legacy, Hash: true, Meta: true}},
	} {
		t.Run(l.name, func(t *testing.T) {
			in, cat := setup(t, l.o)
			ctx := context.Background()
			// a RENAME leaves a tombstone of the old name in mailboxes.db;
			// in the legacy layout also the header's N stale (-P crashes)
			al := in.IMAP(t, "alice")
			if _, err := al.Cmd(`RENAME INBOX/Archive INBOX/Old`); err != nil {
				t.Fatal(err)
			}
			al.Logout()
			before := view(t, in)
			mbs, err := cat.Mailboxes("alice")
			if err != nil || len(mbs) != 3 {
				t.Fatalf("alice's mailboxes: %v %v", mbs, err)
			}
			// registered while known: the tombstone goes, the rest stays
			reg, err := cat.Register(ctx, "alice")
			if err != nil || reg.Registered != 3 || reg.Removed != 1 {
				t.Fatalf("register over live records: %+v %v; want 3 registered, the tombstone removed", reg, err)
			}
			n, err := cat.Unregister(ctx, "alice")
			if err != nil || n != 6 {
				t.Fatalf("unregister: %d records, %v; want 6", n, err)
			}
			var re *cyrustest.ReplyError
			if err := lmtpTo(t, in, "alice"); !errors.As(err, &re) || re.Code != 550 {
				t.Fatalf("LMTP to an unregistered alice: %v, want 550", err)
			}
			reg, err = cat.Register(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", reg)
			if reg.Registered != 3 || reg.Removed != 0 || (l.o.Layout == cyrustest.Legacy) != (reg.Written == 1) {
				t.Fatalf("register: %+v", reg)
			}
			// registering again rewrites the same records
			reg, err = cat.Register(ctx, "alice")
			if err != nil || reg.Removed != 0 || reg.Registered != 3 {
				t.Fatalf("second register: %+v %v", reg, err)
			}
			if l.o.Layout == cyrustest.UUID {
				// the records we write ourselves (when reconstruct -P
				// cannot) are those reconstruct -P writes, mtime aside
				recs, err := cat.Records(ctx, "alice")
				if err != nil {
					t.Fatal(err)
				}
				got := map[string]string{}
				for _, kv := range recs {
					got[string(kv.Key)] = mtime.ReplaceAllString(string(kv.Value), "")
				}
				mbs, _ := cat.Mailboxes("alice")
				for _, m := range mbs {
					n, i, err := cyruscat.DirectRecords(m, 0)
					if err != nil {
						t.Fatal(err)
					}
					for _, kv := range []cyruscat.KV{n, i} {
						if w := mtime.ReplaceAllString(string(kv.Value), ""); got[string(kv.Key)] != w {
							t.Errorf("%q: reconstruct -P wrote\n%q, we would write\n%q", kv.Key, got[string(kv.Key)], w)
						}
					}
				}
			}
			if after := view(t, in); after != before {
				t.Fatalf("alice after registration:\n%s\nbefore:\n%s", after, before)
			}
			if err := lmtpTo(t, in, "alice"); err != nil {
				t.Fatalf("LMTP to alice after registration: %v", err)
			}
			if mbs, _ := cat.Mailboxes("bob"); len(mbs) != 1 {
				t.Fatalf("bob's mailboxes: %v", mbs)
			}
		})
	}
}

func TestAnnotationsSidecar(t *testing.T) {
	in, cat := setup(t, cyrustest.Options{Meta: true})
	ctx := context.Background()
	before := view(t, in)
	if !strings.Contains(before, `\Sent`) || !strings.Contains(before, "alice archive") {
		t.Fatalf("setup lacks the annotations:\n%s", before)
	}
	sc, err := cat.Export(ctx, func(a string) bool { return a == "alice" })
	if err != nil {
		t.Fatal(err)
	}
	if len(sc) != 1 || sc["alice"] == nil || len(sc["alice"].Mailboxes) != 3 || len(sc["alice"].Annotations) < 2 {
		t.Fatalf("export: %+v", sc)
	}
	s := sc["alice"]
	// round trip through the file
	dir := t.TempDir()
	wcat, _ := cyruscat.New(cyruscat.Options{Conf: writeConf(t, dir)})
	if wrote, err := wcat.WriteSidecar(s, 0, 0); err != nil || !wrote {
		t.Fatalf("write sidecar: %v %v", wrote, err)
	}
	if wrote, _ := wcat.WriteSidecar(s, 0, 0); wrote {
		t.Fatal("an unchanged sidecar was written again")
	}
	p := cyruscat.SidecarPath(dir, "alice")
	if p != filepath.Join(dir, "user/a/alice.mreplfs-annotations") {
		t.Fatalf("sidecar path %s", p)
	}
	back, err := cyruscat.ReadSidecar(p)
	if err != nil {
		t.Fatal(err)
	}
	// an empty sidecar for the same mailboxes removes the annotations ...
	empty := *back
	empty.Annotations = nil
	res, err := cat.Apply(ctx, &empty)
	if err != nil || res.Deleted != len(s.Annotations) {
		t.Fatalf("apply empty: %+v %v", res, err)
	}
	if v := view(t, in); strings.Contains(v, `\Sent`) || strings.Contains(v, "alice archive") {
		t.Fatalf("annotations still there:\n%s", v)
	}
	// ... and the exported one brings them back, byte for byte
	res, err = cat.Apply(ctx, back)
	if err != nil || res.Set != len(s.Annotations) {
		t.Fatalf("apply: %+v %v", res, err)
	}
	if after := view(t, in); after != before {
		t.Fatalf("after apply:\n%s\nbefore:\n%s", after, before)
	}
	if res, err := cat.Apply(ctx, back); err != nil || res.Set+res.Deleted != 0 {
		t.Fatalf("a second apply changed something: %+v %v", res, err)
	}
}

var mtime = regexp.MustCompile(` M \d+`)

func writeConf(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "imapd.conf")
	writeFile(t, p, "configdirectory: "+dir+"\npartition-default: "+dir+"/spool\n")
	return p
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

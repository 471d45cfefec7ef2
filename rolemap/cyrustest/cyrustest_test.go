package cyrustest

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDotStuff(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"a\nb", "a\r\nb\r\n.\r\n"},
		{"a\r\n.b\r\n", "a\r\n..b\r\n.\r\n"},
		{".\n..", "..\r\n...\r\n.\r\n"},
		{"", "\r\n.\r\n"},
	} {
		if got := string(dotStuff([]byte(tt.in))); got != tt.want {
			t.Errorf("dotStuff(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLiteralLen(t *testing.T) {
	for _, tt := range []struct {
		in string
		n  int
		ok bool
	}{
		{"* 1 FETCH (BODY[] {123}", 123, true},
		{"* OK done", 0, false},
		{"* x {abc}", 0, false},
		{"* x {-1}", 0, false},
		{"}", 0, false},
	} {
		n, ok := literalLen(tt.in)
		if n != tt.n || ok != tt.ok {
			t.Errorf("literalLen(%q) = %d, %v, want %d, %v", tt.in, n, ok, tt.n, tt.ok)
		}
	}
}

// TestScenarioUUID runs the whole scenario on the 3.6 default layout with a
// metapartition and checks what it left on disk and what Cyrus reports.
func TestScenarioUUID(t *testing.T) {
	dir := filepath.Join(TempDir(t), "cyrus")
	in := Start(t, dir, Options{Meta: true, Syslog: true})
	res := RunScenario(t, in)
	if len(res.Live) != 3 {
		t.Fatalf("Live = %v", res.Live)
	}
	// Restart on the same data: alice's mail is still there.
	if err := in.Stop(); err != nil {
		t.Fatal(err)
	}
	if alive(in.pid) {
		t.Fatalf("master %d alive after Stop", in.pid)
	}
	in2 := Start(t, dir, Options{Meta: true})
	al := in2.IMAP(t, Alice)
	st, err := al.Cmd("STATUS INBOX/Archive2 (MESSAGES)")
	if err != nil || !hasSubstring(st, "MESSAGES 3") {
		t.Fatalf("after restart: STATUS = %q, %v", st, err)
	}
	if _, err := al.Cmd("SELECT INBOX/Trash"); err == nil {
		t.Error("deleted folder INBOX/Trash still selectable")
	}
	// Cyrus's own view of the mailboxes (ctl_mboxlist -d, JSON keyed by
	// internal name): the user rename and delete happened.
	out, err := in2.Tool(context.Background(), "ctl_mboxlist", "-d")
	if err != nil {
		t.Fatal(err)
	}
	var mboxes map[string]struct {
		Type string `json:"mbtype"`
	}
	if err := json.Unmarshal(out, &mboxes); err != nil {
		t.Fatalf("ctl_mboxlist -d: %v\n%s", err, out)
	}
	deletedDave := false
	for name, m := range mboxes {
		if strings.HasPrefix(name, "DELETED.user.dave.") && m.Type == "e" {
			deletedDave = true
		}
	}
	// "ed": a tombstone left by RENAME/DELETE
	for name, want := range map[string]string{"user.alice.Archive2": "e", "user.bob": "e", "user.alice.Sent": "e",
		"user.alice.Archive": "ed", "user.alice.Trash": "ed", "user.carol": "ed", "user.dave": "ed"} {
		if got := mboxes[name].Type; got != want {
			t.Errorf("ctl_mboxlist: %s has type %q, want %q", name, got, want)
		}
	}
	if !deletedDave {
		t.Errorf("ctl_mboxlist: no DELETED.user.dave.* mailbox:\n%s", out)
	}
	if _, err := in2.Tool(context.Background(), "no-such-tool"); err == nil {
		t.Error("Tool of a missing program: no error")
	}
	// uuid layout: no name-based dirs
	if _, err := os.Stat(filepath.Join(dir, "meta", "uuid")); err != nil {
		t.Errorf("no meta/uuid: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "spool", "user")); err == nil {
		t.Error("spool/user exists in uuid layout")
	}
	// the syslog shim captured Cyrus's log
	if b, err := os.ReadFile(filepath.Join(in.RunDir, "syslog")); err != nil || !strings.Contains(string(b), "login:") {
		t.Errorf("syslog shim wrote %d bytes (%v), want login lines", len(b), err)
	}
}

// TestLMTPRefusals checks per-recipient replies: an unknown user gets its
// own 550 at RCPT while the known one is delivered.
func TestLMTPRefusals(t *testing.T) {
	in := Start(t, filepath.Join(TempDir(t), "cyrus"), Options{})
	adm := in.IMAP(t, Admin)
	if _, err := adm.Cmd("CREATE %s", Quote(in.MailboxName(Alice, ""))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := DialLMTP(ctx, in.LMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errs := c.Deliver("s@example.org", []string{"nosuchuser", Alice}, Message("x", 100))
	var re *ReplyError
	if !errors.As(errs[0], &re) || re.Code != 550 || re.Temporary() {
		t.Errorf("unknown user: got %v, want a 550 ReplyError", errs[0])
	}
	if errs[1] != nil {
		t.Errorf("alice: got %v, want delivered", errs[1])
	}
	// same connection, 3 recipients, all accepted: replies stay in sync
	errs = c.Deliver("s@example.org", []string{Alice, Alice, "nosuchuser"}, Message("y", 100))
	if errs[0] != nil || errs[1] != nil || errs[2] == nil {
		t.Errorf("got %v, want nil, nil, 550", errs)
	}
	al := in.IMAP(t, Alice)
	sel, err := al.Cmd("EXAMINE INBOX")
	if err != nil || !hasLine(sel, "* 2 EXISTS") {
		t.Errorf("EXAMINE = %q, %v; want 2 messages (the duplicate rcpt is one delivery)", sel, err)
	}
	if _, err := al.Cmd("SELECT NoSuchFolder"); err == nil {
		t.Error("SELECT of a missing folder succeeded")
	} else if ie := (*IMAPError)(nil); !errors.As(err, &ie) || ie.Status != "NO" {
		t.Errorf("SELECT missing: %v, want an IMAPError NO", err)
	}
}

// TestStartOnPlainTempDir: a bare t.TempDir (mode 0700) works, Stop is
// idempotent and leaves no Cyrus process.
func TestStartOnPlainTempDir(t *testing.T) {
	in := Start(t, t.TempDir(), Options{Layout: Legacy, Hash: true})
	pid := in.MasterPID()
	kids := Children(pid)
	c := in.IMAP(t, Admin) // forks an imapd
	c.Logout()
	kids = append(kids, Children(pid)...)
	if err := in.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := in.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	for _, p := range append(kids, pid) {
		if alive(p) {
			t.Errorf("pid %d alive after Stop", p)
		}
	}
	if in.MasterPID() != 0 {
		t.Error("MasterPID after Stop")
	}
}

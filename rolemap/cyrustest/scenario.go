package cyrustest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Users of the scenario (with VirtDomains each gets "@example.com").
const (
	Admin = "admin"
	Alice = "alice"
	Bob   = "bob"
	Carol = "carol" // renamed to dave, then deleted
	Dave  = "dave"
)

// ScenarioResult says which accounts the scenario leaves with data.
type ScenarioResult struct {
	Domain string
	// Live are the accounts that still own mailboxes or per-user files:
	// alice and bob (and admin, whose admin.seen holds its view of bob's
	// INBOX), each with "@domain" under VirtDomains (admin never).
	Live []string
	// Gone were created and deleted: carol (renamed to dave), dave.
	Gone []string
}

// Account returns user as the role map names it in this instance.
func (in *Instance) Account(user string) string {
	if d := in.Domain(); d != "" && user != Admin {
		return user + "@" + d
	}
	return user
}

// MailboxName returns the admin-visible name of user's folder: user/alice,
// user/alice/Sent, or with virtual domains user/alice/Sent@example.com.
func (in *Instance) MailboxName(user, folder string) string {
	n := "user/" + user
	if folder != "" {
		n += "/" + folder
	}
	if d := in.Domain(); d != "" {
		n += "@" + d
	}
	return n
}

// Message returns a small RFC 5322 message with a unique Message-ID (a
// repeated Message-ID would be dropped by duplicate suppression).
func Message(subject string, size int) []byte {
	var id [12]byte
	rand.Read(id[:])
	body := strings.Repeat(strings.Repeat("x", 70)+"\r\n", max(1, size/72))
	return []byte("From: sender@example.org\r\nTo: someone@example.org\r\nSubject: " + subject + "\r\n" +
		"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <" + hex.EncodeToString(id[:]) + "@cyrustest>\r\n" +
		"\r\n" + body)
}

// IMAP logs user in; the connection is closed at cleanup.
func (in *Instance) IMAP(t testing.TB, user string) *IMAPClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := DialIMAP(ctx, in.IMAPAddr)
	if err != nil {
		t.Fatalf("%v\n%s", err, in.Log())
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, "secret"); err != nil {
		t.Fatalf("login %s: %v\n%s", user, err, in.Log())
	}
	return c
}

// Deliver delivers msg over LMTP to rcpts and fails the test unless every
// recipient got 250.
func (in *Instance) Deliver(t testing.TB, rcpts []string, msg []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := DialLMTP(ctx, in.LMTPAddr)
	if err != nil {
		t.Fatalf("%v\n%s", err, in.Log())
	}
	defer c.Close()
	for i, err := range c.Deliver("sender@example.org", rcpts, msg) {
		if err != nil {
			t.Fatalf("lmtp to %s: %v\n%s", rcpts[i], err, in.Log())
		}
	}
}

// RunScenario drives the IMAP/LMTP scenario of CYRUS.md on a fresh
// instance (the port of imap_scenario.py) and fails the test at the first
// step that does not answer OK.
func RunScenario(t testing.TB, in *Instance) ScenarioResult {
	t.Helper()
	alice, bob, carol := in.Account(Alice), in.Account(Bob), in.Account(Carol)
	mb := in.MailboxName
	step := func(c *IMAPClient, name, format string, args ...any) []string {
		t.Helper()
		out, err := c.Cmd(format, args...)
		if err != nil {
			t.Fatalf("scenario step %s: %v\n%s", name, err, in.Log())
		}
		return out
	}
	q := Quote

	// admin setup
	adm := in.IMAP(t, Admin)
	step(adm, "create_user_inbox", "CREATE %s", q(mb(Alice, "")))
	step(adm, "create_subfolder", "CREATE %s", q(mb(Alice, "Sent")))
	for _, m := range []string{mb(Bob, ""), mb(Carol, ""), mb(Alice, "Archive"), mb(Alice, "Trash")} {
		step(adm, "create_more", "CREATE %s", q(m))
	}
	step(adm, "setquota", "SETQUOTA %s (STORAGE 100000)", q(mb(Alice, "")))

	// deliveries
	in.Deliver(t, []string{alice}, Message("single", 2000))
	in.Deliver(t, []string{alice, bob, carol}, Message("multi", 2000))
	for i := 0; i < 3; i++ {
		in.Deliver(t, []string{alice}, Message(fmt.Sprintf("more %d", i), 2000))
	}
	plus := "alice+Archive"
	if d := in.Domain(); d != "" {
		plus += "@" + d
	}
	in.Deliver(t, []string{plus}, Message("plus", 2000))

	// alice's session
	al := in.IMAP(t, alice)
	sel := step(al, "select", "SELECT INBOX")
	if !hasLine(sel, "* 6 EXISTS") {
		t.Fatalf("scenario: SELECT INBOX: want 6 EXISTS, got %q", sel)
	}
	step(al, "fetch_peek", "FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	body := step(al, "fetch_body_implicit_seen", "FETCH 1 (BODY[])")
	if !hasSubstring(body, "Subject: single") {
		t.Fatalf("scenario: FETCH 1 BODY[]: the first message is not 'single': %q", body)
	}
	step(al, "store_seen", `STORE 2 +FLAGS (\Seen)`)
	step(al, "store_flagged", `STORE 2 +FLAGS (\Flagged)`)
	step(al, "store_new_userflag", `STORE 2 +FLAGS ($Label1)`)
	step(al, "copy", "COPY 1:2 INBOX/Archive")
	step(al, "move", "MOVE 3 INBOX/Archive")
	step(al, "store_deleted", `STORE 1 +FLAGS (\Deleted)`)
	step(al, "expunge", "EXPUNGE")
	if err := al.Append("INBOX/Sent", `(\Seen)`, Message("appended", 2000)); err != nil {
		t.Fatalf("scenario step append: %v\n%s", err, in.Log())
	}
	step(al, "subscribe", "SUBSCRIBE INBOX/Sent")
	step(al, "rename_folder", "RENAME INBOX/Archive INBOX/Archive2")
	step(al, "delete_folder", "DELETE INBOX/Trash")
	st := step(al, "status_archive2", "STATUS INBOX/Archive2 (MESSAGES)")
	if !hasSubstring(st, "MESSAGES 3") { // copied 1:2, moved 3 (alice+Archive went to INBOX: no "p" right)
		t.Fatalf("scenario: STATUS INBOX/Archive2: want 3 messages, got %q", st)
	}
	if err := al.Logout(); err != nil {
		t.Fatalf("scenario step alice_logout: %v", err)
	}

	// admin operations
	step(adm, "admin_setacl", "SETACL %s admin lrswipkxtecdan", q(mb(Bob, "")))
	step(adm, "admin_select_other", "SELECT %s", q(mb(Bob, "")))
	step(adm, "admin_store_seen_other", `STORE 1 +FLAGS (\Seen)`)
	step(adm, "admin_close", "CLOSE")
	step(adm, "admin_rename_user", "RENAME %s %s", q(mb(Carol, "")), q(mb(Dave, "")))
	step(adm, "admin_setacl_dave", "SETACL %s admin lrswipkxtecdan", q(mb(Dave, "")))
	step(adm, "admin_delete_user", "DELETE %s", q(mb(Dave, "")))
	if err := adm.Logout(); err != nil {
		t.Fatalf("scenario step admin_logout: %v", err)
	}
	return ScenarioResult{
		Domain: in.Domain(),
		Live:   []string{alice, bob, Admin},
		Gone:   []string{carol, in.Account(Dave)},
	}
}

func hasLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func hasSubstring(lines []string, want string) bool {
	for _, l := range lines {
		if strings.Contains(l, want) {
			return true
		}
	}
	return false
}

package classify

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

const (
	idAlice    = "ig5qudig5xhk5lij9pw6dcgx" // user.alice (INBOX)
	idSent     = "gfhjl0svp5bv5mhog1roxbh7" // user.alice.Sent
	idBob      = "mo88qz0a1b2c3d4e5f6g7h8i" // user.bob
	idDeleted  = "3cpp1ednfs1qyfwtt63z6ktc" // DELETED.user.dave.6B118D5A
	idDom      = "4htpn639tox0qkvlit4nswjt" // example.com!user.alice
	idShared   = "kwsqvn24go7furomdb8mtyre" // shared.news
	idJohn     = "a0a0a0a0a0a0a0a0a0a0a0a0" // user.john^doe.Sub^Folder
	idPending  = "zz9zzzzzzzzzzzzzzzzzzzzz" // no header yet
	idDomShare = "q1w2e3r4t5y6u7i8o9p0asdf" // example.com!shared.x
)

func testClassifier(t testing.TB) *Classifier {
	t.Helper()
	c := New(Options{})
	for id, name := range map[string]string{
		idAlice: "user.alice", idSent: "user.alice.Sent", idBob: "user.bob",
		idDeleted: "DELETED.user.dave.6B118D5A", idDom: "example.com!user.alice",
		idShared: "shared.news", idJohn: "user.john^doe.Sub^Folder", idDomShare: "example.com!shared.x",
	} {
		h := Header{Name: name, UniqueID: id, Type: "e", ACL: []ACLEntry{{"anyone", "lrs"}}}
		if err := c.NoteHeader(id, h.Marshal()); err != nil {
			t.Fatalf("NoteHeader(%s): %v", id, err)
		}
	}
	return c
}

func uu(tree, id string, rest ...string) string {
	p := tree + "/uuid/" + id[:1] + "/" + id[1:2] + "/" + id
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

type tc struct {
	path string
	want Result
}

func r(k Kind, account, id, file string) Result {
	return Result{Kind: k, Account: account, MailboxID: id, File: file}
}

// classifyCases covers every layout of CYRUS.md §2 and the traced variants.
func classifyCases() []tc {
	return []tc{
		// tree roots and structure
		{"conf", r(Structure, "", "", "")},
		{"spool", r(Structure, "", "", "")},
		{"meta", r(Structure, "", "", "")},
		{"sieve", r(Structure, "", "", "")},
		{"meta/", r(Structure, "", "", "")},
		{"spool/uuid", r(Structure, "", "", "")},
		{"spool/uuid/i", r(Structure, "", "", "")},
		{"meta/uuid/i/g", r(Structure, "", "", "")},
		{"conf/user", r(Structure, "", "", "")},
		{"conf/user/a", r(Structure, "", "", "")},
		{"conf/user/uuid", r(Structure, "", "", "")},
		{"conf/user/uuid/i/g", r(Structure, "", "", "")},
		{"conf/quota", r(Structure, "", "", "")},
		{"conf/quota/a", r(Structure, "", "", "")},
		{"conf/domain", r(Structure, "", "", "")},
		{"conf/domain/e", r(Structure, "", "", "")},
		{"conf/domain/e/example.com", r(Structure, "", "", "")},
		{"conf/domain/e/example.com/user", r(Structure, "", "", "")},
		{"conf/domain/e/example.com/user/a", r(Structure, "", "", "")},
		{"conf/domain/e/example.com/quota/a", r(Structure, "", "", "")},
		{"conf/db", r(Structure, "", "", "")},
		{"spool/user", r(Structure, "", "", "")},
		{"spool/a", r(Structure, "", "", "")},
		{"spool/a/user", r(Structure, "", "", "")},
		{"spool/DELETED", r(Structure, "", "", "")},
		{"spool/DELETED/user", r(Structure, "", "", "")},
		{"meta/u/DELETED", r(Structure, "", "", "")},
		{"meta/u/DELETED/user", r(Structure, "", "", "")},
		{"spool/domain", r(Structure, "", "", "")},
		{"spool/domain/example.com", r(Structure, "", "", "")},
		{"spool/domain/e", r(Structure, "", "", "")},
		{"spool/domain/e/example.com", r(Structure, "", "", "")},
		{"spool/domain/e/example.com/a", r(Structure, "", "", "")},
		{"spool/domain/e/example.com/a/user", r(Structure, "", "", "")},
		{"sieve/a", r(Structure, "", "", "")},
		{"sieve/uuid/i/g", r(Structure, "", "", "")},
		{"sieve/domain/e/example.com", r(Structure, "", "", "")},

		// uuid layout (A, D, E, F): mailbox dirs and files, spool and meta
		{uu("meta", idAlice), r(Mailbox, "alice", idAlice, "")},
		{uu("meta", idAlice, "cyrus.header"), r(Mailbox, "alice", idAlice, "cyrus.header")},
		{uu("meta", idAlice, "cyrus.header.NEW"), r(Mailbox, "alice", idAlice, "cyrus.header.NEW")},
		{uu("meta", idAlice, "cyrus.index"), r(Mailbox, "alice", idAlice, "cyrus.index")},
		{uu("meta", idAlice, "cyrus.index.NEW"), r(Mailbox, "alice", idAlice, "cyrus.index.NEW")},
		{uu("meta", idAlice, "cyrus.cache.NEW"), r(Mailbox, "alice", idAlice, "cyrus.cache.NEW")},
		{uu("meta", idAlice, "cyrus.annotations"), r(Mailbox, "alice", idAlice, "cyrus.annotations")},
		{uu("spool", idAlice, "2."), r(Mailbox, "alice", idAlice, "2.")},
		{uu("spool", idAlice), r(Mailbox, "alice", idAlice, "")},
		{uu("spool", idSent, "1."), r(Mailbox, "alice", idSent, "1.")},
		{uu("spool", idBob, "1."), r(Mailbox, "bob", idBob, "1.")},
		{uu("spool", idDeleted, "cyrus.index"), r(Mailbox, "dave", idDeleted, "cyrus.index")},
		{uu("meta", idDom, "cyrus.index"), r(Mailbox, "alice@example.com", idDom, "cyrus.index")},
		{uu("spool", idShared, "7."), r(Mailbox, "%shared", idShared, "7.")},
		{uu("meta", idDomShare, "cyrus.header"), r(Mailbox, "%shared@example.com", idDomShare, "cyrus.header")},
		{uu("spool", idJohn, "3."), r(Mailbox, "john.doe", idJohn, "3.")},
		{uu("spool-other", idAlice, "3."), r(Mailbox, "alice", idAlice, "3.")},
		{uu("meta-ssd", idAlice, "cyrus.index"), r(Mailbox, "alice", idAlice, "cyrus.index")},
		{"meta/uuid/i/g/" + idAlice + "/", r(Mailbox, "alice", idAlice, "")},
		// pending: new mailbox, header not yet renamed into place
		{uu("meta", idPending), r(Pending, "", idPending, "")},
		{uu("meta", idPending, "cyrus.index"), r(Pending, "", idPending, "cyrus.index")},
		{uu("meta", idPending, "cyrus.header.NEW"), r(Pending, "", idPending, "cyrus.header.NEW")},
		{uu("spool", idPending, "1."), r(Pending, "", idPending, "1.")},
		// malformed uuid paths
		{"spool/uuid/x/g/" + idAlice, r(Unresolved, "", "", "")},
		{"spool/uuid/i/g/" + idAlice + "x", r(Unresolved, "", "", "")},
		{"spool/uuid/i/g/IG5QUDIG5XHK5LIJ9PW6DCGX", r(Unresolved, "", "", "")},
		{"spool/uuid/i/g/short", r(Unresolved, "", "", "")},
		{"spool/uuid/I/g", r(Unresolved, "", "", "")},
		{"spool/uuid/ig/g", r(Unresolved, "", "", "")},
		{uu("spool", idAlice, "sub", "1."), r(Unresolved, "", "", "")},

		// stage
		{"spool/stage.", r(Stage, "", "", "")},
		{"spool/stage./31149-1796312394-0", r(Stage, "", "", "")},
		{"meta/stage./1-2-3", r(Stage, "", "", "")},
		{"spool/sync.", r(Runtime, "", "", "")},

		// legacy, no hash (C without domains)
		{"spool/user/alice", r(Mailbox, "alice", "", "")},
		{"spool/user/alice/1.", r(Mailbox, "alice", "", "1.")},
		{"spool/user/alice/cyrus.header", r(Mailbox, "alice", "", "cyrus.header")},
		{"spool/user/alice/Sent", r(Mailbox, "alice", "", "")},
		{"spool/user/alice/Sent/12.", r(Mailbox, "alice", "", "12.")},
		{"spool/user/alice/Archive/2024/cyrus.index.NEW", r(Mailbox, "alice", "", "cyrus.index.NEW")},
		{"spool/user/alice/Archive/2024/01/deep/cyrus.cache", r(Mailbox, "alice", "", "cyrus.cache")},
		{"spool/user/john^doe/Sub^Folder/1.", r(Mailbox, "john.doe", "", "1.")},
		{"spool/user/uuid/1.", r(Mailbox, "uuid", "", "1.")},
		{"spool/user/stage./1.", r(Mailbox, "stage.", "", "1.")},
		{"spool/user/1.", r(Unresolved, "", "", "")},
		{"spool/user/cyrus.index", r(Unresolved, "", "", "")},
		// legacy + hashimapspool (B), meta partition
		{"meta/a/user/alice", r(Mailbox, "alice", "", "")},
		{"meta/a/user/alice/cyrus.header", r(Mailbox, "alice", "", "cyrus.header")},
		{"meta/a/user/alice/Archive/Y2024/cyrus.header", r(Mailbox, "alice", "", "cyrus.header")},
		{"spool/a/user/alice/Sent/1.", r(Mailbox, "alice", "", "1.")},
		{"spool/b/user/bob/3.", r(Mailbox, "bob", "", "3.")},
		{"spool/j/user/john^doe/2.", r(Mailbox, "john.doe", "", "2.")},
		// fulldirhash: upper-case letters
		{"spool/K/user/john^doe/2.", r(Mailbox, "john.doe", "", "2.")},
		{"conf/user/K/john.doe.sub", r(UserDB, "john.doe", "", "john.doe.sub")},
		{"conf/quota/I/user.zoe", r(Quota, "zoe", "", "user.zoe")},
		// legacy delayed delete
		{"meta/u/DELETED/user/alice/Trash/6B119DEE", r(Mailbox, "alice", "", "")},
		{"meta/u/DELETED/user/alice/Trash/6B119DEE/cyrus.header", r(Mailbox, "alice", "", "cyrus.header")},
		{"spool/u/DELETED/user/alice/Trash/6B119DEE/4.", r(Mailbox, "alice", "", "4.")},
		{"spool/DELETED/user/dave/6B118D5A/1.", r(Mailbox, "dave", "", "1.")},
		// legacy + virtdomains, no hash (C)
		{"spool/domain/example.com/user/alice", r(Mailbox, "alice@example.com", "", "")},
		{"spool/domain/example.com/user/alice/Sent/1.", r(Mailbox, "alice@example.com", "", "1.")},
		{"spool/domain/example.com/DELETED/user/bob/6B11AAAA/cyrus.index", r(Mailbox, "bob@example.com", "", "cyrus.index")},
		// legacy + virtdomains + hash (data-dom-hash)
		{"spool/domain/e/example.com/a/user/alice/1.", r(Mailbox, "alice@example.com", "", "1.")},
		{"meta/domain/e/example.com/a/user/alice/Sent/cyrus.index", r(Mailbox, "alice@example.com", "", "cyrus.index")},
		{"meta/domain/e/example.com/u/DELETED/user/alice/Trash/6B11BBBB/cyrus.header", r(Mailbox, "alice@example.com", "", "cyrus.header")},
		// legacy shared folders
		{"spool/shared/news/1.", r(Mailbox, "%shared", "", "1.")},
		{"spool/s/shared/news/1.", r(Mailbox, "%shared", "", "1.")},
		{"spool/shared", r(Mailbox, "%shared", "", "")},
		{"meta/s/shared/cyrus.header", r(Mailbox, "%shared", "", "cyrus.header")},
		{"spool/n/news^local/cyrus.index", r(Mailbox, "%news.local", "", "cyrus.index")},
		{"spool/DELETED/shared/x/6B11CCCC/1.", r(Mailbox, "%shared", "", "1.")},
		{"spool/domain/example.com/shared/1.", r(Mailbox, "%shared@example.com", "", "1.")},
		{"spool/a/cyrus.index", r(Mailbox, "%a", "", "cyrus.index")},
		// seen in the real-Cyrus runs: shared folders hash by their last name
		// component (first letter, or a fulldirhash letter)
		{"spool/domain/e/example.com/n/shared/news/1.", r(Mailbox, "%shared@example.com", "", "1.")},
		{"spool/domain/e/example.com/n/shared", r(Mailbox, "%shared@example.com", "", "")},
		{"meta/E/shared/news/cyrus.index", r(Mailbox, "%shared", "", "cyrus.index")},
		{"meta/T/shared/cyrus.header", r(Mailbox, "%shared", "", "cyrus.header")},
		{"conf/domain/e/example.com/quota/j/user.john^doe", r(Quota, "john.doe@example.com", "", "user.john^doe")},
		{"conf/domain/e/example.com/quota/n/shared.news", r(Quota, "%shared@example.com", "", "shared.news")},
		{"conf/domain/e/example.com/user/j/john.doe.conversations", r(UserDB, "john.doe@example.com", "", "john.doe.conversations")},
		{"conf/domain/e/example.com/user/d", r(Structure, "", "", "")},
		{"spool/domain/e/example.com/j/user/john^doe/Sub^Folder/cyrus.annotations", r(Mailbox, "john.doe@example.com", "", "cyrus.annotations")},
		{"spool/cyrus.index", r(Unresolved, "", "", "")},
		{"spool/7.", r(Unresolved, "", "", "")},

		// configdirectory: shared dbs
		{"conf/mailboxes.db", r(Shared, "", "", "")},
		{"conf/mailboxes.db.NEW", r(Shared, "", "", "")},
		{"conf/deliver.db", r(Shared, "", "", "")},
		{"conf/annotations.db", r(Shared, "", "", "")},
		{"conf/caldav_alarm.sqlite3", r(Shared, "", "", "")},
		{"conf/caldav_alarm.sqlite3-journal", r(Shared, "", "", "")},
		{"conf/tls_sessions.db", r(Shared, "", "", "")},
		{"conf/db/skipstamp", r(Shared, "", "", "")},
		{"conf/db/skipcleanshutdown", r(Shared, "", "", "")},
		{"conf/ptclient/ptscache.db", r(Shared, "", "", "")},
		// runtime
		{"conf/socket", r(Runtime, "", "", "")},
		{"conf/socket/imap-0.lock", r(Runtime, "", "", "")},
		{"conf/socket/idle.31149", r(Runtime, "", "", "")},
		{"conf/socket/lmtp-0.lock", r(Runtime, "", "", "")},
		{"conf/proc/31149", r(Runtime, "", "", "")},
		{"conf/lock/a/user/alice.lock", r(Runtime, "", "", "")},
		{"conf/lock/*U*alice.lock", r(Runtime, "", "", "")},
		{"conf/log/alice/imapd-1234", r(Runtime, "", "", "")},
		{"conf/msg/motd", r(Runtime, "", "", "")},
		{"conf/msg", r(Runtime, "", "", "")},
		// per-user dbs, legacy naming (legacy layout; uuid users without INBOX)
		{"conf/user/a/alice.seen", r(UserDB, "alice", "", "alice.seen")},
		{"conf/user/a/alice.sub", r(UserDB, "alice", "", "alice.sub")},
		{"conf/user/j/john.doe.mreplfs-annotations", r(UserDB, "john.doe", "", "john.doe.mreplfs-annotations")},
		{"conf/user/a/alice.mreplfs-annotations.NEW", r(UserDB, "alice", "", "alice.mreplfs-annotations.NEW")},
		{"conf/user/a/alice.sub.NEW", r(UserDB, "alice", "", "alice.sub.NEW")},
		{"conf/user/a/alice.conversations", r(UserDB, "alice", "", "alice.conversations")},
		{"conf/user/a/alice.counters", r(UserDB, "alice", "", "alice.counters")},
		{"conf/user/a/alice.dav", r(UserDB, "alice", "", "alice.dav")},
		{"conf/user/a/alice.dav-journal", r(UserDB, "alice", "", "alice.dav-journal")},
		{"conf/user/a/alice.mboxkey", r(UserDB, "alice", "", "alice.mboxkey")},
		{"conf/user/a/admin.seen", r(UserDB, "admin", "", "admin.seen")},
		{"conf/user/c/carol.conversations", r(UserDB, "carol", "", "carol.conversations")},
		{"conf/user/j/john.doe.sub", r(UserDB, "john.doe", "", "john.doe.sub")},
		{"conf/user/j/john.doe.seen.NEW", r(UserDB, "john.doe", "", "john.doe.seen.NEW")},
		{"conf/domain/e/example.com/user/a/alice.seen", r(UserDB, "alice@example.com", "", "alice.seen")},
		{"conf/domain/e/example.com/user/a/alice.sub.NEW", r(UserDB, "alice@example.com", "", "alice.sub.NEW")},
		{"conf/user/a/alice", r(Unresolved, "", "", "")},
		{"conf/user/a/alice.unknownext", r(Unresolved, "", "", "")},
		{"conf/user/a/.seen", r(Unresolved, "", "", "")},
		{"conf/user/a/alice.seen/x", r(Unresolved, "", "", "")},
		{"conf/user/ab/alice.seen", r(Unresolved, "", "", "")},
		// per-user dbs, uuid
		{uu("conf/user", idAlice), r(UserDB, "alice", idAlice, "")},
		{uu("conf/user", idAlice, "seen.db"), r(UserDB, "alice", idAlice, "seen.db")},
		{uu("conf/user", idAlice, "sub.db"), r(UserDB, "alice", idAlice, "sub.db")},
		{uu("conf/user", idAlice, "sub.db.NEW"), r(UserDB, "alice", idAlice, "sub.db.NEW")},
		{uu("conf/user", idAlice, "conversations.db"), r(UserDB, "alice", idAlice, "conversations.db")},
		{uu("conf/user", idAlice, "counters.db"), r(UserDB, "alice", idAlice, "counters.db")},
		{uu("conf/user", idAlice, "dav.db"), r(UserDB, "alice", idAlice, "dav.db")},
		{uu("conf/user", idDom, "conversations.db"), r(UserDB, "alice@example.com", idDom, "conversations.db")},
		{uu("conf/user", idPending, "sub.db"), r(Pending, "", idPending, "sub.db")},
		// quota
		{"conf/quota/a/user.alice", r(Quota, "alice", "", "user.alice")},
		{"conf/quota/a/user.alice.NEW", r(Quota, "alice", "", "user.alice.NEW")},
		{"conf/quota/j/user.john^doe", r(Quota, "john.doe", "", "user.john^doe")},
		{"conf/quota/a/user.alice.Archive", r(Quota, "alice", "", "user.alice.Archive")},
		{"conf/quota/s/shared.news", r(Quota, "%shared", "", "shared.news")},
		{"conf/quota/s/shared", r(Quota, "%shared", "", "shared")},
		{"conf/domain/e/example.com/quota/a/user.alice", r(Quota, "alice@example.com", "", "user.alice")},
		{"conf/domain/e/example.com/quota/a/user.alice.NEW", r(Quota, "alice@example.com", "", "user.alice.NEW")},
		{"conf/domain/e/example.com/quota/root", r(Shared, "", "", "")},
		{"conf/quota/a/user", r(Unresolved, "", "", "")},
		{"conf/quota/a/user.alice/x", r(Unresolved, "", "", "")},
		// sieve
		{"sieve/a/alice", r(Sieve, "alice", "", "")},
		{"sieve/a/alice/defaultbc", r(Sieve, "alice", "", "defaultbc")},
		{"sieve/a/alice/main.script", r(Sieve, "alice", "", "main.script")},
		{"sieve/a/alice/main.bc.NEW", r(Sieve, "alice", "", "main.bc.NEW")},
		{"sieve/j/john.doe/x.bc", r(Sieve, "john.doe", "", "x.bc")},
		{uu("sieve", idAlice), r(Sieve, "alice", idAlice, "")},
		{uu("sieve", idAlice, "defaultbc"), r(Sieve, "alice", idAlice, "defaultbc")},
		{uu("sieve", idPending, "defaultbc"), r(Pending, "", idPending, "defaultbc")},
		{"sieve/domain/e/example.com/a/alice/defaultbc", r(Sieve, "alice@example.com", "", "defaultbc")},
		{"sieve/domain/e/example.com/a/alice", r(Sieve, "alice@example.com", "", "")},
		{"sieve/global", r(Shared, "", "", "")},
		{"sieve/global/spam.bc", r(Shared, "", "", "")},
		{"sieve/domain/e/example.com/global/x.bc", r(Shared, "", "", "")},
		{"sieve/abc/alice", r(Unresolved, "", "", "")},

		// not Cyrus at all
		{"", r(Unresolved, "", "", "")},
		{"other/x", r(Unresolved, "", "", "")},
		{"conf/weird/x", r(Unresolved, "", "", "")},
		{"spool//user/alice", r(Unresolved, "", "", "")},
		{"spool/user/../alice", r(Unresolved, "", "", "")},
		{"spool/./user/alice", r(Unresolved, "", "", "")},
		{"conf/domain/e/example.com/other/x", r(Unresolved, "", "", "")},
		{"conf/user/uuid/i/g/" + idAlice + "x/seen.db", r(Unresolved, "", "", "")},
	}
}

func TestClassify(t *testing.T) {
	c := testClassifier(t)
	seen := map[string]bool{}
	for _, tt := range classifyCases() {
		if seen[tt.path] {
			t.Errorf("duplicate case %q", tt.path)
		}
		seen[tt.path] = true
		if got := c.Classify(tt.path); got != tt.want {
			t.Errorf("Classify(%q) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
}

func TestClassifyHashOff(t *testing.T) {
	c := New(Options{Hash: HashOff})
	for _, tt := range []tc{
		{"spool/a/b/1.", r(Mailbox, "%a", "", "1.")},
		{"spool/a", r(Mailbox, "%a", "", "")},
		{"spool/user/alice/1.", r(Mailbox, "alice", "", "1.")},
		{"spool/domain/example.com/user/alice/1.", r(Mailbox, "alice@example.com", "", "1.")},
	} {
		if got := c.Classify(tt.path); got != tt.want {
			t.Errorf("Classify(%q) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
}

// TestPendingThenHeader walks the CREATE sequence of a uuid mailbox: the
// directory and cyrus.index come first (Pending), then cyrus.header.NEW is
// renamed into place and NoteHeader attributes everything.
func TestPendingThenHeader(t *testing.T) {
	c := New(Options{})
	const id = "p3nd1ngm41lb0x1d00000000"
	paths := []string{uu("meta", id), uu("meta", id, "cyrus.index"), uu("meta", id, "cyrus.header.NEW"),
		uu("spool", id), uu("spool", id, "1."), uu("conf/user", id, "sub.db"), uu("sieve", id)}
	for _, p := range paths {
		if got := c.Classify(p); got.Kind != Pending || got.MailboxID != id || got.Account != "" {
			t.Fatalf("before header: Classify(%q) = %+v, want Pending with id", p, got)
		}
	}
	if _, ok := c.Owner(id); ok {
		t.Fatal("Owner known before the header")
	}
	h := Header{Type: "e", Name: "user.newbie", UniqueID: id, ACL: []ACLEntry{{"newbie", "lrswipkxtecdan"}}}
	if err := c.NoteHeader(id, h.Marshal()); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if got := c.Classify(p); !got.IsAccount() || got.Account != "newbie" || got.MailboxID != id {
			t.Errorf("after header: Classify(%q) = %+v, want account newbie", p, got)
		}
	}
	// user RENAME newbie → oldie rewrites the header: the owner follows.
	h.Name = "user.oldie.Sub"
	if err := c.NoteHeader(id, h.Marshal()); err != nil {
		t.Fatal(err)
	}
	if a, ok := c.Owner(id); !ok || a != "oldie" {
		t.Errorf("after rename: Owner = %q, %v, want oldie", a, ok)
	}
	// delayed DELETE renames it to DELETED.user.oldie.Sub.<HEX>: still oldie's.
	h.Name = "DELETED.user.oldie.Sub.6B11ABCD"
	if err := c.NoteHeader(id, h.Marshal()); err != nil {
		t.Fatal(err)
	}
	if a, _ := c.Owner(id); a != "oldie" {
		t.Errorf("after delete: Owner = %q, want oldie", a)
	}
	if ids := c.MailboxIDs("oldie"); len(ids) != 1 || ids[0] != id {
		t.Errorf("MailboxIDs(oldie) = %v, want [%s]", ids, id)
	}
	c.Forget(id)
	if ids := c.MailboxIDs("oldie"); len(ids) != 0 {
		t.Errorf("MailboxIDs(oldie) after Forget = %v", ids)
	}
	if got := c.Classify(uu("meta", id, "cyrus.index")); got.Kind != Pending {
		t.Errorf("after Forget: %+v, want Pending", got)
	}
}

func TestNoteHeaderErrors(t *testing.T) {
	c := New(Options{})
	good := Header{Type: "e", Name: "user.alice", UniqueID: idAlice}
	for _, tt := range []struct {
		name string
		id   string
		b    []byte
	}{
		{"garbage", idAlice, []byte("nope")},
		{"id mismatch", idBob, good.Marshal()},
		{"bad id", "xyz", good.Marshal()},
		{"no name", idAlice, Header{Type: "e", UniqueID: idAlice}.Marshal()},
		{"user alone", idAlice, Header{Type: "e", Name: "user", UniqueID: idAlice}.Marshal()},
	} {
		if err := c.NoteHeader(tt.id, tt.b); err == nil {
			t.Errorf("%s: NoteHeader succeeded, want an error", tt.name)
		}
	}
	if c.Mailboxes() != 0 {
		t.Errorf("Mailboxes() = %d after only bad headers, want 0", c.Mailboxes())
	}
	// legacy path: header checked, not recorded
	if err := c.NoteHeader("", good.Marshal()); err != nil {
		t.Errorf("legacy NoteHeader: %v", err)
	}
	if err := c.NoteHeader("", []byte("nope")); err == nil {
		t.Error("legacy NoteHeader of garbage succeeded")
	}
	if c.Mailboxes() != 0 {
		t.Errorf("legacy NoteHeader recorded an owner")
	}
}

func TestAccountFromMailboxName(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"user.alice", "alice", true},
		{"user.alice.Sent", "alice", true},
		{"user.alice.Archive.2024", "alice", true},
		{"user.john^doe", "john.doe", true},
		{"user.john^doe.Sub^Folder", "john.doe", true},
		{"example.com!user.alice", "alice@example.com", true},
		{"example.com!user.alice.Sent", "alice@example.com", true},
		{"DELETED.user.alice.Trash.6B119CCC", "alice", true},
		{"DELETED.user.dave.6B118D5A", "dave", true},
		{"example.com!DELETED.user.alice.Trash.6B11", "alice@example.com", true},
		{"shared.news.x", "%shared", true},
		{"shared", "%shared", true},
		{"news", "%news", true},
		{"news^local.x", "%news.local", true},
		{"DELETED.shared.x.6B11", "%shared", true},
		{"example.com!shared.news", "%shared@example.com", true},
		{"", "", false},
		{"user", "", false},
		{"user.", "", false},
		{".x", "", false},
		{"!user.alice", "", false},
		{"DELETED", "", false},
		{"DELETED.user", "", false},
	} {
		got, ok := AccountFromMailboxName(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("AccountFromMailboxName(%q) = %q, %v, want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestKindString(t *testing.T) {
	for k := Unresolved; k <= Pending; k++ {
		if s := k.String(); s == "" || strings.HasPrefix(s, "kind(") {
			t.Errorf("Kind(%d).String() = %q", k, s)
		}
	}
	if s := Kind(200).String(); s != "kind(200)" {
		t.Errorf("Kind(200).String() = %q", s)
	}
	if !Mailbox.IsAccount() || Pending.IsAccount() || Shared.IsAccount() {
		t.Error("IsAccount wrong")
	}
}

// TestClassifyConcurrent runs lookups while headers change (go test -race).
func TestClassifyConcurrent(t *testing.T) {
	c := testClassifier(t)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				id := fmt.Sprintf("c%023d", g*10000+i)
				h := Header{Type: "e", Name: fmt.Sprintf("user.u%d", g), UniqueID: id}
				if err := c.NoteHeader(id, h.Marshal()); err != nil {
					t.Error(err)
					return
				}
				if got := c.Classify(uu("meta", id, "cyrus.index")); got.Account != fmt.Sprintf("u%d", g) {
					t.Errorf("got %+v", got)
					return
				}
				c.Classify(uu("spool", idAlice, "1."))
				if i%2 == 0 {
					c.Forget(id)
				}
			}
		}(g)
	}
	wg.Wait()
}

func BenchmarkClassify(b *testing.B) {
	c := testClassifier(b)
	paths := []string{
		uu("meta", idAlice, "cyrus.index"),
		uu("spool", idBob, "12."),
		uu("meta", idSent, "cyrus.header.NEW"),
		"spool/stage./31149-1796312394-0",
		"conf/mailboxes.db",
		"conf/deliver.db",
		"conf/quota/a/user.alice.NEW",
		uu("conf/user", idAlice, "conversations.db"),
		"meta/a/user/alice/Archive/Y2024/cyrus.index",
		"spool/a/user/alice/Sent/1.",
		"conf/user/a/alice.seen",
		"sieve/a/alice/defaultbc",
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if c.Classify(paths[i%len(paths)]).Kind == Unresolved {
			b.Fatal("unresolved")
		}
	}
}

// BenchmarkClassifyPath measures single kinds of path.
func BenchmarkClassifyPath(b *testing.B) {
	c := testClassifier(b)
	for _, bc := range []struct{ name, path string }{
		{"uuid", uu("meta", idAlice, "cyrus.index")},
		{"legacy", "spool/a/user/alice/Sent/1."},
		{"legacy-domain", "spool/domain/e/example.com/a/user/alice/1."},
		{"quota", "conf/quota/a/user.alice.NEW"},
		{"shared", "conf/mailboxes.db"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.Classify(bc.path)
			}
		})
	}
}

func BenchmarkClassifyParallel(b *testing.B) {
	c := testClassifier(b)
	p := uu("meta", idAlice, "cyrus.index")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Classify(p)
		}
	})
}

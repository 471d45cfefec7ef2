package classify

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestScan(t *testing.T) {
	dir := t.TempDir()
	hdr := func(name, id string) []byte { return Header{Type: "e", Name: name, UniqueID: id}.Marshal() }
	// metapartition layout: headers in meta, spool dirs without headers
	writeFile(t, filepath.Join(dir, uu("meta", idAlice, "cyrus.header")), hdr("user.alice", idAlice))
	writeFile(t, filepath.Join(dir, uu("spool", idAlice, "1.")), nil)
	// no-metapartition mailbox on a second partition: header in the spool
	writeFile(t, filepath.Join(dir, uu("spool-b", idBob, "cyrus.header")), hdr("example.com!user.bob", idBob))
	// header not written yet (CREATE in progress)
	writeFile(t, filepath.Join(dir, uu("meta", idPending, "cyrus.index")), nil)
	// corrupt header, and one naming another id
	writeFile(t, filepath.Join(dir, uu("meta", idSent, "cyrus.header")), []byte("garbage"))
	writeFile(t, filepath.Join(dir, uu("meta", idShared, "cyrus.header")), hdr("shared.x", idJohn))
	// things Scan must ignore
	writeFile(t, filepath.Join(dir, "meta/uuid/i/g/notanid/cyrus.header"), hdr("user.x", idAlice))
	writeFile(t, filepath.Join(dir, "meta/uuid/README"), nil)
	writeFile(t, filepath.Join(dir, "conf/user/uuid/i/g/"+idAlice+"/sub.db"), nil)
	writeFile(t, filepath.Join(dir, "spool/a/user/alice/cyrus.header"), hdr("user.alice", idJohn))

	c := New(Options{})
	err := c.Scan(map[string]string{
		"meta": filepath.Join(dir, "meta"), "spool": filepath.Join(dir, "spool"),
		"spool-b": filepath.Join(dir, "spool-b"), "conf": filepath.Join(dir, "conf"),
		"meta-empty": filepath.Join(dir, "does-not-exist"),
	})
	if err == nil {
		t.Fatal("Scan: no error for the corrupt headers")
	}
	if !errors.Is(err, ErrBadHeader) || !strings.Contains(err.Error(), idSent) || !strings.Contains(err.Error(), idShared) {
		t.Errorf("Scan error %v: want ErrBadHeader naming %s and %s", err, idSent, idShared)
	}
	for _, tt := range []struct {
		path string
		want Result
	}{
		{uu("spool", idAlice, "1."), r(Mailbox, "alice", idAlice, "1.")},
		{uu("conf/user", idAlice, "sub.db"), r(UserDB, "alice", idAlice, "sub.db")},
		{uu("spool-b", idBob, "cyrus.index"), r(Mailbox, "bob@example.com", idBob, "cyrus.index")},
		{uu("meta", idPending, "cyrus.index"), r(Pending, "", idPending, "cyrus.index")},
		{uu("meta", idSent, "cyrus.index"), r(Pending, "", idSent, "cyrus.index")},
		{uu("meta", idShared, "cyrus.index"), r(Pending, "", idShared, "cyrus.index")},
	} {
		if got := c.Classify(tt.path); got != tt.want {
			t.Errorf("Classify(%q) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
	if n := c.Mailboxes(); n != 2 {
		t.Errorf("Mailboxes() = %d, want 2", n)
	}
	if _, ok := c.Owner(idJohn); ok {
		t.Error("legacy or mismatched header recorded an owner")
	}
	// unreadable partition root (not a directory) is an error
	writeFile(t, filepath.Join(dir, "file-part/uuid"), nil)
	if err := New(Options{}).Scan(map[string]string{"spool": filepath.Join(dir, "file-part")}); err == nil {
		t.Error("Scan of a uuid file: no error")
	}
}

// FuzzClassify: any path, no panic, and results are self-consistent.
func FuzzClassify(f *testing.F) {
	for _, tt := range classifyCases() {
		f.Add(tt.path)
	}
	c := testClassifier(f)
	f.Fuzz(func(t *testing.T, path string) {
		got := c.Classify(path)
		if got.IsAccount() != (got.Account != "") {
			t.Fatalf("Classify(%q) = %+v: account set iff account kind", path, got)
		}
		if got.Kind == Pending && !isMailboxID(got.MailboxID) {
			t.Fatalf("Classify(%q) = %+v: pending without a mailbox id", path, got)
		}
		if got.MailboxID != "" && !strings.Contains(path, got.MailboxID) {
			t.Fatalf("Classify(%q) = %+v: mailbox id not from the path", path, got)
		}
		if got.File != "" && !strings.HasSuffix(strings.TrimSuffix(path, "/"), got.File) {
			t.Fatalf("Classify(%q) = %+v: File is not the last element", path, got)
		}
		if got.Kind != Unresolved && utf8.ValidString(path) && strings.Contains("/"+path+"/", "/../") {
			t.Fatalf("Classify(%q) = %+v: '..' component accepted", path, got)
		}
	})
}

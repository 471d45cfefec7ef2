package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mreplfs/rolemap/classify"
	"mreplfs/rolemap/cyrustest"
)

func classifyCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

// fakeTree lays out a small uuid + legacy Cyrus tree with one real-format
// header (alice's INBOX).
func fakeTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	const id = "ig5qudig5xhk5lij9pw6dcgx"
	h := classify.Header{Type: "e", Name: "user.alice", UniqueID: id, ACL: []classify.ACLEntry{{ID: "alice", Rights: "lrswipkxtecdan"}}}
	files := map[string][]byte{
		"meta/uuid/i/g/" + id + "/cyrus.header": h.Marshal(),
		"meta/uuid/i/g/" + id + "/cyrus.index":  nil,
		"spool/uuid/i/g/" + id + "/1.":          nil,
		"conf/mailboxes.db":                     nil,
		"conf/quota/b/user.bob":                 nil,
		"conf/user/uuid/i/g/" + id + "/sub.db":  nil,
		"spool/b/user/bob/2.":                   nil,
	}
	for p, b := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestClassifyCLI(t *testing.T) {
	dir := fakeTree(t)
	const id = "ig5qudig5xhk5lij9pw6dcgx"
	for _, tt := range []struct {
		name      string
		args      []string
		code      int
		stdout    string
		stderrHas string
	}{
		{"help", []string{"classify", "-h"}, ExitOK, "", "usage: mreplfs classify [-root DIR]"},
		{"no paths", []string{"classify"}, ExitUsage, "", "no PATH given"},
		{"all without root", []string{"classify", "-all"}, ExitUsage, "", "-all needs -root"},
		{"all with paths", []string{"classify", "-root", dir, "-all", "x"}, ExitUsage, "", "-all takes no PATH"},
		{"bad flag", []string{"classify", "-x"}, ExitUsage, "", "Try: mreplfs classify -h"},
		{"missing root", []string{"classify", "-root", filepath.Join(dir, "nope"), "conf"}, ExitFailure, "", "-root"},
		{"logical, no root", []string{"classify", "conf/quota/a/user.alice", "spool/a/user/alice/Sent/1.", "conf/deliver.db"}, ExitOK,
			"conf/quota/a/user.alice\tquota\talice\nspool/a/user/alice/Sent/1.\tmailbox\talice\nconf/deliver.db\tshared\t-\n", ""},
		{"uuid pending without root", []string{"classify", "meta/uuid/i/g/" + id + "/cyrus.index"}, ExitFailure,
			"meta/uuid/i/g/" + id + "/cyrus.index\tpending\t-\n", "1 path(s) unresolved or pending"},
		{"uuid with root", []string{"classify", "-root", dir, "meta/uuid/i/g/" + id + "/cyrus.index", filepath.Join(dir, "conf/user/uuid/i/g", id, "sub.db")}, ExitOK,
			"meta/uuid/i/g/" + id + "/cyrus.index\tmailbox\talice\n" + filepath.Join(dir, "conf/user/uuid/i/g", id, "sub.db") + "\tuserdb\talice\n", ""},
		{"unresolved", []string{"classify", "-root", dir, "conf/weird/x", "spool/b/user/bob/2."}, ExitFailure,
			"conf/weird/x\tunresolved\t-\nspool/b/user/bob/2.\tmailbox\tbob\n", "1 path(s) unresolved"},
		{"outside root", []string{"classify", "-root", dir, "/etc/passwd"}, ExitFailure, "", "is not under"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := classifyCLI(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if tt.stdout != "" && stdout != tt.stdout {
				t.Errorf("stdout %q, want %q", stdout, tt.stdout)
			}
			if !strings.Contains(stderr, tt.stderrHas) {
				t.Errorf("stderr %q, want it to contain %q", stderr, tt.stderrHas)
			}
		})
	}
	code, stdout, stderr := classifyCLI(t, "classify", "-root", dir, "-all")
	if code != ExitOK {
		t.Fatalf("-all: exit %d: %s\n%s", code, stderr, stdout)
	}
	for _, want := range []string{"spool/uuid/i/g/" + id + "/1.\tmailbox\talice\n", "conf/quota/b/user.bob\tquota\tbob\n",
		"conf\tstructure\t-\n", "conf/mailboxes.db\tshared\t-\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("-all output lacks %q:\n%s", want, stdout)
		}
	}
	entries := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p != dir {
			entries++
		}
		return err
	})
	if n := strings.Count(stdout, "\n"); n != entries || n < 20 {
		t.Errorf("-all printed %d lines, want %d (every file and directory):\n%s", n, entries, stdout)
	}
}

// TestClassifyCLIRealCyrus classifies a tree a real Cyrus left behind.
func TestClassifyCLIRealCyrus(t *testing.T) {
	dir := filepath.Join(cyrustest.TempDir(t), "cyrus")
	in := cyrustest.Start(t, dir, cyrustest.Options{Meta: true})
	cyrustest.RunScenario(t, in)
	if err := in.Stop(); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := classifyCLI(t, "classify", "-root", dir, "-all")
	if code != ExitOK {
		t.Fatalf("exit %d: %s\n%s", code, stderr, stdout)
	}
	for _, want := range []string{"\tmailbox\talice\n", "\tmailbox\tbob\n", "\tuserdb\tadmin\n", "\tquota\talice\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

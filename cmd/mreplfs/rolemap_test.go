package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodRoles = `# test roles
alice    master  10.0.0.2:7000 3
bob      replica 10.0.0.1:7000 12   # comment
admin    local   -             0
%shared.news master 10.0.0.2:7000 1
`

// rolemapCLI runs mreplfs in-process.
func rolemapCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

func TestRolemapCLI(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("good.txt", goodRoles)
	write("bad.txt", "alice master 10.0.0.2:7000 3\nbob boss - 1\nalice local - 0\n")
	write("corrupt.cdb", strings.Repeat("x", 3000))
	if code, _, stderr := rolemapCLI(t, "rolemap", "build", filepath.Join(dir, "good.txt"), filepath.Join(dir, "roles.cdb")); code != 0 {
		t.Fatalf("build: exit %d: %s", code, stderr)
	}

	tcases := []struct {
		args       string // split on spaces; $D is the temp dir
		code       int
		stdout     string // exact, when stdoutHas is empty
		stderrHas  []string
		stdoutHas  string
		noFileMade string
	}{
		{args: "rolemap", code: ExitUsage, stderrHas: []string{"usage: mreplfs rolemap", "missing subcommand", "Try: mreplfs rolemap -h"}},
		{args: "rolemap -h", code: ExitOK, stderrHas: []string{"usage: mreplfs rolemap <build|get|dump|check>", "build  SRC.txt DST.cdb"}},
		{args: "rolemap frob", code: ExitUsage, stderrHas: []string{`unknown subcommand "frob"`, "Try: mreplfs rolemap -h"}},
		{args: "rolemap build -h", code: ExitOK, stderrHas: []string{"usage: mreplfs rolemap build SRC.txt DST.cdb"}},
		{args: "rolemap get -h", code: ExitOK, stderrHas: []string{"usage: mreplfs rolemap get DB.cdb ACCOUNT"}},
		{args: "rolemap dump -h", code: ExitOK, stderrHas: []string{"usage: mreplfs rolemap dump DB.cdb"}},
		{args: "rolemap check -h", code: ExitOK, stderrHas: []string{"usage: mreplfs rolemap check SRC.txt"}},
		{args: "rolemap build -x a b", code: ExitUsage, stderrHas: []string{"flag provided but not defined: -x", "Try: mreplfs rolemap -h"}},
		{args: "rolemap build $D/good.txt", code: ExitUsage, stderrHas: []string{"build wants SRC.txt DST.cdb, got 1 argument(s)", "Try:"}},
		{args: "rolemap get $D/roles.cdb", code: ExitUsage, stderrHas: []string{"get wants DB.cdb ACCOUNT, got 1 argument(s)"}},
		{args: "rolemap dump", code: ExitUsage, stderrHas: []string{"dump wants DB.cdb, got 0 argument(s)"}},
		{args: "rolemap check a b", code: ExitUsage, stderrHas: []string{"check wants SRC.txt, got 2 argument(s)"}},

		{args: "rolemap build $D/good.txt $D/new.cdb", code: ExitOK, stdout: "$D/new.cdb: 4 accounts\n"},
		{args: "rolemap build $D/bad.txt $D/bad.cdb", code: ExitFailure, noFileMade: "bad.cdb", stderrHas: []string{
			"mreplfs rolemap: $D/bad.txt:2: account \"bob\": bad role \"boss\" (want master, replica or local)\n",
			"$D/bad.txt:3: duplicate account \"alice\" (first on line 1)\n"}},
		{args: "rolemap build $D/missing.txt $D/m.cdb", code: ExitFailure, noFileMade: "m.cdb", stderrHas: []string{"no such file or directory"}},
		{args: "rolemap check $D/good.txt", code: ExitOK, stdout: "$D/good.txt: 4 accounts, OK\n"},
		{args: "rolemap check $D/bad.txt", code: ExitFailure, stderrHas: []string{"$D/bad.txt:2: account \"bob\": bad role", "$D/bad.txt:3: duplicate account"}},

		{args: "rolemap get $D/roles.cdb alice", code: ExitOK, stdout: "master 10.0.0.2:7000 3\n"},
		{args: "rolemap get $D/roles.cdb bob", code: ExitOK, stdout: "replica 10.0.0.1:7000 12\n"},
		{args: "rolemap get $D/roles.cdb admin", code: ExitOK, stdout: "local - 0\n"},
		{args: "rolemap get $D/roles.cdb %shared.news", code: ExitOK, stdout: "master 10.0.0.2:7000 1\n"},
		{args: "rolemap get $D/roles.cdb nobody", code: ExitNotFound, stderrHas: []string{`mreplfs rolemap: account "nobody" is not in $D/roles.cdb`}},
		{args: "rolemap get $D/roles.cdb ALICE", code: ExitNotFound},
		{args: "rolemap get $D/missing.cdb alice", code: ExitFailure, stderrHas: []string{"no such file or directory"}},
		{args: "rolemap get $D/corrupt.cdb alice", code: ExitFailure, stderrHas: []string{"corrupt role map"}},
		{args: "rolemap get $D/good.txt alice", code: ExitFailure, stderrHas: []string{"corrupt"}},

		{args: "rolemap dump $D/roles.cdb", code: ExitOK, stdout: "alice master 10.0.0.2:7000 3\nbob replica 10.0.0.1:7000 12\n" +
			"admin local - 0\n%shared.news master 10.0.0.2:7000 1\n"},
		{args: "rolemap dump $D/corrupt.cdb", code: ExitFailure, stderrHas: []string{"corrupt role map"}},
	}
	for _, tc := range tcases {
		t.Run(tc.args, func(t *testing.T) {
			args := strings.Fields(strings.ReplaceAll(tc.args, "$D", dir))
			code, stdout, stderr := rolemapCLI(t, args...)
			if code != tc.code {
				t.Fatalf("exit code: got %d, want %d (stderr: %s)", code, tc.code, stderr)
			}
			if want := strings.ReplaceAll(tc.stdout, "$D", dir); stdout != want {
				t.Errorf("stdout: got %q, want %q", stdout, want)
			}
			for _, s := range tc.stderrHas {
				if s = strings.ReplaceAll(s, "$D", dir); !strings.Contains(stderr, s) {
					t.Errorf("stderr: got %q, want it to contain %q", stderr, s)
				}
			}
			if tc.code == ExitOK && len(tc.stderrHas) == 0 && stderr != "" {
				t.Errorf("stderr: got %q, want nothing", stderr)
			}
			if tc.noFileMade != "" {
				if _, err := os.Stat(filepath.Join(dir, tc.noFileMade)); err == nil {
					t.Errorf("%s exists after a failed build", tc.noFileMade)
				}
			}
		})
	}
}

// TestRolemapDumpRoundTrip: build(dump(x)) is x, byte for byte.
func TestRolemapDumpRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "roles.txt")
	if err := os.WriteFile(src, []byte(goodRoles), 0o644); err != nil {
		t.Fatal(err)
	}
	first := filepath.Join(dir, "first.cdb")
	if code, _, stderr := rolemapCLI(t, "rolemap", "build", src, first); code != 0 {
		t.Fatalf("build: exit %d: %s", code, stderr)
	}
	code, dump, stderr := rolemapCLI(t, "rolemap", "dump", first)
	if code != 0 {
		t.Fatalf("dump: exit %d: %s", code, stderr)
	}
	dumped := filepath.Join(dir, "dump.txt")
	if err := os.WriteFile(dumped, []byte(dump), 0o644); err != nil {
		t.Fatal(err)
	}
	second := filepath.Join(dir, "second.cdb")
	if code, _, stderr := rolemapCLI(t, "rolemap", "build", dumped, second); code != 0 {
		t.Fatalf("build of the dump: exit %d: %s", code, stderr)
	}
	a, _ := os.ReadFile(first)
	b, _ := os.ReadFile(second)
	if !bytes.Equal(a, b) {
		t.Fatal("build(dump(x)) differs from x")
	}
	if code, again, _ := rolemapCLI(t, "rolemap", "dump", second); code != 0 || again != dump {
		t.Fatalf("dump of the rebuilt map: exit %d, got %q, want %q", code, again, dump)
	}
}

// TestRolemapBuildKeepsEpochs: rebuilding a map from a source that would
// turn an account back to a lower epoch (a promote or failover raised it
// since) is refused with exit 6, unless -force.
func TestRolemapBuildKeepsEpochs(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "roles.txt"), filepath.Join(dir, "roles.cdb")
	if err := os.WriteFile(src, []byte(goodRoles), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := rolemapCLI(t, "rolemap", "build", src, dst); code != 0 {
		t.Fatalf("build: exit %d: %s", code, stderr)
	}
	// A role change raises alice's epoch in the map.
	if code, _, stderr := rolemapCLI(t, "rolemap", "build", src, dst); code != 0 {
		t.Fatalf("rebuild with the same epochs: exit %d: %s", code, stderr)
	}
	if err := os.WriteFile(src, []byte(strings.Replace(goodRoles, "alice    master  10.0.0.2:7000 3", "alice    replica 10.0.0.2:7000 4", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := rolemapCLI(t, "rolemap", "build", src, dst); code != 0 {
		t.Fatalf("build raising an epoch: exit %d: %s", code, stderr)
	}
	if err := os.WriteFile(src, []byte(goodRoles), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := rolemapCLI(t, "rolemap", "build", src, dst)
	if code != ExitRefused || !strings.Contains(stderr, "alice (epoch 4") || !strings.Contains(stderr, "rolemap dump") {
		t.Errorf("build lowering alice's epoch: exit %d, want %d: %s", code, ExitRefused, stderr)
	}
	if _, out, _ := rolemapCLI(t, "rolemap", "get", dst, "alice"); !strings.Contains(out, "4") {
		t.Errorf("the refused build changed the map: %s", out)
	}
	if code, _, stderr := rolemapCLI(t, "rolemap", "build", "-force", src, dst); code != 0 {
		t.Errorf("build -force: exit %d: %s", code, stderr)
	}
	if _, out, _ := rolemapCLI(t, "rolemap", "get", dst, "alice"); !strings.Contains(out, "3") {
		t.Errorf("build -force did not replace the map: %s", out)
	}
}

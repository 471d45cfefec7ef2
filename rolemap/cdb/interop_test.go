package cdb

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// needTool returns the path of a Debian CDB tool. Missing tools fail the
// test under CI=true and skip it otherwise.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (apt-get install tinycdb freecdb): %v", name, err)
		}
		t.Skipf("%s not installed (apt-get install tinycdb freecdb)", name)
	}
	return p
}

// runTool runs a tool and returns its stdout and exit code. stdin is a
// []byte (a pipe) or the path of a file (seekable, as cdbget needs).
func runTool(t *testing.T, stdin any, name string, args ...string) ([]byte, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	switch in := stdin.(type) {
	case []byte:
		cmd.Stdin = bytes.NewReader(in)
	case string:
		f, err := os.Open(in)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.Bytes(), 0
	case errors.As(err, &ee):
		return out.Bytes(), ee.ExitCode()
	default:
		t.Fatalf("%s %q: %v (stderr: %s)", name, args, err, errb.Bytes())
		return nil, -1
	}
}

// interopRecords: duplicates, empty values, an empty key, binary keys and
// values, and enough keys for long probe sequences.
func interopRecords() []Record {
	recs := []Record{
		{[]byte("alice"), []byte("master 10.0.0.2:7000 1")},
		{[]byte("dup"), []byte("one")},
		{[]byte("empty"), nil},
		{[]byte("dup"), []byte("two")},
		{nil, []byte("value of the empty key")},
		{[]byte("bin\x01\xff\n->"), []byte("\x00\x00binary\n")},
		{[]byte("dup"), nil},
		{[]byte("\x00nul-led"), []byte("x")},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 2000 {
		k := []byte(fmt.Sprintf("user%05d@example.com", i))
		recs = append(recs, Record{k, []byte(strconv.Itoa(rng.IntN(1 << 30)))})
		if i%97 == 0 {
			recs = append(recs, Record{k, []byte("again")})
		}
	}
	return recs
}

// TestInteropWeWrite: files we write are read by tinycdb and freecdb.
func TestInteropWeWrite(t *testing.T) {
	cdbTool := needTool(t, "cdb")
	cdbget := needTool(t, "cdbget")
	cdbdump := needTool(t, "cdbdump")
	recs := interopRecords()
	path := filepath.Join(t.TempDir(), "ours.cdb")
	writeFile(t, path, recs)

	// Whole-file dumps, binary keys included.
	want := formatCdbmake(recs)
	if out, code := runTool(t, nil, cdbTool, "-d", path); code != 0 || !bytes.Equal(out, want) {
		t.Fatalf("cdb -d: exit %d, output differs from what we wrote (%d vs %d bytes)", code, len(out), len(want))
	}
	if out, code := runTool(t, path, cdbdump); code != 0 || !bytes.Equal(out, want) {
		t.Fatalf("cdbdump: exit %d, output differs from what we wrote (%d vs %d bytes)", code, len(out), len(want))
	}

	// Lookups, every duplicate by number. Arguments cannot carry NUL.
	// Every duplicated key, and every 10th other key.
	vals := wantValues(recs)
	keys := slices.Sorted(maps.Keys(vals))
	checked, dups := 0, 0
	for n, k := range keys {
		vs := vals[k]
		if bytes.IndexByte([]byte(k), 0) >= 0 || (len(k) > 0 && k[0] == '-') {
			continue
		}
		if len(vs) == 1 && n%10 != 0 {
			continue
		}
		for i, v := range vs {
			out, code := runTool(t, nil, cdbTool, "-q", "-n", strconv.Itoa(i+1), path, k)
			if code != 0 || !bytes.Equal(out, v) {
				t.Fatalf("cdb -q -n %d %q: exit %d, got %q, want %q", i+1, k, code, out, v)
			}
			if k == "" {
				continue // cdbget refuses an empty key argument (prints its usage)
			}
			out, code = runTool(t, path, cdbget, k, strconv.Itoa(i))
			if code != 0 || !bytes.Equal(out, v) {
				t.Fatalf("cdbget %q %d: exit %d, got %q, want %q", k, i, code, out, v)
			}
			checked++
		}
		if len(vs) > 1 { // without -n, cdb -q prints every duplicate
			dups++
			out, code := runTool(t, nil, cdbTool, "-q", path, k)
			if code != 0 || !bytes.Equal(out, bytes.Join(vs, nil)) {
				t.Fatalf("cdb -q %q: exit %d, got %q, want %q", k, code, out, bytes.Join(vs, nil))
			}
		}
	}
	if checked < 200 || dups < 20 {
		t.Fatalf("checked only %d values and %d duplicated keys", checked, dups)
	}
	if _, code := runTool(t, nil, cdbTool, "-q", path, "missing"); code != 100 {
		t.Fatalf("cdb -q missing: exit %d, want 100", code)
	}
	if _, code := runTool(t, path, cdbget, "missing"); code != 100 {
		t.Fatalf("cdbget missing: exit %d, want 100", code)
	}
	if _, code := runTool(t, path, cdbget, "dup", "3"); code != 100 {
		t.Fatalf("cdbget dup 3 (past the last duplicate): exit %d, want 100", code)
	}
}

// TestInteropTheyWrite: files tinycdb and freecdb write are read by us.
func TestInteropTheyWrite(t *testing.T) {
	cdbTool := needTool(t, "cdb")
	cdbmake := needTool(t, "cdbmake")
	recs := interopRecords()
	in := formatCdbmake(recs)
	dir := t.TempDir()

	tiny := filepath.Join(dir, "tiny.cdb")
	if _, code := runTool(t, in, cdbTool, "-c", tiny); code != 0 {
		t.Fatalf("cdb -c: exit %d", code)
	}
	free := filepath.Join(dir, "free.cdb")
	if _, code := runTool(t, in, cdbmake, free, free+".tmp"); code != 0 {
		t.Fatalf("cdbmake: exit %d", code)
	}
	ours := build(t, recs)
	for _, path := range []string{tiny, free} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			r, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			checkContents(t, r, recs)
			theirs, _ := os.ReadFile(path)
			if !bytes.Equal(theirs, ours) {
				t.Errorf("%s differs from our writer's file", filepath.Base(path))
			}
		})
	}
}

package rolemap

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"mreplfs/rolemap/cdb"
)

func seeds(f *testing.F, pattern string) {
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds %s: %v", pattern, err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzMap: any CDB content either is refused or gives a map whose every
// account looks up to what All says, and which Build writes back the same.
func FuzzMap(f *testing.F) {
	seeds(f, "testdata/v1/*.cdb")
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := cdb.NewReader(data)
		if err != nil {
			return
		}
		m, err := newMap(r, fileID{})
		if err != nil {
			return
		}
		var recs []Record
		for rec, err := range m.All() {
			if err != nil {
				t.Fatalf("All after a successful open: %v", err)
			}
			recs = append(recs, rec)
		}
		if len(recs) != m.Len() {
			t.Fatalf("All yields %d accounts, Len says %d", len(recs), m.Len())
		}
		seen := map[string]bool{}
		for _, rec := range recs {
			e, ok := m.Lookup(rec.Account)
			if !ok || (!seen[rec.Account] && e != rec.Entry) {
				t.Fatalf("Lookup(%q): got %v, %v; All said %v", rec.Account, e, ok, rec.Entry)
			}
			seen[rec.Account] = true
		}
		if len(seen) != len(recs) {
			return // duplicates: a valid CDB, but not one Build writes
		}
		path := filepath.Join(t.TempDir(), "x.cdb")
		if err := Build(path, recs); err != nil {
			t.Fatalf("Build of records read from a valid map: %v", err)
		}
		m2, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer m2.Close()
		var again []Record
		for rec, err := range m2.All() {
			if err != nil {
				t.Fatal(err)
			}
			again = append(again, rec)
		}
		if !slices.Equal(again, recs) {
			t.Fatalf("rebuilt map differs")
		}
	})
}

// FuzzParse: Parse never panics; what it accepts formats and parses back to
// the same records.
func FuzzParse(f *testing.F) {
	seeds(f, "testdata/v1/*.txt")
	f.Add([]byte("a master h:1 1\nb replica [::1]:2 0 # c\nc local - 18446744073709551615\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := Parse(bytes.NewReader(data), "fuzz")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz:") {
				t.Fatalf("error without the source name: %v", err)
			}
			return
		}
		if err := Validate(recs); err != nil {
			t.Fatalf("Parse accepted what Validate refuses: %v", err)
		}
		var b bytes.Buffer
		for _, r := range recs {
			if err := FormatRecord(&b, r); err != nil {
				t.Fatal(err)
			}
		}
		again, err := Parse(&b, "again")
		if err != nil {
			t.Fatalf("reparse of %q: %v", b.String(), err)
		}
		if !slices.Equal(again, recs) {
			t.Fatalf("reparse: got %v, want %v", again, recs)
		}
	})
}

package rolemap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"mreplfs/rolemap/cdb"
)

func allRecords(t testing.TB, m *Map) []Record {
	t.Helper()
	var out []Record
	for r, err := range m.All() {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	recs := records(1000, 5)
	path := buildMap(t, dir, "roles.cdb", recs)
	if got := dirNames(t, dir); !slices.Equal(got, []string{"roles.cdb"}) {
		t.Fatalf("dir holds %v, want only roles.cdb (no temp file left)", got)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	m, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Len() != len(recs) {
		t.Fatalf("Len: got %d, want %d", m.Len(), len(recs))
	}
	for _, r := range recs {
		e, ok := m.Lookup(r.Account)
		if !ok || e != r.Entry {
			t.Fatalf("Lookup(%q): got %v, %v; want %v, true", r.Account, e, ok, r.Entry)
		}
	}
	for _, a := range []string{"", "nobody", "user0000000@example.co", "USER0000000@example.com"} {
		if e, ok := m.Lookup(a); ok || e != (Entry{}) || e.Role != Unknown {
			t.Fatalf("Lookup(%q): got %v, %v; want unknown, false", a, e, ok)
		}
	}
	if got := allRecords(t, m); !slices.Equal(got, recs) {
		t.Fatalf("All: records differ from what was built")
	}
}

// TestGolden: the frozen version-1 file still reads, and Build still writes
// it byte for byte.
func TestGolden(t *testing.T) {
	recs, err := ParseFile("testdata/v1/roles.txt")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Open("testdata/v1/roles.cdb")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := allRecords(t, m); !slices.Equal(got, recs) {
		t.Fatalf("got %v, want %v", got, recs)
	}
	e, ok := m.Lookup("carol")
	if want := (Entry{Master, "[fd00::2]:7000", 1<<64 - 1}); !ok || e != want {
		t.Fatalf("Lookup(carol): got %v, %v; want %v", e, ok, want)
	}
	path := buildMap(t, t.TempDir(), "roles.cdb", recs)
	got, _ := os.ReadFile(path)
	want, _ := os.ReadFile("testdata/v1/roles.cdb")
	if !bytes.Equal(got, want) {
		t.Fatal("Build no longer writes the frozen version-1 file byte for byte: a format change needs a new version")
	}
}

func TestBuildFailure(t *testing.T) {
	dir := t.TempDir()
	recs := records(10, 1)
	// dst is a non-empty directory: the rename fails after the temp file
	// was written, and the temp file must go.
	dst := filepath.Join(dir, "roles.cdb")
	if err := os.MkdirAll(filepath.Join(dst, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Build(dst, recs); err == nil {
		t.Fatal("Build over a directory: got nil error")
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"roles.cdb"}) {
		t.Fatalf("dir holds %v after a failed build, want only roles.cdb", got)
	}
	// Invalid records never reach the disk.
	if err := Build(filepath.Join(dir, "b.cdb"), append(recs, recs[0])); err == nil {
		t.Fatal("Build with a duplicate account: got nil error")
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"roles.cdb"}) {
		t.Fatalf("dir holds %v after a refused build", got)
	}
	if _, err := BuildFile(filepath.Join(dir, "missing.txt"), filepath.Join(dir, "c.cdb")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("BuildFile of a missing source: got %v, want ErrNotExist", err)
	}
}

// writeCDB writes raw records with the cdb package (foreign or broken maps).
func writeCDB(t *testing.T, path string, kv ...[]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := cdb.NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(kv); i += 2 {
		if err := w.Add(kv[i], kv[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenCorrupt(t *testing.T) {
	dir := t.TempDir()
	good := buildMap(t, dir, "good.cdb", records(50, 1))
	goodBytes, _ := os.ReadFile(good)
	hdr := func(version byte, accounts uint64, partners ...string) []byte {
		return appendHeader(nil, header{version: version, accounts: accounts, partners: partners})
	}
	val := func(e Entry, p uint64) []byte { return appendValue(nil, e, p) }
	tcases := []struct {
		name  string
		write func(path string)
		want  error
	}{
		{"empty file", func(p string) { os.WriteFile(p, nil, 0o644) }, ErrCorrupt},
		{"truncated", func(p string) { os.WriteFile(p, goodBytes[:len(goodBytes)-9], 0o644) }, ErrCorrupt},
		{"foreign cdb", func(p string) { writeCDB(t, p, []byte("alice"), []byte("x")) }, ErrCorrupt},
		{"bad magic", func(p string) { writeCDB(t, p, nil, []byte("XXXX\x01\x00\x00")) }, ErrCorrupt},
		{"version 2", func(p string) { writeCDB(t, p, nil, hdr(2, 0)) }, ErrVersion},
		{"count mismatch", func(p string) {
			writeCDB(t, p, nil, hdr(1, 2, "h:1"), []byte("a"), val(Entry{Master, "", 1}, 1))
		}, ErrCorrupt},
		{"partner index out of range", func(p string) {
			writeCDB(t, p, nil, hdr(1, 1, "h:1"), []byte("a"), val(Entry{Master, "", 1}, 2))
		}, ErrCorrupt},
		{"local with partner", func(p string) {
			writeCDB(t, p, nil, hdr(1, 1, "h:1"), []byte("a"), val(Entry{Local, "", 1}, 1))
		}, ErrCorrupt},
		{"master without partner", func(p string) {
			writeCDB(t, p, nil, hdr(1, 1, "h:1"), []byte("a"), val(Entry{Master, "", 1}, 0))
		}, ErrCorrupt},
		{"bad role code", func(p string) {
			writeCDB(t, p, nil, hdr(1, 1), []byte("a"), []byte{1, 9, 0, 0})
		}, ErrCorrupt},
		{"empty value", func(p string) { writeCDB(t, p, nil, hdr(1, 1), []byte("a"), nil) }, ErrCorrupt},
		{"trailing bytes in value", func(p string) {
			writeCDB(t, p, nil, hdr(1, 1), []byte("a"), append(val(Entry{Local, "", 1}, 0), 0))
		}, ErrCorrupt},
		{"bad account name", func(p string) {
			writeCDB(t, p, nil, hdr(1, 1), []byte("a/b"), val(Entry{Local, "", 1}, 0))
		}, ErrCorrupt},
		{"two headers", func(p string) { writeCDB(t, p, nil, hdr(1, 0), nil, hdr(1, 0)) }, ErrCorrupt},
		{"bad partner in header", func(p string) { writeCDB(t, p, nil, hdr(1, 0, "nocolon")) }, ErrCorrupt},
		{"partner count too big", func(p string) {
			writeCDB(t, p, nil, []byte("MRRM\x01\x00\xff\xff\xff\xff\x0f"))
		}, ErrCorrupt},
	}
	for _, tc := range tcases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "bad.cdb")
			os.Remove(path)
			tc.write(path)
			m, err := Open(path)
			if err == nil {
				m.Close()
				t.Fatal("Open: got nil error")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Open(filepath.Join(dir, "missing.cdb")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open(missing): got %v, want ErrNotExist", err)
	}
}

func TestLookupAllocs(t *testing.T) {
	m, err := Open(buildMap(t, t.TempDir(), "roles.cdb", records(100, 1)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if n := testing.AllocsPerRun(1000, func() {
		if _, ok := m.Lookup("user0000042@example.com"); !ok {
			t.Fatal("miss")
		}
		m.Lookup("nobody")
	}); n != 0 {
		t.Fatalf("Lookup: got %v allocs, want 0", n)
	}
}

// TestCloseDuringLookups closes maps while goroutines look them up: no
// lookup may read unmapped memory (that would crash the test binary), and
// after Close lookups find nothing.
func TestCloseDuringLookups(t *testing.T) {
	path := buildMap(t, t.TempDir(), "roles.cdb", records(1000, 1))
	for range 20 {
		m, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var hits atomic.Int64
		start := make(chan struct{})
		for g := range 4 {
			wg.Go(func() {
				<-start
				for i := range 2000 {
					if _, ok := m.Lookup(fmt.Sprintf("user%07d@example.com", (i*7+g)%1000)); ok {
						hits.Add(1)
					}
				}
			})
		}
		close(start)
		for hits.Load() == 0 {
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if _, ok := m.Lookup("user0000001@example.com"); ok {
			t.Fatal("Lookup after Close found an account")
		}
		if _, _, err := m.Get("user0000001@example.com"); err == nil {
			t.Fatal("Get after Close: got nil error")
		}
		if m.refs.Load() != closedBit || m.r.Size() != 0 {
			t.Fatalf("after Close and all lookups: refs %d, mapping of %d bytes; want unmapped", m.refs.Load(), m.r.Size())
		}
	}
}

// TestAtomicReplace rebuilds the map at one path over and over while readers
// open it and look accounts up: every open must see a complete map, old or
// new, never a partial file.
func TestAtomicReplace(t *testing.T) {
	dir := t.TempDir()
	const n = 2000
	path := buildMap(t, dir, "roles.cdb", records(n, 0))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var opens atomic.Int64
	errc := make(chan error, 4)
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				m, err := Open(path)
				if err != nil {
					errc <- err
					return
				}
				// The map is one generation: all replicas have its epoch.
				e0, ok := m.Lookup("user0000001@example.com")
				e1, ok1 := m.Lookup(fmt.Sprintf("user%07d@example.com", n-1)) // both replicas
				m.Close()
				if !ok || !ok1 || e0.Epoch != e1.Epoch {
					errc <- fmt.Errorf("mixed or missing entries: %v %v / %v %v", e0, ok, e1, ok1)
					return
				}
				opens.Add(1)
			}
		})
	}
	for gen := uint64(1); gen <= 30; gen++ {
		if err := Build(path, records(n, gen*10)); err != nil {
			t.Fatal(err)
		}
	}
	for opens.Load() < 10 {
		select {
		case err := <-errc:
			t.Fatal(err)
		default:
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"roles.cdb"}) {
		t.Fatalf("dir holds %v, want only roles.cdb", got)
	}
}

package cdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTestdata reads the frozen files Debian's tools wrote.
func TestTestdata(t *testing.T) {
	files, err := filepath.Glob("testdata/*.cdb")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			r, err := Open(path)
			if strings.HasPrefix(name, "truncated-") {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Open: got %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			in, err := os.ReadFile(filepath.Join("testdata", name[:strings.IndexByte(name, '-')]+".in"))
			if err != nil {
				t.Fatal(err)
			}
			recs, err := parseCdbmake(in)
			if err != nil {
				t.Fatal(err)
			}
			checkContents(t, r, recs)
			// Our writer produces the very same bytes.
			want, _ := os.ReadFile(path)
			if got := build(t, recs); !bytes.Equal(got, want) {
				t.Errorf("our writer's file differs from %s (%d vs %d bytes)", name, len(got), len(want))
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 10, 1000, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var recs []Record
			for i := range n {
				k := make([]byte, rng.IntN(12))
				for j := range k {
					k[j] = byte(rng.IntN(256))
				}
				if i > 0 && rng.IntN(5) == 0 { // duplicate an earlier key
					k = recs[rng.IntN(len(recs))].Key
				}
				v := make([]byte, rng.IntN(40))
				for j := range v {
					v[j] = byte(rng.IntN(256))
				}
				recs = append(recs, Record{Key: k, Value: v})
			}
			r, err := NewReader(build(t, recs))
			if err != nil {
				t.Fatal(err)
			}
			checkContents(t, r, recs)

			path := filepath.Join(t.TempDir(), "x.cdb")
			writeFile(t, path, recs)
			fr, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			checkContents(t, fr, recs)
			if err := fr.Close(); err != nil {
				t.Fatal(err)
			}
			if _, _, err := fr.GetString("x"); err == nil {
				t.Fatal("Get after Close: got nil error")
			}
			for _, err := range fr.FindAll([]byte("x")) {
				if err == nil {
					t.Fatal("FindAll after Close: got nil error")
				}
			}
			for _, err := range fr.Records() {
				if err == nil {
					t.Fatal("Records after Close: got nil error")
				}
			}
		})
	}
}

func TestWriterLimit(t *testing.T) {
	var m memFile
	w, err := NewWriter(&m)
	if err != nil {
		t.Fatal(err)
	}
	w.limit = HeaderSize + 2*(8+3+3+16) // room for two 3+3-byte records
	for i := range 2 {
		if err := w.Add([]byte(fmt.Sprintf("k%02d", i)), []byte("val")); err != nil {
			t.Fatalf("Add %d: %v", i, err)
		}
	}
	if err := w.Add([]byte("k02"), []byte("val")); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("third Add: got %v, want ErrTooLarge", err)
	}
	if err := w.Add([]byte("k"), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Add of a smaller record: got %v, want ErrTooLarge", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if len(m.buf) > int(w.limit) {
		t.Fatalf("file is %d bytes, over the limit %d", len(m.buf), w.limit)
	}
	r, err := NewReader(m.buf)
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, r, []Record{{[]byte("k00"), []byte("val")}, {[]byte("k01"), []byte("val")}})
	if err := w.Add([]byte("x"), nil); err == nil {
		t.Fatal("Add after Close: got nil error")
	}
}

func put32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }

// TestHostile feeds crafted files: each must give an error or a clean miss,
// never a panic or a hang.
func TestHostile(t *testing.T) {
	good := build(t, []Record{{[]byte("a"), []byte("1")}, {[]byte("b"), []byte("2")}})
	ha := Hash([]byte("a"))
	ta := int(ha&255) * 8
	tcases := []struct {
		name    string
		mutate  func(b []byte) []byte
		openErr bool
		getErr  bool // Get("a") errors
	}{
		{"short", func(b []byte) []byte { return b[:HeaderSize-1] }, true, false},
		{"table past end", func(b []byte) []byte { put32(b, ta+4, 1<<20); return b }, true, false},
		{"table len overflow", func(b []byte) []byte { put32(b, ta+4, 0xffffffff); return b }, true, false},
		{"table in header", func(b []byte) []byte { put32(b, ta, 8); return b }, true, false},
		{"slot points past end", func(b []byte) []byte {
			tpos := int(le32(b, ta))
			for i := range int(le32(b, ta+4)) {
				if le32(b, tpos+i*8+4) != 0 {
					put32(b, tpos+i*8+4, uint32(len(b)-4))
				}
			}
			return b
		}, false, true},
		{"key length huge", func(b []byte) []byte { put32(b, HeaderSize, 0xfffffff0); return b }, false, true},
		{"value length huge", func(b []byte) []byte { put32(b, HeaderSize+4, 0xfffffff0); return b }, false, true},
		{"all slots full, no match", func(b []byte) []byte {
			// A full table of matching hashes pointing at record "b": a naive
			// probe would loop forever.
			tpos := int(le32(b, ta))
			for i := range int(le32(b, ta+4)) {
				put32(b, tpos+i*8, ha)
				put32(b, tpos+i*8+4, HeaderSize+8+1+1)
			}
			return b
		}, false, false},
	}
	for _, tc := range tcases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(bytes.Clone(good))
			r, err := NewReader(b)
			if tc.openErr {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("NewReader: got %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewReader: %v", err)
			}
			_, _, err = r.GetString("a")
			if tc.getErr != (err != nil) {
				t.Fatalf("Get: got err %v, want error: %v", err, tc.getErr)
			}
			if tc.getErr && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Get: got %v, want ErrCorrupt", err)
			}
			for range r.FindAll([]byte("a")) {
			}
			for range r.Records() {
			}
		})
	}
}

func TestRecordsCorrupt(t *testing.T) {
	b := build(t, []Record{{[]byte("a"), []byte("1")}, {[]byte("b"), []byte("2")}})
	put32(b, HeaderSize+10+4, 1000) // the second record's value length
	r, err := NewReader(b)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var last error
	for _, err := range r.Records() {
		n++
		last = err
	}
	if n != 2 || !errors.Is(last, ErrCorrupt) {
		t.Fatalf("got %d yields ending in %v, want 2 ending in ErrCorrupt", n, last)
	}
}

func TestGetAllocs(t *testing.T) {
	r, err := NewReader(build(t, []Record{{[]byte("alice"), []byte("x")}}))
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("alice")
	if n := testing.AllocsPerRun(100, func() {
		if _, ok, _ := r.Get(key); !ok {
			t.Fatal("miss")
		}
		r.GetString("bob")
	}); n != 0 {
		t.Fatalf("got %v allocs per lookup, want 0", n)
	}
}

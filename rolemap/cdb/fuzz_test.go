package cdb

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReader: any input gives an error or a readable file, never a panic;
// whatever records a file yields, our writer writes back and reads again.
func FuzzReader(f *testing.F) {
	files, err := filepath.Glob("testdata/*.cdb")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in testdata: %v", err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(data)
		if err != nil {
			return
		}
		var recs []Record
		for rec, err := range r.Records() {
			if err != nil {
				break
			}
			recs = append(recs, Record{bytes.Clone(rec.Key), bytes.Clone(rec.Value)})
		}
		// Lookups of every key found, and of some absent keys: no panic,
		// no endless probe; a hit returns bytes inside the file.
		keys := [][]byte{nil, []byte("x"), data[:min(len(data), 9)]}
		for _, rec := range recs {
			keys = append(keys, rec.Key)
		}
		for _, k := range keys {
			if v, ok, err := r.Get(k); ok && err == nil && len(v) > len(data) {
				t.Fatalf("Get(%q): %d-byte value from a %d-byte file", k, len(v), len(data))
			}
			for _, err := range r.FindAll(k) {
				if err != nil {
					break
				}
			}
		}
		// Round trip through our writer.
		r2, err := NewReader(build(t, recs))
		if err != nil {
			t.Fatalf("reading back our own file: %v", err)
		}
		checkContents(t, r2, recs)
	})
}

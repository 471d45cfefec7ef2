package cdb

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
)

// memFile is an in-memory io.WriteSeeker.
type memFile struct {
	buf []byte
	off int64
}

func (m *memFile) Write(p []byte) (int, error) {
	if need := int(m.off) + len(p); need > len(m.buf) {
		m.buf = append(m.buf, make([]byte, need-len(m.buf))...)
	}
	copy(m.buf[m.off:], p)
	m.off += int64(len(p))
	return len(p), nil
}

func (m *memFile) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += m.off
	case io.SeekEnd:
		off += int64(len(m.buf))
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	m.off = off
	return off, nil
}

// build writes recs with our Writer into memory.
func build(t testing.TB, recs []Record) []byte {
	t.Helper()
	var m memFile
	w, err := NewWriter(&m)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Add(r.Key, r.Value); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return m.buf
}

// writeFile writes recs with our Writer into a file.
func writeFile(t testing.TB, path string, recs []Record) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Add(r.Key, r.Value); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// parseCdbmake parses cdbmake's input format: "+klen,dlen:key->data\n" lines
// ended by an empty line.
func parseCdbmake(in []byte) ([]Record, error) {
	var recs []Record
	for {
		if len(in) == 0 {
			return nil, errors.New("missing final empty line")
		}
		if in[0] == '\n' {
			return recs, nil
		}
		if in[0] != '+' {
			return nil, fmt.Errorf("want '+', got %q", in[0])
		}
		comma := bytes.IndexByte(in, ',')
		colon := bytes.IndexByte(in, ':')
		if comma < 0 || colon < comma {
			return nil, errors.New("bad record header")
		}
		klen, err1 := strconv.Atoi(string(in[1:comma]))
		vlen, err2 := strconv.Atoi(string(in[comma+1 : colon]))
		if err1 != nil || err2 != nil {
			return nil, errors.New("bad lengths")
		}
		rest := in[colon+1:]
		if len(rest) < klen+2+vlen+1 {
			return nil, errors.New("short record")
		}
		k := rest[:klen]
		if string(rest[klen:klen+2]) != "->" || rest[klen+2+vlen] != '\n' {
			return nil, errors.New("bad separators")
		}
		v := rest[klen+2 : klen+2+vlen]
		recs = append(recs, Record{Key: bytes.Clone(k), Value: bytes.Clone(v)})
		in = rest[klen+2+vlen+1:]
	}
}

// formatCdbmake renders recs in cdbmake's input format (also what cdb -d and
// cdbdump print).
func formatCdbmake(recs []Record) []byte {
	var b bytes.Buffer
	for _, r := range recs {
		fmt.Fprintf(&b, "+%d,%d:%s->%s\n", len(r.Key), len(r.Value), r.Key, r.Value)
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// allRecords collects r.Records, failing on an error.
func allRecords(t testing.TB, r *Reader) []Record {
	t.Helper()
	var out []Record
	for rec, err := range r.Records() {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
	}
	return out
}

// wantValues returns, per key, the values in insertion order.
func wantValues(recs []Record) map[string][][]byte {
	m := map[string][][]byte{}
	for _, r := range recs {
		m[string(r.Key)] = append(m[string(r.Key)], r.Value)
	}
	return m
}

// checkContents checks that r holds exactly recs: records in order, and
// every key's values through Get and FindAll.
func checkContents(t testing.TB, r *Reader, recs []Record) {
	t.Helper()
	got := allRecords(t, r)
	if len(got) != len(recs) {
		t.Fatalf("got %d records, want %d", len(got), len(recs))
	}
	for i := range got {
		if !bytes.Equal(got[i].Key, recs[i].Key) || !bytes.Equal(got[i].Value, recs[i].Value) {
			t.Fatalf("record %d: got %q=%q, want %q=%q", i, got[i].Key, got[i].Value, recs[i].Key, recs[i].Value)
		}
	}
	for k, vals := range wantValues(recs) {
		v, ok, err := r.Get([]byte(k))
		if err != nil || !ok || !bytes.Equal(v, vals[0]) {
			t.Fatalf("Get(%q) = %q, %v, %v; want %q, true, nil", k, v, ok, err, vals[0])
		}
		var all [][]byte
		for v, err := range r.FindAll([]byte(k)) {
			if err != nil {
				t.Fatalf("FindAll(%q): %v", k, err)
			}
			all = append(all, v)
		}
		if len(all) != len(vals) {
			t.Fatalf("FindAll(%q): got %d values, want %d", k, len(all), len(vals))
		}
		for i := range all {
			if !bytes.Equal(all[i], vals[i]) {
				t.Fatalf("FindAll(%q)[%d]: got %q, want %q", k, i, all[i], vals[i])
			}
		}
	}
	if v, ok, err := r.GetString("no such key \x00"); ok || err != nil || v != nil {
		t.Fatalf("Get(missing) = %q, %v, %v; want nil, false, nil", v, ok, err)
	}
}

package journal

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzDecodeRecord: no input panics or allocates past the length bound; a
// frame that decodes re-encodes to one that decodes to the same record.
// Seeded with the golden segments (whole, and each frame alone).
func FuzzDecodeRecord(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "v*", "*.seg"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		for off := segHeaderSize; off < len(b); {
			_, n, err := DecodeFrame(b[off:])
			if err != nil {
				break
			}
			f.Add(b[off : off+n])
			f.Add(b[off+frameHeader : off+n]) // a bare payload, for UnmarshalRecord
			off += n
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Record
		if err := UnmarshalRecord(b, &p); err == nil {
			q := Record{}
			if err := UnmarshalRecord(MarshalRecord(nil, &p), &q); err != nil || !reflect.DeepEqual(p, q) {
				t.Fatalf("payload round trip: got %+v, %v, want %+v", q, err, p)
			}
		}
		r, n, err := DecodeFrame(b)
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		enc, err := AppendFrame(nil, &r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		r2, _, err := DecodeFrame(enc)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip: got %+v, %v, want %+v", r2, err, r)
		}
	})
}

// FuzzStateFiles: the durable file and a consumer file, from any bytes:
// never a panic; what decodes re-encodes to the same bytes or value.
// Seeded with testdata/state.
func FuzzStateFiles(f *testing.F) {
	for _, name := range []string{durableFile, "peer-a" + consumerSuffix} {
		b, err := os.ReadFile(filepath.Join("testdata", "state", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, ok := decodeDurable(b); ok {
			var enc [durableSize]byte
			encodeDurable(&enc, v)
			if string(enc[:]) != string(b[:durableSize]) {
				t.Fatalf("durable %d re-encodes to %x, read from %x", v, enc, b[:durableSize])
			}
		}
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, consumersDir), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, consumersDir, "peer-a"+consumerSuffix), b, 0o600); err != nil {
			t.Fatal(err)
		}
		v, ok, err := readConsumer(dir, "peer-a")
		if err != nil || !ok {
			return
		}
		if err := writeConsumer(dir, "peer-a", v); err != nil {
			t.Fatal(err)
		}
		if v2, ok, err := readConsumer(dir, "peer-a"); err != nil || !ok || v2 != v {
			t.Fatalf("consumer round trip: got %d, %v, %v, want %d", v2, ok, err, v)
		}
	})
}

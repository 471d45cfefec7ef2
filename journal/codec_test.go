package journal

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "regenerate golden files of the CURRENT format version only (never for a committed version)")

// sampleRecords covers every op and every field; record 3 compresses.
func sampleRecords() []Record {
	body := []byte(strings.Repeat("Subject: hello\r\nFrom: a@example.com\r\n\r\nbody line\r\n", 20))
	h := sha256.Sum256(body)
	return []Record{
		{Op: OpCheckpoint},
		{Op: OpEpoch, Account: "alice", Epoch: 7},
		{Op: OpMessage, Account: "alice", Epoch: 7, Tree: "spool", Path: "a/user/alice/1.", Size: int64(len(body)),
			Mode: 0o100600, MTime: 1700000000123456789, Hash: h, PrevSize: -1, Data: body},
		{Op: OpMessage, Account: "bob@example.com", Epoch: 1, Tree: "spool", Path: "b/user/bob/9.", Size: 4242, Hash: h, PrevSize: -1},
		{Op: OpWrite, Account: "alice", Epoch: 7, Tree: "meta", Path: "a/user/alice/cyrus.index", Offset: 64, PrevSize: 128,
			PrevHash: sha256.Sum256([]byte("x")), Data: []byte{0, 1, 2, 3, 0xff}},
		{Op: OpTruncate, Account: "alice", Epoch: 7, Tree: "meta", Path: "a/user/alice/cyrus.cache", Size: 0, PrevSize: 10},
		{Op: OpReplace, Account: "alice", Epoch: 7, Tree: "conf", Path: "user/a/alice.seen", Size: 3, Mode: 0o100600, MTime: -5, Hash: sha256.Sum256([]byte("abc")), Data: []byte("abc")},
		{Op: OpMkdir, Account: "alice", Tree: "spool", Path: "a/user/alice/Sent", Mode: 0o40700},
		{Op: OpRmdir, Account: "alice", Tree: "spool", Path: "a/user/alice/Old"},
		{Op: OpUnlink, Account: "alice", Tree: "spool", Path: "a/user/alice/1."},
		{Op: OpRename, Account: "alice", Tree: "conf", Path: "user/a/alice.sub.NEW", NewPath: "user/a/alice.sub"},
		{Op: OpLink, Account: "carol", Tree: "spool", Path: "c/user/carol/1.", NewPath: "c/user/carol/Trash/1."},
		{Op: OpSymlink, Account: "carol", Tree: "spool", NewPath: "c/user/carol/l", Data: []byte("../target")},
		{Op: OpSetattr, Account: "carol", Tree: "spool", Path: "c/user/carol/2.", Flags: SetMode | SetMTime | SetATime | SetSize | SetOwner,
			Mode: 0o644, MTime: 1, ATime: 2, Size: 99, UID: 96, GID: 8},
		{Op: OpCreate, Account: "carol", Tree: "meta", Path: "c/user/carol/cyrus.index.NEW", Mode: 0o100600},
		{Op: OpBarrier, Account: "carol", Epoch: 3},
		{Op: OpDirty, Account: "dave", Epoch: 2},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for i, r := range sampleRecords() {
		r.LSN = LSN(i + 1)
		b, err := AppendFrame(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		got, n, err := DecodeFrame(b)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if n != len(b) {
			t.Errorf("record %d: consumed %d, want %d", i, n, len(b))
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("record %d: got %+v, want %+v", i, got, r)
		}
		if i == 2 && b[4] != frameZstd {
			t.Errorf("record 2: frame type %d, want zstd", b[4])
		}
		if i == 1 && b[4] != frameRaw {
			t.Errorf("record 1: frame type %d, want raw", b[4])
		}
	}
}

// TestReadRecord: every truncation of a valid frame is ErrUnexpectedEOF,
// every flipped byte is ErrCorrupt (etcd record_test.go's shape).
func TestReadRecord(t *testing.T) {
	for i, r := range sampleRecords()[:5] {
		r.LSN = 10
		b, _ := AppendFrame(nil, &r)
		for cut := 0; cut < len(b); cut++ {
			if _, _, err := DecodeFrame(b[:cut]); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("record %d cut at %d: got %v, want ErrUnexpectedEOF", i, cut, err)
			}
		}
		for pos := range b {
			c := bytes.Clone(b)
			c[pos] ^= 0x5a
			if got, _, err := DecodeFrame(c); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("record %d flip at %d: got %+v, %v, want ErrCorrupt", i, pos, got, err)
			}
		}
	}
}

func TestUnmarshalRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"op 0", []byte{0, 0}},
		{"op unknown", []byte{byte(opMax) + 1, 0}},
		{"unknown bit", []byte{1, 0x80, 0x80, 0x10}},
		{"string past end", []byte{1, fAccount, 9, 'a'}},
		{"huge data length", []byte{1, 0x80, 0x80, 0x04, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"trailing", []byte{1, 0, 0}},
	} {
		var r Record
		if err := UnmarshalRecord(tc.b, &r); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", tc.name, err)
		}
	}
}

// goldenSegment is the v1 sample: a segment starting at LSN 1 holding
// sampleRecords.
func goldenSegment(t *testing.T) []byte {
	b := segHeader(1, 1)
	for i, r := range sampleRecords() {
		r.LSN = LSN(i + 1)
		var err error
		if b, err = AppendFrame(b, &r); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestGolden reads the frozen segments of every version and compares them
// with the records they were written from. With -update it writes the
// current version's files; committed versions must never be regenerated.
func TestGolden(t *testing.T) {
	path := filepath.Join("testdata", "v1", segName(1))
	if *update {
		if Version != 1 {
			t.Fatal("refusing to regenerate testdata/v1: it is frozen")
		}
		if err := os.WriteFile(path, goldenSegment(t), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := openSegScan(filepath.Dir(path), filepath.Base(path))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := sampleRecords()
	for i := range want {
		want[i].LSN = LSN(i + 1)
		var got Record
		if err := s.nextRecord(&got); err != nil {
			t.Fatalf("record %d: %v", i+1, err)
		}
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("record %d: got %+v, want %+v", i+1, got, want[i])
		}
	}
	var r Record
	if err := s.nextRecord(&r); err != io.EOF {
		t.Errorf("after the last record: got %v, want io.EOF", err)
	}
	if Version == 1 {
		// While v1 is current, the encoder must still produce exactly
		// the frozen bytes (a format change must bump Version).
		// zstd's output may change with a library upgrade, so
		// compressed frames are compared by content above only.
		b, _ := os.ReadFile(path)
		fresh := goldenSegment(t)
		if !bytes.Equal(b[:segHeaderSize], fresh[:segHeaderSize]) {
			t.Error("segment header bytes changed: bump Version and document the change")
		}
		for off, i := segHeaderSize, 0; off < len(b) && off < len(fresh); i++ {
			_, n, _ := DecodeFrame(b[off:])
			_, m, _ := DecodeFrame(fresh[off:])
			if b[off+4] == frameRaw && !bytes.Equal(b[off:off+n], fresh[off:off+m]) {
				t.Errorf("record %d: the encoder no longer produces the v1 golden bytes: bump Version and document the change", i+1)
			}
			if n == 0 || n != m {
				break
			}
			off += n
		}
	}
}

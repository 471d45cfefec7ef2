package peer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "write testdata/v1 golden frames (only when adding a new one: existing ones are frozen)")

// samples is one message of every type; the golden files hold their frames.
func samples() map[string]struct {
	t    MsgType
	body []byte
	want any
} {
	h := sha256.Sum256([]byte("hello world\r\n"))
	hello := Hello{Version: 1, Node: "srv-a", Cluster: "cam", Accounts: []AccountEpoch{{"alice", 1}, {"john.doe", 7}, {"%shared.news", 2}}}
	welcome := Welcome{Version: 1, Node: "srv-b", Positions: []Position{
		{Account: "alice", Epoch: 1, Applied: 42, State: StateOK},
		{Account: "john.doe", Epoch: 7, Applied: 0, State: StateResync},
		{Account: "%shared.news", Epoch: 3, Applied: 9, State: StateRefused},
	}}
	ack := Ack{Positions: []Position{{Account: "alice", Applied: 43, State: StateOK}, {Account: "bob", Applied: 7, State: StateQuarantine}}}
	big := bytes.Repeat([]byte("Received: from mx.example.org by imap.example.org\r\n"), 40)
	batch := [][]byte{[]byte("record-one"), {}, big}
	manifest := Manifest{Account: "alice", Epoch: 3, From: 1 << 33, Last: true, Entries: []ManifestEntry{
		{Type: EntryDir, Tree: "spool", Path: "user/alice", Mode: 0o700, UID: 96, GID: 8, MTime: 1796000000123456789},
		{Type: EntryFile, Tree: "spool", Path: "user/alice/1.", Mode: 0o600, UID: 96, GID: 8, Size: 13, MTime: -5, Link: 1, Hash: h},
		{Type: EntrySymlink, Tree: "meta", Path: "user/alice/latest", Mode: 0o777, Target: "1."},
	}}
	want := Want{Account: "alice", Last: false, Paths: []TreePath{{"spool", "user/alice/1."}, {"meta", "user/alice/cyrus.index"}}}
	file := FileChunk{Account: "alice", Tree: "spool", Path: "user/alice/1.", Offset: 0, Last: true, Hash: h, Data: []byte("hello world\r\n")}
	fileRef := FileChunk{Account: "alice", Tree: "spool", Path: "user/alice/Sent/1.", Last: true, ByRef: true, Hash: h, Data: []byte{}}
	end := ResyncEnd{Account: "alice", From: 1 << 33, ReplayTo: 1<<33 + 77}
	admin := AdminRequest{Version: 1, Op: "prepare", Account: "alice", Args: map[string]string{"epoch": "4", "role": "replica", "partner_lsn": "1234"}}
	adminReply := AdminReply{Status: AdminRefused, Reason: "alice is busy: 1 open file", Values: map[string]string{"lsn": "77"}}
	return map[string]struct {
		t    MsgType
		body []byte
		want any
	}{
		"hello":   {MsgHello, MarshalHello(hello), hello},
		"welcome": {MsgWelcome, MarshalWelcome(welcome), welcome},
		"refuse":  {MsgRefuse, MarshalRefuse("srv-x is not the master of alice at epoch 3"), "srv-x is not the master of alice at epoch 3"},
		"batch":   {MsgBatch, MarshalBatch(batch), batch},
		"ack":     {MsgAck, MarshalAck(ack), ack},
		"need":    {MsgNeed, MarshalNeed([][32]byte{h, {}}), [][32]byte{h, {}}},
		"blob":    {MsgBlob, MarshalBlob(Blob{Hash: h, Content: []byte("hello world\r\n")}), Blob{Hash: h, Content: []byte("hello world\r\n")}},
		"ping":    {MsgPing, MarshalPing(1 << 40), uint64(1 << 40)},
		"pong":    {MsgPong, MarshalPing(0), uint64(0)},
		"replay":  {MsgReplay, MarshalReplay(map[string]uint64{"alice": 42, "bob": 7}), map[string]uint64{"alice": 42, "bob": 7}},
		"durable": {MsgDurable, MarshalDurable(ack), ack},

		"manifest":   {MsgManifest, MarshalManifest(manifest), manifest},
		"want":       {MsgWant, MarshalWant(want), want},
		"file":       {MsgFile, MarshalFile(file), file},
		"file-ref":   {MsgFile, MarshalFile(fileRef), fileRef},
		"resync-end": {MsgResyncEnd, MarshalResyncEnd(end), end},

		"admin":       {MsgAdmin, MarshalAdmin(admin), admin},
		"admin-reply": {MsgAdminReply, MarshalAdminReply(adminReply), adminReply},
	}
}

// decodeBody decodes a body of any type into the value samples() uses.
func decodeBody(t MsgType, b []byte) (any, error) {
	switch t {
	case MsgHello:
		return UnmarshalHello(b)
	case MsgWelcome:
		return UnmarshalWelcome(b)
	case MsgRefuse:
		return UnmarshalRefuse(b)
	case MsgBatch:
		return UnmarshalBatch(b)
	case MsgAck:
		return UnmarshalAck(b)
	case MsgNeed:
		return UnmarshalNeed(b)
	case MsgBlob:
		return UnmarshalBlob(b)
	case MsgPing, MsgPong:
		return UnmarshalPing(t, b)
	case MsgManifest:
		return UnmarshalManifest(b)
	case MsgWant:
		return UnmarshalWant(b)
	case MsgFile:
		return UnmarshalFile(b)
	case MsgResyncEnd:
		return UnmarshalResyncEnd(b)
	case MsgReplay:
		return UnmarshalReplay(b)
	case MsgDurable:
		return UnmarshalDurable(b)
	case MsgAdmin:
		return UnmarshalAdmin(b)
	case MsgAdminReply:
		return UnmarshalAdminReply(b)
	}
	return nil, errors.New("unknown type")
}

// marshalAny re-encodes a decoded value.
func marshalAny(t MsgType, v any) []byte {
	switch t {
	case MsgHello:
		return MarshalHello(v.(Hello))
	case MsgWelcome:
		return MarshalWelcome(v.(Welcome))
	case MsgRefuse:
		return MarshalRefuse(v.(string))
	case MsgBatch:
		return MarshalBatch(v.([][]byte))
	case MsgAck:
		return MarshalAck(v.(Ack))
	case MsgNeed:
		return MarshalNeed(v.([][32]byte))
	case MsgBlob:
		return MarshalBlob(v.(Blob))
	case MsgPing, MsgPong:
		return MarshalPing(v.(uint64))
	case MsgManifest:
		return MarshalManifest(v.(Manifest))
	case MsgWant:
		return MarshalWant(v.(Want))
	case MsgFile:
		return MarshalFile(v.(FileChunk))
	case MsgResyncEnd:
		return MarshalResyncEnd(v.(ResyncEnd))
	case MsgReplay:
		return MarshalReplay(v.(map[string]uint64))
	case MsgDurable:
		return MarshalDurable(v.(Ack))
	case MsgAdmin:
		return MarshalAdmin(v.(AdminRequest))
	case MsgAdminReply:
		return MarshalAdminReply(v.(AdminReply))
	}
	return nil
}

func TestRoundTrip(t *testing.T) {
	for name, s := range samples() {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteFrame(&buf, s.t, s.body); err != nil {
				t.Fatal(err)
			}
			gt, body, err := ReadFrame(&buf, nil)
			if err != nil {
				t.Fatal(err)
			}
			if gt != s.t {
				t.Fatalf("type: got %v, want %v", gt, s.t)
			}
			v, err := decodeBody(gt, body)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(norm(v), norm(s.want)) {
				t.Fatalf("got %#v, want %#v", v, s.want)
			}
			if _, _, err := ReadFrame(&buf, nil); err != io.EOF {
				t.Fatalf("after last frame: got %v, want io.EOF", err)
			}
		})
	}
}

// norm makes empty and nil byte slices compare equal.
func norm(v any) any {
	if b, ok := v.([][]byte); ok {
		out := make([]string, len(b))
		for i := range b {
			out[i] = string(b[i])
		}
		return out
	}
	return v
}

// TestGolden decodes the frozen frames of testdata/v1: every later version of
// this package must still read them.
func TestGolden(t *testing.T) {
	for name, s := range samples() {
		path := filepath.Join("testdata", "v1", name+".frame")
		if *update {
			if _, err := os.Stat(path); err == nil {
				continue // frozen
			}
			f, err := AppendFrame(nil, s.t, s.body)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, f, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("golden frame %s: %v", path, err)
		}
		gt, body, rest, err := DecodeFrame(raw)
		if err != nil || len(rest) != 0 {
			t.Fatalf("%s: err %v, %d trailing bytes", path, err, len(rest))
		}
		if gt != s.t {
			t.Fatalf("%s: type %v, want %v", path, gt, s.t)
		}
		v, err := decodeBody(gt, body)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !reflect.DeepEqual(norm(v), norm(s.want)) {
			t.Fatalf("%s: got %#v, want %#v", path, v, s.want)
		}
	}
}

func TestCompressedOnlyWhenSmaller(t *testing.T) {
	big := bytes.Repeat([]byte("a"), 10000)
	f, err := AppendFrame(nil, MsgBlob, MarshalBlob(Blob{Content: big}))
	if err != nil {
		t.Fatal(err)
	}
	if f[4]&flagZstd == 0 || len(f) > 1000 {
		t.Fatalf("repetitive body: flags %#x, frame %d bytes; want compressed and small", f[4], len(f))
	}
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(i*7919 + i*i*31)
	}
	h := sha256.Sum256(random)
	f, err = AppendFrame(nil, MsgBlob, MarshalBlob(Blob{Hash: h, Content: h[:]}))
	if err != nil {
		t.Fatal(err)
	}
	if f[4] != 0 {
		t.Fatalf("short body: flags %#x, want uncompressed", f[4])
	}
}

// TestBadFrames: every malformed frame is an error, never a panic, never data.
func TestBadFrames(t *testing.T) {
	good, err := AppendFrame(nil, MsgHello, MarshalHello(Hello{Version: 1, Node: "a"}))
	if err != nil {
		t.Fatal(err)
	}
	// Every truncation.
	for i := 0; i < len(good); i++ {
		_, _, err := ReadFrame(bytes.NewReader(good[:i]), nil)
		want := io.ErrUnexpectedEOF
		if i == 0 {
			want = io.EOF
		}
		if !errors.Is(err, want) {
			t.Fatalf("cut at %d: got %v, want %v", i, err, want)
		}
	}
	// Every single-bit flip is detected.
	for i := 0; i < len(good); i++ {
		for bit := 0; bit < 8; bit++ {
			b := bytes.Clone(good)
			b[i] ^= 1 << bit
			_, body, err := ReadFrame(bytes.NewReader(b), nil)
			if err == nil {
				t.Fatalf("flip byte %d bit %d: no error, body %q", i, bit, body)
			}
		}
	}
	// A huge length is refused before anything is allocated.
	huge := []byte{0xff, 0xff, 0xff, 0xff, 0, 1}
	if _, _, err := ReadFrame(bytes.NewReader(huge), nil); !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "length") {
		t.Fatalf("huge length: got %v", err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 10; i++ {
		ReadFrame(bytes.NewReader(huge), nil)
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("10 frames with a huge length allocated %d bytes", n)
	}
}

// TestBadBodies: hostile counts and lengths inside bodies.
func TestBadBodies(t *testing.T) {
	cases := map[string]struct {
		t    MsgType
		body []byte
	}{
		"hello count too big":   {MsgHello, []byte{1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		"hello string too long": {MsgHello, []byte{1, 100, 'a'}},
		"batch record too long": {MsgBatch, []byte{1, 50, 1, 2}},
		"need short hash":       {MsgNeed, append([]byte{1}, make([]byte, 31)...)},
		"trailing bytes":        {MsgPing, []byte{5, 6}},
		"bad varint":            {MsgPing, []byte{0x80, 0x80}},
		"empty welcome":         {MsgWelcome, nil},
		"ack missing state":     {MsgAck, []byte{1, 1, 'a', 5}},
		"manifest bad type":     {MsgManifest, []byte{1, 'a', 1, 0, 1, 1, 9, 1, 't', 1, 'p', 0, 0, 0, 0, 0, 0}},
		"manifest bad last":     {MsgManifest, []byte{1, 'a', 1, 0, 7, 0}},
		"manifest mode":         {MsgManifest, []byte{1, 'a', 1, 0, 1, 1, 2, 1, 't', 1, 'p', 0xff, 0xff, 0x03, 0, 0, 0, 0, 0}},
		"manifest count":        {MsgManifest, []byte{1, 'a', 1, 0, 1, 0xff, 0xff, 0x3f}},
		"want short":            {MsgWant, []byte{1, 'a', 1, 2, 1, 't'}},
		"file bad flags":        {MsgFile, append([]byte{1, 'a', 1, 't', 1, 'p', 0, 0x80}, make([]byte, 33)...)},
		"file ref with data":    {MsgFile, append(append([]byte{1, 'a', 1, 't', 1, 'p', 0, fileByRef | fileLast}, make([]byte, 32)...), 1, 'x')},
		"file ref not last":     {MsgFile, append([]byte{1, 'a', 1, 't', 1, 'p', 0, fileByRef}, make([]byte, 33)...)},
		"resync end trailing":   {MsgResyncEnd, []byte{1, 'a', 1, 2, 3}},
		"admin version 0":       {MsgAdmin, []byte{0, 1, 'p', 0, 0}},
		"admin duplicate key":   {MsgAdmin, []byte{1, 1, 'p', 0, 2, 1, 'k', 0, 1, 'k', 0}},
		"admin trailing":        {MsgAdmin, []byte{1, 1, 'p', 0, 0, 9}},
		"admin reply status 3":  {MsgAdminReply, []byte{3, 0, 0}},
		"admin reply short":     {MsgAdminReply, []byte{0, 5, 'x'}},
	}
	for name, c := range cases {
		if v, err := decodeBody(c.t, c.body); !errors.Is(err, ErrFrame) {
			t.Errorf("%s: got (%v, %v), want ErrFrame", name, v, err)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "v1", "*.frame"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		mt, body, _, err := DecodeFrame(b)
		if err != nil {
			return
		}
		v, err := decodeBody(mt, body)
		if err != nil {
			return
		}
		// Round trip: encode → decode gives the same value.
		again, err := AppendFrame(nil, mt, marshalAny(mt, v))
		if err != nil {
			t.Fatal(err)
		}
		mt2, body2, rest, err := DecodeFrame(again)
		if err != nil || len(rest) != 0 || mt2 != mt {
			t.Fatalf("re-decode: %v %v %d", err, mt2, len(rest))
		}
		v2, err := decodeBody(mt2, body2)
		if err != nil {
			t.Fatalf("re-decode body: %v", err)
		}
		if !reflect.DeepEqual(norm(v), norm(v2)) {
			t.Fatalf("round trip: %#v != %#v", v, v2)
		}
	})
}

package classify

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseHeader(t *testing.T) {
	for _, tt := range []struct {
		name string
		line string // the data line after the 3 magic lines
		want Header
	}{
		{"cyrus 3.6", "%(T e N user.alice I ig5qudig5xhk5lij9pw6dcgx Q user.alice A %(alice lrswipkxtecdan) U ($Label1))\n",
			Header{Type: "e", Name: "user.alice", UniqueID: "ig5qudig5xhk5lij9pw6dcgx", QuotaRoot: "user.alice",
				ACL: []ACLEntry{{"alice", "lrswipkxtecdan"}}, UserFlags: []string{"$Label1"}}},
		{"no quota, two acl, empty flags", "%(T e N user.bob.Sent I mo88qz0a1b2c3d4e5f6g7h8i A %(bob lrswipkxtecdan admin lrswipkxtecdan) U ())\n",
			Header{Type: "e", Name: "user.bob.Sent", UniqueID: "mo88qz0a1b2c3d4e5f6g7h8i",
				ACL: []ACLEntry{{"bob", "lrswipkxtecdan"}, {"admin", "lrswipkxtecdan"}}}},
		{"quoted name", `%(T e N "user.alice.My Folder" I ig5qudig5xhk5lij9pw6dcgx A %("anyone" lr))` + "\n",
			Header{Type: "e", Name: "user.alice.My Folder", UniqueID: "ig5qudig5xhk5lij9pw6dcgx",
				ACL: []ACLEntry{{"anyone", "lr"}}}},
		{"escaped quote", `%(T e N "user.a\"b\\c" I x)`, Header{Type: "e", Name: `user.a"b\c`, UniqueID: "x"}},
		{"literal", "%(T e N {12+}\r\nuser.alice.\xe9 I x)\n", Header{Type: "e", Name: "user.alice.\xe9", UniqueID: "x"}},
		{"literal no plus", "%(N {4}\r\nab c I x)", Header{Name: "ab c", UniqueID: "x"}},
		{"domain", "%(T e N example.com!user.alice I 4htpn639tox0qkvlit4nswjt)\n",
			Header{Type: "e", Name: "example.com!user.alice", UniqueID: "4htpn639tox0qkvlit4nswjt"}},
		{"legacy type, unknown keys", "%(T el N user.alice I x M 123 X (a (b c) %(d e)))\n",
			Header{Type: "el", Name: "user.alice", UniqueID: "x"}},
		{"NIL quota", "%(T e N user.a I x Q NIL)\r\n", Header{Type: "e", Name: "user.a", UniqueID: "x"}},
		{"old format", "user.alice\tig5qudig5xhk5lij9pw6dcgx\n$Label1 $Label2 \nalice\tlrswipkxtecdan\tbob\tlr\t\n",
			Header{QuotaRoot: "user.alice", UniqueID: "ig5qudig5xhk5lij9pw6dcgx", UserFlags: []string{"$Label1", "$Label2"},
				ACL: []ACLEntry{{"alice", "lrswipkxtecdan"}, {"bob", "lr"}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHeader([]byte(headerPrefix + tt.line))
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			again, err := ParseHeader(got.Marshal())
			if err != nil {
				t.Fatalf("ParseHeader(Marshal()): %v\n%q", err, got.Marshal())
			}
			if !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip: got %+v, want %+v", again, got)
			}
		})
	}
}

func TestParseHeaderErrors(t *testing.T) {
	for _, tt := range []struct{ name, in string }{
		{"empty", ""},
		{"no magic", "hello\nworld\n"},
		{"magic only", headerMagic + "\n"},
		{"two lines", headerMagic + "\n\"x\"\n"},
		{"not a kvlist", headerPrefix + "%x\n"},
		{"list not kvlist", headerPrefix + "(a b)\n"},
		{"unterminated", headerPrefix + "%(T e N user.alice"},
		{"unterminated quote", headerPrefix + "%(N \"abc)"},
		{"newline in quote", headerPrefix + "%(N \"a\nb\")"},
		{"long literal", headerPrefix + "%(N {99}\r\nabc)"},
		{"huge literal", headerPrefix + "%(N {99999999999999999999}\r\nabc)"},
		{"bad literal", headerPrefix + "%(N {3x}\r\nabc)"},
		{"empty literal len", headerPrefix + "%(N {}\r\n)"},
		{"double space", headerPrefix + "%(T  e)"},
		{"key is a list", headerPrefix + "%((a) b)"},
		{"N is a list", headerPrefix + "%(N (a))"},
		{"A not kv", headerPrefix + "%(A (a b))"},
		{"U not list", headerPrefix + "%(U a)"},
		{"U nested", headerPrefix + "%(U ((a)))"},
		{"trailing", headerPrefix + "%(T e) junk"},
		{"too deep", headerPrefix + "%(X " + strings.Repeat("(", 100) + strings.Repeat(")", 100) + ")"},
		{"old no tab", headerPrefix + "noTabHere\n\n"},
		{"old truncated", headerPrefix + "x"},
		{"old odd acl", headerPrefix + "q\tid\n\nalice\n"},
	} {
		_, err := ParseHeader([]byte(tt.in))
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		if !errors.Is(err, ErrBadHeader) {
			t.Errorf("%s: error %v does not wrap ErrBadHeader", tt.name, err)
		}
	}
	if _, err := ParseHeader(make([]byte, MaxHeaderSize+1)); err == nil {
		t.Error("oversized header accepted")
	}
}

// TestHeaderTestdata parses every seed header; the *.header files come from
// real Cyrus 3.6 runs.
func TestHeaderTestdata(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.header")
	if len(files) == 0 {
		t.Fatal("no testdata/*.header")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ParseHeader(b)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if !isMailboxID(h.UniqueID) {
			t.Errorf("%s: unique id %q", f, h.UniqueID)
		}
		if _, ok := AccountFromMailboxName(h.Name); !ok {
			t.Errorf("%s: name %q names no account", f, h.Name)
		}
		// Cyrus's own bytes and ours agree on the prefix.
		if !strings.HasPrefix(string(b), headerPrefix) {
			t.Errorf("%s: prefix differs from ours", f)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.header")
	for _, fn := range files {
		b, err := os.ReadFile(fn)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(headerPrefix + "%(T e N {5+}\r\nuser. I x A %() U ())\n"))
	f.Add([]byte(headerPrefix + "q\tid\nf g\na\tb\t\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
			return
		}
		again, err := ParseHeader(h.Marshal())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", h.Marshal(), err)
		}
		if !reflect.DeepEqual(again, h) {
			t.Fatalf("round trip: got %+v, want %+v", again, h)
		}
		AccountFromMailboxName(h.Name)
	})
}

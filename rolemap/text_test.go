package rolemap

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := "# comment\n\n  alice master 10.0.0.2:7000 3  # trailing\n" +
		"bob\treplica\thost.example:1\t18446744073709551615\r\n" +
		"admin local - 0\n%shared.news master [fd00::1]:7000 1\n"
	got, err := Parse(strings.NewReader(in), "roles.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{"alice", Entry{Master, "10.0.0.2:7000", 3}},
		{"bob", Entry{Replica, "host.example:1", 1<<64 - 1}},
		{"admin", Entry{Local, "", 0}},
		{"%shared.news", Entry{Master, "[fd00::1]:7000", 1}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// FormatRecord writes what Parse reads.
	var b bytes.Buffer
	for _, r := range got {
		if err := FormatRecord(&b, r); err != nil {
			t.Fatal(err)
		}
	}
	again, err := Parse(&b, "")
	if err != nil || fmt.Sprint(again) != fmt.Sprint(want) {
		t.Fatalf("reparse of formatted records: got %v, %v; want %v", again, err, want)
	}
}

func TestParseErrors(t *testing.T) {
	tcases := []struct {
		in   string
		want string // the error message, exactly
	}{
		{"alice master 10.0.0.2:7000\n", "roles.txt:1: want 4 fields (account role partner epoch), got 3"},
		{"alice master 10.0.0.2:7000 1 extra\n", "roles.txt:1: want 4 fields (account role partner epoch), got 5"},
		{"a master h:1 1\n\n#x\na replica h:1 2\n", `roles.txt:4: duplicate account "a" (first on line 1)`},
		{"alice boss h:1 1\n", `roles.txt:1: account "alice": bad role "boss" (want master, replica or local)`},
		{"alice unknown h:1 1\n", `roles.txt:1: account "alice": bad role "unknown" (want master, replica or local)`},
		{"alice master h:1 -1\n", `roles.txt:1: account "alice": bad epoch "-1" (want a decimal number 0..18446744073709551615)`},
		{"alice master h:1 18446744073709551616\n", `roles.txt:1: account "alice": bad epoch "18446744073709551616" (want a decimal number 0..18446744073709551615)`},
		{"alice master h:1 0x10\n", `roles.txt:1: account "alice": bad epoch "0x10" (want a decimal number 0..18446744073709551615)`},
		{"alice master - 1\n", `roles.txt:1: account "alice": role master needs a partner host:port, got -`},
		{"alice replica - 1\n", `roles.txt:1: account "alice": role replica needs a partner host:port, got -`},
		{"alice local h:1 1\n", `roles.txt:1: account "alice": role local has no partner: write - instead of "h:1"`},
		{"alice master host 1\n", `roles.txt:1: account "alice": bad partner "host" (want host:port): address host: missing port in address`},
		{"alice master :7000 1\n", `roles.txt:1: account "alice": bad partner ":7000": empty host`},
		{"alice master h:0 1\n", `roles.txt:1: account "alice": bad partner "h:0": port "0" is not 1..65535`},
		{"alice master h:70000 1\n", `roles.txt:1: account "alice": bad partner "h:70000": port "70000" is not 1..65535`},
		{"al/ice master h:1 1\n", `roles.txt:1: account "al/ice": contains '/'`},
		{"al\x01ice master h:1 1\n", `roles.txt:1: account "al\x01ice": contains control character U+0001`},
		{"al\x7fice master h:1 1\n", `roles.txt:1: account "al\x7fice": contains control character U+007F`},
		{"al\xffice master h:1 1\n", `roles.txt:1: account "al\xffice": not valid UTF-8`},
		{"ok master h:1 1\nbad role h:1 1\nal/ice master h:1 1\n",
			"roles.txt:2: account \"bad\": bad role \"role\" (want master, replica or local)\n" +
				"roles.txt:3: account \"al/ice\": contains '/'"},
		{"a local - 0\n" + strings.Repeat("x", maxLine+1) + "\n", fmt.Sprintf("roles.txt:2: line longer than %d bytes", maxLine)},
	}
	for _, tc := range tcases {
		t.Run(tc.want, func(t *testing.T) {
			recs, err := Parse(strings.NewReader(tc.in), "roles.txt")
			if err == nil {
				t.Fatalf("got %v, nil; want error %q", recs, tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("got error %q, want %q", err, tc.want)
			}
			var pe *ParseError
			if !errors.Is(err, ErrSyntax) || !errors.As(err, &pe) || pe.Line == 0 {
				t.Fatalf("error %v: want a *ParseError wrapping ErrSyntax", err)
			}
		})
	}
}

func TestParseErrorLimit(t *testing.T) {
	in := strings.Repeat("bad\n", 100)
	_, err := Parse(strings.NewReader(in), "x")
	if n := strings.Count(err.Error(), "\n") + 1; n != maxParseErrors {
		t.Fatalf("got %d errors, want %d", n, maxParseErrors)
	}
}

func TestValidate(t *testing.T) {
	tcases := []struct {
		recs []Record
		want string
	}{
		{[]Record{{"", Entry{Local, "", 0}}}, "rolemap: record 0: empty account name"},
		{[]Record{{"a b", Entry{Local, "", 0}}}, `rolemap: record 0: account "a b": contains whitespace U+0020`},
		{[]Record{{"a\u00a0b", Entry{Local, "", 0}}}, `rolemap: record 0: account "a\u00a0b": contains whitespace U+00A0`},
		{[]Record{{"#a", Entry{Local, "", 0}}}, `rolemap: record 0: account "#a": starts with '#'`},
		{[]Record{{"a", Entry{Unknown, "", 0}}}, `rolemap: record 0: account "a": bad role 0`},
		{[]Record{{"a", Entry{Local, "", 0}}, {"a", Entry{Local, "", 1}}}, `rolemap: record 1: duplicate account "a" (first at record 0)`},
		{[]Record{{"a", Entry{Master, "h:1 #", 0}}}, `rolemap: record 0: account "a": bad partner "h:1 #": port "1 #" is not 1..65535`},
	}
	for _, tc := range tcases {
		if err := Validate(tc.recs); err == nil || err.Error() != tc.want {
			t.Errorf("Validate(%v): got %v, want %q", tc.recs, err, tc.want)
		}
	}
	if err := Validate([]Record{{"a", Entry{Master, "h:1", 0}}, {"b", Entry{Local, "", 0}}}); err != nil {
		t.Errorf("Validate of good records: %v", err)
	}
}

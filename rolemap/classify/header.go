package classify

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// headerMagic is the first line of every cyrus.header (without its "\n").
const headerMagic = "\xa1\x02\x8b\x0dCyrus mailbox header"

// headerPrefix is what Cyrus writes before the data line: the magic line and
// the two quote lines (115 bytes).
const headerPrefix = headerMagic + "\n" +
	"\"The best thing about this system was that it had lots of goals.\"\n" +
	"\t--Jim Morris on Andrew\n"

// MaxHeaderSize bounds what ParseHeader accepts (real headers are a few
// hundred bytes; a long ACL or many user flags stay far below this).
const MaxHeaderSize = 1 << 20

// maxDepth bounds the nesting of dlist lists.
const maxDepth = 16

// ErrBadHeader is wrapped by every ParseHeader error.
var ErrBadHeader = errors.New("classify: bad cyrus.header")

// Header is the content of a cyrus.header file.
type Header struct {
	Name      string     // N: internal mailbox name, e.g. "user.alice.Sent", "example.com!user.bob"
	UniqueID  string     // I: the mailbox id (24 chars in 3.6)
	Type      string     // T: mailbox type letters, "e" for email ("" in the pre-3.0 format)
	QuotaRoot string     // Q: quota root, "" when none
	ACL       []ACLEntry // A: in file order, nil when empty
	UserFlags []string   // U: user-defined flag names, nil when none
}

// ACLEntry is one identifier and its rights ("alice", "lrswipkxtecdan").
type ACLEntry struct {
	ID     string
	Rights string
}

// ParseHeader parses a cyrus.header: the magic line, two quote lines, then
// one dlist line
//
//	%(T e N user.alice I ig5qudig5xhk5lij9pw6dcgx Q user.alice A %(alice lrswipkxtecdan) U ($Label1))
//
// Keys it does not know are skipped. The pre-3.0 format (line 4
// "quotaroot<TAB>uniqueid", line 5 the user flags, line 6 the ACL as
// tab-separated id/rights pairs) is parsed too; it carries no Name. Errors
// wrap ErrBadHeader and never panic.
func ParseHeader(b []byte) (Header, error) {
	if len(b) > MaxHeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes, more than %d", ErrBadHeader, len(b), MaxHeaderSize)
	}
	rest, ok := bytes.CutPrefix(b, []byte(headerMagic+"\n"))
	if !ok {
		return Header{}, fmt.Errorf("%w: no magic line", ErrBadHeader)
	}
	for i := 0; i < 2; i++ { // the two quote lines
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			return Header{}, fmt.Errorf("%w: truncated before the data line", ErrBadHeader)
		}
		rest = rest[nl+1:]
	}
	if len(rest) > 0 && rest[0] == '%' {
		return parseDlistHeader(rest)
	}
	return parseOldHeader(rest)
}

func parseDlistHeader(b []byte) (Header, error) {
	p := &dlistParser{b: b}
	v, err := p.value(0)
	if err != nil {
		return Header{}, fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	if v.kind != kvVal {
		return Header{}, fmt.Errorf("%w: data line is not a %%(...) list", ErrBadHeader)
	}
	rest := b[p.pos:]
	if len(bytes.TrimRight(rest, "\r\n")) != 0 {
		return Header{}, fmt.Errorf("%w: %d bytes of trailing garbage", ErrBadHeader, len(rest))
	}
	var h Header
	for _, kv := range v.kv {
		var err error
		switch kv.key {
		case "T":
			h.Type, err = kv.val.str("T")
		case "N":
			h.Name, err = kv.val.str("N")
		case "I":
			h.UniqueID, err = kv.val.str("I")
		case "Q":
			h.QuotaRoot, err = kv.val.str("Q")
		case "A":
			if kv.val.kind != kvVal {
				return Header{}, fmt.Errorf("%w: A is not a %%(...) list", ErrBadHeader)
			}
			for _, e := range kv.val.kv {
				r, err := e.val.str("A " + e.key)
				if err != nil {
					return Header{}, fmt.Errorf("%w: %w", ErrBadHeader, err)
				}
				h.ACL = append(h.ACL, ACLEntry{ID: e.key, Rights: r})
			}
		case "U":
			if kv.val.kind != listVal {
				return Header{}, fmt.Errorf("%w: U is not a (...) list", ErrBadHeader)
			}
			for _, e := range kv.val.list {
				f, err := e.str("U")
				if err != nil {
					return Header{}, fmt.Errorf("%w: %w", ErrBadHeader, err)
				}
				h.UserFlags = append(h.UserFlags, f)
			}
		}
		if err != nil {
			return Header{}, fmt.Errorf("%w: %w", ErrBadHeader, err)
		}
	}
	return h, nil
}

// parseOldHeader reads the pre-3.0 format after the three magic lines.
func parseOldHeader(b []byte) (Header, error) {
	lines := strings.Split(string(b), "\n")
	if len(lines) < 2 {
		return Header{}, fmt.Errorf("%w: truncated old-format header", ErrBadHeader)
	}
	var h Header
	qr, id, ok := strings.Cut(lines[0], "\t")
	if !ok {
		return Header{}, fmt.Errorf("%w: old-format line 4 has no TAB", ErrBadHeader)
	}
	h.QuotaRoot, h.UniqueID = qr, id
	h.UserFlags = strings.Fields(lines[1])
	if len(h.UserFlags) == 0 {
		h.UserFlags = nil
	}
	if len(lines) > 2 {
		f := strings.Split(strings.TrimSuffix(lines[2], "\t"), "\t")
		if len(f)%2 != 0 {
			return Header{}, fmt.Errorf("%w: old-format ACL has an odd number of fields", ErrBadHeader)
		}
		for i := 0; i+1 < len(f); i += 2 {
			if f[i] == "" {
				continue
			}
			h.ACL = append(h.ACL, ACLEntry{ID: f[i], Rights: f[i+1]})
		}
	}
	return h, nil
}

// Marshal returns the header as Cyrus 3.x writes it: the 115-byte prefix and
// one dlist line. Empty fields other than T, N and I are left out.
func (h Header) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(headerPrefix)
	b.WriteString("%(T ")
	writeAstring(&b, h.Type)
	b.WriteString(" N ")
	writeAstring(&b, h.Name)
	b.WriteString(" I ")
	writeAstring(&b, h.UniqueID)
	if h.QuotaRoot != "" {
		b.WriteString(" Q ")
		writeAstring(&b, h.QuotaRoot)
	}
	if len(h.ACL) > 0 {
		b.WriteString(" A %(")
		for i, e := range h.ACL {
			if i > 0 {
				b.WriteByte(' ')
			}
			writeAstring(&b, e.ID)
			b.WriteByte(' ')
			writeAstring(&b, e.Rights)
		}
		b.WriteByte(')')
	}
	if len(h.UserFlags) > 0 {
		b.WriteString(" U (")
		for i, f := range h.UserFlags {
			if i > 0 {
				b.WriteByte(' ')
			}
			writeAstring(&b, f)
		}
		b.WriteByte(')')
	}
	b.WriteString(")\n")
	return b.Bytes()
}

// writeAstring writes s as an atom when it is one, else quoted, else (CR,
// LF, NUL or non-ASCII inside) as a literal.
func writeAstring(b *bytes.Buffer, s string) {
	if s != "" && s != "NIL" {
		atom := true
		for i := 0; i < len(s); i++ {
			if !isAtomChar(s[i]) || (i == 0 && s[i] == '%') {
				atom = false
				break
			}
		}
		if atom {
			b.WriteString(s)
			return
		}
	}
	quotable := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\r' || c == '\n' || c == 0 || c >= 0x80 {
			quotable = false
			break
		}
	}
	if quotable {
		b.WriteByte('"')
		for i := 0; i < len(s); i++ {
			if s[i] == '"' || s[i] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(s[i])
		}
		b.WriteByte('"')
		return
	}
	b.WriteString("{" + strconv.Itoa(len(s)) + "+}\r\n")
	b.WriteString(s)
}

// isAtomChar reports whether c may appear in a dlist atom.
func isAtomChar(c byte) bool {
	switch c {
	case ' ', '(', ')', '"', '{', '}', '\\', '\r', '\n', 0:
		return false
	}
	return c > ' ' && c < 0x7f
}

type valKind uint8

const (
	atomVal valKind = iota // atom, quoted string or literal
	nilVal
	listVal
	kvVal
)

type dval struct {
	kind valKind
	s    string
	list []dval
	kv   []kvPair
}

type kvPair struct {
	key string
	val dval
}

func (v dval) str(what string) (string, error) {
	switch v.kind {
	case atomVal:
		return v.s, nil
	case nilVal:
		return "", nil
	}
	return "", fmt.Errorf("%s: want a string, got a list", what)
}

// dlistParser reads the text form of a Cyrus dlist.
type dlistParser struct {
	b   []byte
	pos int
}

func (p *dlistParser) errf(format string, a ...any) error {
	return fmt.Errorf("offset %d: "+format, append([]any{p.pos}, a...)...)
}

func (p *dlistParser) value(depth int) (dval, error) {
	if depth > maxDepth {
		return dval{}, p.errf("lists nested deeper than %d", maxDepth)
	}
	if p.pos >= len(p.b) {
		return dval{}, p.errf("unexpected end")
	}
	switch c := p.b[p.pos]; {
	case c == '%' && p.pos+1 < len(p.b) && p.b[p.pos+1] == '(':
		p.pos += 2
		var v dval
		v.kind = kvVal
		for first := true; ; first = false {
			if p.pos < len(p.b) && p.b[p.pos] == ')' {
				p.pos++
				return v, nil
			}
			if !first {
				if err := p.space(); err != nil {
					return dval{}, err
				}
			}
			k, err := p.value(depth + 1)
			if err != nil {
				return dval{}, err
			}
			if k.kind != atomVal || k.s == "" {
				return dval{}, p.errf("key is not a name")
			}
			if err := p.space(); err != nil {
				return dval{}, err
			}
			val, err := p.value(depth + 1)
			if err != nil {
				return dval{}, err
			}
			v.kv = append(v.kv, kvPair{k.s, val})
		}
	case c == '(':
		p.pos++
		var v dval
		v.kind = listVal
		for first := true; ; first = false {
			if p.pos < len(p.b) && p.b[p.pos] == ')' {
				p.pos++
				return v, nil
			}
			if !first {
				if err := p.space(); err != nil {
					return dval{}, err
				}
			}
			e, err := p.value(depth + 1)
			if err != nil {
				return dval{}, err
			}
			v.list = append(v.list, e)
		}
	case c == '"':
		p.pos++
		var sb strings.Builder
		for {
			if p.pos >= len(p.b) {
				return dval{}, p.errf("unterminated quoted string")
			}
			c := p.b[p.pos]
			p.pos++
			switch c {
			case '"':
				return dval{kind: atomVal, s: sb.String()}, nil
			case '\\':
				if p.pos >= len(p.b) {
					return dval{}, p.errf("unterminated quoted string")
				}
				sb.WriteByte(p.b[p.pos])
				p.pos++
			case '\r', '\n':
				return dval{}, p.errf("line break in quoted string")
			default:
				sb.WriteByte(c)
			}
		}
	case c == '{':
		return p.literal()
	default:
		start := p.pos
		for p.pos < len(p.b) && isAtomChar(p.b[p.pos]) {
			p.pos++
		}
		if p.pos == start {
			return dval{}, p.errf("unexpected byte %q", c)
		}
		s := string(p.b[start:p.pos])
		if s == "NIL" {
			return dval{kind: nilVal}, nil
		}
		return dval{kind: atomVal, s: s}, nil
	}
}

// literal reads {N}\r\n<N bytes> or {N+}\r\n<N bytes>.
func (p *dlistParser) literal() (dval, error) {
	p.pos++ // '{'
	n := 0
	digits := 0
	for p.pos < len(p.b) && p.b[p.pos] >= '0' && p.b[p.pos] <= '9' {
		n = n*10 + int(p.b[p.pos]-'0')
		digits++
		p.pos++
		if n > len(p.b) {
			return dval{}, p.errf("literal longer than the header")
		}
	}
	if digits == 0 {
		return dval{}, p.errf("literal without a length")
	}
	if p.pos < len(p.b) && p.b[p.pos] == '+' {
		p.pos++
	}
	if !bytes.HasPrefix(p.b[p.pos:], []byte("}\r\n")) {
		return dval{}, p.errf("bad literal prefix")
	}
	p.pos += 3
	if n > len(p.b)-p.pos {
		return dval{}, p.errf("literal of %d bytes, only %d left", n, len(p.b)-p.pos)
	}
	s := string(p.b[p.pos : p.pos+n])
	p.pos += n
	return dval{kind: atomVal, s: s}, nil
}

func (p *dlistParser) space() error {
	if p.pos >= len(p.b) || p.b[p.pos] != ' ' {
		return p.errf("want a space")
	}
	p.pos++
	return nil
}

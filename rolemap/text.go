package rolemap

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Record is one account of the map with its entry.
type Record struct {
	Account string
	Entry
}

// ErrSyntax is wrapped by every error about the text source format.
var ErrSyntax = errors.New("rolemap: bad role map source")

// ParseError is one wrong line of a text source.
type ParseError struct {
	Path string // the source's name; empty when unknown
	Line int    // 1-based
	Msg  string // what is wrong
}

func (e *ParseError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.Path, e.Line, e.Msg)
}

// Unwrap makes every ParseError match ErrSyntax.
func (e *ParseError) Unwrap() error { return ErrSyntax }

// maxParseErrors bounds how many wrong lines Parse reports at once.
const maxParseErrors = 20

// maxLine bounds a source line.
const maxLine = 64 << 10

// ParseFile parses the text source at path (see Parse).
func ParseFile(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("rolemap: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads the text source format (see the package doc) from r; name is
// used in error messages. It returns the records in source order, or an
// error joining one *ParseError per wrong line (at most 20).
func Parse(r io.Reader, name string) ([]Record, error) {
	var (
		recs  []Record
		errs  []error
		first = map[string]int{} // account → line
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	line := 0
	bad := func(format string, a ...any) {
		errs = append(errs, &ParseError{Path: name, Line: line, Msg: fmt.Sprintf(format, a...)})
	}
	for sc.Scan() && len(errs) < maxParseErrors {
		line++
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if strings.HasPrefix(f, "#") {
				fields = fields[:i]
				break
			}
		}
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 4 {
			bad("want 4 fields (account role partner epoch), got %d", len(fields))
			continue
		}
		rec, err := parseFields(fields)
		if err != nil {
			bad("%s", err)
			continue
		}
		if l, dup := first[rec.Account]; dup {
			bad("duplicate account %q (first on line %d)", rec.Account, l)
			continue
		}
		first[rec.Account] = line
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			line++
			bad("line longer than %d bytes", maxLine)
		} else {
			return nil, fmt.Errorf("rolemap: read %s: %w", name, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return recs, nil
}

func parseFields(f []string) (Record, error) {
	rec := Record{Account: f[0]}
	if err := ValidateAccount(f[0]); err != nil {
		return rec, err
	}
	role, err := ParseRole(f[1])
	if err != nil {
		return rec, fmt.Errorf("account %q: bad role %q (want master, replica or local)", f[0], f[1])
	}
	rec.Role = role
	if f[2] != "-" {
		rec.Partner = f[2]
	}
	epoch, err := strconv.ParseUint(f[3], 10, 64)
	if err != nil {
		return rec, fmt.Errorf("account %q: bad epoch %q (want a decimal number 0..%d)", f[0], f[3], uint64(math.MaxUint64))
	}
	rec.Epoch = epoch
	if err := validateEntry(rec.Entry); err != nil {
		return rec, fmt.Errorf("account %q: %w", f[0], err)
	}
	return rec, nil
}

// ValidateAccount reports whether name can be an account of the map: not
// empty, valid UTF-8, no whitespace, control characters or '/', and not
// starting with '#' (which would start a comment in the text source).
func ValidateAccount(name string) error {
	if name == "" {
		return errors.New("empty account name")
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("account %q: not valid UTF-8", name)
	}
	if name[0] == '#' {
		return fmt.Errorf("account %q: starts with '#'", name)
	}
	for _, c := range name {
		switch {
		case c == '/':
			return fmt.Errorf("account %q: contains '/'", name)
		case unicode.IsControl(c):
			return fmt.Errorf("account %q: contains control character %U", name, c)
		case unicode.IsSpace(c):
			return fmt.Errorf("account %q: contains whitespace %U", name, c)
		}
	}
	return nil
}

// validateEntry checks the role/partner pairing: master and replica need a
// partner host:port, local has none.
func validateEntry(e Entry) error {
	switch e.Role {
	case Master, Replica:
		if e.Partner == "" {
			return fmt.Errorf("role %s needs a partner host:port, got -", e.Role)
		}
		return validatePartner(e.Partner)
	case Local:
		if e.Partner != "" {
			return fmt.Errorf("role local has no partner: write - instead of %q", e.Partner)
		}
		return nil
	default:
		return fmt.Errorf("bad role %d", e.Role)
	}
}

func validatePartner(p string) error {
	host, port, err := net.SplitHostPort(p)
	if err != nil {
		return fmt.Errorf("bad partner %q (want host:port): %w", p, err)
	}
	if host == "" {
		return fmt.Errorf("bad partner %q: empty host", p)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("bad partner %q: port %q is not 1..65535", p, port)
	}
	for _, c := range p {
		if c <= 0x20 || c == 0x7f || c == '#' {
			return fmt.Errorf("bad partner %q: contains %U", p, c)
		}
	}
	return nil
}

// Validate checks records as Build does: valid account names and entries,
// no account twice.
func Validate(recs []Record) error {
	seen := make(map[string]int, len(recs))
	for i, r := range recs {
		if err := ValidateAccount(r.Account); err != nil {
			return fmt.Errorf("rolemap: record %d: %w", i, err)
		}
		if err := validateEntry(r.Entry); err != nil {
			return fmt.Errorf("rolemap: record %d: account %q: %w", i, r.Account, err)
		}
		if j, dup := seen[r.Account]; dup {
			return fmt.Errorf("rolemap: record %d: duplicate account %q (first at record %d)", i, r.Account, j)
		}
		seen[r.Account] = i
	}
	return nil
}

// FormatRecord writes one record as a line of the text source format.
func FormatRecord(w io.Writer, r Record) error {
	partner := r.Partner
	if partner == "" {
		partner = "-"
	}
	_, err := fmt.Fprintf(w, "%s %s %s %d\n", r.Account, r.Role, partner, r.Epoch)
	return err
}

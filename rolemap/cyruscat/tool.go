package cyruscat

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
)

// DefaultBinDir is where Debian installs the Cyrus programs.
const DefaultBinDir = "/usr/lib/cyrus/bin"

// Options configure a Catalogue.
type Options struct {
	Conf   string // the imapd.conf of the Cyrus whose catalogue this is (required)
	BinDir string // Cyrus programs (default DefaultBinDir)
	// User runs the tools (Cyrus tools refuse to run as root); default the
	// conf's cyrus_user, else "cyrus". Ignored when not running as root.
	User   string
	Logger *slog.Logger // nil: discard
}

// Catalogue reads and writes one Cyrus server's shared databases with
// Cyrus's own tools. Its methods are safe for concurrent use only for
// different accounts.
type Catalogue struct {
	cfg    *Imapd
	bin    string
	user   string
	log    *slog.Logger
	asRoot bool
}

// New reads o.Conf and returns a Catalogue.
func New(o Options) (*Catalogue, error) {
	cfg, err := ReadImapd(o.Conf)
	if err != nil {
		return nil, err
	}
	c := &Catalogue{cfg: cfg, bin: o.BinDir, user: o.User, log: o.Logger, asRoot: os.Geteuid() == 0}
	if c.bin == "" {
		c.bin = DefaultBinDir
	}
	if c.user == "" {
		c.user = cfg.User
	}
	if c.user == "" {
		c.user = "cyrus"
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.asRoot {
		if _, err := user.Lookup(c.user); err != nil {
			return nil, fmt.Errorf("cyruscat: the Cyrus user: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(c.bin, "cyr_dbtool")); err != nil {
		return nil, fmt.Errorf("cyruscat: Cyrus tools: %w", err)
	}
	return c, nil
}

// UserIDs returns the uid and gid the Cyrus tools run as (the caller's
// when not root).
func (c *Catalogue) UserIDs() (uid, gid int) {
	if !c.asRoot {
		return os.Getuid(), os.Getgid()
	}
	u, err := user.Lookup(c.user)
	if err != nil {
		return 0, 0
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// Imapd returns the parsed imapd.conf.
func (c *Catalogue) Imapd() *Imapd { return c.cfg }

// run runs a Cyrus tool with -C conf and args, stdin as its input, as the
// Cyrus user, and returns its standard output.
func (c *Catalogue) run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	argv := append([]string{filepath.Join(c.bin, name), "-C", c.cfg.Path}, args...)
	var cmd *exec.Cmd
	if c.asRoot {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.user, "--"}, argv...)...)
	} else {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	}
	cmd.Dir = "/"
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("cyruscat: %s: %w: %s", name, err, bytes.TrimSpace(errb.Bytes()))
	}
	// cyr_dbtool batch reports a failed command on stderr and still exits 0.
	if e := errb.Bytes(); bytes.Contains(e, []byte("FAILED")) {
		return out.Bytes(), fmt.Errorf("cyruscat: %s: %s", name, bytes.TrimSpace(e))
	}
	return out.Bytes(), nil
}

// KV is one database record.
type KV struct {
	Key, Value []byte
}

// batch runs `cyr_dbtool DB twoskip batch` with cmds (each a line built by
// batchCmd) and returns the records SHOW and GET printed.
func (c *Catalogue) batch(ctx context.Context, db string, cmds [][]byte) ([]KV, error) {
	in := bytes.Join(cmds, nil)
	out, err := c.run(ctx, in, "cyr_dbtool", filepath.Join(c.cfg.ConfigDir, db), "twoskip", "batch")
	if err != nil {
		return nil, err
	}
	return parseBatchOutput(out)
}

// batchCmd encodes one batch command: the verb, then each argument as an
// IMAP literal (binary-safe: keys hold NUL and \x1f, values any byte).
func batchCmd(verb string, args ...[]byte) []byte {
	var b bytes.Buffer
	b.WriteString(verb)
	for _, a := range args {
		fmt.Fprintf(&b, " {%d+}\r\n", len(a)) // non-synchronising: cyr_dbtool crashes on {n}
		b.Write(a)
	}
	b.WriteString("\n")
	return b.Bytes()
}

// parseBatchOutput parses "astring SP astring LF" lines (atoms, quoted
// strings, literals {n}CRLF..., NIL), as cyr_dbtool batch prints records.
func parseBatchOutput(out []byte) ([]KV, error) {
	r := bufio.NewReader(bytes.NewReader(out))
	var kvs []KV
	for {
		k, err := readAstring(r)
		if err == io.EOF {
			return kvs, nil
		}
		if err != nil {
			return kvs, err
		}
		if c, err := r.ReadByte(); err != nil || c != ' ' {
			return kvs, fmt.Errorf("cyruscat: batch output: want a space after a key (%v)", err)
		}
		v, err := readAstring(r)
		if err != nil {
			return kvs, fmt.Errorf("cyruscat: batch output value: %w", err)
		}
		if c, err := r.ReadByte(); err != nil || c != '\n' {
			return kvs, fmt.Errorf("cyruscat: batch output: want a newline after a value (%v)", err)
		}
		kvs = append(kvs, KV{k, v})
	}
}

var errSyntax = errors.New("cyruscat: batch output: syntax")

func readAstring(r *bufio.Reader) ([]byte, error) {
	c, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	switch c {
	case '{':
		num, err := r.ReadString('}')
		if err != nil {
			return nil, errSyntax
		}
		n, err := strconv.Atoi(num[:len(num)-1])
		if err != nil || n < 0 {
			return nil, errSyntax
		}
		if c, _ := r.ReadByte(); c == '\r' {
			c, _ = r.ReadByte()
			if c != '\n' {
				return nil, errSyntax
			}
		} else if c != '\n' {
			return nil, errSyntax
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("cyruscat: batch output literal: %w", err)
		}
		return b, nil
	case '"':
		var b []byte
		for {
			c, err := r.ReadByte()
			if err != nil {
				return nil, errSyntax
			}
			switch c {
			case '"':
				return b, nil
			case '\\':
				c, err = r.ReadByte()
				if err != nil {
					return nil, errSyntax
				}
			}
			b = append(b, c)
		}
	}
	b := []byte{c}
	for {
		c, err := r.ReadByte()
		if err != nil {
			return nil, errSyntax
		}
		if c == ' ' || c == '\n' || c == '\r' {
			r.UnreadByte()
			break
		}
		b = append(b, c)
	}
	if string(b) == "NIL" {
		return nil, nil
	}
	return b, nil
}

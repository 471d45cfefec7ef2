package cyrustest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// IMAPError is a tagged NO or BAD reply.
type IMAPError struct {
	Command string
	Status  string // "NO" or "BAD"
	Text    string
}

func (e *IMAPError) Error() string {
	return fmt.Sprintf("cyrustest: imap %s: %s %s", e.Command, e.Status, e.Text)
}

// IMAPClient is a minimal IMAP4rev1 client for tests: tagged commands,
// untagged responses collected as text (literals inlined), APPEND with a
// synchronising literal.
type IMAPClient struct {
	conn net.Conn
	r    *bufio.Reader
	tag  int
	// Timeout bounds each command's round trip (default 30 s).
	Timeout time.Duration
}

// DialIMAP connects and reads the greeting.
func DialIMAP(ctx context.Context, addr string) (*IMAPClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cyrustest: imap dial: %w", err)
	}
	c := &IMAPClient{conn: conn, r: bufio.NewReader(conn), Timeout: 30 * time.Second}
	conn.SetDeadline(time.Now().Add(c.Timeout))
	g, err := c.readResponse()
	if err != nil {
		conn.Close()
		return nil, err
	}
	if !strings.HasPrefix(g, "* OK") {
		conn.Close()
		return nil, fmt.Errorf("cyrustest: imap greeting %q", g)
	}
	return c, nil
}

// Login logs in (any password works under sasl_pwcheck_method: alwaystrue).
func (c *IMAPClient) Login(user, pass string) error {
	_, err := c.Cmd("LOGIN %s %s", Quote(user), Quote(pass))
	return err
}

// Quote returns s as an IMAP quoted string.
func Quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// readResponse reads one response line; a line ending in a literal {n}
// continues with the n bytes and the rest of the line.
func (c *IMAPClient) readResponse() (string, error) {
	var b strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("cyrustest: imap read: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		b.WriteString(line)
		n, ok := literalLen(line)
		if !ok {
			return b.String(), nil
		}
		b.WriteString("\r\n")
		buf := make([]byte, n)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return "", fmt.Errorf("cyrustest: imap read literal: %w", err)
		}
		b.Write(buf)
	}
}

// literalLen reports whether line ends with "{n}" and returns n.
func literalLen(line string) (int, bool) {
	if !strings.HasSuffix(line, "}") {
		return 0, false
	}
	i := strings.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(line[i+1 : len(line)-1])
	if err != nil || n < 0 || n > 64<<20 {
		return 0, false
	}
	return n, true
}

// Cmd sends a tagged command (format + args, without tag and CRLF) and
// returns its untagged responses. A NO or BAD is an *IMAPError.
func (c *IMAPClient) Cmd(format string, args ...any) ([]string, error) {
	line := fmt.Sprintf(format, args...)
	tag := c.nextTag()
	c.conn.SetDeadline(time.Now().Add(c.Timeout))
	if _, err := fmt.Fprintf(c.conn, "%s %s\r\n", tag, line); err != nil {
		return nil, fmt.Errorf("cyrustest: imap write: %w", err)
	}
	return c.finish(tag, line)
}

func (c *IMAPClient) nextTag() string {
	c.tag++
	return "t" + strconv.Itoa(c.tag)
}

// finish reads responses up to the tagged one.
func (c *IMAPClient) finish(tag, line string) ([]string, error) {
	var untagged []string
	for {
		resp, err := c.readResponse()
		if err != nil {
			return untagged, err
		}
		if strings.HasPrefix(resp, tag+" ") {
			st, text, _ := strings.Cut(resp[len(tag)+1:], " ")
			if st == "OK" {
				return untagged, nil
			}
			cmd, _, _ := strings.Cut(line, " ")
			if cmd == "LOGIN" {
				line = "LOGIN ..."
			}
			return untagged, &IMAPError{Command: line, Status: st, Text: text}
		}
		untagged = append(untagged, resp)
	}
}

// Append appends msg to mailbox with the given flags ("" or "(\\Seen)"),
// sending it as a synchronising literal.
func (c *IMAPClient) Append(mailbox, flags string, msg []byte) error {
	tag := c.nextTag()
	line := "APPEND " + Quote(mailbox)
	if flags != "" {
		line += " " + flags
	}
	c.conn.SetDeadline(time.Now().Add(c.Timeout))
	if _, err := fmt.Fprintf(c.conn, "%s %s {%d}\r\n", tag, line, len(msg)); err != nil {
		return fmt.Errorf("cyrustest: imap write: %w", err)
	}
	resp, err := c.readResponse()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(resp, "+") {
		if strings.HasPrefix(resp, tag+" ") {
			st, text, _ := strings.Cut(resp[len(tag)+1:], " ")
			return &IMAPError{Command: line, Status: st, Text: text}
		}
		return fmt.Errorf("cyrustest: imap APPEND: want a continuation, got %q", resp)
	}
	if _, err := c.conn.Write(append(msg, '\r', '\n')); err != nil {
		return fmt.Errorf("cyrustest: imap write: %w", err)
	}
	_, err = c.finish(tag, line)
	return err
}

// Logout sends LOGOUT and closes the connection.
func (c *IMAPClient) Logout() error {
	_, err := c.Cmd("LOGOUT")
	cerr := c.conn.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return cerr
}

// Close closes the connection without LOGOUT.
func (c *IMAPClient) Close() error { return c.conn.Close() }

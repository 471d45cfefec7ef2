package cyrustest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// ReplyError is an LMTP/SMTP reply other than the expected one.
type ReplyError struct {
	Code int
	Text string // all lines of the reply, joined by "\n"
}

func (e *ReplyError) Error() string { return fmt.Sprintf("cyrustest: lmtp %d %s", e.Code, e.Text) }

// Temporary reports a 4xx reply (e.g. 451 4.3.0 when a write is refused).
func (e *ReplyError) Temporary() bool { return e.Code >= 400 && e.Code < 500 }

// LMTPClient is a minimal RFC 2033 client: after DATA it reads one reply per
// accepted recipient, so a multi-recipient transaction stays in sync.
type LMTPClient struct {
	conn net.Conn
	r    *bufio.Reader
	// Timeout bounds each command's round trip (default 30 s).
	Timeout time.Duration
}

// DialLMTP connects, reads the greeting and sends LHLO.
func DialLMTP(ctx context.Context, addr string) (*LMTPClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cyrustest: lmtp dial: %w", err)
	}
	c := &LMTPClient{conn: conn, r: bufio.NewReader(conn), Timeout: 30 * time.Second}
	if _, err := c.expect(220); err != nil {
		conn.Close()
		return nil, err
	}
	if _, err := c.cmd("LHLO cyrustest", 250); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *LMTPClient) reply() (int, string, error) {
	c.conn.SetDeadline(time.Now().Add(c.Timeout))
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, "", fmt.Errorf("cyrustest: lmtp read: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	last := lines[len(lines)-1]
	if len(last) < 3 {
		return 0, "", fmt.Errorf("cyrustest: lmtp: malformed reply %q", last)
	}
	code, err := strconv.Atoi(last[:3])
	if err != nil {
		return 0, "", fmt.Errorf("cyrustest: lmtp: malformed reply %q", last)
	}
	return code, strings.Join(lines, "\n"), nil
}

func (c *LMTPClient) expect(want int) (string, error) {
	code, text, err := c.reply()
	if err != nil {
		return "", err
	}
	if code != want {
		return text, &ReplyError{code, text}
	}
	return text, nil
}

func (c *LMTPClient) cmd(line string, want int) (string, error) {
	c.conn.SetDeadline(time.Now().Add(c.Timeout))
	if _, err := fmt.Fprintf(c.conn, "%s\r\n", line); err != nil {
		return "", fmt.Errorf("cyrustest: lmtp write: %w", err)
	}
	return c.expect(want)
}

// Deliver runs one transaction and returns one error per recipient (nil:
// delivered, 250). A recipient refused at RCPT gets that reply's
// *ReplyError; the others get the reply that follows DATA for them. A
// transport or protocol error is returned for every recipient.
func (c *LMTPClient) Deliver(from string, rcpts []string, msg []byte) []error {
	errs := make([]error, len(rcpts))
	fail := func(err error) []error {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
		return errs
	}
	if _, err := c.cmd("MAIL FROM:<"+from+">", 250); err != nil {
		return fail(err)
	}
	var accepted []int
	for i, r := range rcpts {
		code, text, err := c.cmdAny("RCPT TO:<" + r + ">")
		if err != nil {
			return fail(err)
		}
		if code == 250 {
			accepted = append(accepted, i)
		} else {
			errs[i] = &ReplyError{code, text}
		}
	}
	if len(accepted) == 0 {
		if _, err := c.cmd("RSET", 250); err != nil {
			return fail(err)
		}
		return errs
	}
	if _, err := c.cmd("DATA", 354); err != nil {
		return fail(err)
	}
	c.conn.SetDeadline(time.Now().Add(c.Timeout))
	if _, err := c.conn.Write(dotStuff(msg)); err != nil {
		return fail(fmt.Errorf("cyrustest: lmtp write: %w", err))
	}
	for _, i := range accepted {
		code, text, err := c.reply()
		if err != nil {
			return fail(err)
		}
		if code != 250 {
			errs[i] = &ReplyError{code, text}
		}
	}
	return errs
}

func (c *LMTPClient) cmdAny(line string) (int, string, error) {
	c.conn.SetDeadline(time.Now().Add(c.Timeout))
	if _, err := fmt.Fprintf(c.conn, "%s\r\n", line); err != nil {
		return 0, "", fmt.Errorf("cyrustest: lmtp write: %w", err)
	}
	return c.reply()
}

// dotStuff normalises line ends to CRLF, doubles leading dots and appends
// the terminating ".\r\n".
func dotStuff(msg []byte) []byte {
	msg = bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	msg = bytes.TrimSuffix(msg, []byte("\n"))
	var b bytes.Buffer
	for _, l := range bytes.Split(msg, []byte("\n")) {
		if len(l) > 0 && l[0] == '.' {
			b.WriteByte('.')
		}
		b.Write(l)
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// Close sends QUIT and closes the connection.
func (c *LMTPClient) Close() error {
	c.cmdAny("QUIT")
	return c.conn.Close()
}

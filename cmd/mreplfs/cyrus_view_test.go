package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"mreplfs/rolemap/classify"
	"mreplfs/rolemap/cyrustest"
)

// Helpers of the end-to-end Cyrus test: what an account's files are on a
// server (by the real classifier), and what an IMAP client sees of it.

// accountFiles maps "<tree>/<rel>" of every file and directory that the
// classifier attributes to account under a server's backing trees to its
// size and SHA-256 ("dir" for a directory).
func accountFiles(s *node, account string) (map[string]string, error) {
	trees := map[string]string{}
	for _, t := range treeNames {
		trees[t] = s.backing(t)
	}
	cl := classify.New(classify.Options{})
	cl.Scan(trees) // a header that cannot be read leaves its mailbox pending: seen below
	out := map[string]string{}
	for _, t := range treeNames {
		root := trees[t]
		err := filepath.WalkDir(root, func(p string, d iofs.DirEntry, err error) error {
			if errors.Is(err, iofs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if rel == "." {
				return nil
			}
			r := cl.Classify(t + "/" + rel)
			if !r.IsAccount() || r.Account != account {
				return nil
			}
			if d.IsDir() {
				out[t+"/"+rel] = "dir"
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				if errors.Is(err, iofs.ErrNotExist) {
					return nil
				}
				return err
			}
			sum := sha256.Sum256(b)
			out[t+"/"+rel] = fmt.Sprintf("%d %s", len(b), hex.EncodeToString(sum[:8]))
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// accountView is what an IMAP client sees of an account, read-only
// (EXAMINE, FETCH BODY.PEEK): it can be taken on the master and on the
// replica server alike.
type accountView struct {
	Folders []string          // LIST lines with SPECIAL-USE attributes
	Status  map[string]string // folder → UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, EXISTS
	Msgs    map[string]string // folder → per message UID, FLAGS, MODSEQ, INTERNALDATE, size, body SHA-256
	Quota   string
}

var (
	listMailbox = regexp.MustCompile(`^\* LIST \(([^)]*)\) "/" (.*)$`)
	codeRe      = regexp.MustCompile(`\[(UIDVALIDITY|UIDNEXT|HIGHESTMODSEQ) (\d+)\]`)
	existsRe    = regexp.MustCompile(`^\* (\d+) EXISTS$`)
	fetchRe     = regexp.MustCompile(`(?s)^\* \d+ FETCH \((.*)$`)
	bodyStart   = regexp.MustCompile(`BODY\[\] \{\d+\}\r\n`)
)

// viewOf logs in as account on in and reads its view.
func viewOf(ctx context.Context, in *cyrustest.Instance, account string) (*accountView, error) {
	c, err := cyrustest.DialIMAP(ctx, in.IMAPAddr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Login(account, "x"); err != nil {
		return nil, err
	}
	v := &accountView{Status: map[string]string{}, Msgs: map[string]string{}}
	list, err := c.Cmd(`LIST "" "*" RETURN (SPECIAL-USE)`)
	if err != nil {
		return nil, err
	}
	var folders []string
	for _, l := range list {
		m := listMailbox.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		f := strings.Trim(m[2], `"`)
		folders = append(folders, f)
		v.Folders = append(v.Folders, l)
	}
	sort.Strings(v.Folders)
	for _, f := range folders {
		ex, err := c.Cmd("EXAMINE %s", cyrustest.Quote(f))
		if err != nil {
			return nil, fmt.Errorf("EXAMINE %s: %w", f, err)
		}
		var st []string
		for _, l := range ex {
			for _, m := range codeRe.FindAllStringSubmatch(l, -1) {
				st = append(st, m[1]+"="+m[2])
			}
			if m := existsRe.FindStringSubmatch(l); m != nil {
				st = append(st, "EXISTS="+m[1])
			}
		}
		sort.Strings(st)
		v.Status[f] = strings.Join(st, " ")
		if strings.Contains(v.Status[f], "EXISTS=0") {
			continue
		}
		fe, err := c.Cmd("FETCH 1:* (UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE BODY.PEEK[])")
		if err != nil {
			return nil, fmt.Errorf("FETCH in %s: %w", f, err)
		}
		var msgs []string
		for _, l := range fe {
			m := fetchRe.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			loc := bodyStart.FindStringIndex(m[1])
			if loc == nil {
				msgs = append(msgs, m[1])
				continue
			}
			attrs := m[1][:loc[0]]
			sum := sha256.Sum256([]byte(m[1][loc[1]:]))
			msgs = append(msgs, attrs+"BODY "+hex.EncodeToString(sum[:8]))
		}
		v.Msgs[f] = strings.Join(msgs, "\n")
	}
	q, err := c.Cmd("GETQUOTAROOT INBOX")
	if err != nil {
		v.Quota = "error: " + err.Error()
	} else {
		v.Quota = strings.Join(q, " ")
	}
	c.Logout()
	return v, nil
}

// diffViews lists the differences between two views.
func diffViews(a, b *accountView) []string {
	var d []string
	if x, y := strings.Join(a.Folders, "\n"), strings.Join(b.Folders, "\n"); x != y {
		d = append(d, fmt.Sprintf("folders:\n%s\nvs\n%s", x, y))
	}
	for f, s := range a.Status {
		if b.Status[f] != s {
			d = append(d, fmt.Sprintf("%s: %s vs %s", f, s, b.Status[f]))
		}
		if a.Msgs[f] != b.Msgs[f] {
			d = append(d, fmt.Sprintf("%s messages:\n%s\nvs\n%s", f, a.Msgs[f], b.Msgs[f]))
		}
	}
	if a.Quota != b.Quota {
		d = append(d, fmt.Sprintf("quota: %s vs %s", a.Quota, b.Quota))
	}
	return d
}

func (v *accountView) messages() int {
	n := 0
	for _, m := range v.Msgs {
		if m != "" {
			n += strings.Count(m, "\n") + 1
		}
	}
	return n
}

func mustView(t *testing.T, in *cyrustest.Instance, account string) *accountView {
	t.Helper()
	v, err := viewOf(context.Background(), in, account)
	if err != nil {
		t.Fatalf("IMAP view of %s on %s: %v\n%s", account, in.IMAPAddr, err, in.Log())
	}
	return v
}

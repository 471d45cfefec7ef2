// Package cyrusload writes a Cyrus-shaped mail load into a spool the way
// lmtpd does (CYRUS.md §3, E1–E4), in the legacy layout so that no
// cyrus.header is needed to own a path: the body is written once to
// stage./, hard-linked into each recipient mailbox, fsynced through an
// O_RDONLY fd and given its time with utimensat; then cyrus.cache is
// appended, a 112-byte cyrus.index record and the 160-byte header are
// written and fsynced, and the quota file is replaced by rename.
//
// The demo, the two-server tests and the benchmarks use it to drive a
// mount without a real Cyrus.
package cyrusload

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Spool names the three trees of one server as a writer sees them (through
// the mount, or natively).
type Spool struct {
	Conf, Spool, Meta string
}

// stageSeq numbers the stage files of this process.
var stageSeq atomic.Int64

// Deliverer delivers messages into a Spool. Safe for concurrent use.
type Deliverer struct {
	S Spool

	mu   sync.Mutex
	qmu  sync.Mutex // one quota rewrite at a time (Cyrus locks the quota file)
	uids map[string]int
	n    int
	used map[string]int64 // quota usage per account

	payload atomic.Int64
}

// Payload is what the deliveries wrote as Cyrus would, counting each body
// once (DESIGN.md §5): bodies, plus the cache, index and quota bytes of every
// recipient. Replication's wire bytes are measured against it.
func (d *Deliverer) Payload() int64 { return d.payload.Load() }

// New returns a Deliverer for s.
func New(s Spool) *Deliverer {
	return &Deliverer{S: s, uids: map[string]int{}, used: map[string]int64{}}
}

// Body makes a message of about size bytes, unique by n.
func Body(n, size int, tag string) []byte {
	line := fmt.Sprintf("Message-ID: <%d@%s>\r\nSubject: message %d\r\nX-Filler: the quick brown fox %d\r\n", n, tag, n, n)
	b := bytes.Repeat([]byte(line), size/len(line)+1)
	return b[:size]
}

// Delivered says where one delivery put its copies (relative to Spool.Spool).
type Delivered struct {
	Files []string // "user/alice/12." per mailbox
	At    time.Time
}

// Deliver writes body to mailboxes ("alice", "alice/Sent", "bob"), each
// "<account>[/<folder>...]", and returns the message files it created.
func (d *Deliverer) Deliver(mailboxes []string, body []byte) (Delivered, error) {
	d.mu.Lock()
	d.n++
	n := d.n
	uids := make([]int, len(mailboxes))
	for i, mb := range mailboxes {
		d.uids[mb]++
		uids[i] = d.uids[mb]
	}
	d.mu.Unlock()

	stageDir := filepath.Join(d.S.Spool, "stage.")
	if err := os.MkdirAll(stageDir, 0o755); err != nil {
		return Delivered{}, err
	}
	// Unique in the process: several Deliverers may share a spool.
	stage := filepath.Join(stageDir, fmt.Sprintf("%d-%d-%d-%d", os.Getpid(), time.Now().Unix(), n, stageSeq.Add(1)))
	if err := os.WriteFile(stage, body, 0o600); err != nil {
		return Delivered{}, fmt.Errorf("stage: %w", err)
	}
	defer os.Remove(stage)
	d.payload.Add(int64(len(body)))
	var out Delivered
	for i, mb := range mailboxes {
		rel := "user/" + mb
		name := filepath.Join(rel, fmt.Sprintf("%d.", uids[i]))
		if err := d.message(stage, name, n); err != nil {
			return out, err
		}
		if err := d.index(rel, uids[i], len(body)); err != nil {
			return out, err
		}
		acct := strings.SplitN(mb, "/", 2)[0]
		if err := d.quota(acct, int64(len(body))); err != nil {
			return out, err
		}
		out.Files = append(out.Files, name)
	}
	out.At = time.Now()
	return out, nil
}

func (d *Deliverer) message(stage, name string, n int) error {
	dst := filepath.Join(d.S.Spool, name)
	err := os.Link(stage, dst)
	if errors.Is(err, fs.ErrNotExist) { // lazy mkdir, as Cyrus does
		if err = os.MkdirAll(filepath.Dir(dst), 0o700); err == nil {
			err = os.Link(stage, dst)
		}
	}
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	f, err := os.Open(dst)
	if err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	mt := time.Unix(1796000000+int64(n), 0)
	return os.Chtimes(dst, mt, mt)
}

func (d *Deliverer) index(rel string, uid, size int) error {
	dir := filepath.Join(d.S.Meta, rel)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cache, err := os.OpenFile(filepath.Join(dir, "cyrus.cache"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	st, err := cache.Stat()
	if err == nil {
		_, err = cache.WriteAt(bytes.Repeat([]byte{'c'}, 300), st.Size())
		d.payload.Add(300)
	}
	if err == nil {
		err = cache.Sync()
	}
	cache.Close()
	if err != nil {
		return fmt.Errorf("cyrus.cache: %w", err)
	}
	idx, err := os.OpenFile(filepath.Join(dir, "cyrus.index"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer idx.Close()
	rec := make([]byte, 112)
	copy(rec, fmt.Sprintf("uid %d size %d", uid, size))
	if _, err := idx.WriteAt(rec, 160+int64(uid-1)*112); err != nil {
		return err
	}
	if _, err := idx.WriteAt([]byte(fmt.Sprintf("%-160s", fmt.Sprintf("exists %d", uid))), 0); err != nil {
		return err
	}
	if err := idx.Sync(); err != nil {
		return fmt.Errorf("cyrus.index: %w", err)
	}
	d.payload.Add(112 + 160)
	return nil
}

func (d *Deliverer) quota(acct string, add int64) error {
	d.qmu.Lock()
	defer d.qmu.Unlock()
	d.mu.Lock()
	d.used[acct] += add
	used := d.used[acct]
	d.mu.Unlock()
	dir := filepath.Join(d.S.Conf, "quota", acct[:1])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	q := filepath.Join(dir, "user."+acct)
	f, err := os.OpenFile(q+".NEW", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	n, err := fmt.Fprintf(f, "%%(S (%d 100000) M (1))\n", used)
	d.payload.Add(int64(n))
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("quota: %w", err)
	}
	return os.Rename(q+".NEW", q)
}

// Digest describes every file and directory of acct in s: type, mode, size
// and SHA-256 (and the mtime of message files, which the replica must
// keep). Two spools hold the same account when their digests are equal.
func Digest(s Spool, acct string) (map[string]string, error) {
	out := map[string]string{}
	roots := [][2]string{{s.Spool, "user/" + acct}, {s.Meta, "user/" + acct}, {s.Conf, "quota/" + acct[:1] + "/user." + acct}}
	for i, r := range roots {
		tree := []string{"spool", "meta", "conf"}[i]
		err := filepath.WalkDir(filepath.Join(r[0], r[1]), func(p string, de fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(r[0], p)
			fi, err := os.Lstat(p)
			if err != nil {
				return nil // gone meanwhile
			}
			if fi.IsDir() {
				out[tree+"/"+rel] = fmt.Sprintf("dir %o", fi.Mode().Perm())
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			v := fmt.Sprintf("file %o %d %x", fi.Mode().Perm(), fi.Size(), sha256.Sum256(b))
			if strings.HasSuffix(rel, ".") {
				v += fmt.Sprintf(" mtime %d", fi.ModTime().UnixNano())
			}
			out[tree+"/"+rel] = v
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Diff lists how replica differs from master (empty: identical).
func Diff(master, replica map[string]string) []string {
	var d []string
	for k, v := range master {
		if replica[k] != v {
			d = append(d, fmt.Sprintf("%s: master %q, replica %q", k, v, replica[k]))
		}
	}
	for k := range replica {
		if _, ok := master[k]; !ok {
			d = append(d, k+": only on the replica")
		}
	}
	sort.Strings(d)
	return d
}

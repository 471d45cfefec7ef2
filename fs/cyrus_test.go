package fs_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mfs "mreplfs/fs"
	"mreplfs/fs/mounttest"
	"mreplfs/journal"
	"mreplfs/rolemap"
	"mreplfs/rolemap/classify"
	"mreplfs/rolemap/cyrustest"
)

// cyrusLayouts are the layouts the real-Cyrus test runs.
var cyrusLayouts = []struct {
	name string
	opts cyrustest.Options
}{
	{"uuid", cyrustest.Options{Layout: cyrustest.UUID, Meta: true}},
	{"legacy-hash", cyrustest.Options{Layout: cyrustest.Legacy, Hash: true, Meta: true}},
}

// Run-specific path parts: uuid ids and their c1/c2 directories, and the
// hex time stamp of delayed-delete directories.
var (
	uuidID   = regexp.MustCompile(`uuid/[0-9a-z]/[0-9a-z]/[0-9a-z]{24}`)
	uuidDirs = regexp.MustCompile(`uuid/[0-9a-z](/[0-9a-z])?$`)
	deleted  = regexp.MustCompile(`(DELETED/.*)/[0-9A-F]{8}(/|$)`)
)

// treeFiles maps the normalised paths of a Cyrus DIR to their sizes
// (sorted; -1 for a directory), runtime files (sockets, locks, logs) left
// out.
func treeFiles(t *testing.T, root string) map[string][]int64 {
	t.Helper()
	out := map[string][]int64{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		for _, skip := range []string{"conf/socket", "conf/log", "conf/proc", "conf/lock"} {
			if strings.HasPrefix(rel, skip) {
				return nil
			}
		}
		if uuidDirs.MatchString(rel) {
			return nil // c1/c2 hash dirs: how many depends on the random ids
		}
		n := uuidID.ReplaceAllString(rel, "uuid/C/C/ID")
		n = deleted.ReplaceAllString(n, "$1/HEX$2")
		size := int64(-1)
		if !de.IsDir() {
			info, err := de.Info()
			if err != nil {
				return err
			}
			size = info.Size()
		}
		out[n] = append(out[n], size)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range out {
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	}
	return out
}

// variableSize matches files whose size legitimately differs between two
// runs of the same scenario: messages carry an X-Cyrus-Session-Id with a
// random number of varying length, and cyrus.cache copies those headers.
// twoskipDB matches skiplist databases, whose size depends on random node
// levels and checkpoint timing: only their presence (non-empty) is compared.
var (
	variableSize = regexp.MustCompile(`(/[0-9]+\.|/cyrus\.cache)$`)
	twoskipDB    = regexp.MustCompile(`(\.db|\.seen|\.conversations|\.counters)$`)
)

// compareTrees checks the mreplfs backing tree m against two native runs
// a and b of the same scenario: the same normalised files (same counts),
// and the same sizes, except for variableSize files, whose sizes must lie
// within the native spread plus 2 %, and twoskip databases (non-empty).
func compareTrees(a, b, m map[string][]int64) []string {
	var errs []string
	names := map[string]bool{}
	for _, x := range []map[string][]int64{a, b, m} {
		for k := range x {
			names[k] = true
		}
	}
	for n := range names {
		sa, sb, sm := a[n], b[n], m[n]
		if len(sm) != len(sa) {
			errs = append(errs, fmt.Sprintf("%s: %d on mreplfs, %d native", n, len(sm), len(sa)))
			continue
		}
		if len(sa) != len(sb) {
			errs = append(errs, fmt.Sprintf("%s: native runs disagree on the count (%d, %d)", n, len(sa), len(sb)))
			continue
		}
		for i := range sa {
			lo, hi := min(sa[i], sb[i]), max(sa[i], sb[i])
			if twoskipDB.MatchString(n) && lo > 0 {
				lo, hi = 1, 1<<40
			}
			if variableSize.MatchString(n) {
				lo, hi = lo-hi/50-8, hi+hi/50+8
			}
			if sm[i] < lo || sm[i] > hi {
				errs = append(errs, fmt.Sprintf("%s: size %d on mreplfs, native %d/%d", n, sm[i], sa[i], sb[i]))
			}
		}
	}
	sort.Strings(errs)
	return errs
}

// TestCyrusOnMount runs Debian's Cyrus with its whole DIR (conf, spool,
// meta, sieve) on mreplfs — all accounts master, the real classifier, the
// real journal — through the IMAP/LMTP scenario, and compares the backing
// tree with a native run of the same scenario.
func TestCyrusOnMount(t *testing.T) {
	for _, l := range cyrusLayouts {
		t.Run(l.name, func(t *testing.T) {
			cyrustest.RequireCyrus(t)
			base := cyrustest.TempDir(t)

			var natives []map[string][]int64
			for _, name := range []string{"native1", "native2"} {
				// The same basename as the mount point: Cyrus puts it in
				// every message's session id.
				dir := filepath.Join(base, name, "mnt")
				in := cyrustest.Start(t, dir, l.opts)
				cyrustest.RunScenario(t, in)
				if err := in.Stop(); err != nil {
					t.Fatal(err)
				}
				natives = append(natives, treeFiles(t, dir))
			}

			jdir := filepath.Join(base, "journal")
			lg, err := journal.Open(jdir, journal.Options{Logger: mounttest.TestLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lg.Close() })
			cl := classify.New(classify.Options{})
			e := mounttest.Mount(t, mounttest.Options{Tree: "root", Journal: lg, Dir: base,
				FS: mfs.Options{Roles: mounttest.AllRoles(rolemap.Master), Classifier: mfs.CyrusClassifier(cl, "root"),
					AllowOther: true}})
			in := cyrustest.Start(t, e.Mnt, l.opts)
			res := cyrustest.RunScenario(t, in)
			if err := in.Stop(); err != nil {
				t.Fatal(err)
			}
			if log := in.Log(); strings.Contains(log, "Read-only file system") {
				t.Errorf("Cyrus saw EROFS on an all-master mount:\n%s", log)
			}
			got := treeFiles(t, e.Backing)
			if errs := compareTrees(natives[0], natives[1], got); len(errs) > 0 {
				t.Errorf("backing tree differs from the native runs:\n%s", strings.Join(errs, "\n"))
			}
			t.Logf("%d normalised paths compared", len(got))

			// The mutations reached the journal, attributed to the live accounts.
			if err := lg.Close(); err != nil {
				t.Fatal(err)
			}
			lg2, err := journal.Open(jdir, journal.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer lg2.Close()
			counts := journalCounts(t, lg2)
			for _, a := range res.Live {
				if counts[a] == 0 {
					t.Errorf("no journal records for live account %s (records per account: %v)", a, counts)
				}
			}
			t.Logf("journal records per account: %v", counts)
		})
	}
}

func journalCounts(t *testing.T, lg *journal.Log) map[string]int {
	t.Helper()
	rd, err := lg.NewReader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	counts := map[string]int{}
	for rd.Position() <= lg.Durable() {
		recs, err := rd.NextBatch(t.Context(), 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			counts[r.Account]++
		}
		if len(recs) == 0 {
			break
		}
	}
	return counts
}

// flipRoles: every account is master except those marked replica.
type flipRoles struct {
	mu      sync.Mutex
	replica map[string]bool
}

func (f *flipRoles) Lookup(a string) (rolemap.Entry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.replica[a] {
		return rolemap.Entry{Role: rolemap.Replica, Epoch: 2}, true
	}
	return rolemap.Entry{Role: rolemap.Master, Epoch: 1}, true
}

// TestCyrusReplicaRefused: once alice is a replica here, real Cyrus gets
// EROFS for her and only her (CYRUS.md §7.6): LMTP answers 451 for alice
// and 250 for bob in the same transaction, SELECT of her INBOX fails, and
// none of her files in the backing tree changes; nothing is journaled for
// her.
func TestCyrusReplicaRefused(t *testing.T) {
	cyrustest.RequireCyrus(t)
	base := cyrustest.TempDir(t)
	rec := mounttest.NewRecorder()
	cl := mfs.CyrusClassifier(classify.New(classify.Options{}), "root")
	roles := &flipRoles{replica: map[string]bool{}}
	e := mounttest.Mount(t, mounttest.Options{Tree: "root", Journal: rec, Dir: base,
		FS: mfs.Options{Roles: roles, Classifier: cl, AllowOther: true}})
	in := cyrustest.Start(t, e.Mnt, cyrustest.Options{Meta: true})
	adm := in.IMAP(t, cyrustest.Admin)
	for _, u := range []string{cyrustest.Alice, "bob"} {
		if _, err := adm.Cmd("CREATE %s", cyrustest.Quote(in.MailboxName(u, ""))); err != nil {
			t.Fatal(err)
		}
	}
	in.Deliver(t, []string{cyrustest.Alice, "bob"}, cyrustest.Message("before", 2000))

	roles.mu.Lock()
	roles.replica["alice"] = true
	roles.mu.Unlock()
	rec.Reset()
	before := snapshot(t, e.Backing)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := cyrustest.DialLMTP(ctx, in.LMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errs := c.Deliver("s@example.org", []string{cyrustest.Alice, "bob"}, cyrustest.Message("after", 2000))
	var re *cyrustest.ReplyError
	if !errors.As(errs[0], &re) || re.Code != 451 {
		t.Errorf("LMTP to replica alice: got %v, want 451", errs[0])
	}
	if errs[1] != nil {
		t.Errorf("LMTP to master bob: got %v, want delivered", errs[1])
	}
	al := in.IMAP(t, cyrustest.Alice)
	if _, err := al.Cmd("SELECT INBOX"); err == nil {
		t.Errorf("SELECT of replica alice's INBOX succeeded")
	}
	if _, err := al.Cmd("EXAMINE INBOX"); err != nil {
		t.Errorf("EXAMINE (read-only) of alice's INBOX: %v", err)
	}

	after := snapshot(t, e.Backing)
	changed := 0
	for p, v := range after {
		if before[p] == v {
			continue
		}
		changed++
		if c := cl.Classify("root/" + p); c.Kind == mfs.KindAccount && c.Account == "alice" {
			t.Errorf("alice's %s changed while she is a replica: %s -> %s", p, before[p], v)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			if c := cl.Classify("root/" + p); c.Kind == mfs.KindAccount && c.Account == "alice" {
				t.Errorf("alice's %s removed while she is a replica", p)
			}
		}
	}
	if changed == 0 {
		t.Errorf("nothing changed: bob's delivery did not happen?")
	}
	for _, r := range rec.Records() {
		if r.Account == "alice" {
			t.Errorf("record for replica alice: %s", recString(r))
		}
	}
}

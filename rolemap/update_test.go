package rolemap

import (
	"path/filepath"
	"testing"
)

func TestUpdate(t *testing.T) {
	dir := t.TempDir()
	recs := records(5, 3)
	p := buildMap(t, dir, "roles.cdb", recs)
	flip := recs[2]
	flip.Epoch++
	flip.Role = Master
	flip.Partner = "10.0.0.9:7000"
	old, err := Update(p, map[string]Entry{flip.Account: flip.Entry, "newbie": {Role: Local}})
	if err != nil {
		t.Fatal(err)
	}
	if old[flip.Account] != recs[2].Entry || old["newbie"].Role != Unknown {
		t.Errorf("old entries %+v", old)
	}
	m, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got := allRecords(t, m)
	if len(got) != 6 {
		t.Fatalf("%d records, want 6", len(got))
	}
	for i, r := range got[:5] {
		want := recs[i]
		if i == 2 {
			want = flip
		}
		if r != want {
			t.Errorf("record %d: %+v, want %+v", i, r, want)
		}
	}
	if got[5].Account != "newbie" || got[5].Role != Local {
		t.Errorf("appended %+v", got[5])
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("files left: %v", names)
	}
	if _, err := Update(filepath.Join(dir, "missing.cdb"), nil); err == nil {
		t.Error("update of a missing map succeeded")
	}
}

// TestLiveRefresh: Refresh picks up an Update at once (no poll), and does
// nothing when the file did not change.
func TestLiveRefresh(t *testing.T) {
	dir := t.TempDir()
	recs := records(3, 1)
	p := buildMap(t, dir, "roles.cdb", recs)
	l, err := NewLive(p, LiveOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := recs[0].Entry
	e.Epoch += 10
	if _, err := Update(p, map[string]Entry{recs[0].Account: e}); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Lookup(recs[0].Account); got.Epoch != recs[0].Epoch {
		t.Fatalf("before Refresh: %+v (want the old map still)", got)
	}
	if err := l.Refresh(); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Lookup(recs[0].Account); got != e {
		t.Fatalf("after Refresh: %+v, want %+v", got, e)
	}
	m := l.cur.Load()
	if err := l.Refresh(); err != nil || l.cur.Load() != m {
		t.Errorf("Refresh of an unchanged file reloaded it (%v)", err)
	}
}

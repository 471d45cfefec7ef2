package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestStatusPeerState: status -peer-state lists a prepared role change and
// says so when there is no quarantine.
func TestStatusPeerState(t *testing.T) {
	state := t.TempDir()
	w := &roleSwitch{cfg: &peerConfig{state: state}}
	p := &prepareFile{Account: "alice@example.com", OldRole: "replica", NewRole: "master", OldEpoch: 3, NewEpoch: 4,
		Partner: "10.0.0.1:7411", Deadline: time.Now().Add(time.Second).Round(0)}
	if err := w.writePrepare(p); err != nil {
		t.Fatal(err)
	}
	got, err := w.readPrepare("alice@example.com")
	if err != nil || got == nil || !got.Deadline.Equal(p.Deadline) {
		t.Fatalf("readPrepare: %+v, %v", got, err)
	}
	got.Deadline = p.Deadline
	if *got != *p {
		t.Fatalf("readPrepare: %+v, want %+v", got, p)
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"status", "-peer-state", state}, strings.NewReader(""), &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "no quarantine") ||
		!strings.Contains(out.String(), "alice@example.com replica → master at epoch 4") {
		t.Errorf("status -peer-state: exit %d:\n%s%s", code, out.String(), errb.String())
	}
	if err := w.removePrepare("alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if got, err := w.readPrepare("alice@example.com"); err != nil || got != nil {
		t.Errorf("after removePrepare: %+v, %v", got, err)
	}
}

func TestMergeRanges(t *testing.T) {
	got := mergeRanges([][2]int64{{160, 272}, {0, 160}, {400, 512}, {272, 300}, {450, 460}})
	want := [][2]int64{{0, 300}, {400, 512}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("mergeRanges: %v, want %v", got, want)
	}
}

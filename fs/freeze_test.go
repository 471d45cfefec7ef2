package fs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"mreplfs/fs"
	"mreplfs/fs/mounttest"
	"mreplfs/rolemap"
)

// TestFreeze: a freeze is refused while the account has an open file or
// changed within the idle time, and granted once it is inactive; it reports
// the account's last LSN; a write during the freeze waits, and after a flip
// to replica and the unfreeze it fails with EROFS and changes nothing; other
// accounts never wait.
func TestFreeze(t *testing.T) {
	e := mounttest.Mount(t, mounttest.Options{})
	e.Roles.Set("alice", rolemap.Master)
	e.Roles.Set("bob", rolemap.Master)
	for _, a := range []string{"alice", "bob"} {
		must(t, os.MkdirAll(filepath.Join(e.Mnt, "acct", a), 0o755))
	}
	af := filepath.Join(e.Mnt, "acct/alice/f")
	must(t, os.WriteFile(af, []byte("one"), 0o600))
	ctx := context.Background()

	// Busy: an open file (read-only counts too: Cyrus holds locks on fds).
	h, err := os.Open(af)
	must(t, err)
	if _, err := e.FS.Freeze(ctx, "alice", 0, time.Second); !errors.Is(err, fs.ErrBusy) {
		t.Fatalf("freeze with an open file: %v, want ErrBusy", err)
	}
	h.Close()
	// Busy: changed just now (idle 1 h).
	waitFor(t, "handle released", func() bool {
		_, err := e.FS.Freeze(ctx, "alice", time.Hour, time.Second)
		return errors.Is(err, fs.ErrBusy) && !containsStr(err.Error(), "open file")
	})

	recs := len(e.Rec.Records())
	info, err := e.FS.Freeze(ctx, "alice", 0, 10*time.Second)
	if err != nil {
		t.Fatalf("freeze of an idle account: %v", err)
	}
	last := e.Rec.Records()[recs-1]
	if last.Account != "alice" || info.LSN != last.LSN {
		t.Errorf("freeze LSN %d, want alice's last record %d (%s)", info.LSN, last.LSN, last.Account)
	}
	if _, err := e.FS.Freeze(ctx, "alice", 0, time.Second); !errors.Is(err, fs.ErrBusy) {
		t.Errorf("second freeze: %v, want ErrBusy", err)
	}

	// A write to alice waits; bob's does not.
	done := make(chan error, 1)
	go func() { done <- os.WriteFile(af, []byte("two"), 0o600) }()
	must(t, os.WriteFile(filepath.Join(e.Mnt, "acct/bob/g"), []byte("bob"), 0o600))
	select {
	case err := <-done:
		t.Fatalf("write to a frozen account returned %v while frozen", err)
	case <-time.After(200 * time.Millisecond):
	}
	if d, ok := e.FS.FrozenFor("alice"); !ok || d <= 0 {
		t.Errorf("FrozenFor: %v %v", d, ok)
	}
	// Flip to replica, then unfreeze: the held write is refused.
	e.Roles.Set("alice", rolemap.Replica)
	if !e.FS.Unfreeze("alice") {
		t.Error("Unfreeze: was not frozen")
	}
	if err := <-done; !errors.Is(err, syscall.EROFS) {
		t.Errorf("held write after the flip: %v, want EROFS", err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.Backing, "acct/alice/f")); string(b) != "one" {
		t.Errorf("backing file %q, want unchanged", b)
	}
	if e.FS.Unfreeze("alice") {
		t.Error("second Unfreeze reported a freeze")
	}

	// A freeze expires by itself; the held write then proceeds.
	e.Roles.Set("alice", rolemap.Master)
	if _, err := e.FS.Freeze(ctx, "alice", 0, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(af, []byte("three"), 0o600))
	if _, ok := e.FS.FrozenFor("alice"); ok {
		t.Error("still frozen after the write went through")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func containsStr(s, sub string) bool {
	return strings.Contains(s, sub)
}

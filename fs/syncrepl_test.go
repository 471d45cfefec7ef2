package fs_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"mreplfs/fs"
	"mreplfs/fs/mounttest"
	"mreplfs/journal"
	"mreplfs/rolemap"
)

// syncEnv mounts a tree with masters alice and bob and the given sync
// settings.
func syncEnv(t *testing.T, set *fs.SyncSettings) *mounttest.Env {
	t.Helper()
	e := mounttest.Mount(t, mounttest.Options{})
	for _, a := range []string{"alice", "bob"} {
		e.Roles.Set(a, rolemap.Master)
		must(t, os.MkdirAll(filepath.Join(e.Backing, "acct", a), 0o755))
	}
	e.FS.SetSyncSettings(set)
	return e
}

// writeSync writes name under the mount and fsyncs it; the fsync's result
// comes on the channel.
func writeSync(t *testing.T, e *mounttest.Env, rel, body string) <-chan error {
	t.Helper()
	f, err := os.Create(filepath.Join(e.Mnt, rel))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(body); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		err := f.Sync()
		f.Close()
		done <- err
	}()
	return done
}

func syncStatus(e *mounttest.Env, account string) (fs.SyncStatus, fs.SyncAccountStatus) {
	st := e.FS.SyncStatus()
	for _, a := range st.Accounts {
		if a.Account == account {
			return st, a
		}
	}
	return st, fs.SyncAccountStatus{}
}

// TestSyncFsyncWaitsForReplica: in sync mode an fsync returns only when the
// replica's applied position covers every record of the account; an async
// account's fsync meanwhile is not held up.
func TestSyncFsyncWaitsForReplica(t *testing.T) {
	e := syncEnv(t, &fs.SyncSettings{Default: fs.SyncRule{Timeout: time.Minute},
		Accounts: map[string]fs.SyncRule{"alice": {Mode: fs.SyncSync, Timeout: time.Minute}}})
	done := writeSync(t, e, "acct/alice/1.", "message one")
	select {
	case err := <-done:
		t.Fatalf("sync fsync returned (%v) before the replica acked", err)
	case <-time.After(300 * time.Millisecond):
	}
	// bob is async: his fsync completes while alice's waits.
	if err := <-writeSync(t, e, "acct/bob/1.", "bob's"); err != nil {
		t.Fatalf("async fsync: %v", err)
	}
	appended, _ := e.FS.AccountPositions("alice")
	if appended == 0 {
		t.Fatal("no appended position for alice")
	}
	e.FS.NoteAcked(map[string]uint64{"alice": appended - 1, "bob": 1 << 40})
	select {
	case err := <-done:
		t.Fatalf("sync fsync returned (%v) with the replica one record behind", err)
	case <-time.After(200 * time.Millisecond):
	}
	// The ack comes the way the peer process sends it: the control socket.
	sock := serveControl(t, e)
	rep, err := fs.ControlCall(context.Background(), sock, fs.ControlRequest{Cmd: "acked", Positions: map[string]uint64{"alice": appended}})
	if err != nil || !rep.OK {
		t.Fatalf("acked: %+v %v", rep, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sync fsync: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sync fsync still waiting after the replica acked")
	}
	st, as := syncStatus(e, "alice")
	if st.Waits != 1 || st.Timeouts != 0 || as.Mode != "sync" || as.Applied != appended {
		t.Errorf("status %+v alice %+v; want 1 wait, no timeout, alice sync applied %d", st, as, appended)
	}
	rep, err = fs.ControlCall(context.Background(), sock, fs.ControlRequest{Cmd: "positions", Account: "alice"})
	if err != nil || rep.Appended != appended || rep.Applied != appended {
		t.Errorf("positions: %+v %v; want appended = applied = %d", rep, err, appended)
	}
}

func serveControl(t *testing.T, e *mounttest.Env) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&fs.Control{FS: e.FS}).Serve(ctx, sock) }()
	t.Cleanup(func() { cancel(); <-done })
	for range 200 {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("control socket did not appear")
	return ""
}

// TestSyncTimeoutDegrade: with the degrade policy a missing ack makes the
// fsync succeed after the timeout, marks the account degraded (status and
// counters), later fsyncs do not wait, and an ack that catches up switches
// the account back to sync.
func TestSyncTimeoutDegrade(t *testing.T) {
	rule := fs.SyncRule{Mode: fs.SyncSync, Policy: fs.PolicyDegrade, Timeout: 150 * time.Millisecond}
	e := syncEnv(t, &fs.SyncSettings{Default: rule})
	start := time.Now()
	if err := <-writeSync(t, e, "acct/alice/1.", "one"); err != nil {
		t.Fatalf("degrade: fsync failed: %v", err)
	}
	if d := time.Since(start); d < rule.Timeout {
		t.Fatalf("fsync returned after %v, before the %v timeout", d, rule.Timeout)
	}
	st, as := syncStatus(e, "alice")
	if !as.Degraded || st.Degrades != 1 || st.Timeouts != 1 {
		t.Fatalf("after a timeout: status %+v alice %+v; want alice degraded, 1 degrade", st, as)
	}
	// Degraded: the next fsync does not wait.
	if err := <-writeSync(t, e, "acct/alice/2.", "two"); err != nil {
		t.Fatal(err)
	}
	if st, _ := syncStatus(e, "alice"); st.Waits != 1 {
		t.Fatalf("a degraded account's fsync waited (waits %d)", st.Waits)
	}
	appended, _ := e.FS.AccountPositions("alice")
	e.FS.NoteAcked(map[string]uint64{"alice": appended})
	st, as = syncStatus(e, "alice")
	if as.Degraded || st.Restores != 1 {
		t.Fatalf("after catching up: status %+v alice %+v; want restored", st, as)
	}
	// Sync again: the next fsync waits (and times out again).
	if err := <-writeSync(t, e, "acct/alice/3.", "three"); err != nil {
		t.Fatal(err)
	}
	if st, _ := syncStatus(e, "alice"); st.Waits != 2 || st.Degrades != 2 {
		t.Fatalf("after restore: %+v; want a second wait and degrade", st)
	}
}

// TestSyncTimeoutRefuse: with the refuse policy a missing ack is EIO, and
// the account stays in sync mode.
func TestSyncTimeoutRefuse(t *testing.T) {
	e := syncEnv(t, &fs.SyncSettings{Default: fs.SyncRule{Timeout: time.Second},
		Accounts: map[string]fs.SyncRule{"alice": {Mode: fs.SyncSync, Policy: fs.PolicyRefuse, Timeout: 100 * time.Millisecond}}})
	for i := range 2 {
		err := <-writeSync(t, e, "acct/alice/"+string(rune('1'+i))+".", "x")
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("refuse: fsync %d: %v, want EIO", i, err)
		}
	}
	st, as := syncStatus(e, "alice")
	if st.Refusals != 2 || as.Degraded || st.Degrades != 0 {
		t.Fatalf("status %+v alice %+v; want 2 refusals, not degraded", st, as)
	}
	appended, _ := e.FS.AccountPositions("alice")
	e.FS.NoteAcked(map[string]uint64{"alice": appended})
	if err := <-writeSync(t, e, "acct/alice/3.", ""); err == nil {
		t.Fatal("a new record was not acked, yet the fsync succeeded")
	}
	// Files of no account, replica or local accounts never wait.
	if err := <-writeSync(t, e, "other", "x"); err != nil {
		t.Fatal(err)
	}
}

// TestSyncSettingsChangeLive: switching an account between async and sync
// takes effect at the next fsync, no remount.
func TestSyncSettingsChangeLive(t *testing.T) {
	e := syncEnv(t, nil)
	if err := <-writeSync(t, e, "acct/alice/1.", "one"); err != nil {
		t.Fatal(err)
	}
	e.FS.SetSyncSettings(&fs.SyncSettings{Default: fs.SyncRule{Mode: fs.SyncSync, Policy: fs.PolicyRefuse, Timeout: 50 * time.Millisecond}})
	if err := <-writeSync(t, e, "acct/alice/2.", "two"); !errors.Is(err, syscall.EIO) {
		t.Fatalf("after switching to sync/refuse: %v, want EIO", err)
	}
	e.FS.SetSyncSettings(&fs.SyncSettings{Default: fs.SyncRule{Mode: fs.SyncAsync}})
	if err := <-writeSync(t, e, "acct/alice/3.", "three"); err != nil {
		t.Fatalf("back to async: %v", err)
	}
}

// TestFirstMutationActivatesAccount: before the backing store changes for a
// quiet account, the account is in the journal's durable activity log, so
// a crash before its record is durable lists it for verification.
func TestFirstMutationActivatesAccount(t *testing.T) {
	jdir := filepath.Join(t.TempDir(), "journal")
	lg, err := journal.Open(jdir, journal.Options{SyncEvery: time.Hour, Logger: mounttest.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	e := mounttest.Mount(t, mounttest.Options{Journal: lg})
	t.Cleanup(func() { lg.Close() }) // after the unmount (cleanups run last first)
	e.Roles.Set("alice", rolemap.Master)
	must(t, os.MkdirAll(filepath.Join(e.Backing, "acct/alice"), 0o755))
	active, _ := os.ReadFile(filepath.Join(jdir, "active"))
	if bytes.Contains(active, []byte("alice")) {
		t.Fatal("alice active before any mutation")
	}
	// No fsync, no commit due for an hour: only Activate writes the log.
	must(t, os.WriteFile(filepath.Join(e.Mnt, "acct/alice/1."), []byte("x"), 0o600))
	active, err = os.ReadFile(filepath.Join(jdir, "active"))
	if err != nil || !bytes.Contains(active, []byte("alice")) {
		t.Fatalf("after alice's first write the durable activity log is %q (%v); want alice in it", active, err)
	}
}

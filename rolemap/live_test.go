package rolemap

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// countingHandler counts log messages containing a substring and forwards
// every record to t.Log.
type countingHandler struct {
	slog.Handler
	substr string
	n      *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(as), h.substr, h.n}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(name), h.substr, h.n}
}

// startLive opens a Live map and runs it until the test ends.
func startLive(t *testing.T, path string, poll time.Duration, failures *atomic.Int64) *Live {
	t.Helper()
	log := testLogger(t)
	if failures != nil {
		log = slog.New(countingHandler{log.Handler(), "reload failed", failures})
	}
	l, err := NewLive(path, LiveOptions{Logger: log, Poll: poll})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func oneAccount(epoch uint64) []Record {
	return []Record{{"alice", Entry{Master, "10.0.0.2:7000", epoch}}}
}

func TestLiveReloadOnReplace(t *testing.T) {
	dir := t.TempDir()
	path := buildMap(t, dir, "roles.cdb", oneAccount(1))
	l := startLive(t, path, 10*time.Millisecond, nil)
	if e, ok := l.Lookup("alice"); !ok || e.Epoch != 1 {
		t.Fatalf("Lookup: got %v, %v; want epoch 1", e, ok)
	}
	buildMap(t, dir, "roles.cdb", append(oneAccount(2), Record{"bob", Entry{Local, "", 0}}))
	waitFor(t, "the poll to load epoch 2", func() bool { e, _ := l.Lookup("alice"); return e.Epoch == 2 })
	if e, ok := l.Lookup("bob"); !ok || e.Role != Local {
		t.Fatalf("Lookup(bob): got %v, %v; want local", e, ok)
	}
	if l.Len() != 2 {
		t.Fatalf("Len: got %d, want 2", l.Len())
	}
	// Removing the file keeps the map in service.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if e, ok := l.Lookup("alice"); !ok || e.Epoch != 2 {
		t.Fatalf("Lookup after the file went away: got %v, %v; want epoch 2", e, ok)
	}
}

func TestLiveSIGHUP(t *testing.T) {
	// Keep SIGHUP from killing the test binary before Run has subscribed.
	guard := make(chan os.Signal, 16)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)

	dir := t.TempDir()
	path := buildMap(t, dir, "roles.cdb", oneAccount(1))
	l := startLive(t, path, time.Hour, nil) // the poll never fires: only SIGHUP reloads
	buildMap(t, dir, "roles.cdb", oneAccount(2))
	time.Sleep(20 * time.Millisecond)
	if e, _ := l.Lookup("alice"); e.Epoch != 1 {
		t.Fatalf("map changed without SIGHUP: %v", e)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if e, _ := l.Lookup("alice"); e.Epoch == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the map")
		}
	}
}

func TestLiveCorruptKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := buildMap(t, dir, "roles.cdb", oneAccount(1))
	var failures atomic.Int64
	l := startLive(t, path, 10*time.Millisecond, &failures)

	replace := func(data []byte) {
		tmp := filepath.Join(dir, "tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	good, _ := os.ReadFile(path)
	for _, bad := range [][]byte{nil, []byte("garbage"), good[:len(good)-1], make([]byte, 4096)} {
		before := failures.Load()
		replace(bad)
		waitFor(t, "the poll to try the corrupt file", func() bool { return failures.Load() > before })
		if e, ok := l.Lookup("alice"); !ok || e.Epoch != 1 {
			t.Fatalf("Lookup after a corrupt replacement: got %v, %v; want the old epoch 1", e, ok)
		}
		// A file version that failed is not retried by the poll...
		n := failures.Load()
		time.Sleep(60 * time.Millisecond)
		if got := failures.Load(); got != n {
			t.Fatalf("the poll retried the same corrupt file %d times", got-n)
		}
		// ...but Reload tries again and says why.
		if err := l.Reload(); err == nil {
			t.Fatal("Reload of a corrupt file: got nil error")
		}
	}
	buildMap(t, dir, "roles.cdb", oneAccount(3))
	waitFor(t, "the good file to load", func() bool { e, _ := l.Lookup("alice"); return e.Epoch == 3 })
}

// TestLiveConcurrent reloads while lookups run (go test -race): every lookup
// finds the account, in one generation or the other.
func TestLiveConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := buildMap(t, dir, "roles.cdb", records(300, 100))
	l, err := NewLive(path, LiveOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var lookups atomic.Int64
	var bad atomic.Value
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				e, ok := l.Lookup("user0000001@example.com")
				if !ok || e.Role != Replica || (e.Epoch != 100 && e.Epoch != 200) {
					bad.Store(e)
					return
				}
				lookups.Add(1)
			}
		})
	}
	for i := range 40 {
		epoch := uint64(100)
		if i%2 == 0 {
			epoch = 200
		}
		buildMap(t, dir, "roles.cdb", records(300, epoch))
		if err := l.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "lookups", func() bool { return lookups.Load() > 1000 || bad.Load() != nil })
	stop.Store(true)
	wg.Wait()
	if e := bad.Load(); e != nil {
		t.Fatalf("a lookup during reloads got %v", e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if e, ok := l.Lookup("user0000001@example.com"); ok || e.Role != Unknown {
		t.Fatalf("Lookup after Close: got %v, %v; want unknown", e, ok)
	}
	if err := l.Reload(); err == nil {
		t.Fatal("Reload after Close: got nil error")
	}
}

func TestNewLiveMissing(t *testing.T) {
	if _, err := NewLive(filepath.Join(t.TempDir(), "none.cdb"), LiveOptions{}); err == nil {
		t.Fatal("NewLive of a missing file: got nil error")
	}
}

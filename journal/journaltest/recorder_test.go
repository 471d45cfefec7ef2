package journaltest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"mreplfs/journal"
)

func TestRecorder(t *testing.T) {
	ctx := context.Background()
	var rec Recorder
	data := []byte("abc")
	r := journal.Record{Op: journal.OpWrite, Account: "alice", Path: "x", Data: data}
	lsn, err := rec.Append(ctx, &r)
	if err != nil || lsn != 1 || r.LSN != 1 {
		t.Fatalf("Append: got %d, %v (r.LSN %d), want 1", lsn, err, r.LSN)
	}
	data[0] = 'X' // the recorder must have copied
	if got := rec.Records(); len(got) != 1 || string(got[0].Data) != "abc" {
		t.Fatalf("Records: got %+v", got)
	}
	if rec.Durable() != 0 {
		t.Fatalf("Durable before Sync: got %d, want 0", rec.Durable())
	}
	if err := rec.Sync(ctx, 5); err != nil || rec.Durable() != 1 {
		t.Fatalf("Sync: %v, durable %d, want 1", err, rec.Durable())
	}

	boom := errors.New("boom")
	rec.OnAppend = func(context.Context, *journal.Record) error { return boom }
	if _, err := rec.Append(ctx, &r); !errors.Is(err, boom) || len(rec.Records()) != 1 {
		t.Fatalf("Append with hook: got %v, %d records", err, len(rec.Records()))
	}

	src := filepath.Join(t.TempDir(), "m")
	os.WriteFile(src, []byte("body"), 0o600)
	h := [32]byte{1}
	if err := rec.PutBlob(ctx, h, src); err != nil {
		t.Fatal(err)
	}
	if b, ok := rec.Blob(h); !ok || string(b) != "body" {
		t.Fatalf("Blob: got %q, %v", b, ok)
	}
}

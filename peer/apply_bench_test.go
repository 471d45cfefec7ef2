package peer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mreplfs/journal"
)

// BenchmarkApplyRenames applies batches of the small-file workload (a file
// written under a temporary name, then renamed: 2 records per file), 200
// files per batch, as a backlog arrives. Each rename is checkpointed before
// it (the message under its temporary name), so this measures what a
// checkpoint costs as a batch grows.
//
//	go test -run '^$' -bench ApplyRenames -benchtime 5x ./peer
func BenchmarkApplyRenames(b *testing.B) {
	root, state := b.TempDir(), b.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "spool", "alice"), 0o755); err != nil {
		b.Fatal(err)
	}
	a, err := OpenDirApplier(ApplierOptions{Trees: map[string]string{"spool": filepath.Join(root, "spool")}, StateDir: state,
		CheckPath: func(account, tree, rel string) error {
			if strings.SplitN(rel, "/", 2)[0] != account {
				return fmt.Errorf("not %s's", account)
			}
			return nil
		}})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	const perBatch = 200
	body := make([]byte, 8192)
	lsn := journal.LSN(0)
	n := 0
	b.ResetTimer()
	for range b.N {
		recs := make([]journal.Record, 0, 2*perBatch)
		for range perBatch {
			n++
			tmp, final := fmt.Sprintf("alice/tmp%d", n), fmt.Sprintf("alice/%d.", n)
			lsn++
			m := msg("alice", tmp, body, true)
			m.LSN, m.Tree, m.Epoch = lsn, "spool", 1
			m.PrevSize = -1
			lsn++
			rn := journal.Record{Op: journal.OpRename, Account: "alice", Tree: "spool", Path: tmp, NewPath: final, LSN: lsn, Epoch: 1, PrevSize: -1}
			recs = append(recs, m, rn)
		}
		res, err := a.ApplyBatch(context.Background(), recs, nil)
		if err != nil {
			b.Fatal(err)
		}
		if e := res.Errors["alice"]; e != nil {
			b.Fatal(e)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "files/s")
}

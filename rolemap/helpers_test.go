package rolemap

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testLogger routes logs to t.Log, so they show only for failing tests.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = tWriter{}

// records makes n accounts cycling through the roles and a few partners.
func records(n int, epoch uint64) []Record {
	recs := make([]Record, n)
	for i := range recs {
		r := Record{Account: fmt.Sprintf("user%07d@example.com", i)}
		switch i % 3 {
		case 0:
			r.Entry = Entry{Master, fmt.Sprintf("10.0.0.%d:7000", i%5+1), epoch + uint64(i)}
		case 1:
			r.Entry = Entry{Replica, fmt.Sprintf("10.0.1.%d:7000", i%7+1), epoch}
		default:
			r.Entry = Entry{Local, "", epoch}
		}
		recs[i] = r
	}
	return recs
}

// buildMap builds recs into dir/name and returns the path.
func buildMap(t testing.TB, dir, name string, recs []Record) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := Build(path, recs); err != nil {
		t.Fatal(err)
	}
	return path
}

// dirNames lists dir's entries.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

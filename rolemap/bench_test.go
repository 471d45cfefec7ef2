package rolemap

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

const benchAccounts = 1_000_000

// BenchmarkLookup looks accounts up in a 1,000,000-account map, in random
// order (hits), accounts that are not there (misses), and through a Live map
// from parallel goroutines.
func BenchmarkLookup(b *testing.B) {
	recs := records(benchAccounts, 1)
	path := buildMap(b, b.TempDir(), "roles.cdb", recs)
	m, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	names := make([]string, len(recs))
	for i, j := range rand.New(rand.NewPCG(1, 1)).Perm(len(recs)) {
		names[i] = recs[j].Account
	}
	misses := make([]string, len(names))
	for i := range misses {
		misses[i] = names[i] + ".missing"
	}
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok := m.Lookup(names[i]); !ok {
				b.Fatal("miss")
			}
			if i++; i == len(names) {
				i = 0
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok := m.Lookup(misses[i]); ok {
				b.Fatal("hit")
			}
			if i++; i == len(misses) {
				i = 0
			}
		}
	})
	b.Run("live-parallel", func(b *testing.B) {
		l, err := NewLive(path, LiveOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(names))
			for pb.Next() {
				if _, ok := l.Lookup(names[i]); !ok {
					b.Fatal("miss")
				}
				if i++; i == len(names) {
					i = 0
				}
			}
		})
	})
}

// BenchmarkBuild1M builds a 1,000,000-account map (write, fsync, rename) and
// then opens it (Open checks every record).
func BenchmarkBuild1M(b *testing.B) {
	recs := records(benchAccounts, 1)
	dir := b.TempDir()
	path := filepath.Join(dir, "roles.cdb")
	b.ReportAllocs()
	for b.Loop() {
		if err := Build(path, recs); err != nil {
			b.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "MiB")
}

// BenchmarkOpen1M opens (and fully checks) a 1,000,000-account map: the cost
// of a reload.
func BenchmarkOpen1M(b *testing.B) {
	path := buildMap(b, b.TempDir(), "roles.cdb", records(benchAccounts, 1))
	b.ReportAllocs()
	for b.Loop() {
		m, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
}

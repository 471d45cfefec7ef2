package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExpectedNamesWhatTheWorkloadWrites: the watcher on the replica polls
// for shape.expected(); it must be exactly the last file of each delivery
// the writer reports, and that file must exist.
func TestExpectedNamesWhatTheWorkloadWrites(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		run  func([]string) error
	}{
		{"plain", []string{"-n", "7"}, runPlain},
		{"cyrus1", []string{"-n", "23", "-rcpt", "1"}, runCyrus},
		{"cyrus10", []string{"-n", "3", "-rcpt", "10"}, runCyrus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			done := filepath.Join(root, "done.txt")
			stdout := os.Stdout
			os.Stdout, _ = os.Open(os.DevNull)
			err := tc.run(append([]string{"-root", root, "-done", done, "-min", "100", "-max", "300"}, tc.args...))
			os.Stdout = stdout
			if err != nil {
				t.Fatal(err)
			}
			mode := "plain"
			if tc.name != "plain" {
				mode = "cyrus"
			}
			s := &shape{mode: mode, rcpt: 1, min: 100, max: 300}
			s.n = map[string]int{"plain": 7, "cyrus1": 23, "cyrus10": 3}[tc.name]
			if tc.name == "cyrus10" {
				s.rcpt = 10
			}
			if err := s.check(root, ""); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(done)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var got []string
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				got = append(got, strings.Fields(sc.Text())[0])
			}
			want := s.expected()
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("writer reported %q,\nwatcher expects %q", got, want)
			}
			for _, rel := range want {
				if _, err := os.Stat(filepath.Join(root, rel)); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

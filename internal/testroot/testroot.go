// Package testroot is for tests that need root (chown, setfsuid, mounts):
// under CI (CI=true, which runs as root) they fail loudly without it; on a
// developer's machine they skip.
package testroot

import (
	"os"
	"testing"
)

// Require fails (CI=true) or skips the test unless it runs as root.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI runs as root")
	}
	t.Skip("this test needs root")
}

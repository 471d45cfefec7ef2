package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"mreplfs/peer"
)

func certCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

func TestCert(t *testing.T) {
	dir := t.TempDir()
	if code, _, errs := certCLI(t, "cert", "ca", "-dir", dir); code != ExitOK {
		t.Fatalf("cert ca: exit %d: %s", code, errs)
	}
	if code, out, errs := certCLI(t, "cert", "node", "-dir", dir, "-name", "srv-a", "-host", "10.77.0.1,localhost"); code != ExitOK || !strings.Contains(out, "srv-a.crt") {
		t.Fatalf("cert node: exit %d: %s %s", code, out, errs)
	}
	f := peer.TLSFiles{Cert: filepath.Join(dir, "srv-a.crt"), Key: filepath.Join(dir, "srv-a.key"), CA: filepath.Join(dir, "ca.crt")}
	if _, err := f.ServerConfig(); err != nil {
		t.Fatalf("generated files do not load: %v", err)
	}
	// A second run must not overwrite the key.
	if code, _, errs := certCLI(t, "cert", "node", "-dir", dir, "-name", "srv-a"); code != ExitFailure || !strings.Contains(errs, "refusing to overwrite") {
		t.Fatalf("overwrite: exit %d: %s", code, errs)
	}
	for _, args := range [][]string{{"cert"}, {"cert", "bogus"}, {"cert", "node", "-dir", dir}, {"cert", "ca", "extra"}} {
		if code, _, errs := certCLI(t, args...); code != ExitUsage || !strings.Contains(errs, "Try:") {
			t.Errorf("%q: exit %d, stderr %q; want %d with a Try: hint", args, code, errs, ExitUsage)
		}
	}
	if code, _, _ := certCLI(t, "cert", "node", "-dir", t.TempDir(), "-name", "x"); code != ExitFailure {
		t.Errorf("node without CA: exit %d, want %d", code, ExitFailure)
	}
}

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"mreplfs/peer"
)

// runCert makes a test CA and node certificates for the peers' mutual TLS.
//
//	mreplfs cert ca -dir DIR                      → DIR/ca.crt, DIR/ca.key
//	mreplfs cert node -dir DIR -name NODE [-host H,...] → DIR/NODE.crt, DIR/NODE.key
func runCert(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "cert", "ca|node -dir DIR [-name NODE] [-host ADDR,...]")
	dir := fs.String("dir", ".", "directory holding ca.crt/ca.key and where new files go")
	name := fs.String("name", "", "node id (node certificates): the certificate's common name")
	hosts := fs.String("host", "", "comma-separated IP addresses or DNS names the node serves on")
	days := fs.Int("days", 825, "validity in days")
	if len(args) == 0 {
		fs.Usage()
		return usagef("missing ca or node")
	}
	what := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	validity := time.Duration(*days) * 24 * time.Hour
	switch what {
	case "ca":
		p, err := peer.NewCA("mreplfs CA", validity)
		if err != nil {
			return err
		}
		if err := writeCertPair(*dir, "ca", p); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s and %s\n", filepath.Join(*dir, "ca.crt"), filepath.Join(*dir, "ca.key"))
		return nil
	case "node":
		if *name == "" || strings.ContainsAny(*name, "/ \t") {
			return usagef("node needs -name NODE (no spaces or slashes)")
		}
		certPEM, err := os.ReadFile(filepath.Join(*dir, "ca.crt"))
		if err != nil {
			return fmt.Errorf("read CA (run 'mreplfs cert ca -dir %s' first): %w", *dir, err)
		}
		keyPEM, err := os.ReadFile(filepath.Join(*dir, "ca.key"))
		if err != nil {
			return fmt.Errorf("read CA key: %w", err)
		}
		var hl []string
		if *hosts != "" {
			hl = strings.Split(*hosts, ",")
		}
		p, err := peer.NewNodeCert(peer.CertPair{CertPEM: certPEM, KeyPEM: keyPEM}, *name, hl, validity)
		if err != nil {
			return err
		}
		if err := writeCertPair(*dir, *name, p); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s and %s\n", filepath.Join(*dir, *name+".crt"), filepath.Join(*dir, *name+".key"))
		return nil
	}
	return usagef("unknown cert kind %q (want ca or node)", what)
}

func writeCertPair(dir, name string, p peer.CertPair) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	key := filepath.Join(dir, name+".key")
	if _, err := os.Stat(key); err == nil {
		return fmt.Errorf("%s exists: refusing to overwrite a key", key)
	}
	if err := os.WriteFile(key, p.KeyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".crt"), p.CertPEM, 0o644)
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The guests' addresses and the peers' port.
const (
	ipA, ipB = "10.99.0.1", "10.99.0.2"
	peerPort = "7411"
)

// benchAccounts are every account a workload writes (load's defaults).
var benchAccounts = []string{"plainbox", "mbox00", "mbox01", "mbox02", "mbox03", "mbox04", "mbox05", "mbox06", "mbox07", "mbox08", "mbox09"}

// mreplfsHasSync says whether the mount knows the sync_mode setting.
func mreplfsHasSync(ctx context.Context, bin string) (bool, error) {
	out, _ := exec.CommandContext(ctx, bin, "mount", "-h").CombinedOutput()
	if !bytes.Contains(out, []byte("Config file settings")) {
		return false, fmt.Errorf("mreplfs mount -h: unexpected output: %s", lastLines(out, 3))
	}
	return bytes.Contains(out, []byte("sync_mode")), nil
}

// Guest paths. Guest a: the plain disk (ubdb) at /mnt/plain holds the
// mreplfs backing trees and journal; the mount is at /mnt/mr. Guest b: its
// plain disk holds the replica's backing trees and the peer's state.
const (
	gPlain   = "/mnt/plain"
	gBacking = "/mnt/plain/backing"
	gMount   = "/mnt/mr"
	gDRBD    = "/mnt/drbd"
	gEtc     = "/mnt/etc"
)

// writeGuestConfigs writes certificates, role maps and the mount and peer
// configs of both guests into dir (they go into the initramfs as
// /etc/mreplfs), and the DRBD resource for each protocol (/etc/drbd-P.conf).
func writeGuestConfigs(ctx context.Context, mreplfs, dir string, sync bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	run := func(args ...string) error {
		if out, err := exec.CommandContext(ctx, mreplfs, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("mreplfs %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("cert", "ca", "-dir", dir); err != nil {
		return err
	}
	for _, n := range [][2]string{{"srv-a", ipA}, {"srv-b", ipB}} {
		if err := run("cert", "node", "-dir", dir, "-name", n[0], "-host", n[1]); err != nil {
			return err
		}
	}
	for _, side := range []struct{ name, role, partner string }{{"a", "master", ipB}, {"b", "replica", ipA}} {
		var sb strings.Builder
		for _, acct := range benchAccounts {
			fmt.Fprintf(&sb, "%-9s %-8s %s:%s 1\n", acct, side.role, side.partner, peerPort)
		}
		txt := filepath.Join(dir, side.name+"-roles.txt")
		if err := os.WriteFile(txt, []byte(sb.String()), 0o644); err != nil {
			return err
		}
		if err := run("rolemap", "build", txt, filepath.Join(dir, side.name+"-roles.cdb")); err != nil {
			return err
		}
	}
	trees := func(mounted bool) string {
		var sb strings.Builder
		for _, t := range []string{"conf", "spool", "meta"} {
			if mounted {
				fmt.Fprintf(&sb, "tree: %s=%s/%s:%s/%s\n", t, gBacking, t, gMount, t)
			} else {
				fmt.Fprintf(&sb, "tree: %s=%s/%s\n", t, gBacking, t)
			}
		}
		return sb.String()
	}
	tls := func(node string) string {
		return fmt.Sprintf("tls_cert: %s/%s.crt\ntls_key: %s/%s.key\ntls_ca: %s/ca.crt\n", gEtc, node, gEtc, node, gEtc)
	}
	mount := trees(true) + fmt.Sprintf("roles: %s/a-roles.cdb\njournal: %s/journal\n", gEtc, gPlain)
	files := map[string]string{
		"a-mount-async.conf":     mount,
		"a-mount-nojournal.conf": trees(true) + fmt.Sprintf("roles: %s/a-roles.cdb\njournal: none\n", gEtc),
		"a-peer.conf": fmt.Sprintf("node: srv-a\npartner: srv-b=%s:%s\nroles: %s/a-roles.cdb\njournal: %s/journal\nstate: %s/state\n",
			ipB, peerPort, gEtc, gPlain, gPlain) + trees(false) + tls("srv-a"),
		"b-peer.conf": fmt.Sprintf("node: srv-b\nlisten: %s:%s\npartner: srv-a=%s:%s\nroles: %s/b-roles.cdb\njournal: none\ncontrol: none\nstate: %s/state\n",
			ipB, peerPort, ipA, peerPort, gEtc, gPlain) + trees(false) + tls("srv-b"),
	}
	if sync {
		// A long timeout: UML is slow, and a degrade to async would make the
		// row measure something else (the run records degrades anyway).
		files["a-mount-sync.conf"] = mount + "sync_mode: sync\nsync_policy: degrade\nsync_timeout: 60s\n"
	}
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			return err
		}
	}
	for _, p := range []string{"A", "C"} {
		res := fmt.Sprintf(`global { usage-count no; }
resource r0 {
  net { protocol %s; }
  device /dev/drbd0;
  disk /dev/ubda;
  meta-disk internal;
  on a { address %s:7789; }
  on b { address %s:7789; }
}
`, p, ipA, ipB)
		if err := os.WriteFile(filepath.Join(dir, "drbd-"+p+".conf"), []byte(res), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// buildInitrd writes the guests' initramfs: busybox, drbd-utils and mke2fs
// with their libraries, the kernel modules, our static binaries, the
// configs in etc, and init.sh as /init.
func buildInitrd(ctx context.Context, a *assets, etc string) error {
	r := newInitramfs()
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "mnt", "var/lib/drbd", "var/lock", "etc/bench", "root"} {
		r.dir(d)
	}
	if err := r.addBusybox(ctx, a.x); err != nil {
		return err
	}
	for _, p := range []string{"sbin/drbdadm", "sbin/drbdsetup", "sbin/drbdmeta", "lib/drbd/drbdadm-84", "lib/drbd/drbdsetup-84", "sbin/mke2fs"} {
		if err := r.copyELF(a.x, p, p); err != nil {
			return err
		}
	}
	r.symlink("sbin/mkfs.ext4", "mke2fs")
	r.symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
	if _, ok := r.entries["lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"]; !ok {
		if err := r.copyFile("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", filepath.Join(a.x, "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")); err != nil {
			return err
		}
	}
	r.symlink("var/run", "/run")
	if err := r.copyFile("etc/mke2fs.conf", filepath.Join(a.x, "etc/mke2fs.conf")); err != nil {
		return err
	}
	dep, err := os.ReadFile(filepath.Join(a.modDir, "modules.dep"))
	if err != nil {
		return err
	}
	mods, err := moduleOrder(string(dep), guestModules)
	if err != nil {
		return err
	}
	a.modules = nil
	for _, m := range mods {
		gp := filepath.Join("lib/modules", a.kver, m)
		if err := r.copyFile(gp, filepath.Join(a.modDir, m)); err != nil {
			return err
		}
		a.modules = append(a.modules, "/"+gp)
	}
	r.file("etc/bench/modules", []byte(strings.Join(a.modules, "\n")+"\n"), 0o644)
	for _, b := range []string{"load", "mreplfs"} {
		if err := r.copyFile("usr/local/bin/"+b, filepath.Join(a.bin, b)); err != nil {
			return err
		}
	}
	if err := r.addTree(strings.TrimPrefix(gEtc, "/"), etc); err != nil {
		return err
	}
	for _, p := range []string{"A", "C"} {
		if err := r.copyFile("etc/drbd-"+p+".conf", filepath.Join(etc, "drbd-"+p+".conf")); err != nil {
			return err
		}
	}
	r.file("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	r.file("etc/group", []byte("root:x:0:\n"), 0o644)
	r.file("init", initScript, 0o755)
	f, err := os.Create(a.initrd)
	if err != nil {
		return err
	}
	if err := r.write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

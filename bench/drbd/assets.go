package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// guestPackages are the Debian packages the guests are built from.
var guestPackages = []string{"user-mode-linux", "busybox-static", "drbd-utils", "e2fsprogs",
	"libext2fs2", "libcom-err2", "libblkid1", "libuuid1", "libc6"}

// guestModules are the kernel modules the guests load (with their
// dependencies, from the package's modules.dep).
var guestModules = []string{"drbd", "fuse"}

// assets are the host-side paths of everything the guests need.
type assets struct {
	x       string // the unpacked packages
	uml     string // the UML kernel (linux.uml)
	kver    string
	modDir  string
	bin     string // our static binaries: load, mreplfs
	initrd  string
	modules []string // guest paths of the modules, in load order
}

// fetchPackages downloads the packages into cache (once) and unpacks them
// into x.
func fetchPackages(ctx context.Context, log *slog.Logger, cache, x string) error {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return err
	}
	var missing []string
	for _, p := range guestPackages {
		if m, _ := filepath.Glob(filepath.Join(cache, p+"_*.deb")); len(m) == 0 {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		log.Info("apt-get download", "packages", strings.Join(missing, " "))
		download := func() ([]byte, error) {
			cmd := exec.CommandContext(ctx, "apt-get", append([]string{"-q", "-o", "DPkg::Lock::Timeout=600", "download"}, missing...)...)
			cmd.Dir = cache
			return cmd.CombinedOutput()
		}
		if out, err := download(); err != nil {
			// A fresh machine may have no package lists yet.
			log.Info("apt-get download failed; running apt-get update and retrying", "err", err, "output", lastLines(out, 3))
			if out, err := exec.CommandContext(ctx, "apt-get", "-q", "-o", "DPkg::Lock::Timeout=600", "update").CombinedOutput(); err != nil {
				return fmt.Errorf("apt-get update: %w: %s", err, lastLines(out, 5))
			}
			if out, err := download(); err != nil {
				return fmt.Errorf("apt-get download %s: %w: %s", strings.Join(missing, " "), err, lastLines(out, 5))
			}
		}
	}
	if err := os.RemoveAll(x); err != nil {
		return err
	}
	for _, p := range guestPackages {
		m, _ := filepath.Glob(filepath.Join(cache, p+"_*.deb"))
		if len(m) == 0 {
			return fmt.Errorf("package %s: no .deb in %s after apt-get download", p, cache)
		}
		sort.Strings(m)
		if out, err := exec.CommandContext(ctx, "dpkg", "-x", m[len(m)-1], x).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg -x %s: %w: %s", m[len(m)-1], err, out)
		}
	}
	return nil
}

func lastLines(b []byte, n int) string {
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

// buildStatic builds a package of this module as a static binary.
func buildStatic(ctx context.Context, repo, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, out)
	}
	return nil
}

// locate finds the UML kernel and its module directory in a.x.
func (a *assets) locate() error {
	a.uml = filepath.Join(a.x, "usr/bin/linux.uml")
	if _, err := os.Stat(a.uml); err != nil {
		return fmt.Errorf("UML kernel: %w", err)
	}
	ents, err := os.ReadDir(filepath.Join(a.x, "usr/lib/uml/modules"))
	if err != nil || len(ents) == 0 {
		return fmt.Errorf("UML modules: none in the package (%v)", err)
	}
	a.kver = ents[0].Name()
	a.modDir = filepath.Join(a.x, "usr/lib/uml/modules", a.kver)
	return nil
}

// moduleOrder resolves names into module paths (relative to the module
// directory) in load order, dependencies first.
func moduleOrder(modulesDep string, names []string) ([]string, error) {
	deps := map[string][]string{}
	for _, line := range strings.Split(modulesDep, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			deps[k] = strings.Fields(v)
		}
	}
	var order []string
	seen := map[string]bool{}
	var add func(string)
	add = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		for _, d := range deps[p] {
			add(d)
		}
		order = append(order, p)
	}
	for _, n := range names {
		found := ""
		for p := range deps {
			if filepath.Base(p) == n+".ko" {
				found = p
			}
		}
		if found == "" {
			return nil, fmt.Errorf("module %s is not in modules.dep", n)
		}
		add(found)
	}
	return order, nil
}

// initramfs is the guest's root file system, built in memory.
type initramfs struct {
	entries map[string]cpioEntry
}

type cpioEntry struct {
	mode uint32 // type and permission bits
	data []byte // file content or symlink target
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
)

func newInitramfs() *initramfs { return &initramfs{entries: map[string]cpioEntry{}} }

func (r *initramfs) dir(p string) {
	p = strings.Trim(p, "/")
	for d := p; d != "." && d != ""; d = filepath.Dir(d) {
		if _, ok := r.entries[d]; !ok {
			r.entries[d] = cpioEntry{mode: sIFDIR | 0o755}
		}
	}
}

func (r *initramfs) file(p string, data []byte, perm uint32) {
	p = strings.Trim(p, "/")
	r.dir(filepath.Dir(p))
	r.entries[p] = cpioEntry{mode: sIFREG | perm, data: data}
}

func (r *initramfs) symlink(p, target string) {
	p = strings.Trim(p, "/")
	r.dir(filepath.Dir(p))
	r.entries[p] = cpioEntry{mode: sIFLNK | 0o777, data: []byte(target)}
}

// copyFile adds host file src as p, following symlinks.
func (r *initramfs) copyFile(p, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	r.file(p, b, uint32(fi.Mode().Perm()))
	return nil
}

// copyELF adds executable or library src of the unpacked packages x as dst
// and, recursively, the shared libraries it needs (from the same tree) in
// lib/x86_64-linux-gnu.
func (r *initramfs) copyELF(x, src, dst string) error {
	if err := r.copyFile(dst, filepath.Join(x, src)); err != nil {
		return err
	}
	f, err := elf.Open(filepath.Join(x, src))
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	for _, l := range libs {
		lp := "lib/x86_64-linux-gnu/" + l
		if _, ok := r.entries[lp]; ok {
			continue
		}
		found := ""
		for _, d := range []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"} {
			if _, err := os.Stat(filepath.Join(x, d, l)); err == nil {
				found = filepath.Join(d, l)
				break
			}
		}
		if found == "" {
			return fmt.Errorf("%s needs %s, which no unpacked package has", src, l)
		}
		if err := r.copyELF(x, found, lp); err != nil {
			return err
		}
	}
	return nil
}

// write writes the archive (cpio "newc", gzip'd).
func (r *initramfs) write(w io.Writer) error {
	zw := gzip.NewWriter(w)
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Strings(names) // a directory sorts before what it holds
	pad := func(n int) []byte { return make([]byte, (4-n%4)%4) }
	var buf bytes.Buffer
	put := func(ino int, name string, e cpioEntry) {
		nlink := 1
		if e.mode&sIFDIR != 0 {
			nlink = 2
		}
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, 0, 0, len(name)+1, 0)
		buf.WriteString(hdr)
		buf.WriteString(name)
		buf.WriteByte(0)
		buf.Write(pad(len(hdr) + len(name) + 1))
		buf.Write(e.data)
		buf.Write(pad(len(e.data)))
	}
	for i, n := range names {
		put(i+1, n, r.entries[n])
		if buf.Len() > 1<<20 {
			if _, err := zw.Write(buf.Bytes()); err != nil {
				return err
			}
			buf.Reset()
		}
	}
	put(0, "TRAILER!!!", cpioEntry{})
	if _, err := zw.Write(buf.Bytes()); err != nil {
		return err
	}
	return zw.Close()
}

// addBusybox installs busybox and a link for each of its applets.
func (r *initramfs) addBusybox(ctx context.Context, x string) error {
	bb := filepath.Join(x, "bin/busybox")
	if err := r.copyFile("bin/busybox", bb); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" {
			r.symlink("bin/"+a, "busybox")
		}
	}
	return nil
}

// addTree adds every regular file under host directory src as dst/….
func (r *initramfs) addTree(dst, src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		return r.copyFile(filepath.Join(dst, rel), p)
	})
}

package main

import (
	"bytes"
	"compress/gzip"
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
)

// TestInitramfsNewc reads the archive back by the newc rules the kernel
// uses: every parent directory before its entries, 4-byte alignment, the
// right modes and contents, a trailer.
func TestInitramfsNewc(t *testing.T) {
	r := newInitramfs()
	r.file("usr/local/bin/load", []byte("binary!"), 0o755)
	r.symlink("sbin/mkfs.ext4", "mke2fs")
	r.file("init", []byte("#!/bin/sh\n"), 0o755)
	var buf bytes.Buffer
	if err := r.write(&buf); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	type ent struct {
		mode uint64
		data string
	}
	got := map[string]ent{}
	var order []string
	for off := 0; ; {
		if string(raw[off:off+6]) != "070701" {
			t.Fatalf("offset %d: magic %q", off, raw[off:off+6])
		}
		field := func(i int) uint64 {
			v, err := strconv.ParseUint(string(raw[off+6+8*i:off+14+8*i]), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		mode, size, nameLen := field(1), int(field(6)), int(field(11))
		name := string(raw[off+110 : off+110+nameLen-1])
		off += 110 + nameLen
		off += (4 - off%4) % 4
		data := string(raw[off : off+size])
		off += size
		off += (4 - off%4) % 4
		if name == "TRAILER!!!" {
			break
		}
		got[name] = ent{mode, data}
		order = append(order, name)
	}
	seen := map[string]bool{}
	for _, n := range order {
		if i := strings.LastIndex(n, "/"); i > 0 && !seen[n[:i]] {
			t.Errorf("%s comes before its directory %s", n, n[:i])
		}
		seen[n] = true
	}
	want := map[string]ent{
		"usr": {sIFDIR | 0o755, ""}, "usr/local": {sIFDIR | 0o755, ""}, "usr/local/bin": {sIFDIR | 0o755, ""},
		"usr/local/bin/load": {sIFREG | 0o755, "binary!"}, "sbin": {sIFDIR | 0o755, ""},
		"sbin/mkfs.ext4": {sIFLNK | 0o777, "mke2fs"}, "init": {sIFREG | 0o755, "#!/bin/sh\n"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("archive holds\n%v\nwant\n%v", got, want)
	}
}

func TestModuleOrder(t *testing.T) {
	dep := "kernel/fs/fuse/fuse.ko:\nkernel/fs/fuse/cuse.ko: kernel/fs/fuse/fuse.ko\n" +
		"kernel/drivers/block/drbd/drbd.ko: kernel/lib/lru_cache.ko\nkernel/lib/lru_cache.ko:\n"
	got, err := moduleOrder(dep, []string{"drbd", "fuse"})
	if err != nil {
		t.Fatal(err)
	}
	want := "kernel/lib/lru_cache.ko kernel/drivers/block/drbd/drbd.ko kernel/fs/fuse/fuse.ko"
	if strings.Join(got, " ") != want {
		t.Errorf("order %q, want %q", got, want)
	}
	if _, err := moduleOrder(dep, []string{"nbd"}); err == nil {
		t.Error("a module missing from modules.dep was accepted")
	}
}

// TestSummarizePairsRounds: the ratio to plain is the median of per-round
// ratios (each run against the plain run of its own round and environment).
func TestSummarizePairsRounds(t *testing.T) {
	rec := func(env string, round int, cfg string, perS float64) record {
		return record{Env: env, Round: round, Workload: "plain", Config: cfg, Check: "ok",
			Result: loadResult{N: 10, PerSec: perS, Payload: 1000}, TxBytes: 1500, RxBytes: 500}
	}
	recs := []record{
		rec("uml", 1, "plain", 100), rec("uml", 1, "drbd-C", 50),
		rec("uml", 2, "plain", 400), rec("uml", 2, "drbd-C", 100),
		rec("uml", 3, "plain", 200), rec("uml", 3, "drbd-C", 180),
		rec("host", 1, "plain", 1), rec("host", 1, "drbd-C", 1000), // another environment: not paired
	}
	ss := summarize(recs, "uml", "plain", []string{"plain", "drbd-C"})
	if len(ss) != 2 {
		t.Fatalf("%d summaries, want 2", len(ss))
	}
	c := ss[1]
	if c.Runs != 3 || c.Ratio != 0.5 || c.RatioMin != 0.25 || c.RatioMax != 0.9 || c.PerSec != 100 || c.Wire != 2 || c.ChecksOK != 3 {
		t.Errorf("drbd-C summary %+v", c)
	}
}

func TestChartIsWellFormedSVG(t *testing.T) {
	s := []summary{{Workload: "plain", Config: "plain", Ratio: 1, Runs: 1}, {Workload: "plain", Config: "drbd-C", Ratio: 0.4, RatioMin: 0.3, RatioMax: 0.5, Wire: 3.1, Runs: 1}}
	svg := chart(map[string][][]summary{"uml": {s}}, reportMeta{Rounds: 1, Configs: []string{"plain", "drbd-C"}, Envs: []string{"uml"}})
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
	}
	for _, want := range []string{configLabel["drbd-C"], ">0.4<", ">3.1<"} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
}

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// counters is a snapshot of what the harness measures inside a guest.
type counters struct {
	TimeNs   int64            `json:"time_ns"`
	CPUBusy  int64            `json:"cpu_busy_ticks"` // user+nice+system+irq+softirq+steal, USER_HZ
	CPUIdle  int64            `json:"cpu_idle_ticks"` // idle+iowait
	NIC      string           `json:"nic"`
	TxBytes  int64            `json:"tx_bytes"`
	RxBytes  int64            `json:"rx_bytes"`
	ICMP     map[string]int64 `json:"icmp"`                 // InEchos, InEchoReps, OutEchos, OutEchoReps
	DRBDSent int64            `json:"drbd_ns_kib"`          // /proc/drbd ns: (KiB sent to the peer)
	Written  map[string]int64 `json:"sectors_written"`      // per block device
	Procs    map[string]int64 `json:"proc_ticks,omitempty"` // utime+stime of the processes named by /run/*.pid
}

func runStat([]string) error {
	c := counters{TimeNs: time.Now().UnixNano(), ICMP: map[string]int64{}, Written: map[string]int64{}}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		v := make([]int64, 9)
		for i := 1; i < len(f) && i < 9; i++ {
			v[i], _ = strconv.ParseInt(f[i], 10, 64)
		}
		c.CPUBusy = v[1] + v[2] + v[3] + v[6] + v[7] + v[8]
		c.CPUIdle = v[4] + v[5]
	}
	if ents, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, e := range ents {
			if e.Name() != "lo" {
				c.NIC = e.Name()
				break
			}
		}
	}
	if c.NIC != "" {
		c.TxBytes = readInt("/sys/class/net/" + c.NIC + "/statistics/tx_bytes")
		c.RxBytes = readInt("/sys/class/net/" + c.NIC + "/statistics/rx_bytes")
	}
	if f, err := os.Open("/proc/net/snmp"); err == nil {
		var keys []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) == 0 || fs[0] != "Icmp:" {
				continue
			}
			if keys == nil {
				keys = fs
				continue
			}
			for i := 1; i < len(fs) && i < len(keys); i++ {
				switch keys[i] {
				case "InEchos", "InEchoReps", "OutEchos", "OutEchoReps":
					c.ICMP[keys[i]], _ = strconv.ParseInt(fs[i], 10, 64)
				}
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/drbd"); err == nil {
		if m := regexp.MustCompile(`ns:(\d+)`).FindSubmatch(b); m != nil {
			c.DRBDSent, _ = strconv.ParseInt(string(m[1]), 10, 64)
		}
	}
	for _, d := range []string{"ubda", "ubdb", "drbd0"} {
		if b, err := os.ReadFile("/sys/block/" + d + "/stat"); err == nil {
			if f := strings.Fields(string(b)); len(f) > 6 {
				c.Written[d], _ = strconv.ParseInt(f[6], 10, 64)
			}
		}
	}
	if pids, _ := filepath.Glob("/run/*.pid"); len(pids) > 0 {
		c.Procs = map[string]int64{}
		for _, pf := range pids {
			pid := strings.TrimSpace(string(must(os.ReadFile(pf))))
			b, err := os.ReadFile("/proc/" + pid + "/stat")
			if err != nil {
				continue
			}
			// Fields after the ")" that ends the command name: state is 3rd, utime 14th, stime 15th.
			f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				s, _ := strconv.ParseInt(f[12], 10, 64)
				c.Procs[strings.TrimSuffix(filepath.Base(pf), ".pid")] = u + s
			}
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	fmt.Printf("STAT %s\n", b)
	return nil
}

func must(b []byte, _ error) []byte { return b }

func readInt(p string) int64 {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v
}

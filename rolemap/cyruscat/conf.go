package cyruscat

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Imapd is what the catalogue needs from a Cyrus imapd.conf.
type Imapd struct {
	Path      string
	ConfigDir string // configdirectory (mailboxes.db, annotations.db)
	// HeaderRoots maps each partition name to the directory that holds its
	// cyrus.header files: metapartition-<name> when metapartition_files
	// lists "header" (and that partition has one), else partition-<name>.
	HeaderRoots map[string]string
	Hash        bool   // hashimapspool
	FullDirHash bool   // fulldirhash
	VirtDomains bool   // virtdomains other than off
	User        string // cyrus_user ("" when not set)
}

// ReadImapd parses an imapd.conf ("key: value" lines, '#' comments; the
// last value of a key wins). Only the keys the catalogue uses are kept.
func ReadImapd(path string) (*Imapd, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cyruscat: %w", err)
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cyruscat: %s: %w", path, err)
	}
	c := &Imapd{Path: path, ConfigDir: kv["configdirectory"], HeaderRoots: map[string]string{},
		Hash: yes(kv["hashimapspool"]), FullDirHash: yes(kv["fulldirhash"]), User: kv["cyrus_user"]}
	switch strings.ToLower(kv["virtdomains"]) {
	case "", "off", "no", "0", "false":
	default:
		c.VirtDomains = true
	}
	if c.ConfigDir == "" {
		return nil, fmt.Errorf("cyruscat: %s: no configdirectory", path)
	}
	headerInMeta := false
	for _, f := range strings.Fields(kv["metapartition_files"]) {
		if f == "header" {
			headerInMeta = true
		}
	}
	for k, v := range kv {
		name, ok := strings.CutPrefix(k, "partition-")
		if !ok || v == "" {
			continue
		}
		root := v
		if m := kv["metapartition-"+name]; headerInMeta && m != "" {
			root = m
		}
		c.HeaderRoots[name] = root
	}
	if len(c.HeaderRoots) == 0 {
		return nil, fmt.Errorf("cyruscat: %s: no partition-<name> setting", path)
	}
	return c, nil
}

// partitions returns the partition names, sorted.
func (c *Imapd) partitions() []string {
	out := make([]string, 0, len(c.HeaderRoots))
	for p := range c.HeaderRoots {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func yes(v string) bool {
	switch strings.ToLower(v) {
	case "1", "yes", "on", "true", "t":
		return true
	}
	return false
}

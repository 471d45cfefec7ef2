package journal

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"mreplfs/internal/durable"
)

// Small state files (consumers, active, unclean, clean) share one text
// format, replaced atomically (temp, fsync, rename, fsync dir):
//
//	mreplfs-journal <kind> v1
//	<one Go-quoted entry per line, optionally followed by " <decimal>">
//	crc32c <8 hex digits over every byte before this line>

func writeListFile(dir, kind string, lines []string) error {
	return writeStateFile(dir, kind, kind+".tmp", kind, lines)
}

// writeStateFile replaces dir/name atomically through dir/tmp.
func writeStateFile(dir, name, tmpName, kind string, lines []string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "mreplfs-journal %s v1\n", kind)
	for _, ln := range lines {
		b.WriteString(ln)
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "crc32c %08x\n", crc32.Checksum(b.Bytes(), crcTable))
	if err := durable.Replace(filepath.Join(dir, name), filepath.Join(dir, tmpName), b.Bytes(), -1, -1); err != nil {
		return fmt.Errorf("journal: write %s: %w", kind, err)
	}
	return nil
}

// readListFile returns the entries of dir/kind; a missing file is no entries.
func readListFile(dir, kind string) ([]string, error) {
	return readStateFile(dir, kind, kind)
}

// readStateFile returns the entries of dir/name, of the given kind; a
// missing file is nil, a file without entries a non-nil empty slice.
func readStateFile(dir, name, kind string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: read %s: %w", kind, err)
	}
	bad := fmt.Errorf("%w: state file %s damaged", ErrCorrupt, kind)
	i := bytes.LastIndex(b[:max(len(b)-1, 0)], []byte("\n"))
	if i < 0 || !bytes.HasSuffix(b, []byte("\n")) {
		return nil, bad
	}
	if string(b[i+1:]) != fmt.Sprintf("crc32c %08x\n", crc32.Checksum(b[:i+1], crcTable)) {
		return nil, bad
	}
	sc := bufio.NewScanner(bytes.NewReader(b[:i+1]))
	sc.Buffer(nil, 1<<20)
	if !sc.Scan() || sc.Text() != fmt.Sprintf("mreplfs-journal %s v1", kind) {
		return nil, bad
	}
	out := []string{}
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out, nil
}

// quotedSet returns the entries as lines, sorted.
func quotedLines(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, strconv.Quote(k))
	}
	slices.Sort(out)
	return out
}

// parseEntry splits `"name" [number]`.
func parseEntry(line string) (string, string, error) {
	q, err := strconv.QuotedPrefix(line)
	if err != nil {
		return "", "", fmt.Errorf("%w: bad state entry %q", ErrCorrupt, line)
	}
	name, _ := strconv.Unquote(q)
	return name, strings.TrimSpace(line[len(q):]), nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

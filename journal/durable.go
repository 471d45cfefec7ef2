package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// durableFile publishes the writer's durable LSN to Followers (doc.go,
// "Followers"): 12 bytes at offset 0, u64 LSN then the CRC-32C of those 8
// bytes, rewritten in place (pwrite, no fsync) after every commit.
const (
	durableFile = "durable"
	durableSize = 12
)

func encodeDurable(b *[durableSize]byte, lsn LSN) {
	binary.LittleEndian.PutUint64(b[0:8], uint64(lsn))
	binary.LittleEndian.PutUint32(b[8:12], crc32.Checksum(b[0:8], crcTable))
}

// decodeDurable returns the LSN in b, or false when b is short or its CRC
// does not match (a read that raced a rewrite, or a file a crash damaged).
func decodeDurable(b []byte) (LSN, bool) {
	if len(b) < durableSize || binary.LittleEndian.Uint32(b[8:12]) != crc32.Checksum(b[0:8], crcTable) {
		return 0, false
	}
	return LSN(binary.LittleEndian.Uint64(b[0:8])), true
}

// openDurable opens (creating) the writer's durable file.
func openDurable(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, durableFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: open durable file: %w", err)
	}
	return f, nil
}

// publishDurable rewrites f with lsn. No fsync: the value is a hint that
// may lag, never lead, the truth (it is written only after the fdatasync
// that made lsn durable, and rewritten at every Open).
func publishDurable(f *os.File, lsn LSN) error {
	var b [durableSize]byte
	encodeDurable(&b, lsn)
	if _, err := f.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("journal: publish durable LSN: %w", err)
	}
	return nil
}

// writeDurable publishes lsn in dir's durable file (Repair: the log was cut).
func writeDurable(dir string, lsn LSN) error {
	f, err := openDurable(dir)
	if err != nil {
		return err
	}
	err = publishDurable(f, lsn)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("journal: close durable file: %w", cerr)
	}
	return err
}

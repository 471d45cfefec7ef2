package journal_test

import (
	"encoding/binary"
	"hash/crc32"
)

// forgeLength rewrites a frame header's length and fixes its header CRC, as a
// writer that died after the header would have left it.
func forgeLength(h []byte, n uint32) []byte {
	h = append([]byte(nil), h...)
	binary.LittleEndian.PutUint32(h[0:], n)
	binary.LittleEndian.PutUint32(h[20:], crc32.Checksum(h[:20], crc32.MakeTable(crc32.Castagnoli)))
	return h
}

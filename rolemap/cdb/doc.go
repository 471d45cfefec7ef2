// Package cdb reads and writes D. J. Bernstein's constant database format
// (https://cr.yp.to/cdb/cdb.txt), byte-compatible with cdbmake/cdbget
// (freecdb) and tinycdb's cdb tool.
//
// # Format
//
// All numbers are 32-bit unsigned little-endian. A file is:
//
//	header   2048 bytes: 256 pairs (pos, len), one per hash table
//	records  from offset 2048, in the order they were added:
//	         klen, vlen, key (klen bytes), value (vlen bytes)
//	tables   256 hash tables; table i starts at header pos_i and has
//	         len_i slots of (hash, pos); pos 0 marks an empty slot
//
// The hash of a key is h = 5381, then h = ((h << 5) + h) ^ c for each byte c.
// A key lives in table h & 255; its probe starts at slot (h >> 8) % len and
// moves to the next slot (wrapping) until an empty slot. Records with the same
// key are all kept; lookups return them in the order they were added.
// Positions are 32-bit, so a file is at most 4 GiB - 1 bytes: the Writer
// refuses to grow past that and the Reader refuses larger files.
//
// # Reading
//
// Open maps a file read-only (mmap), so lookups copy nothing and allocate
// nothing: the slices a Reader returns alias the mapping, are read-only and
// are valid until Close. A CDB file must never be rewritten in place while it
// is mapped (replace it by rename, as the Writer's callers do): truncating a
// mapped file makes later reads fault.
//
// A Reader never trusts the file: the header's tables are checked against the
// file size at Open, every record position and length against the file size
// at each read, and a probe visits at most len slots, so a truncated or
// hostile file yields an error wrapping ErrCorrupt, never a panic or a read
// out of bounds. A Reader is safe for concurrent use, except Close, which must
// not race with reads.
//
// # Writing
//
// A Writer streams records to an io.WriteSeeker (2048 placeholder bytes, then
// the records), keeps 8 bytes per record in memory, and on Close writes the
// hash tables and seeks back to fill in the header. Each table gets twice as
// many slots as it has keys, as cdbmake does.
package cdb

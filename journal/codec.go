package journal

import (
	"encoding/binary"
	"fmt"
)

// Field bits of the record payload (doc.go, "Record payload"). Part of the
// on-disk format: never renumber; new fields take new bits in a new format
// version.
const (
	fAccount = 1 << iota
	fEpoch
	fTree
	fPath
	fNewPath
	fOffset
	fSize
	fMode
	fUID
	fGID
	fMTime
	fATime
	fFlags
	fHash
	fPrevSize
	fPrevHash
	fData

	fKnownV1 = fData<<1 - 1
)

// opMax is the highest Op this version knows.
const opMax = OpDirty

// MarshalRecord appends the payload encoding of r (every field except LSN,
// which the frame carries) to dst and returns the extended slice. It is pure:
// no I/O, no compression.
func MarshalRecord(dst []byte, r *Record) []byte {
	var mask uint64
	set := func(b uint64, ok bool) {
		if ok {
			mask |= b
		}
	}
	set(fAccount, r.Account != "")
	set(fEpoch, r.Epoch != 0)
	set(fTree, r.Tree != "")
	set(fPath, r.Path != "")
	set(fNewPath, r.NewPath != "")
	set(fOffset, r.Offset != 0)
	set(fSize, r.Size != 0)
	set(fMode, r.Mode != 0)
	set(fUID, r.UID != 0)
	set(fGID, r.GID != 0)
	set(fMTime, r.MTime != 0)
	set(fATime, r.ATime != 0)
	set(fFlags, r.Flags != 0)
	set(fHash, r.Hash != [32]byte{})
	set(fPrevSize, r.PrevSize != 0)
	set(fPrevHash, r.PrevHash != [32]byte{})
	set(fData, len(r.Data) != 0)

	dst = append(dst, byte(r.Op))
	dst = binary.AppendUvarint(dst, mask)
	str := func(s string) {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	if mask&fAccount != 0 {
		str(r.Account)
	}
	if mask&fEpoch != 0 {
		dst = binary.AppendUvarint(dst, r.Epoch)
	}
	if mask&fTree != 0 {
		str(r.Tree)
	}
	if mask&fPath != 0 {
		str(r.Path)
	}
	if mask&fNewPath != 0 {
		str(r.NewPath)
	}
	if mask&fOffset != 0 {
		dst = binary.AppendVarint(dst, r.Offset)
	}
	if mask&fSize != 0 {
		dst = binary.AppendVarint(dst, r.Size)
	}
	if mask&fMode != 0 {
		dst = binary.AppendUvarint(dst, uint64(r.Mode))
	}
	if mask&fUID != 0 {
		dst = binary.AppendUvarint(dst, uint64(r.UID))
	}
	if mask&fGID != 0 {
		dst = binary.AppendUvarint(dst, uint64(r.GID))
	}
	if mask&fMTime != 0 {
		dst = binary.AppendVarint(dst, r.MTime)
	}
	if mask&fATime != 0 {
		dst = binary.AppendVarint(dst, r.ATime)
	}
	if mask&fFlags != 0 {
		dst = binary.AppendUvarint(dst, uint64(r.Flags))
	}
	if mask&fHash != 0 {
		dst = append(dst, r.Hash[:]...)
	}
	if mask&fPrevSize != 0 {
		dst = binary.AppendVarint(dst, r.PrevSize)
	}
	if mask&fPrevHash != 0 {
		dst = append(dst, r.PrevHash[:]...)
	}
	if mask&fData != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(r.Data)))
		dst = append(dst, r.Data...)
	}
	return dst
}

// UnmarshalRecord decodes a payload made by MarshalRecord into r (r.LSN is
// left as it is). r.Data is a fresh copy, never aliasing b. Errors wrap
// ErrCorrupt and say which field failed.
func UnmarshalRecord(b []byte, r *Record) error {
	d := decoder{b: b}
	op := Op(d.byte())
	if d.err == nil && (op == OpInvalid || op > opMax) {
		return fmt.Errorf("%w: unknown op %d", ErrCorrupt, op)
	}
	mask := d.uvarint("field mask")
	if d.err == nil && mask&^uint64(fKnownV1) != 0 {
		return fmt.Errorf("%w: unknown field bits %#x", ErrCorrupt, mask&^uint64(fKnownV1))
	}
	*r = Record{LSN: r.LSN, Op: op}
	if mask&fAccount != 0 {
		r.Account = d.str("account")
	}
	if mask&fEpoch != 0 {
		r.Epoch = d.uvarint("epoch")
	}
	if mask&fTree != 0 {
		r.Tree = d.str("tree")
	}
	if mask&fPath != 0 {
		r.Path = d.str("path")
	}
	if mask&fNewPath != 0 {
		r.NewPath = d.str("newpath")
	}
	if mask&fOffset != 0 {
		r.Offset = d.varint("offset")
	}
	if mask&fSize != 0 {
		r.Size = d.varint("size")
	}
	if mask&fMode != 0 {
		r.Mode = d.u32("mode")
	}
	if mask&fUID != 0 {
		r.UID = d.u32("uid")
	}
	if mask&fGID != 0 {
		r.GID = d.u32("gid")
	}
	if mask&fMTime != 0 {
		r.MTime = d.varint("mtime")
	}
	if mask&fATime != 0 {
		r.ATime = d.varint("atime")
	}
	if mask&fFlags != 0 {
		r.Flags = d.u32("flags")
	}
	if mask&fHash != 0 {
		copy(r.Hash[:], d.bytes(32, "hash"))
	}
	if mask&fPrevSize != 0 {
		r.PrevSize = d.varint("prevsize")
	}
	if mask&fPrevHash != 0 {
		copy(r.PrevHash[:], d.bytes(32, "prevhash"))
	}
	if mask&fData != 0 {
		n := d.uvarint("data length")
		if data := d.bytes(n, "data"); len(data) > 0 {
			r.Data = append([]byte(nil), data...)
		}
	}
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	return nil
}

// decoder reads fields, remembering the first error; every length is checked
// against the bytes left before anything is sliced or allocated.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail("op")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) u32(what string) uint32 {
	v := d.uvarint(what)
	if v > 1<<32-1 {
		d.fail(what)
		return 0
	}
	return uint32(v)
}

func (d *decoder) bytes(n uint64, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) str(what string) string {
	n := d.uvarint(what + " length")
	return string(d.bytes(n, what))
}

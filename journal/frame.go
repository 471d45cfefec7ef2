package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Format constants (doc.go).
const (
	// Version is the format version this package writes. It reads every
	// version from 1 up to Version.
	Version = 1

	segMagic      = "MRFSJRNL"
	segHeaderSize = 32
	frameHeader   = 24

	frameRaw  = 1 // body is the record payload as is
	frameZstd = 2 // body is one zstd frame holding the payload

	// MaxRecordSize bounds a record payload (before and after compression).
	// A decoder checks it, and the bytes left in the file, before allocating.
	MaxRecordSize = 64 << 20

	// compressMin: payloads shorter than this are never worth a zstd try.
	compressMin = 128
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var (
	codecOnce sync.Once
	zenc      *zstd.Encoder
	zdec      *zstd.Decoder
	codecErr  error
)

// codecs returns the shared zstd encoder and decoder; EncodeAll and DecodeAll
// are safe for concurrent use.
func codecs() (*zstd.Encoder, *zstd.Decoder, error) {
	codecOnce.Do(func() {
		zenc, codecErr = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderCRC(false), zstd.WithZeroFrames(true))
		if codecErr != nil {
			return
		}
		zdec, codecErr = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxRecordSize),
			zstd.WithDecoderConcurrency(0))
	})
	if codecErr != nil {
		return nil, nil, fmt.Errorf("journal: zstd: %w", codecErr)
	}
	return zenc, zdec, nil
}

// encodeBody marshals r (without its LSN) and compresses it when that makes
// it smaller. It returns the frame type and the stored body.
func encodeBody(r *Record, scratch []byte) (byte, []byte, error) {
	payload := MarshalRecord(scratch[:0], r)
	if len(payload) > MaxRecordSize {
		return 0, nil, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, len(payload), MaxRecordSize)
	}
	if len(payload) >= compressMin {
		enc, _, err := codecs()
		if err != nil {
			return 0, nil, err
		}
		z := enc.EncodeAll(payload, make([]byte, 0, len(payload)))
		if len(z) < len(payload) {
			return frameZstd, z, nil
		}
	}
	return frameRaw, payload, nil
}

// putFrameHeader fills h (frameHeader bytes) for a body of type typ.
func putFrameHeader(h []byte, typ byte, lsn LSN, body []byte) {
	binary.LittleEndian.PutUint32(h[0:], uint32(len(body)))
	h[4], h[5], h[6], h[7] = typ, 0, 0, 0
	binary.LittleEndian.PutUint64(h[8:], uint64(lsn))
	binary.LittleEndian.PutUint32(h[16:], crc32.Checksum(body, crcTable))
	binary.LittleEndian.PutUint32(h[20:], crc32.Checksum(h[:20], crcTable))
}

// AppendFrame appends the complete frame of r (header and stored body, r.LSN
// as its position) to dst. It is pure: the same record always gives the same
// bytes.
func AppendFrame(dst []byte, r *Record) ([]byte, error) {
	typ, body, err := encodeBody(r, nil)
	if err != nil {
		return dst, err
	}
	var h [frameHeader]byte
	putFrameHeader(h[:], typ, r.LSN, body)
	dst = append(dst, h[:]...)
	return append(dst, body...), nil
}

// frameHdr is a parsed, checked frame header.
type frameHdr struct {
	n   uint32 // body length
	typ byte
	lsn LSN
	crc uint32
}

// errTorn marks damage that looks like an interrupted write (short data,
// zeroed sectors); it wraps io.ErrUnexpectedEOF.
var errTorn = fmt.Errorf("torn write: %w", io.ErrUnexpectedEOF)

// parseFrameHeader checks h (frameHeader bytes). An all-zero header is a torn
// write; any other mismatch is corruption.
func parseFrameHeader(h []byte) (frameHdr, error) {
	if binary.LittleEndian.Uint32(h[20:]) != crc32.Checksum(h[:20], crcTable) {
		if allZero(h) {
			return frameHdr{}, errTorn
		}
		return frameHdr{}, fmt.Errorf("%w: frame header checksum mismatch", ErrCorrupt)
	}
	f := frameHdr{
		n:   binary.LittleEndian.Uint32(h[0:]),
		typ: h[4],
		lsn: LSN(binary.LittleEndian.Uint64(h[8:])),
		crc: binary.LittleEndian.Uint32(h[16:]),
	}
	if h[5] != 0 || h[6] != 0 || h[7] != 0 || (f.typ != frameRaw && f.typ != frameZstd) {
		return frameHdr{}, fmt.Errorf("%w: unknown frame type %d/%x", ErrCorrupt, f.typ, h[5:8])
	}
	if f.n > MaxRecordSize {
		return frameHdr{}, fmt.Errorf("%w: frame length %d exceeds %d", ErrCorrupt, f.n, MaxRecordSize)
	}
	return f, nil
}

// decodeBody checks the body's CRC (before any decompression) and decodes the
// record.
func decodeBody(f frameHdr, body []byte, r *Record) error {
	if got := crc32.Checksum(body, crcTable); got != f.crc {
		return fmt.Errorf("%w: body checksum %08x, want %08x", ErrCorrupt, got, f.crc)
	}
	payload := body
	if f.typ == frameZstd {
		_, dec, err := codecs()
		if err != nil {
			return err
		}
		payload, err = dec.DecodeAll(body, nil)
		if err != nil {
			return fmt.Errorf("%w: decompress: %w", ErrCorrupt, err)
		}
		if len(payload) > MaxRecordSize {
			return fmt.Errorf("%w: decompressed size %d", ErrCorrupt, len(payload))
		}
	}
	r.LSN = f.lsn
	return UnmarshalRecord(payload, r)
}

// DecodeFrame decodes the first frame in b. It returns the record and the
// number of bytes the frame took. A b too short for the frame its header
// announces gives an error wrapping io.ErrUnexpectedEOF; damage gives one
// wrapping ErrCorrupt. The length is checked against len(b) before anything
// is allocated.
func DecodeFrame(b []byte) (Record, int, error) {
	var r Record
	if len(b) < frameHeader {
		return r, 0, io.ErrUnexpectedEOF
	}
	f, err := parseFrameHeader(b[:frameHeader])
	if err != nil {
		return r, 0, err
	}
	if uint64(f.n) > uint64(len(b)-frameHeader) {
		return r, 0, io.ErrUnexpectedEOF
	}
	end := frameHeader + int(f.n)
	if err := decodeBody(f, b[frameHeader:end], &r); err != nil {
		return Record{}, 0, err
	}
	return r, end, nil
}

// segHeader is the fixed header at offset 0 of every segment.
func segHeader(version uint32, first LSN) []byte {
	h := make([]byte, segHeaderSize)
	copy(h, segMagic)
	binary.LittleEndian.PutUint32(h[8:], version)
	binary.LittleEndian.PutUint64(h[16:], uint64(first))
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], crcTable))
	return h
}

// parseSegHeader returns the version and first LSN of a segment header.
func parseSegHeader(h []byte) (uint32, LSN, error) {
	if len(h) < segHeaderSize {
		return 0, 0, fmt.Errorf("%w: short segment header", ErrCorrupt)
	}
	if string(h[:8]) != segMagic || binary.LittleEndian.Uint32(h[28:]) != crc32.Checksum(h[:28], crcTable) {
		return 0, 0, fmt.Errorf("%w: bad segment header", ErrCorrupt)
	}
	v := binary.LittleEndian.Uint32(h[8:])
	if v == 0 || v > Version {
		return 0, 0, fmt.Errorf("%w: segment version %d (this build reads 1..%d)", ErrUnsupported, v, Version)
	}
	return v, LSN(binary.LittleEndian.Uint64(h[16:])), nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// isTorn reports whether damage is an interrupted write rather than
// corruption.
func isTorn(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }

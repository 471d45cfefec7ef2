package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// MsgType is a frame's message type (doc.go). Values are wire format: never
// renumber.
type MsgType uint8

const (
	MsgHello   MsgType = 1
	MsgWelcome MsgType = 2
	MsgRefuse  MsgType = 3
	MsgBatch   MsgType = 4
	MsgAck     MsgType = 5
	MsgNeed    MsgType = 6
	MsgBlob    MsgType = 7
	MsgPing    MsgType = 8
	MsgPong    MsgType = 9
	// Full per-account resync (resync_msg.go).
	MsgManifest  MsgType = 10
	MsgWant      MsgType = 11
	MsgFile      MsgType = 12
	MsgResyncEnd MsgType = 13
	MsgReplay    MsgType = 14
	// Version 2.
	MsgDurable MsgType = 15
	// Admin connections (admin.go).
	MsgAdmin      MsgType = 16
	MsgAdminReply MsgType = 17
)

func (t MsgType) String() string {
	switch t {
	case MsgHello:
		return "hello"
	case MsgWelcome:
		return "welcome"
	case MsgRefuse:
		return "refuse"
	case MsgBatch:
		return "batch"
	case MsgAck:
		return "ack"
	case MsgNeed:
		return "need"
	case MsgBlob:
		return "blob"
	case MsgPing:
		return "ping"
	case MsgPong:
		return "pong"
	case MsgManifest:
		return "manifest"
	case MsgWant:
		return "want"
	case MsgFile:
		return "file"
	case MsgResyncEnd:
		return "resync-end"
	case MsgReplay:
		return "replay"
	case MsgDurable:
		return "durable"
	case MsgAdmin:
		return "admin"
	case MsgAdminReply:
		return "admin-reply"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

const (
	// MaxFrame bounds a frame's length field and a body's decompressed size.
	MaxFrame = 64 << 20
	// compressMin: bodies shorter than this are sent as they are.
	compressMin = 256

	flagZstd = 1 << 0
)

var (
	// ErrFrame is wrapped by every error about a malformed frame.
	ErrFrame = errors.New("peer: bad frame")

	crcTable = crc32.MakeTable(crc32.Castagnoli)

	zstdOnce sync.Once
	zEnc     *zstd.Encoder
	zDec     *zstd.Decoder
)

func codecs() (*zstd.Encoder, *zstd.Decoder) {
	zstdOnce.Do(func() {
		var err error
		zEnc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			panic(fmt.Sprintf("peer: zstd encoder: %v", err)) // only on invalid static options
		}
		zDec, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxFrame), zstd.WithDecoderConcurrency(1))
		if err != nil {
			panic(fmt.Sprintf("peer: zstd decoder: %v", err))
		}
	})
	return zEnc, zDec
}

// AppendFrame appends the frame of (t, body) to dst and returns it. The body
// is compressed when that makes it smaller.
func AppendFrame(dst []byte, t MsgType, body []byte) ([]byte, error) {
	flags := byte(0)
	if len(body) >= compressMin {
		enc, _ := codecs()
		c := enc.EncodeAll(body, make([]byte, 0, len(body)/2))
		if len(c) < len(body) {
			body, flags = c, flagZstd
		}
	}
	n := 2 + len(body)
	if n > MaxFrame {
		return dst, fmt.Errorf("%w: %s body of %d bytes exceeds %d", ErrFrame, t, len(body), MaxFrame)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	start := len(dst)
	dst = append(dst, flags, byte(t))
	dst = append(dst, body...)
	crc := crc32.Checksum(dst[start:], crcTable)
	return binary.BigEndian.AppendUint32(dst, crc), nil
}

// WriteFrame writes one frame to w.
func WriteFrame(w io.Writer, t MsgType, body []byte) error {
	b, err := AppendFrame(nil, t, body)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadFrame reads one frame from r and returns its type and (decompressed)
// body. buf is reused for the raw frame when large enough. A clean end of
// stream before the first byte is io.EOF; a frame cut short is
// io.ErrUnexpectedEOF; anything else malformed wraps ErrFrame.
func ReadFrame(r io.Reader, buf []byte) (MsgType, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 2 || n > MaxFrame {
		return 0, nil, fmt.Errorf("%w: length %d outside [2, %d]", ErrFrame, n, MaxFrame)
	}
	total := int(n) + 4
	if cap(buf) < total {
		buf = make([]byte, total)
	}
	buf = buf[:total]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return decodeFrameBody(buf[:n], binary.BigEndian.Uint32(buf[n:]))
}

// DecodeFrame decodes one whole frame held in b (as AppendFrame made it) and
// returns the bytes that follow it.
func DecodeFrame(b []byte) (MsgType, []byte, []byte, error) {
	if len(b) < 4 {
		return 0, nil, b, io.ErrUnexpectedEOF
	}
	n := binary.BigEndian.Uint32(b)
	if n < 2 || n > MaxFrame {
		return 0, nil, b, fmt.Errorf("%w: length %d outside [2, %d]", ErrFrame, n, MaxFrame)
	}
	if uint64(len(b)-4) < uint64(n)+4 {
		return 0, nil, b, io.ErrUnexpectedEOF
	}
	payload := b[4 : 4+n]
	t, body, err := decodeFrameBody(payload, binary.BigEndian.Uint32(b[4+n:]))
	return t, body, b[8+n:], err
}

func decodeFrameBody(payload []byte, crc uint32) (MsgType, []byte, error) {
	if got := crc32.Checksum(payload, crcTable); got != crc {
		return 0, nil, fmt.Errorf("%w: crc mismatch (frame says %08x, computed %08x)", ErrFrame, crc, got)
	}
	flags, t, body := payload[0], MsgType(payload[1]), payload[2:]
	if flags&^flagZstd != 0 {
		return 0, nil, fmt.Errorf("%w: unknown flags %#x", ErrFrame, flags)
	}
	if t < MsgHello || t > MsgAdminReply {
		return 0, nil, fmt.Errorf("%w: unknown message type %d", ErrFrame, uint8(t))
	}
	if flags&flagZstd != 0 {
		_, dec := codecs()
		out, err := dec.DecodeAll(body, nil)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: %s body: zstd: %w", ErrFrame, t, err)
		}
		if len(out) > MaxFrame {
			return 0, nil, fmt.Errorf("%w: %s body decompresses to %d bytes", ErrFrame, t, len(out))
		}
		body = out
	}
	return t, body, nil
}

package rolemap

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The CDB layout of a role map, version 1 (the package doc describes it).
const (
	formatVersion = 1
	headerKey     = ""     // no account is empty, so this key is free
	headerMagic   = "MRRM" // mreplfs role map
	maxPartner    = 1024   // bytes of one partner address
)

// Role codes in account values. They are the format, not Role's iota: never
// renumber.
const (
	codeMaster  = 1
	codeReplica = 2
	codeLocal   = 3
)

// ErrCorrupt is wrapped by every error about a role map file that is not
// what Build writes.
var ErrCorrupt = errors.New("rolemap: corrupt role map")

// ErrVersion is wrapped when a role map has a format version this binary
// does not know.
var ErrVersion = errors.New("rolemap: unsupported role map version")

type header struct {
	version  byte
	accounts uint64
	partners []string
}

func appendHeader(b []byte, h header) []byte {
	b = append(b, headerMagic...)
	b = append(b, h.version)
	b = binary.AppendUvarint(b, h.accounts)
	b = binary.AppendUvarint(b, uint64(len(h.partners)))
	for _, p := range h.partners {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	return b
}

func decodeHeader(v []byte) (header, error) {
	var h header
	if len(v) < len(headerMagic)+1 || string(v[:len(headerMagic)]) != headerMagic {
		return h, fmt.Errorf("%w: header record has no %q magic", ErrCorrupt, headerMagic)
	}
	v = v[len(headerMagic):]
	h.version = v[0]
	if h.version != formatVersion {
		return h, fmt.Errorf("%w: version %d (this binary reads %d)", ErrVersion, h.version, formatVersion)
	}
	v = v[1:]
	var n uint64
	var err error
	if h.accounts, v, err = uvarint(v); err != nil {
		return h, err
	}
	if n, v, err = uvarint(v); err != nil {
		return h, err
	}
	if n > uint64(len(v)) { // every partner takes at least its length byte
		return h, fmt.Errorf("%w: header lists %d partners in %d bytes", ErrCorrupt, n, len(v))
	}
	h.partners = make([]string, 0, n)
	seen := make(map[string]bool, n)
	for range n {
		var l uint64
		if l, v, err = uvarint(v); err != nil {
			return h, err
		}
		if l > uint64(len(v)) || l > maxPartner {
			return h, fmt.Errorf("%w: header: partner of %d bytes", ErrCorrupt, l)
		}
		p := string(v[:l])
		v = v[l:]
		if err := validatePartner(p); err != nil {
			return h, fmt.Errorf("%w: header: %w", ErrCorrupt, err)
		}
		if seen[p] {
			return h, fmt.Errorf("%w: header: partner %q twice", ErrCorrupt, p)
		}
		seen[p] = true
		h.partners = append(h.partners, p)
	}
	if len(v) != 0 {
		return h, fmt.Errorf("%w: header: %d trailing bytes", ErrCorrupt, len(v))
	}
	return h, nil
}

// appendValue encodes an account's entry; partner is its index+1 in the
// header's partner list, 0 for none.
func appendValue(b []byte, e Entry, partner uint64) []byte {
	var code byte
	switch e.Role {
	case Master:
		code = codeMaster
	case Replica:
		code = codeReplica
	case Local:
		code = codeLocal
	}
	b = append(b, formatVersion, code)
	b = binary.AppendUvarint(b, e.Epoch)
	return binary.AppendUvarint(b, partner)
}

// decodeValue decodes an account's entry without allocating.
func decodeValue(v []byte, partners []string) (Entry, error) {
	var e Entry
	if len(v) < 4 {
		return e, fmt.Errorf("%w: %d-byte value", ErrCorrupt, len(v))
	}
	if v[0] != formatVersion {
		return e, fmt.Errorf("%w: value version %d", ErrCorrupt, v[0])
	}
	switch v[1] {
	case codeMaster:
		e.Role = Master
	case codeReplica:
		e.Role = Replica
	case codeLocal:
		e.Role = Local
	default:
		return e, fmt.Errorf("%w: role code %d", ErrCorrupt, v[1])
	}
	epoch, n := binary.Uvarint(v[2:])
	if n <= 0 {
		return e, fmt.Errorf("%w: bad epoch varint", ErrCorrupt)
	}
	e.Epoch = epoch
	p, m := binary.Uvarint(v[2+n:])
	if m <= 0 || 2+n+m != len(v) {
		return e, fmt.Errorf("%w: bad partner index", ErrCorrupt)
	}
	switch {
	case p > uint64(len(partners)):
		return e, fmt.Errorf("%w: partner index %d of %d", ErrCorrupt, p, len(partners))
	case p > 0:
		e.Partner = partners[p-1]
	}
	if (e.Role == Local) != (p == 0) {
		return e, fmt.Errorf("%w: role %s with partner index %d", ErrCorrupt, e.Role, p)
	}
	return e, nil
}

func uvarint(v []byte) (uint64, []byte, error) {
	x, n := binary.Uvarint(v)
	if n <= 0 {
		return 0, nil, fmt.Errorf("%w: header: bad varint", ErrCorrupt)
	}
	return x, v[n:], nil
}

package peer

import (
	"encoding/binary"
	"fmt"

	"mreplfs/journal"
)

// EncodeRecord is a record's form inside a Batch: uvarint LSN followed by
// journal.MarshalRecord's payload (the journal's own, versioned encoding).
func EncodeRecord(dst []byte, r *journal.Record) []byte {
	dst = binary.AppendUvarint(dst, uint64(r.LSN))
	return journal.MarshalRecord(dst, r)
}

// DecodeRecord decodes EncodeRecord's bytes; Data is copied, so the record
// does not alias b.
func DecodeRecord(b []byte) (journal.Record, error) {
	var r journal.Record
	lsn, n := binary.Uvarint(b)
	if n <= 0 || lsn == 0 {
		return r, fmt.Errorf("%w: batch record: bad LSN", ErrFrame)
	}
	if err := journal.UnmarshalRecord(b[n:], &r); err != nil {
		return r, fmt.Errorf("%w: batch record %d: %w", ErrFrame, lsn, err)
	}
	r.LSN = journal.LSN(lsn)
	if r.Data != nil {
		r.Data = append([]byte(nil), r.Data...)
	}
	return r, nil
}

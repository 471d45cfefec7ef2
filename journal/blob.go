package journal

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

const blobDir = "blobs"

// blobRef tracks why a blob is kept: PutBlob calls not yet followed by their
// record (pins) and the last retained record that refers to it.
type blobRef struct {
	pins    int
	lastRef LSN
}

// isBlobRef: an OpMessage/OpReplace whose content is in a blob.
func isBlobRef(r *Record) bool {
	return (r.Op == OpMessage || r.Op == OpReplace) && len(r.Data) == 0 && r.Size > 0 && r.Hash != [32]byte{}
}

func (l *Log) blobPath(hash [32]byte) string { return blobPath(l.dir, hash) }

func blobPath(dir string, hash [32]byte) string {
	return filepath.Join(dir, blobDir, hex.EncodeToString(hash[:]))
}

// PutBlob makes the content of srcPath available as blob hash: a hard link
// into <dir>/blobs (a durable copy when linking fails, e.g. EXDEV). It
// returns once the content is durable; the blob's name becomes durable in
// the commit that makes any later record durable. Idempotent. The caller
// vouches that hash is the SHA-256 of the content. Call it before appending
// the OpMessage record that refers to the blob (Hash, Size, empty Data).
func (l *Log) PutBlob(ctx context.Context, hash [32]byte, srcPath string) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	b := l.blobs[hash]
	if b == nil {
		b = &blobRef{}
		l.blobs[hash] = b
	}
	b.pins++
	l.mu.Unlock()
	err := l.putBlob(hash, srcPath)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.unpinLocked(hash)
		return fmt.Errorf("journal: put blob: %w", err)
	}
	l.blobsDirty = true
	return nil
}

func (l *Log) putBlob(hash [32]byte, src string) error {
	dst := l.blobPath(hash)
	err := os.Link(src, dst)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return copyBlob(src, dst)
	}
	f, err := os.Open(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// copyBlob copies src to dst durably (temp, fsync, rename).
func copyBlob(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// OpenBlob opens the blob with this hash for reading.
func (l *Log) OpenBlob(hash [32]byte) (*os.File, error) {
	f, err := os.Open(l.blobPath(hash))
	if err != nil {
		return nil, fmt.Errorf("journal: open blob: %w", err)
	}
	return f, nil
}

// unpinLocked ends one PutBlob's hold; a blob nothing refers to is removed.
func (l *Log) unpinLocked(hash [32]byte) {
	b := l.blobs[hash]
	if b == nil || b.pins == 0 {
		return
	}
	b.pins--
	if b.pins == 0 && b.lastRef == 0 {
		delete(l.blobs, hash)
		os.Remove(l.blobPath(hash))
	}
}

// gcBlobsLocked removes blobs whose last reference is at or before through.
func (l *Log) gcBlobsLocked(through LSN) {
	for h, b := range l.blobs {
		if b.pins == 0 && b.lastRef <= through {
			delete(l.blobs, h)
			if err := os.Remove(l.blobPath(h)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				l.log.Warn("remove blob", "err", err)
			}
		}
	}
}

// gcOrphanBlobs removes, at open, blobs no retained record refers to (a crash
// between PutBlob and Append, or a removal cut short).
func (l *Log) gcOrphanBlobs() {
	ents, err := os.ReadDir(filepath.Join(l.dir, blobDir))
	if err != nil {
		return
	}
	for _, e := range ents {
		var h [32]byte
		b, err := hex.DecodeString(e.Name())
		if err == nil && len(b) == 32 {
			copy(h[:], b)
			if _, ok := l.blobs[h]; ok {
				continue
			}
		}
		os.Remove(filepath.Join(l.dir, blobDir, e.Name()))
	}
}

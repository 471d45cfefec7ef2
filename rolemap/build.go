package rolemap

import (
	"fmt"
	"os"
	"path/filepath"

	"mreplfs/internal/durable"
	"mreplfs/rolemap/cdb"
)

// BuildFile parses the text source at src and builds the CDB dst from it
// (see Build). It returns the number of accounts.
func BuildFile(src, dst string) (int, error) {
	recs, err := ParseFile(src)
	if err != nil {
		return 0, err
	}
	if err := Build(dst, recs); err != nil {
		return 0, err
	}
	return len(recs), nil
}

// Build writes recs as a role map CDB at dst, atomically: into a temporary
// file in dst's directory, fsynced, renamed over dst, then the directory is
// fsynced. A reader of dst sees the old map or the new one, never a mix; on
// failure the temporary file is removed and dst is untouched. The records
// keep their order in the file (so dump prints them in that order).
func Build(dst string, recs []Record) (err error) {
	if err := Validate(recs); err != nil {
		return err
	}
	dir := filepath.Dir(dst)
	f, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("rolemap: build %s: %w", dst, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("rolemap: build %s: %w", dst, err)
		}
	}()
	if err := writeMap(f, recs); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	return durable.SyncDir(dir)
}

func writeMap(f *os.File, recs []Record) error {
	index := map[string]uint64{}
	h := header{version: formatVersion, accounts: uint64(len(recs))}
	for _, r := range recs {
		if r.Partner != "" && index[r.Partner] == 0 {
			h.partners = append(h.partners, r.Partner)
			index[r.Partner] = uint64(len(h.partners))
		}
	}
	w, err := cdb.NewWriter(f)
	if err != nil {
		return err
	}
	if err := w.Add([]byte(headerKey), appendHeader(nil, h)); err != nil {
		return err
	}
	var val []byte
	for _, r := range recs {
		val = appendValue(val[:0], r.Entry, index[r.Partner])
		if err := w.Add([]byte(r.Account), val); err != nil {
			return err
		}
	}
	return w.Close()
}

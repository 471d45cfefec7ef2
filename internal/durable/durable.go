package durable

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces p with b durably through p.tmp (mode 0600): see
// Replace.
func WriteFile(p string, b []byte) error {
	return Replace(p, p+".tmp", b, -1, -1)
}

// Replace replaces p with b durably: the temporary file tmp (in p's
// directory, mode 0600, owned by uid:gid unless uid < 0), fsync, rename
// over p, fsync of the directory. On an error the temporary file is
// removed and p is unchanged or already replaced.
func Replace(p, tmp string, b []byte, uid, gid int) error {
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil && uid >= 0 {
		err = f.Chown(uid, gid)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(p))
}

// SyncDir fsyncs the directory dir.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

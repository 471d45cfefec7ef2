package peer

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sync"

	"golang.org/x/sys/unix"
)

// flushParallel is how many fsyncs a flush has in flight at once: on a
// journaling filesystem they share commits, and the batch waits for the
// slowest instead of their sum.
const flushParallel = 8

// syncTarget is a file, or the directory holding rel (dir true), to fsync.
type syncTarget struct {
	t   *treeRoot
	rel string
	dir bool
}

// flush fsyncs the files and directories the batch touched since the last
// flush (a batch with many renames flushes at each checkpoint: only what
// changed since is synced again, or the cost would grow with the square of
// the batch). A directory is synced once however many of its entries
// changed; the fsyncs run in parallel.
func (b *batch) flush() error {
	targets := make([]syncTarget, 0, len(b.files)+len(b.dirs))
	for k := range b.files {
		targets = append(targets, syncTarget{t: b.a.trees[k[0]], rel: k[1]})
	}
	parents := make(map[[2]string]bool, len(b.dirs))
	for k := range b.dirs {
		p := [2]string{k[0], path.Dir(k[1])}
		if !parents[p] {
			parents[p] = true
			targets = append(targets, syncTarget{t: b.a.trees[k[0]], rel: k[1], dir: true})
		}
	}
	if err := b.a.syncAll(targets); err != nil {
		return err
	}
	for k := range b.files {
		b.flushedFiles[k] = true
	}
	for k := range b.dirs {
		b.flushedDirs[k] = true
	}
	clear(b.files)
	clear(b.dirs)
	return nil
}

// syncAll fsyncs targets, flushParallel at a time; a target gone meanwhile
// (a later unlink or rename in the batch) is skipped. It returns the first
// error.
func (a *DirApplier) syncAll(targets []syncTarget) error {
	if len(targets) == 1 {
		return a.syncOne(targets[0])
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan syncTarget)
	for range min(flushParallel, len(targets)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for st := range next {
				if err := a.syncOne(st); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, st := range targets {
		next <- st
	}
	close(next)
	wg.Wait()
	return first
}

func (a *DirApplier) syncOne(st syncTarget) error {
	var (
		f   *os.File
		err error
	)
	if st.dir {
		f, _, err = st.t.parent(st.rel, false)
	} else {
		f, err = st.t.open(st.rel, unix.O_RDONLY, 0)
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil // gone again (a later unlink or rename in this batch)
	}
	if err != nil {
		return err
	}
	a.fsyncs.Add(1)
	err = f.Sync()
	f.Close()
	if err != nil {
		if st.dir {
			return fmt.Errorf("fsync dir of %s/%s: %w", st.t.name, st.rel, err)
		}
		return fmt.Errorf("fsync %s/%s: %w", st.t.name, st.rel, err)
	}
	return nil
}

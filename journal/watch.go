package journal

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// watcher wakes a Follower when the writer rewrites the durable file
// (IN_MODIFY on the file) or creates it (IN_CREATE, IN_MOVED_TO on the
// directory). The inotify descriptor is non-blocking and goes through Go's
// poller, so a read deadline gives the poll fallback and Close wakes it.
type watcher struct {
	f      *os.File
	dirWD  int
	once   sync.Once
	buf    []byte
	fileWD int // watch of the durable file, -1 when none
}

func newWatcher(dir string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("journal: inotify: %w", err)
	}
	wd, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("journal: inotify watch %s: %w", dir, err)
	}
	return &watcher{f: os.NewFile(uintptr(fd), "inotify"), dirWD: wd, fileWD: -1,
		buf: make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))}, nil
}

// watchFile watches the durable file at path (again: a new inode gets a new
// watch; the same inode keeps its watch descriptor).
func (w *watcher) watchFile(path string) error {
	// Not w.f.Fd(): that would make the descriptor blocking. Control
	// also keeps it from being closed (and reused) meanwhile.
	rc, err := w.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("journal: inotify watch %s: %w", path, err)
	}
	var wd int
	cerr := rc.Control(func(fd uintptr) {
		wd, err = unix.InotifyAddWatch(int(fd), path, unix.IN_MODIFY|unix.IN_CLOSE_WRITE)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("journal: inotify watch %s: %w", path, err)
	}
	w.fileWD = wd
	return nil
}

// wait returns after an event or after d. reopen: the durable file appeared
// or its watch ended (the file was removed), so it must be opened afresh.
func (w *watcher) wait(d time.Duration) (reopen bool, err error) {
	if err := w.f.SetReadDeadline(time.Now().Add(d)); err != nil {
		return false, err
	}
	n, err := w.f.Read(w.buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
		name := w.buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
		off += unix.SizeofInotifyEvent + int(ev.Len)
		switch {
		case int(ev.Wd) == w.dirWD && cstr(name) == durableFile:
			reopen = true
		case int(ev.Wd) == w.fileWD && ev.Mask&unix.IN_IGNORED != 0:
			w.fileWD = -1
			reopen = true
		case ev.Mask&unix.IN_Q_OVERFLOW != 0:
			reopen = true
		}
	}
	return reopen, nil
}

// cstr trims the NUL padding of an inotify name.
func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func (w *watcher) close() { w.once.Do(func() { w.f.Close() }) }

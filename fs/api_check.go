package fs

import fusefs "github.com/hanwen/go-fuse/v2/fs"

// Every go-fuse interface Node, File and dirHandle implement (STYLE.md rule
// 3). Node's read-only operations (Lookup, Getattr, Statx, Readlink,
// Getxattr, Listxattr, Statfs, Readdir) are the embedded loopback's.
// Deliberately absent: FilePassthroughFder returning a descriptor, FileIoctler,
// NodeIoctler, FileGetlker/FileSetlker/FileSetlkwer (EnableLocks stays off:
// the kernel keeps POSIX lock semantics on the FUSE inode), NodeFsyncer
// (fsync goes to the handle).
var (
	_ = (fusefs.NodeWrapChilder)((*Node)(nil))
	_ = (fusefs.NodeOpener)((*Node)(nil))
	_ = (fusefs.NodeCreater)((*Node)(nil))
	_ = (fusefs.NodeTmpfiler)((*Node)(nil))
	_ = (fusefs.NodeOpendirHandler)((*Node)(nil))
	_ = (fusefs.NodeMkdirer)((*Node)(nil))
	_ = (fusefs.NodeMknoder)((*Node)(nil))
	_ = (fusefs.NodeSymlinker)((*Node)(nil))
	_ = (fusefs.NodeUnlinker)((*Node)(nil))
	_ = (fusefs.NodeRmdirer)((*Node)(nil))
	_ = (fusefs.NodeRenamer)((*Node)(nil))
	_ = (fusefs.NodeLinker)((*Node)(nil))
	_ = (fusefs.NodeSetattrer)((*Node)(nil))
	_ = (fusefs.NodeSetxattrer)((*Node)(nil))
	_ = (fusefs.NodeRemovexattrer)((*Node)(nil))
	_ = (fusefs.NodeCopyFileRanger)((*Node)(nil))
	// inherited from the embedded *fusefs.LoopbackNode (read-only)
	_ = (fusefs.NodeLookuper)((*Node)(nil))
	_ = (fusefs.NodeGetattrer)((*Node)(nil))
	_ = (fusefs.NodeStatxer)((*Node)(nil))
	_ = (fusefs.NodeReadlinker)((*Node)(nil))
	_ = (fusefs.NodeGetxattrer)((*Node)(nil))
	_ = (fusefs.NodeListxattrer)((*Node)(nil))
	_ = (fusefs.NodeStatfser)((*Node)(nil))
	_ = (fusefs.NodeReaddirer)((*Node)(nil))

	_ = (fusefs.FileHandle)((*File)(nil))
	_ = (fusefs.FilePassthroughFder)((*File)(nil)) // always (-1, false)
	_ = (fusefs.FileReader)((*File)(nil))
	_ = (fusefs.FileWriter)((*File)(nil))
	_ = (fusefs.FileWritever)((*File)(nil))
	_ = (fusefs.FileGetattrer)((*File)(nil))
	_ = (fusefs.FileStatxer)((*File)(nil))
	_ = (fusefs.FileSetattrer)((*File)(nil))
	_ = (fusefs.FileLseeker)((*File)(nil))
	_ = (fusefs.FileFlusher)((*File)(nil))
	_ = (fusefs.FileFsyncer)((*File)(nil))
	_ = (fusefs.FileReleaser)((*File)(nil))
	_ = (fusefs.FileAllocater)((*File)(nil))

	_ = (fusefs.FileReaddirenter)((*dirHandle)(nil))
	_ = (fusefs.FileSeekdirer)((*dirHandle)(nil))
	_ = (fusefs.FileReleasedirer)((*dirHandle)(nil))
	_ = (fusefs.FileFsyncdirer)((*dirHandle)(nil))
)

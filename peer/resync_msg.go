package peer

import "encoding/binary"

// Messages of the full per-account resync (doc.go, "Full resync").

// EntryType is the kind of a manifest entry. Values are wire format.
type EntryType uint8

const (
	EntryFile    EntryType = 1
	EntryDir     EntryType = 2
	EntrySymlink EntryType = 3
)

// ManifestEntry describes one file, directory or symlink of an account on
// the master.
type ManifestEntry struct {
	Type  EntryType
	Tree  string
	Path  string // relative to the tree, '/'-separated
	Mode  uint32 // permission bits (07777)
	UID   uint32
	GID   uint32
	Size  int64 // files
	MTime int64 // nanoseconds since the epoch
	// Link is 0 for a file with one name on the master; otherwise a number,
	// the same for every entry of the manifest naming the same inode (a
	// file the master holds under several names, in this account or not).
	Link   uint64
	Hash   [32]byte // files: SHA-256 of the content when it was listed
	Target string   // symlinks
}

// Manifest is a chunk of an account's listing (sender → receiver).
type Manifest struct {
	Account string
	Epoch   uint64
	From    uint64 // P: the journal position recorded before the walk began
	Last    bool   // the last chunk of this account's listing
	Entries []ManifestEntry
}

// TreePath names a file of a tree.
type TreePath struct{ Tree, Path string }

// Want lists the files the receiver lacks or holds with other content and
// cannot make from what it holds (receiver → sender).
type Want struct {
	Account string
	Last    bool
	Paths   []TreePath
}

// FileChunk carries (part of) a wanted file's content (sender → receiver).
type FileChunk struct {
	Account    string
	Tree, Path string
	Offset     uint64
	Last       bool     // the file is complete after this chunk
	ByRef      bool     // no data: the content is Hash, which the receiver holds
	Gone       bool     // the file no longer exists on the master
	Hash       [32]byte // of the whole content: in the last chunk, or with ByRef
	Data       []byte
}

// ResyncEnd closes an account's resync (sender → receiver): its position
// becomes From, and records in (From, ReplayTo] apply in replay mode.
type ResyncEnd struct {
	Account  string
	From     uint64
	ReplayTo uint64
}

const (
	fileLast  = 1 << 0
	fileByRef = 1 << 1
	fileGone  = 1 << 2
)

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func (e *enc) varint(v int64) { e.b = binary.AppendVarint(e.b, v) }

// MarshalManifest encodes a Manifest body.
func MarshalManifest(m Manifest) []byte {
	var e enc
	e.str(m.Account)
	e.uv(m.Epoch)
	e.uv(m.From)
	e.u8(boolByte(m.Last))
	e.uv(uint64(len(m.Entries)))
	for _, x := range m.Entries {
		e.u8(uint8(x.Type))
		e.str(x.Tree)
		e.str(x.Path)
		e.uv(uint64(x.Mode))
		e.uv(uint64(x.UID))
		e.uv(uint64(x.GID))
		e.varint(x.Size)
		e.varint(x.MTime)
		e.uv(x.Link)
		switch x.Type {
		case EntryFile:
			e.hash(x.Hash)
		case EntrySymlink:
			e.str(x.Target)
		}
	}
	return e.b
}

// MarshalWant encodes a Want body.
func MarshalWant(w Want) []byte {
	var e enc
	e.str(w.Account)
	e.u8(boolByte(w.Last))
	e.uv(uint64(len(w.Paths)))
	for _, p := range w.Paths {
		e.str(p.Tree)
		e.str(p.Path)
	}
	return e.b
}

// MarshalFile encodes a File body.
func MarshalFile(f FileChunk) []byte {
	var e enc
	e.str(f.Account)
	e.str(f.Tree)
	e.str(f.Path)
	e.uv(f.Offset)
	var flags uint8
	if f.Last {
		flags |= fileLast
	}
	if f.ByRef {
		flags |= fileByRef
	}
	if f.Gone {
		flags |= fileGone
	}
	e.u8(flags)
	e.hash(f.Hash)
	e.bytes(f.Data)
	return e.b
}

// MarshalResyncEnd encodes a ResyncEnd body.
func MarshalResyncEnd(r ResyncEnd) []byte {
	var e enc
	e.str(r.Account)
	e.uv(r.From)
	e.uv(r.ReplayTo)
	return e.b
}

func (d *dec) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint for %s", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) boolean(what string) bool {
	v := d.u8(what)
	if v > 1 {
		d.fail("%s is %d, want 0 or 1", what, v)
	}
	return v == 1
}

func (d *dec) u32(what string) uint32 {
	v := d.uv(what)
	if v > 1<<32-1 {
		d.fail("%s %d exceeds 32 bits", what, v)
	}
	return uint32(v)
}

// UnmarshalManifest decodes a Manifest body.
func UnmarshalManifest(b []byte) (Manifest, error) {
	d := dec{b: b, msg: MsgManifest}
	m := Manifest{Account: d.str("account"), Epoch: d.uv("epoch"), From: d.uv("from"), Last: d.boolean("last")}
	n := d.count("entries", 9)
	for i := 0; i < n && d.err == nil; i++ {
		x := ManifestEntry{Type: EntryType(d.u8("type")), Tree: d.str("tree"), Path: d.str("path")}
		x.Mode, x.UID, x.GID = d.u32("mode"), d.u32("uid"), d.u32("gid")
		x.Size, x.MTime, x.Link = d.varint("size"), d.varint("mtime"), d.uv("link")
		switch x.Type {
		case EntryFile:
			x.Hash = d.hash("hash")
			if x.Size < 0 {
				d.fail("negative size %d", x.Size)
			}
		case EntryDir:
		case EntrySymlink:
			x.Target = d.str("target")
		default:
			d.fail("unknown entry type %d", x.Type)
		}
		if x.Mode > 0o7777 {
			d.fail("mode %o has bits beyond 07777", x.Mode)
		}
		m.Entries = append(m.Entries, x)
	}
	return m, d.end()
}

// UnmarshalWant decodes a Want body.
func UnmarshalWant(b []byte) (Want, error) {
	d := dec{b: b, msg: MsgWant}
	w := Want{Account: d.str("account"), Last: d.boolean("last")}
	n := d.count("paths", 2)
	for i := 0; i < n && d.err == nil; i++ {
		w.Paths = append(w.Paths, TreePath{Tree: d.str("tree"), Path: d.str("path")})
	}
	return w, d.end()
}

// UnmarshalFile decodes a File body; Data is a sub-slice of b.
func UnmarshalFile(b []byte) (FileChunk, error) {
	d := dec{b: b, msg: MsgFile}
	f := FileChunk{Account: d.str("account"), Tree: d.str("tree"), Path: d.str("path"), Offset: d.uv("offset")}
	flags := d.u8("flags")
	if flags&^(fileLast|fileByRef|fileGone) != 0 {
		d.fail("unknown flags %#x", flags)
	}
	f.Last, f.ByRef, f.Gone = flags&fileLast != 0, flags&fileByRef != 0, flags&fileGone != 0
	f.Hash = d.hash("hash")
	f.Data = d.bytes("data")
	if (f.ByRef || f.Gone) && (len(f.Data) > 0 || !f.Last) {
		d.fail("a by-reference or gone file carries data or is not last")
	}
	return f, d.end()
}

// UnmarshalResyncEnd decodes a ResyncEnd body.
func UnmarshalResyncEnd(b []byte) (ResyncEnd, error) {
	d := dec{b: b, msg: MsgResyncEnd}
	r := ResyncEnd{Account: d.str("account"), From: d.uv("from"), ReplayTo: d.uv("replay to")}
	return r, d.end()
}

package main

import (
	"encoding/binary"
	"reflect"
	"testing"

	"mreplfs/journal"
)

// Cyrus 3.6 geometry: a 160-byte header, 112-byte records.
func indexHeader() []byte {
	h := make([]byte, 160)
	binary.BigEndian.PutUint32(h[indexStartOffset:], 160)
	binary.BigEndian.PutUint32(h[indexRecordSize:], 112)
	return h
}

func indexRecord(uid uint32) []byte {
	r := make([]byte, 112)
	binary.BigEndian.PutUint32(r, uid)
	r[40] = 0xff // flags and the rest: not a UID
	return r
}

func idxWrite(off, prev int64, data []byte) journal.Record {
	return journal.Record{Op: journal.OpWrite, Tree: "meta", Path: "uuid/a/b/ab12/cyrus.index", Offset: off, PrevSize: prev, Data: data}
}

// TestIndexAppends: the messages a failed-over master's tail appended to an
// index — whose files the new master may already have — are found from the
// tail's index writes at or beyond the new master's index size; rewrites of
// records it has (flags) are not.
func TestIndexAppends(t *testing.T) {
	noHeader := func(string, string) []byte { return nil }
	two := int64(160 + 2*112) // the new master has UIDs 1 and 2
	cases := []struct {
		name   string
		recs   []journal.Record
		header func(string, string) []byte
		want   []string
	}{
		{
			name: "appends after the new master's size, a flag rewrite before it, the header written",
			recs: []journal.Record{
				{Op: journal.OpMessage, Tree: "spool", Path: "uuid/a/b/ab12/3."},
				idxWrite(two, two, indexRecord(3)),
				idxWrite(0, two+112, indexHeader()),
				idxWrite(160, two+112, indexRecord(1)), // \Seen on UID 1
				idxWrite(two+112, two+112, indexRecord(4)),
				idxWrite(0, two+224, indexHeader()),
			},
			header: noHeader,
			want:   []string{"spool uuid/a/b/ab12/3.", "spool uuid/a/b/ab12/4."},
		},
		{
			name:   "header from this node's file when the tail did not write it",
			recs:   []journal.Record{idxWrite(two, two, indexRecord(7))},
			header: func(string, string) []byte { return indexHeader()[:20] },
			want:   []string{"spool uuid/a/b/ab12/7."},
		},
		{
			name:   "only a flag rewrite: nothing lost",
			recs:   []journal.Record{idxWrite(160+112, two, indexRecord(2)), idxWrite(0, two, indexHeader())},
			header: noHeader,
		},
		{
			name: "an index the tail created: every record",
			recs: []journal.Record{
				{Op: journal.OpCreate, Tree: "meta", Path: "uuid/a/b/ab12/cyrus.index"},
				idxWrite(0, 0, append(indexHeader(), append(indexRecord(1), indexRecord(2)...)...)),
			},
			header: noHeader,
			want:   []string{"spool uuid/a/b/ab12/1.", "spool uuid/a/b/ab12/2."},
		},
		{
			name: "writes after a repack are offsets of another file",
			recs: []journal.Record{
				idxWrite(two, two, indexRecord(3)),
				idxWrite(0, two+112, indexHeader()),
				{Op: journal.OpReplace, Tree: "meta", Path: "uuid/a/b/ab12/cyrus.index"},
				idxWrite(two+112, two+112, indexRecord(9)),
			},
			header: noHeader,
			want:   []string{"spool uuid/a/b/ab12/3."},
		},
		{
			name:   "no size check on the first write: the new master's size is unknown",
			recs:   []journal.Record{idxWrite(two, -1, indexRecord(3)), idxWrite(0, -1, indexHeader())},
			header: noHeader,
		},
		{
			name: "a mailbox without a metapartition keeps its messages beside the index",
			recs: []journal.Record{{Op: journal.OpWrite, Tree: "spool-b", Path: "b/user/bob/cyrus.index", Offset: two, PrevSize: two,
				Data: indexRecord(5)}},
			header: func(string, string) []byte { return indexHeader() },
			want:   []string{"spool-b b/user/bob/5."},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, m := range indexAppends(c.recs, c.header) {
				got = append(got, m.Tree+" "+m.Path)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
	if spoolTreeOf("meta-x") != "spool-x" || spoolTreeOf("metadata") != "metadata" || spoolTreeOf("conf") != "conf" {
		t.Error("spoolTreeOf")
	}
}

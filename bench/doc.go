// Package bench holds the project's benchmarks: Cyrus-shaped workloads run
// natively, through plain go-fuse loopback and through mreplfs, side by side.
//
// BenchmarkDelivery (delivery_test.go) is one LMTP-like delivery per
// iteration — body written to stage./ (no fsync), link() into 1 or 3
// mailboxes, each link fsynced through an O_RDONLY fd and utimensat'ed,
// cyrus.cache append + fsync, a 112-byte cyrus.index record and the 160-byte
// header + fsync, quota file rewritten as .NEW + fsync and renamed over,
// stage file unlinked — on four configurations in one run: native ext4,
// go-fuse's unmodified loopback (kernel passthrough on), mreplfs with a
// no-op journal, and mreplfs with the real journal. All paths are account
// paths of the real Cyrus classifier (legacy layout), every account master.
// It reports deliveries/s and cpu-us/delivery (this process: client plus
// the in-process FUSE daemon, user+system).
//
// BenchmarkLMTP (lmtp_test.go) delivers real LMTP messages to Debian's Cyrus
// running natively and with its whole DIR on mreplfs.
//
// Run as root, with GODEBUG=asyncpreemptoff=1 (a Go client otherwise
// causes FUSE INTERRUPT storms, FUSE.md G9):
//
//	GODEBUG=asyncpreemptoff=1 TMPDIR=/tmp/mreplfs-test \
//	  go test -run '^$' -bench 'Delivery|LMTP' -benchtime 1000x -count 3 ./bench
package bench

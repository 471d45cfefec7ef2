// Package bench holds the project's benchmarks: Cyrus-shaped workloads run
// natively, through plain go-fuse loopback and through mreplfs, side by side.
package bench

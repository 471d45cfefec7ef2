// Command drbd benchmarks mreplfs against real DRBD, like for like: both run
// inside the same two User-Mode Linux guests (Debian's user-mode-linux
// package, which ships the in-kernel DRBD 8.4 and fuse.ko), on a bridge of
// taps in a private network namespace, with file-backed virtual disks.
//
// Run it as root from the repository root (make bench-drbd):
//
//	go run ./bench/drbd -rounds 3 -files 300
//
// What it does, in order (main.go):
//
//  1. assets.go: apt-get download of the guest's packages (user-mode-linux,
//     busybox-static, drbd-utils, e2fsprogs and their libraries), unpacked
//     with dpkg -x into the work directory — nothing is installed on the host;
//     the workload (./bench/drbd/load) and mreplfs built static with
//     CGO_ENABLED=0; certificates, role maps and configs; a gzip'd cpio
//     initramfs written by our own code.
//  2. inner.go: the harness re-executes itself in new network, mount and PID
//     namespaces. It makes a bridge and two taps there and boots two UML
//     guests, a (10.99.0.1) and b (10.99.0.2). When that process ends, for
//     whatever reason, the kernel kills every guest and removes the
//     namespaces with everything in them. guest.go drives each guest through a
//     command agent on a UML serial line (init.sh is the guest's /init).
//  3. systems.go: every round runs each workload (plain small files;
//     Cyrus-shaped deliveries with 1 and with 10 recipients) on each
//     configuration in turn: plain ext4 (no replication), DRBD protocol A and
//     C (a primary, b secondary), mreplfs async and sync (mount and sending
//     peer on a, receiving peer on b). Each run starts on a fresh ext4; every
//     replicated run is verified afterwards (DRBD: b promoted after a demoted;
//     mreplfs: b's backing trees), with one digest over every file.
//     A diagnostic row, mreplfs without a journal (the mount alone), shows
//     what FUSE costs there before any replication.
//  4. hostnode.go: the fallback environment (-envs host, on by default): the
//     same workloads and mreplfs configurations without UML, each node a
//     shell (hostnode.sh) in its own network and mount namespaces on the
//     host, linked by a veth pair, against a plain directory of the host's
//     disk. DRBD cannot run there; each system is compared with its own
//     plain baseline.
//  5. report.go, chart.go: medians and ranges per configuration and workload,
//     ratios to plain, wire bytes per payload byte, CPU per delivery,
//     replication lag — results.md, chart.svg, raw.jsonl and meta.json in
//     -out. -report DIR rewrites results.md and chart.svg from those.
//
// -shell boots the guests and runs "a CMD" / "b CMD" lines from stdin (for
// debugging); BENCH_DEBUG=1 logs every guest command slower than 3 s.
package main

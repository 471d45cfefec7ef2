// Command load is the workload of the DRBD comparison (bench/drbd). It is
// built static (CGO_ENABLED=0) and runs inside the User-Mode Linux guests.
//
// Subcommands:
//
//	load plain  -dir D -n N -seed S           create tmp/<name>, write 8–32 KB, fsync, close, rename to new/<name>
//	load cyrus  -root R -n N -rcpt K -seed S  Cyrus-shaped deliveries (bench/cyrusload) into R/{conf,spool,meta}
//	load watch  -root R ... -out F            on the replica: when each delivery's message file appeared
//	load digest -root R -accounts a,b,...     one SHA-256 over every file of the accounts (cyrusload.Digest)
//	load stat                                 counters of this guest (CPU, NIC, ICMP, DRBD, block devices)
//	load now                                  the guest's wall clock in Unix nanoseconds
//
// Bodies are random bytes (seeded), so neither DRBD nor mreplfs gains from
// compression. plain and cyrus print one line "RESULT {json}" and, with
// -done FILE, the completion time of every delivery ("relpath unixnano"),
// which watch's arrival times are joined with to give replication lag.
package main

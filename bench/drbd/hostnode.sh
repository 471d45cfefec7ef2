#!/bin/bash
# Agent of a host node (bench/drbd, -envs host): a shell in its own network
# and mount namespaces on the host, laid out like a guest: /mnt is a tmpfs
# holding plain (a directory of the host's disk, bind-mounted), mr, drbd and
# etc (the configs); /run and /tmp are private tmpfs; /sys shows this network
# namespace. Commands come on stdin as "<id> <shell command>"; the answer is
# the output and "@@RC <id> <status>" on stdout, as in the guests' /init.
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /mnt
mkdir -p /mnt/plain /mnt/mr /mnt/drbd /mnt/etc /mnt/host
mount --bind "$BENCH_ETC" /mnt/etc
# The run directory may be under /tmp, which is covered next.
mount --bind "$BENCH_RUN" /mnt/host
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t sysfs sysfs /sys
export PATH="/mnt/host/bin:$PATH"
# freshdisk: an empty "plain disk" at /mnt/plain (a directory of the host's
# file system; the guests make a fresh ext4 instead).
D=/mnt/host/host-$BENCH_NAME-disk
freshdisk() { rm -rf "$D" && mkdir -p "$D" && mount --bind "$D" /mnt/plain; }
set +e
echo "@@READY $BENCH_NAME"
while IFS= read -r line; do
  id=${line%% *}; cmd=${line#* }
  ( eval "$cmd" ) </dev/null 2>&1
  echo "@@RC $id $?"
done

#!/bin/sh
# /init of the benchmark guests (bench/drbd): mount the basics, load the
# kernel modules listed in /etc/bench/modules, configure the NIC, then serve
# commands from the host on the serial line named by bench.ctl: the host sends
# "<id> <shell command>" on one line; the answer is the command's output and a
# line "@@RC <id> <exit status>".
export PATH=/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /run /tmp /var/lib/drbd /var/lock /mnt/plain /mnt/drbd /mnt/mr
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/drbd /run/lock
H=x; IP=; CTL=
for a in $(cat /proc/cmdline); do
  case $a in
    bench.host=*) H=${a#bench.host=};;
    bench.ip=*) IP=${a#bench.ip=};;
    bench.ctl=*) CTL=${a#bench.ctl=};;
  esac
done
echo "INIT-START host=$H uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/console
for m in $(cat /etc/bench/modules); do insmod "$m" || echo "insmod $m failed" > /dev/console; done
hostname "$H"
ip link set lo up
NIC=
i=0; while [ -z "$NIC" ] && [ $i -lt 100 ]; do
  for n in /sys/class/net/*; do n=${n##*/}; [ "$n" != lo ] && NIC=$n && break; done
  [ -z "$NIC" ] && { sleep 0.05; i=$((i+1)); }
done
if [ -n "$IP" ] && [ -n "$NIC" ]; then ip addr add "$IP/24" dev "$NIC"; ip link set "$NIC" up; fi
i=0; while [ ! -e "$CTL" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
stty -F "$CTL" raw -echo 2>/dev/null
# freshdisk: a fresh ext4 on the plain disk at /mnt/plain (lazy init off, so
# no background zeroing runs during a measurement).
freshdisk() { mkfs.ext4 -F -q -E lazy_itable_init=1,lazy_journal_init=1,nodiscard /dev/ubdb && mount -o noinit_itable /dev/ubdb /mnt/plain; }
echo "INIT-READY host=$H ip=$IP nic=$NIC uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/console
exec 3<>"$CTL"
echo "@@READY $H" >&3
while IFS= read -r line <&3; do
  id=${line%% *}; cmd=${line#* }
  ( eval "$cmd" ) </dev/null >&3 2>&1
  echo "@@RC $id $?" >&3
done
poweroff -f

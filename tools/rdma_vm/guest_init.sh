#!/bin/sh
# PID 1 of the throwaway guest, on the host's root shared read-only over 9p. Gives the guest writable
# scratch space, creates two soft-RoCE devices (rxe0, rxe1) on a veth pair, prints them, runs
# $dpjob from the results share and leaves its exit status there for the host (tools/rdma_vm/run.sh).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp/home TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mkdir -p /dev/shm  # devtmpfs starts empty; multiprocessing and torch want /dev/shm
for dir in /tmp /run /dev/shm; do mount -t tmpfs tmpfs "$dir"; done
mkdir -p /tmp/results /tmp/home
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results /tmp/results
# The checkout at its own path again: a tmpfs above (/tmp, /run) may have hidden it.
mkdir -p "$dprepo" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro repo "$dprepo" || finish 93
results=/tmp/results

finish() {  # the status file is how the host learns the result; power off rather than panic
	echo "$1" > "$results/rc"
	sync
	echo o > /proc/sysrq-trigger
	sleep 60 2>/dev/null  # powering off tears the 9p root down under this sleep
}

ip link set lo up  # the transports' side channels and the engines' control plane are TCP on loopback
modprobe rdma_rxe || finish 90
ip link add veth0 type veth peer name veth1
for i in 0 1; do
	sysctl -qw "net.ipv6.conf.veth$i.accept_dad=0"  # link-local GIDs appear at once, not after DAD
	ip addr add "10.77.0.$((i + 1))/24" dev "veth$i"  # an IPv4 address: an IPv4-mapped RoCE v2 GID
	ip link set "veth$i" up
	rdma link add "rxe$i" type rxe netdev "veth$i" || finish 91
done
for _ in $(seq 50); do  # ports turn ACTIVE once the netdevs carry; wait up to 5 s
	[ "$(grep -c ACTIVE /sys/class/infiniband/rxe*/ports/1/state)" = 2 ] && break
	sleep 0.1
done
echo "== soft-RoCE devices in the guest (kernel $(uname -r))"
rdma link show
# One grep over the GID tables (1,024 entries a port): a process per entry takes minutes under TCG.
grep -H -v '^0000:0000:0000:0000:0000:0000:0000:0000$' /sys/class/infiniband/*/ports/1/gids/* |
	while IFS=: read -r path gid; do
		dev=${path#/sys/class/infiniband/} index=${path##*/}
		read -r kind < "/sys/class/infiniband/${dev%%/*}/ports/1/gid_attrs/types/$index"
		echo "${dev%%/*} gid[$index] $gid $kind"
	done
cd "$dprepo" || finish 92
sh "$results/job.sh" 2>&1
finish $?

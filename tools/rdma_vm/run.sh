#!/bin/sh
# Run a job script inside a throwaway QEMU guest with two soft-RoCE devices and exit with its status.
#   tools/rdma_vm/run.sh JOB [TIMEOUT_S]     (from the repository root, as root)
# The guest is Debian's kernel under TCG (KVM guests hang at boot on these hosts), its root is the
# host's root read-only over 9p, and this checkout (venv included) is mounted again at its own path
# (the guest's tmpfs /tmp would hide a checkout under /tmp); build/rdma-vm/ is its one writable share
# (job, log, exit status). `-nic none`: nothing leaves the VM.
set -eu
job=$1 timeout_s=${2:-3000}
repo=$(pwd)
results=$repo/build/rdma-vm
kver=$(basename "$(ls -d /lib/modules/*-amd64 2>/dev/null | sort -V | tail -n 1)")
if [ -z "$kver" ] || [ ! -r "/boot/vmlinuz-$kver" ]; then  # Debian's kernel image is readable by root only
	echo "rdma-vm: needs Debian's linux-image-amd64 and root to read /boot/vmlinuz-* (make test-rdma installs it)"
	exit 1
fi
rm -rf "$results" && mkdir -p "$results"
cp "$job" "$results/job.sh"
sh "$repo/tools/rdma_vm/initramfs.sh" "$kver" "$results/initrd.gz"
echo "== booting kernel $kver under QEMU TCG (timeout ${timeout_s}s)"
# A hung guest is killed by the timeout and the missing status file fails the run.
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
	-machine accel=tcg -cpu max -smp 2 -m 8G -nic none -no-reboot -display none -monitor none \
	-serial stdio -kernel "/boot/vmlinuz-$kver" -initrd "$results/initrd.gz" \
	-append "console=ttyS0 panic=-1 quiet dpinit=$repo/tools/rdma_vm/guest_init.sh dprepo=$repo" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
	-virtfs "local,path=$repo,mount_tag=repo,security_model=passthrough,readonly=on,multidevs=remap" \
	-virtfs "local,path=$results,mount_tag=results,security_model=none" \
	</dev/null | tee "$results/console.log" || true
if [ ! -s "$results/rc" ]; then
	echo "rdma-vm: the guest left no exit status (hung, killed after ${timeout_s}s, or crashed)"
	exit 1
fi
rc=$(cat "$results/rc")
echo "== guest job exited with status $rc"
exit "$rc"

#!/bin/sh
# Build the guest's initramfs: busybox plus the virtio and 9p modules of kernel $1, written to $2.
# Its /init mounts the host's root (shared read-only over virtio-9p) and switch_roots into the script
# named by the `dpinit=` kernel argument, so the guest runs the host's own binaries, venv and checkout.
set -eu
kver=$1 out=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/mods" "$work/proc" "$work/sys" "$work/dev" "$work/newroot"
cp /bin/busybox "$work/bin/busybox"  # busybox-static: needs no libraries in the initramfs
# Debian builds virtio and 9p as modules; they are loaded in dependency order, as modprobe would.
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p"
for m in $MODULES; do
	cp "$(modinfo -k "$kver" -F filename "$m")" "$work/mods/$m.ko"
done
cat > "$work/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc && mount -t sysfs sys /sys && mount -t devtmpfs dev /dev
for m in $MODULES; do insmod /mods/\$m.ko || echo "initramfs: insmod \$m failed"; done
# cache=loose: the root is read-only and nothing in the guest changes it, so lookups may be cached.
if ! mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /newroot; then
	echo "initramfs: cannot mount the host root over 9p"; echo o > /proc/sysrq-trigger
fi
mount --move /dev /newroot/dev && umount /proc /sys
exec switch_root /newroot /bin/sh "\$dpinit"
INIT
chmod +x "$work/init"
(cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"

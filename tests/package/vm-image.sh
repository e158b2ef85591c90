#!/bin/bash
# Make (once, cached) the Debian 12 VM image for tests/package/systemd-vm-test.sh:
# real systemd as PID 1, Debian's own kernel and initramfs, and everything the
# edgecam package depends on already installed, because the guest has no
# network (it gets the .deb over 9p and installs it with dpkg -i). Debian's
# chromium too, for the browser check (headless, on the guest's loopback).
#   vmlinuz, initrd.img  from the image's linux-image-amd64 (initramfs-tools)
#   rootfs.img           ext4 made with mke2fs -d from an mmdebstrap root
# Prints the image directory on the last line of stdout.
#
# The guest runs one unit of ours, edgecam-vm-runner.service: it mounts the
# share (tag "edgecamtest") at /mnt/test, runs /mnt/test/guest-test.sh with
# its output in /mnt/test/result.log and its exit status in /mnt/test/rc,
# then powers the VM off. The tests themselves live in the repository, so
# changing them does not rebuild the image.
set -euo pipefail
LOG_TAG=vm-image
. "$(dirname "$0")/../../scripts/lib.sh"
need_root

PKGS="systemd,systemd-sysv,udev,dbus,kmod,procps,iproute2,curl,python3,\
linux-image-amd64,initramfs-tools,\
adduser,gstreamer1.0-plugins-base,gstreamer1.0-plugins-good,gstreamer1.0-plugins-bad,\
gstreamer1.0-plugins-ugly,gstreamer1.0-nice,gstreamer1.0-tools,\
chromium"
key=$( { sed -n '/^PKGS=/,$p' "$0"; } | sha256sum | cut -c1-12)
IMG=$EDGECAM_CACHE/vm-$key
if [ -f "$IMG/done" ]; then log "cached: $IMG"; echo "$IMG"; exit 0; fi

apt_install mmdebstrap qemu-system-x86 e2fsprogs
mkdir -p "$EDGECAM_CACHE"
exec 9>"$EDGECAM_CACHE/.vm-image.lock"; flock 9
if [ -f "$IMG/done" ]; then echo "$IMG"; exit 0; fi
step "vm image $IMG"
W=$EDGECAM_CACHE/vm-build.$$
rm -rf "$W"; mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
R=$W/root

# Hooks run inside mmdebstrap: our runner unit and the fixed bits of the guest.
cat > "$W/customize.sh" <<'HOOK'
#!/bin/sh
set -e
R=$1
echo edgecam-vm > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 edgecam-vm\n' > "$R/etc/hosts"
: > "$R/etc/fstab"
# no password for root on the console, for debugging a hung test with -serial stdio
chroot "$R" passwd -d root
cat > "$R/usr/local/sbin/edgecam-vm-runner" <<'EOF'
#!/bin/sh
# Runs the test the host shared in, then powers off (see tests/package/vm-image.sh).
modprobe -a 9pnet_virtio 9p
mkdir -p /mnt/test
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 edgecamtest /mnt/test
rc=125
if [ -x /mnt/test/guest-test.sh ]; then
  /mnt/test/guest-test.sh > /mnt/test/result.log 2>&1 && rc=0 || rc=$?
fi
echo "$rc" > /mnt/test/rc
sync
systemctl poweroff --no-block
EOF
chmod 755 "$R/usr/local/sbin/edgecam-vm-runner"
cat > "$R/etc/systemd/system/edgecam-vm-runner.service" <<'EOF'
[Unit]
Description=edgecam package test runner
After=basic.target systemd-udevd.service

[Service]
Type=simple
ExecStart=/usr/local/sbin/edgecam-vm-runner
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
EOF
chroot "$R" systemctl enable edgecam-vm-runner.service
# Nothing waits for a network that the guest does not have.
chroot "$R" systemctl mask systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true
# The GStreamer registry, built now instead of in every test boot (slow under TCG).
chroot "$R" env HOME=/root gst-inspect-1.0 >/dev/null 2>&1 || true
HOOK
chmod +x "$W/customize.sh"

log "mmdebstrap (kernel, systemd, GStreamer; about 3-5 min)"
mmdebstrap --quiet --variant=minbase --include="$PKGS" \
  --customize-hook="$W/customize.sh \"\$1\"" \
  "$SUITE" "$R" \
  "deb $DEBIAN_MIRROR $SUITE main" "deb $DEBIAN_MIRROR $SUITE-updates main" \
  "deb ${DEBIAN_MIRROR%/debian}/debian-security $SUITE-security main" \
  > "$W/mmdebstrap.log" 2>&1 || { tail -30 "$W/mmdebstrap.log" >&2; die "mmdebstrap failed"; }

kver=$(ls "$R/lib/modules" | sort -V | tail -1)
[ -f "$R/boot/initrd.img-$kver" ] || die "no initrd for $kver in the image"
mkdir -p "$W/out"
cp "$R/boot/vmlinuz-$kver" "$W/out/vmlinuz"
cp "$R/boot/initrd.img-$kver" "$W/out/initrd.img"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
mb=$(du -sm "$R" | cut -f1)
size=$(( mb + mb / 4 + 512 ))   # room for the package, logs and the test's writes
truncate -s "${size}M" "$W/out/rootfs.img"
mkfs.ext4 -q -F -L edgecam-vm -d "$R" "$W/out/rootfs.img"
echo "$kver" > "$W/out/kver"
touch "$W/out/done"
rm -rf "$IMG"; mv "$W/out" "$IMG"
# images of older versions of this script are of no further use
find "$EDGECAM_CACHE" -maxdepth 1 -name 'vm-*' -type d ! -name "vm-$key" ! -name 'vm-build.*' -exec rm -rf {} +
step_done
log "image: $IMG (kernel $kver, root ${mb} MiB)"
echo "$IMG"

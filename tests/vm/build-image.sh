#!/bin/bash
# Build (once, cached) a small Debian 12 guest for testing V4L2 hot-plug code
# (adapted from ../shared/v4l2vm for edgecam's VM tests):
#   vmlinuz      Debian's own linux-image-<abi>-amd64 kernel (has vivid, uvcvideo,
#                dummy_hcd, usb_f_uvc as modules)
#   initrd.img   busybox + virtio/ext4/9p modules; mounts the root image
#   rootfs.img   ext4: debootstrap minbase + udev, kmod, v4l-utils, gstreamer
#                (base/good), the kernel's (pruned) modules, v4l2loopback.ko
#                0.13.2 (bookworm-backports, runtime add/delete) built on the host
#                against linux-headers-<abi>-amd64, and /sbin/vm-init
# Prints the image directory on the last line of stdout.
#
# Env:  V4L2VM_CACHE   cache root (default /tmp/edgecam-vm-cache; not the shared
#                      /tmp/v4l2vm-cache, where a build deletes images of other keys)
#       V4L2VM_EXTRA_PACKAGES  extra Debian packages for the guest (space separated)
#       V4L2VM_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#       V4L2VM_REBUILD=1  ignore the cache
#       V4L2VM_KEEP_OLD=1 keep images of older script versions in the cache
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${V4L2VM_CACHE:-/tmp/edgecam-vm-cache}
MIRROR=${V4L2VM_MIRROR:-http://deb.debian.org/debian}
EXTRA=${V4L2VM_EXTRA_PACKAGES:-}
SUITE=bookworm
GUEST_PKGS="udev kmod v4l-utils gstreamer1.0-tools gstreamer1.0-plugins-base \
gstreamer1.0-plugins-good procps busybox usbutils usbip $EXTRA"

log() { echo "[build-image $(date +%T)] $*" >&2; }
die() { echo "[build-image] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mkfs)"

key=$( { cat "$0" "$HERE"/guest/*; echo "$GUEST_PKGS"; } | sha256sum | cut -c1-12)
IMG="$CACHE/img-$key"
if [ -z "${V4L2VM_REBUILD:-}" ] && [ -f "$IMG/done" ]; then
  log "cached image: $IMG ($(cat "$IMG/kver"))"
  echo "$IMG"; exit 0
fi

t0=$(date +%s)
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"; flock 9          # one builder at a time
if [ -z "${V4L2VM_REBUILD:-}" ] && [ -f "$IMG/done" ]; then echo "$IMG"; exit 0; fi

# ---- host tools --------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' \
  || need+=(busybox-static)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v cpio >/dev/null || need+=(cpio)
command -v file >/dev/null || need+=(file)
command -v xz >/dev/null || need+=(xz-utils)
export DEBIAN_FRONTEND=noninteractive
log "apt-get update (host)"
apt-get update -qq
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$KPKG" ] || die "cannot resolve linux-image-amd64"
KVER=${KPKG#linux-image-}
[ -d "/usr/src/linux-headers-$KVER" ] || need+=("linux-headers-$KVER")
command -v make >/dev/null || need+=(make)
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/include/linux/usb/g_uvc.h ] && [ -e /usr/lib/x86_64-linux-gnu/crt1.o ] || need+=(libc6-dev linux-libc-dev)
if [ ${#need[@]} -gt 0 ]; then
  log "installing on the host: ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
file -L /bin/busybox | grep -q 'statically linked' || die "/bin/busybox is not static (install busybox-static)"

WORK="$CACHE/build.$$"
rm -rf "$WORK"; mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
R="$WORK/rootfs"

# ---- root filesystem -------------------------------------------------------------
log "debootstrap --variant=minbase $SUITE"
debootstrap --variant=minbase "$SUITE" "$R" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
  || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
cat > "$R/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
deb $MIRROR $SUITE-backports main
EOF
log "guest packages: $GUEST_PKGS"
chroot "$R" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends $GUEST_PKGS" > "$WORK/apt.log" 2>&1 \
  || { tail -30 "$WORK/apt.log" >&2; die "guest apt-get install failed"; }
# v4l2loopback 0.13.2 (backports): the C v4l2loopback-ctl with add/delete
chroot "$R" /bin/sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends -t $SUITE-backports v4l2loopback-utils && \
  cd /tmp && apt-get download -t $SUITE-backports v4l2loopback-dkms && \
  apt-get download $KPKG" >> "$WORK/apt.log" 2>&1 \
  || { tail -30 "$WORK/apt.log" >&2; die "v4l2loopback/kernel download failed"; }

# ---- kernel + modules ------------------------------------------------------------
log "kernel $KVER"
mkdir -p "$WORK/k"
dpkg-deb -x "$R"/tmp/"$KPKG"_*.deb "$WORK/k"
M="$R/usr/lib/modules/$KVER"
mkdir -p "$R/usr/lib/modules"
cp -a "$WORK/k/lib/modules/$KVER" "$R/usr/lib/modules/"
cp "$WORK/k/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
cp "$WORK/k/boot/config-$KVER" "$WORK/config"
# Uncompressed ELF vmlinux for PVH direct boot (CONFIG_PVH=y): skips the XZ
# decompression of bzImage, which costs ~3 s under TCG.
off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$WORK/vmlinuz" | head -1 | cut -d: -f1)
tail -c +$((off+1)) "$WORK/vmlinuz" | xz -dc --single-stream > "$WORK/vmlinux" 2>/dev/null || true
file "$WORK/vmlinux" | grep -q 'ELF 64-bit' || { log "no vmlinux extracted; bzImage only"; rm -f "$WORK/vmlinux"; }
chroot "$R" depmod -a "$KVER"
# keep only media/usb/virtio/fs bits and everything they depend on
KEEP='^kernel/(drivers/media/|drivers/usb/|drivers/virtio/|drivers/block/virtio_blk|drivers/char/virtio_console|drivers/char/hw_random/virtio-rng|fs/(9p|ext4|jbd2|fuse|configfs|overlayfs|netfs|fscache)/|fs/mbcache|net/9p/|drivers/input/misc/uinput|crypto/crc32c)'
awk -v re="$KEEP" '{m=$1; sub(/:$/,"",m); if (m ~ re) {w[m]=1; for(i=2;i<=NF;i++) w[$i]=1}}
     END {for (m in w) print m}' "$M/modules.dep" | sort > "$WORK/keep"
(cd "$M" && find kernel -name '*.ko' | sort | comm -23 - "$WORK/keep" | xargs -r rm -f \
  && find kernel -type d -empty -delete)

log "building v4l2loopback against linux-headers-$KVER"
mkdir -p "$WORK/v4l"
dpkg-deb -x "$R"/tmp/v4l2loopback-dkms_*.deb "$WORK/v4l"
src=$(echo "$WORK"/v4l/usr/src/v4l2loopback-*)
make -s -C "/usr/src/linux-headers-$KVER" M="$src" modules > "$WORK/v4l.log" 2>&1 \
  || { cat "$WORK/v4l.log" >&2; die "v4l2loopback build failed"; }
mkdir -p "$M/updates"
strip --strip-debug -o "$M/updates/v4l2loopback.ko" "$src/v4l2loopback.ko"
basename "$src" > "$R/etc/v4l2loopback-version"
rm -f "$R"/tmp/*.deb
chroot "$R" depmod -a "$KVER"

# ---- guest init, cleanup ---------------------------------------------------------
install -m 755 "$HERE/guest/vm-init" "$R/sbin/vm-init"
install -m 755 "$HERE/guest/fakecam" "$R/usr/local/bin/fakecam"
install -m 755 "$HERE/guest/usbcam" "$R/usr/local/bin/usbcam"
gcc -O2 -Wall -o "$R/usr/local/bin/uvc-gadget-stub" "$HERE/guest/uvc-gadget-stub.c" \
  || die "building uvc-gadget-stub failed"
# pre-build the GStreamer plugin registry (else the first gst-launch in every
# fresh VM spends seconds scanning plugins, worse under TCG)
chroot "$R" env HOME=/root gst-inspect-1.0 > /dev/null 2>&1 || true
echo v4l2vm > "$R/etc/hostname"
: > "$R/etc/fstab"
chroot "$R" apt-get clean
rm -rf "$R"/var/lib/apt/lists/* "$R"/usr/share/doc/* "$R"/usr/share/man/* \
       "$R"/usr/share/info/* "$R"/var/cache/debconf/*-old "$R"/var/log/*.log
find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +

# ---- initramfs ---------------------------------------------------------------------
log "initramfs"
I="$WORK/initramfs"
mkdir -p "$I"/{bin,proc,sys,dev,newroot}
cp /bin/busybox "$I/bin/busybox"
for a in sh mount umount insmod switch_root sleep mkdir cat echo; do ln -s busybox "$I/bin/$a"; done
install -m 755 "$HERE/guest/initramfs-init" "$I/init"
: > "$I/modules.list"
for m in virtio_pci virtio_blk virtio_console ext4 9pnet_virtio 9p; do
  chroot "$R" modprobe -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r p; do
  mkdir -p "$I$(dirname "$p")"; cp "$R$p" "$I$p"; echo "${p#/}" >> "$I/modules.list"
done
(cd "$I" && find . | cpio -o -H newc --quiet) > "$WORK/initrd.img"

# ---- ext4 root image ---------------------------------------------------------------
log "ext4 image"
mb=$(du -sm "$R" | cut -f1)
size=$(( mb * 12 / 10 + 128 ))
truncate -s "${size}M" "$WORK/rootfs.img"
mkfs.ext4 -q -F -L v4l2vm -d "$R" "$WORK/rootfs.img"

rm -rf "$IMG"; mkdir -p "$IMG"
[ -f "$WORK/vmlinux" ] && mv "$WORK/vmlinux" "$IMG/"
mv "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/rootfs.img" "$WORK/config" "$IMG/"
echo "$KVER" > "$IMG/kver"
echo "$GUEST_PKGS" > "$IMG/packages"
touch "$IMG/done"
# drop images built from older versions of these scripts (set V4L2VM_KEEP_OLD=1 to keep)
[ -n "${V4L2VM_KEEP_OLD:-}" ] || find "$CACHE" -mindepth 1 -maxdepth 1 -name 'img-*' ! -name "img-$key" -exec rm -rf {} +
log "done in $(( $(date +%s) - t0 ))s: $IMG (rootfs ${mb} MiB used, image ${size} MiB sparse)"
echo "$IMG"

#!/bin/bash
# Build edgecam_<version>_arm64.deb with no containers: Debian's aarch64 cross
# gcc, and a Debian bookworm arm64 sysroot (made by mmdebstrap) that holds the
# -dev packages edgecam links against.
#
# usage: scripts/sysroot-build.sh [--rust rustup|debian] [-- CARGO_ARGS...]
#   --rust rustup  (default) the machine's rustup toolchain plus its aarch64 std
#   --rust debian  Debian's rustc-web/cargo-web with libstd-rust-web-dev:arm64
#                  (bookworm-security): everything from Debian's archive
# Output: target/sysroot/debian/edgecam_<version>_arm64.deb
#
# Why a sysroot and not `apt-get install libgstreamer*-dev:arm64` on this box:
# the arm64 and amd64 GStreamer -dev sets do not co-install (libopencv-dev in
# the chain), and installing the arm64 one removes the amd64 one, breaking the
# native build. A sysroot leaves the host's packages alone.
set -euo pipefail
LOG_TAG=sysroot-build
. "$(dirname "$0")/lib.sh"

rust=rustup; cargo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rust) rust=$2; shift 2;;
    --) shift; cargo_args=("$@"); break;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) die "unknown option $1 (see --help)";;
  esac
done
need_root
t_all=$(date +%s)

# The sysroot's package list; its hash names the cached sysroot, so changing
# the list makes a new one instead of patching an old one.
SYSROOT_PKGS="libc6-dev,libgcc-12-dev,linux-libc-dev,libgstreamer1.0-dev,libgstreamer-plugins-base1.0-dev,libgstreamer-plugins-bad1.0-dev,libudev-dev"
key=$(echo "$SUITE $SYSROOT_PKGS" | sha256sum | cut -c1-10)
SYSROOT=$EDGECAM_CACHE/sysroot-arm64-$key

step "host tools"
apt_install crossbuild-essential-arm64 binutils-aarch64-linux-gnu mmdebstrap arch-test \
  libclang-dev pkg-config file python3
cargo_tool cargo-deb cargo-deb
step_done

step "arm64 sysroot $SYSROOT"
if [ -f "$SYSROOT/.edgecam-done" ]; then
  log "cached"
else
  rm -rf "$SYSROOT.tmp"
  mkdir -p "$EDGECAM_CACHE"
  # extract: unpack the packages and their dependencies, run nothing (no
  # qemu needed); the security suite so the libraries match an updated Pi.
  log "mmdebstrap --variant=extract (about 1 min, 1.3 GB)"
  mmdebstrap --quiet --architectures=arm64 --variant=extract --include="$SYSROOT_PKGS" \
    "$SUITE" "$SYSROOT.tmp" \
    "deb $DEBIAN_MIRROR $SUITE main" \
    "deb $DEBIAN_MIRROR $SUITE-updates main" \
    "deb ${DEBIAN_MIRROR%/debian}/debian-security $SUITE-security main" \
    > "$EDGECAM_CACHE/sysroot-mmdebstrap.log" 2>&1 \
    || { tail -20 "$EDGECAM_CACHE/sysroot-mmdebstrap.log" >&2; die "mmdebstrap failed"; }
  touch "$SYSROOT.tmp/.edgecam-done"
  mv "$SYSROOT.tmp" "$SYSROOT"
  # Sysroots made from older package lists are no longer used.
  find "$EDGECAM_CACHE" -maxdepth 1 -name 'sysroot-arm64-*' ! -name "sysroot-arm64-$key" -exec rm -rf {} +
fi
step_done

step "rust ($rust)"
case "$rust" in
  rustup)
    rust_target_std "$AARCH64" || die "rustup target add $AARCH64 failed; try --rust debian"
    CARGO=cargo
    ;;
  debian)
    # Debian's newer Rust for building Firefox/Chromium (bookworm-security),
    # whose arm64 std co-installs with the amd64 compiler (it is Multi-Arch: same).
    dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; unset _apt_updated; }
    grep -rqs "$SUITE-security" /etc/apt/sources.list /etc/apt/sources.list.d/ \
      || die "Debian's rustc-web needs $SUITE-security in the apt sources"
    apt_install rustc-web cargo-web libstd-rust-web-dev:arm64
    # /usr/bin/cargo explicitly: rustup's proxy comes first on PATH.
    CARGO=/usr/bin/cargo
    export RUSTC=/usr/bin/rustc
    ;;
  *) die "--rust must be rustup or debian";;
esac
log "$($CARGO --version), $(${RUSTC:-rustc} --version)"
step_done

step "cargo build --release --target $AARCH64 (sysroot)"
cd "$REPO"
# pkg-config must see the sysroot's arm64 .pc files only, with their paths
# prefixed by the sysroot.
export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_SYSROOT_DIR=$SYSROOT
export PKG_CONFIG_LIBDIR=$SYSROOT/usr/lib/aarch64-linux-gnu/pkgconfig:$SYSROOT/usr/share/pkgconfig
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CFLAGS_aarch64_unknown_linux_gnu="--sysroot=$SYSROOT"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=--sysroot=$SYSROOT"
# The v4l crate runs bindgen on linux/videodev2.h: libclang must parse the
# sysroot's headers for aarch64, not the host's.
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=$SYSROOT"
# A target dir of its own (see scripts/cross-build.sh).
export CARGO_TARGET_DIR=$REPO/target/sysroot
nice -n 10 $CARGO build --release --target "$AARCH64" "${cargo_args[@]}"
bin=$CARGO_TARGET_DIR/$AARCH64/release/edgecam
file -b "$bin" | grep -q 'ARM aarch64' || die "$bin is not an aarch64 ELF"
step_done

step "cargo deb (arm64)"
arm64_shlibs_on_host
check_glibc "$bin" 2.36
aarch64-linux-gnu-strip --strip-unneeded --remove-section=.comment "$bin"
out=$($CARGO deb --target "$AARCH64" --no-build --no-strip 2>&1) || { echo "$out" >&2; die "cargo deb failed"; }
deb=$(echo "$out" | tail -1)
[ -f "$deb" ] || { echo "$out" >&2; die "cargo deb did not produce a package"; }
dpkg-deb -f "$deb" Package Version Architecture Depends | sed 's/^/  /' >&2
step_done
log "done in $(( $(date +%s) - t_all ))s: $deb"
echo "$deb"

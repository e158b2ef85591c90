#!/bin/bash
# Build edgecam_<version>_arm64.deb with `cross` running in podman, inside a
# Debian bookworm image made on this machine (no container registry is needed
# or reachable: the base image comes from debootstrap, the rest from Debian's
# archive through apt inside `podman build`).
#
# usage: scripts/cross-build.sh [--image-only] [-- CARGO_ARGS...]
#   --image-only     prepare podman and the base image, then stop
# Output: target/cross/debian/edgecam_<version>_arm64.deb
#
# Stages and why they exist:
#  1. podman config: this sandbox refuses rlimits and has hybrid cgroups; crun
#     fails there and runc works (see shared/notes/packaging-cross.md).
#  2. localhost/edgecam/bookworm:base from debootstrap (cached; about 1 min).
#  3. cross build --release --target aarch64-unknown-linux-gnu: cross builds the
#     image from packaging/cross/Dockerfile (Cross.toml; FROM the base image; about
#     4 min the first time, cached after), then runs cargo in it. Then a glibc
#     <= 2.36 check and cargo deb --no-build.
set -euo pipefail
LOG_TAG=cross-build
. "$(dirname "$0")/lib.sh"

image_only=0; cargo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --image-only) image_only=1; shift;;
    --) shift; cargo_args=("$@"); break;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) die "unknown option $1 (see --help)";;
  esac
done
need_root

BASE_IMAGE=localhost/edgecam/bookworm:base
export CROSS_CONTAINER_ENGINE=podman
t_all=$(date +%s)

# ---- 1. podman ------------------------------------------------------------------
step "podman"
apt_install podman runc uidmap fuse-overlayfs slirp4netns debootstrap
conf=/etc/containers/containers.conf
if ! grep -qs 'edgecam-build' "$conf"; then
  if [ -s "$conf" ]; then
    log "keeping the existing $conf (not written by us); podman must use runc and cgroupfs there"
  else
    mkdir -p /etc/containers
    # default_ulimits = []: podman's default nofile/nproc ulimits are refused here.
    # runc, cgroupfs: crun and systemd cgroups fail on this host's hybrid cgroups.
    # events_logger = file: there is no journald to log to.
    cat > "$conf" <<'EOF'
# written by edgecam-build (scripts/cross-build.sh)
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    log "wrote $conf"
  fi
fi
podman info >/dev/null 2>&1 || die "podman does not work here (podman info failed)"
step_done

# ---- 2. base image --------------------------------------------------------------
step "base image $BASE_IMAGE"
if podman image exists "$BASE_IMAGE"; then
  log "cached"
else
  mkdir -p "$EDGECAM_CACHE"
  root=$EDGECAM_CACHE/bookworm-base.$$
  rm -rf "$root"
  trap 'rm -rf "$root"' EXIT
  log "debootstrap --variant=minbase $SUITE (about 1 min)"
  debootstrap --variant=minbase "$SUITE" "$root" "$DEBIAN_MIRROR" > "$EDGECAM_CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$EDGECAM_CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
  # Security and point-release updates too, so the image has the same library
  # versions as an up-to-date Pi running Debian or Raspberry Pi OS bookworm.
  cat > "$root/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security $SUITE-security main
EOF
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -c . | podman import -q - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"; trap - EXIT
  log "imported $BASE_IMAGE"
fi
step_done

[ $image_only = 1 ] && { log "podman and the base image are ready (--image-only)"; exit 0; }

# ---- 3. cross build + .deb --------------------------------------------------------
step "cross build --release --target $AARCH64"
cargo_tool cross cross
cargo_tool cargo-deb cargo-deb
# cross mounts the host's rustup toolchain into the container and needs the
# aarch64 std in it.
rust_target_std "$AARCH64" || die "rustup target add $AARCH64 failed (use scripts/sysroot-build.sh with Debian's Rust instead)"
# Trap: cross 0.2.5 parses `rustup toolchain list` expecting "NAME (default)";
# rustup >= 1.28 prints "NAME (active, default)", so cross believes the toolchain
# is missing and runs `rustup toolchain add stable`, which UPDATES the machine's
# stable toolchain (seen here: 1.95 -> 1.99 for every user of the machine).
# A rustup shim first on cross's PATH strips the annotations and refuses
# toolchain installs, so cross can only use what is already installed.
shim=$EDGECAM_CACHE/cross-shim
mkdir -p "$shim"
real_rustup=$(command -v rustup)
{
  echo '#!/bin/sh'
  echo '# written by scripts/cross-build.sh: see the comment there'
  echo "real=$real_rustup"
  cat <<'SHIM'
case "$1 $2" in
  "toolchain list") "$real" "$@" | sed 's/ (.*)$//'; exit 0;;
  "toolchain add"|"toolchain install")
    echo "cross-shim: refusing 'rustup $*' (it would change the machine's toolchain)" >&2; exit 1;;
esac
exec "$real" "$@"
SHIM
} > "$shim/rustup"
chmod +x "$shim/rustup"
cd "$REPO"
# A target dir of its own: build scripts and proc macros built inside the
# container would otherwise fight with native builds over target/release/build.
export CARGO_TARGET_DIR=$REPO/target/cross
# Fetch the crates on the host: cross mounts $CARGO_HOME, so the container
# build needs no network of its own.
cargo fetch -q --target "$AARCH64"
PATH=$shim:$PATH nice -n 10 cross build --release --target "$AARCH64" "${cargo_args[@]}"
bin=$CARGO_TARGET_DIR/$AARCH64/release/edgecam
file -b "$bin" | grep -q 'ARM aarch64' || die "$bin is not an aarch64 ELF"
step_done

step "cargo deb (arm64)"
arm64_shlibs_on_host
apt_install binutils-aarch64-linux-gnu file
check_glibc "$bin" 2.36
# Strip with the aarch64 binutils and pass --no-strip: cargo-deb would run the
# host's x86 `strip` on it unless a .cargo/config.toml names another.
aarch64-linux-gnu-strip --strip-unneeded --remove-section=.comment "$bin"
out=$(cargo deb --target "$AARCH64" --no-build --no-strip 2>&1) || { echo "$out" >&2; die "cargo deb failed"; }
deb=$(echo "$out" | tail -1)
[ -f "$deb" ] || { echo "$out" >&2; die "cargo deb did not produce a package"; }
dpkg-deb -f "$deb" Package Version Architecture Depends | sed 's/^/  /' >&2
step_done
log "done in $(( $(date +%s) - t_all ))s: $deb"
echo "$deb"

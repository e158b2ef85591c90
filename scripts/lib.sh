# Shared helpers for edgecam's packaging and cross-build scripts (sourced, not run).
#
# Everything here installs from Debian's archive or crates.io only, keeps its
# work under $EDGECAM_CACHE, and is safe to run again: each step checks whether
# its result is already there before doing anything.

EDGECAM_CACHE=${EDGECAM_CACHE:-/var/cache/edgecam-build}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# The repository root, whichever script sourced us.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AARCH64=aarch64-unknown-linux-gnu
export DEBIAN_FRONTEND=noninteractive

_step_t0=$(date +%s)
log()  { printf '[%s %s] %s\n' "${LOG_TAG:-edgecam}" "$(date +%T)" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "${LOG_TAG:-edgecam}" "$*" >&2; exit 1; }
# step NAME: log the start of a stage; step_done prints how long it took.
step() { _step_name=$1; _step_t0=$(date +%s); log "== $1"; }
step_done() { log "== $_step_name: done in $(( $(date +%s) - _step_t0 ))s"; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (apt-get, chroot, podman need it)"; }

# apt_install PKG...: install only what is missing. Other engineers run apt on
# the same machine, so wait for the dpkg lock instead of failing on it.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ -z "${_apt_updated:-}" ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq || die "apt-get update failed"
    _apt_updated=1
  fi
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

# cargo_tool NAME CRATE: a cargo subcommand from crates.io, built once (--locked
# for the versions its authors tested; nice because two cores are shared).
cargo_tool() {
  local bin=$1 crate=$2
  command -v "$bin" >/dev/null 2>&1 && return 0
  [ -x "$HOME/.cargo/bin/$bin" ] && return 0
  log "cargo install $crate (once, about 1-2 min)"
  nice -n 10 cargo install --locked -q "$crate" || die "cargo install $crate failed"
}

# The version cargo-deb will put in the package name.
crate_version() {
  cargo metadata --no-deps --format-version 1 --manifest-path "$REPO/Cargo.toml" \
    | python3 -c 'import json,sys; print([p for p in json.load(sys.stdin)["packages"] if p["name"]=="edgecam"][0]["version"])'
}

# rust_target_std TRIPLE: the Rust standard library for TRIPLE. rustup's download
# works here but is not a package registry; Debian's libstd-rust-web-dev:arm64
# (bookworm-security) is the registry-only fallback, used with /usr/bin/cargo.
rust_target_std() {
  local t=$1
  if rustup target list --installed 2>/dev/null | grep -qx "$t"; then return 0; fi
  rustup target add "$t" >/dev/null 2>&1 && return 0
  return 1
}

# binfmt_misc is not mounted in this sandbox by default; arm64 programs (the
# package's maintainer scripts, the tests) run through qemu-user once it is.
enable_qemu_aarch64() {
  apt_install qemu-user-static binfmt-support
  [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "qemu-aarch64 binfmt handler not registered"
}

# cargo-deb's `$auto` runs dpkg-shlibdeps, which maps each library the binary
# needs to the package that ships it through the host's dpkg database: for an
# aarch64 binary it finds nothing (and the arm64 .deb silently loses its
# libgstreamer*/libc6 dependencies) unless the arm64 runtime libraries are
# installed here. Those co-install with the amd64 ones (Multi-Arch: same);
# only the -dev packages do not, and --no-remove makes apt refuse rather than
# remove anything (such as the amd64 -dev set).
arm64_shlibs_on_host() {
  local libs=(libc6:arm64 libgcc-s1:arm64 libglib2.0-0:arm64 libgstreamer1.0-0:arm64
              libgstreamer-plugins-base1.0-0:arm64 libgstreamer-plugins-bad1.0-0:arm64 libudev1:arm64)
  local missing=() p
  for p in "${libs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "dpkg --add-architecture arm64 (for the arm64 runtime libraries' shlibs)"
    dpkg --add-architecture arm64
  fi
  log "apt-get install ${missing[*]} (runtime libraries only, for dpkg-shlibdeps)"
  apt-get -o DPkg::Lock::Timeout=600 update -qq || die "apt-get update failed"
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends --no-remove "${missing[@]}" >/dev/null \
    || die "installing ${missing[*]} failed (apt would have had to remove packages?)"
}

# check_glibc BIN [MAX]: the binary must not need a glibc newer than MAX
# (2.36 = Debian 12 and Raspberry Pi OS bookworm). Prints the highest it needs.
check_glibc() {
  local bin=$1 max=${2:-2.36} objdump=objdump top
  case "$(file -b "$bin")" in *aarch64*) objdump=aarch64-linux-gnu-objdump;; esac
  top=$($objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
  [ -n "$top" ] || die "no GLIBC_ symbols found in $bin"
  # A GLIBC_PRIVATE reference (seen once: `errno` as a data symbol) makes
  # dpkg-shlibdeps pin the package to exactly this glibc (libc6 >> 2.36, << 2.37).
  if $objdump -T "$bin" | grep -q 'GLIBC_PRIVATE'; then
    $objdump -T "$bin" | grep 'GLIBC_PRIVATE' >&2
    die "$bin uses glibc-private symbols (above): the package would only install with this exact glibc"
  fi
  if [ "$(printf '%s\n%s\n' "$top" "$max" | sort -V | tail -1)" != "$max" ]; then
    die "$bin needs GLIBC_$top, newer than $max"
  fi
  log "glibc check: $(basename "$bin") needs at most GLIBC_$top (limit $max): ok"
}

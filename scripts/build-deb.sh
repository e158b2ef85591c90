#!/bin/bash
# Build the native (amd64 here) edgecam_<version>_<arch>.deb with cargo-deb,
# and check it with lintian.
#
# usage: scripts/build-deb.sh [--fault-injection] [--no-lintian]
#   --fault-injection  instead of the package, build the test-only binary with
#                      the `fault-injection` feature (SIGUSR2 hangs the supervisor,
#                      for the watchdog test) into target/fault-injection/; it is
#                      never packaged. Prints its path.
#   --no-lintian       skip lintian
# Output (last line of stdout): the .deb path, e.g. target/debian/edgecam_0.1.0-1_amd64.deb
#
# The release build shares the machine's two cores with everyone else's work,
# so it runs under nice.
set -euo pipefail
LOG_TAG=build-deb
. "$(dirname "$0")/lib.sh"

fault=0; lint=1
while [ $# -gt 0 ]; do
  case "$1" in
    --fault-injection) fault=1; shift;;
    --no-lintian) lint=0; shift;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) die "unknown option $1 (see --help)";;
  esac
done
cd "$REPO"
t_all=$(date +%s)

if [ $fault = 1 ]; then
  step "cargo build --features fault-injection (test-only binary)"
  # Its own target dir, so its feature set never invalidates the release build,
  # and the release profile without LTO: the watchdog test needs the feature,
  # not the last few per cent of speed.
  CARGO_TARGET_DIR=$REPO/target/fault-injection CARGO_PROFILE_RELEASE_LTO=false \
    nice -n 10 cargo build --release --features fault-injection
  step_done
  echo "$REPO/target/fault-injection/release/edgecam"
  exit 0
fi

[ "$(id -u)" = 0 ] && apt_install dpkg-dev file
command -v lintian >/dev/null || { [ "$(id -u)" = 0 ] && apt_install lintian; } || lint=0
cargo_tool cargo-deb cargo-deb

# The Debian changelog's version must be the crate's (lintian and apt show it).
version=$(crate_version)
chver=$(sed -n '1s/^edgecam (\([^)-]*\)-[^)]*).*/\1/p' packaging/debian/changelog)
[ "$chver" = "$version" ] || die "packaging/debian/changelog is at $chver, Cargo.toml at $version: add a changelog entry"

step "cargo build --release"
nice -n 10 cargo build --release
check_glibc target/release/edgecam 2.36
step_done

step "cargo deb"
out=$(cargo deb --no-build 2>&1) || { echo "$out" >&2; die "cargo deb failed"; }
deb=$(echo "$out" | tail -1)
[ -f "$deb" ] || { echo "$out" >&2; die "cargo deb did not produce a package"; }
dpkg-deb -f "$deb" Package Version Architecture Depends | sed 's/^/  /' >&2
dpkg-deb -c "$deb" | awk '{print "  " $1 " " $6}' >&2
step_done

if [ $lint = 1 ]; then
  step "lintian"
  # Tags we accept are overridden, with the reason, in packaging/debian/lintian-overrides.
  if lintian --info --display-info --fail-on error,warning "$deb" >&2; then
    log "lintian: clean (overrides: $(grep -c '^[a-z]' packaging/debian/lintian-overrides || true))"
  else
    die "lintian found errors or warnings (see above)"
  fi
  step_done
fi
log "done in $(( $(date +%s) - t_all ))s: $deb"
echo "$deb"

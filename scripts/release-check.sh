#!/bin/bash
# Everything about packaging that is too slow for every CI run, in one command:
# build the amd64 .deb and check it, install it in a fresh Debian 12 root, run
# the service under real systemd in a VM, build the arm64 .deb both ways (cross
# in podman, and the container-free sysroot) and run each in an arm64 root
# under qemu-user.
#
# usage: scripts/release-check.sh [STAGE...]     (default: all, in this order)
# stages:
#   security     systemd-analyze security of the unit, before/after hardening  (~1 s)
#   deb          scripts/build-deb.sh: release build, cargo deb, lintian        (~1 s if built; ~6 min clean)
#   install      tests/package/install-test.sh on the amd64 .deb                (~1-2 min; 3 min first run)
#   fi           the fault-injection build for the watchdog test                (~4 min clean)
#   vm           tests/package/systemd-vm-test.sh (systemd PID 1, Chromium, TCG) (~10-20 min; +6 min image once)
#   cross        scripts/cross-build.sh (podman, bookworm image)                (~5 min; +10 min images once)
#   sysroot      scripts/sysroot-build.sh (mmdebstrap arm64 sysroot)            (~5 min; +2 min sysroot once)
#   arm64        lintian + install-test.sh --arch arm64 on both arm64 .debs     (~10 min under qemu-user)
# Each stage's output goes to the terminal and to /var/cache/edgecam-build/release-check/STAGE.log;
# a table of results and times closes the run. Exit status 1 if any stage failed.
set -uo pipefail
LOG_TAG=release-check
. "$(dirname "$0")/lib.sh"
need_root

all=(security deb install fi vm cross sysroot arm64)
stages=("$@"); [ ${#stages[@]} -gt 0 ] || stages=("${all[@]}")
for s in "${stages[@]}"; do
  [[ " ${all[*]} " == *" $s "* ]] || die "unknown stage '$s' (stages: ${all[*]})"
done
LOGS=$EDGECAM_CACHE/release-check
mkdir -p "$LOGS"
cd "$REPO"

version=$(crate_version)
amd64_deb=$REPO/target/debian/edgecam_${version}-1_amd64.deb
cross_deb=$REPO/target/cross/debian/edgecam_${version}-1_arm64.deb
sysroot_deb=$REPO/target/sysroot/debian/edgecam_${version}-1_arm64.deb

stage_security() { bash tests/package/unit-security.sh; }
stage_deb()      { scripts/build-deb.sh; }
stage_install()  { tests/package/install-test.sh "$amd64_deb"; }
stage_fi()       { scripts/build-deb.sh --fault-injection; }
stage_vm()       { tests/package/systemd-vm-test.sh --deb "$amd64_deb"; }
stage_cross()    { scripts/cross-build.sh; }
stage_sysroot()  { scripts/sysroot-build.sh; }
stage_arm64() {
  local rc=0 d
  for d in "$cross_deb" "$sysroot_deb"; do
    [ -f "$d" ] || { echo "missing $d (run the cross and sysroot stages)"; rc=1; continue; }
    echo "== lintian $d"
    lintian --fail-on error,warning "$d" || rc=1
    echo "== install test (arm64, qemu-user) $d"
    tests/package/install-test.sh --arch arm64 "$d" || rc=1
  done
  # Both routes must ship the same files.
  if [ -f "$cross_deb" ] && [ -f "$sysroot_deb" ]; then
    if diff <(dpkg-deb -c "$cross_deb" | awk '{print $1, $6}') <(dpkg-deb -c "$sysroot_deb" | awk '{print $1, $6}'); then
      echo "cross and sysroot packages list the same files"
    else echo "cross and sysroot packages differ (above)"; rc=1; fi
  fi
  return $rc
}

declare -A result secs
t_all=$(date +%s)
for s in "${stages[@]}"; do
  log "######## stage $s (log: $LOGS/$s.log)"
  t=$(date +%s)
  "stage_$s" 2>&1 | tee "$LOGS/$s.log"
  rc=${PIPESTATUS[0]}
  secs[$s]=$(( $(date +%s) - t ))
  if [ "$rc" = 0 ]; then result[$s]=ok; else result[$s]="FAILED ($rc)"; fi
  log "######## stage $s: ${result[$s]} in ${secs[$s]}s"
done

echo
echo "release-check summary ($(date -u +%F\ %TZ), $(nproc) cores):"
failed=0
for s in "${stages[@]}"; do
  printf '  %-9s %-12s %5ss\n' "$s" "${result[$s]}" "${secs[$s]}"
  [ "${result[$s]}" = ok ] || failed=$((failed+1))
done
printf '  %-9s %-12s %5ss\n' total "" "$(( $(date +%s) - t_all ))"
echo "$(( ${#stages[@]} - failed )) passed, $failed failed"
[ $failed = 0 ]

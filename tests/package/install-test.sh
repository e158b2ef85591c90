#!/bin/bash
# Install test of the edgecam .deb in a fresh Debian 12 root (mmdebstrap; no VM,
# no systemd running): `apt-get install ./edgecam_*.deb` pulls the runtime
# dependencies from Debian's archive, then checks the system user and groups,
# the unit's enablement, the conffile across an upgrade, remove and purge.
#
# usage: tests/package/install-test.sh [DEB] [--arch amd64|arm64] [--no-run]
#   DEB defaults to the newest edgecam_*_<arch>.deb under target/.
#   --arch arm64 runs the same checks in an arm64 root under qemu-user.
#   --no-run skips running the installed binary (probe, profiles, run --demo 1
#   with a websocket client that must receive an offer).
# Prints one line per check and 'N passed, M failed'; exits 1 if any failed.
# The base root is cached as a tarball under /var/cache/edgecam-build (about
# 2 min the first time); each run unpacks a fresh copy (a few seconds).
set -uo pipefail
LOG_TAG=install-test
. "$(dirname "$0")/../../scripts/lib.sh"

arch=$(dpkg --print-architecture); deb=; run=1
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2;;
    --no-run) run=0; shift;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) deb=$1; shift;;
  esac
done
need_root
if [ -z "$deb" ]; then
  deb=$(ls -t "$REPO"/target/debian/edgecam_*_"$arch".deb "$REPO"/target/*/debian/edgecam_*_"$arch".deb 2>/dev/null | head -1 || true)
  [ -n "$deb" ] || die "no edgecam_*_$arch.deb found: run scripts/build-deb.sh first (or pass DEB)"
fi
deb=$(readlink -f "$deb")
[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || die "$deb is not for $arch"
log "package: $deb"

# ---- a fresh Debian 12 root -------------------------------------------------------
# systemd + systemd-sysv + udev as on a real system (udev makes the render group);
# the package's own dependencies come in through apt in the test itself.
BASE_PKGS="systemd,systemd-sysv,udev,ca-certificates"
[ "$arch" = "$(dpkg --print-architecture)" ] || enable_qemu_aarch64
apt_install mmdebstrap arch-test
key=$(echo "$arch $SUITE $BASE_PKGS" | sha256sum | cut -c1-10)
tarball=$EDGECAM_CACHE/install-root-$arch-$key.tar
if [ ! -f "$tarball" ]; then
  step "mmdebstrap $arch root (once)"
  mkdir -p "$EDGECAM_CACHE"
  # --format=tar: the name does not end in .tar, so mmdebstrap would make a directory.
  mmdebstrap --quiet --format=tar --architectures="$arch" --variant=minbase --include="$BASE_PKGS" "$SUITE" "$tarball.tmp" \
    "deb $DEBIAN_MIRROR $SUITE main" "deb $DEBIAN_MIRROR $SUITE-updates main" \
    "deb ${DEBIAN_MIRROR%/debian}/debian-security $SUITE-security main" \
    > "$EDGECAM_CACHE/install-root-$arch.log" 2>&1 \
    || { tail -20 "$EDGECAM_CACHE/install-root-$arch.log" >&2; die "mmdebstrap failed"; }
  mv "$tarball.tmp" "$tarball"
  step_done
fi
R=$(mktemp -d /tmp/edgecam-install-test.XXXXXX)
# apt's downloads are kept between runs, so only the first run fetches GStreamer.
ARCHIVES=$EDGECAM_CACHE/apt-archives-$arch
mkdir -p "$ARCHIVES/partial"
cleanup() {
  # Anything still running inside the root (a daemon a failed check left) goes first.
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  for m in var/cache/apt/archives dev/pts dev sys proc; do
    mountpoint -q "$R/$m" && umount -l "$R/$m"
  done
  rm -rf "$R"
}
trap cleanup EXIT
tar -C "$R" -xf "$tarball"
mount -t proc proc "$R/proc"; mount --rbind /sys "$R/sys"; mount --make-rslave "$R/sys"
mount --bind /dev "$R/dev"; mount --bind /dev/pts "$R/dev/pts"
mount --bind "$ARCHIVES" "$R/var/cache/apt/archives"
cp /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
# Keep the package's services from being started in the chroot (there is no
# systemd running anyway; deb-systemd-invoke also checks this).
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
rm -f "$R/etc/apt/apt.conf.d/docker-clean"   # would empty the shared archive cache
cp "$deb" "$R/tmp/"
pkg=/tmp/$(basename "$deb")
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 GST_REGISTRY_FORK=no "$@"; }

pass=0; fail=0
check() {  # check "what" command...: one line per check
  local what=$1; shift
  local out
  if out=$("$@" 2>&1); then
    pass=$((pass+1)); echo "PASS  $what"
  else
    fail=$((fail+1)); echo "FAIL  $what"; [ -n "$out" ] && echo "$out" | tail -15 | sed 's/^/      /'
  fi
}
# checkv: the same, and on success also the command's last output line (what it saw)
checkv() {
  local what=$1; shift
  local out
  if out=$("$@" 2>&1); then
    pass=$((pass+1)); echo "PASS  $what"; echo "$out" | tail -1 | sed 's/^/      /'
  else
    fail=$((fail+1)); echo "FAIL  $what"; [ -n "$out" ] && echo "$out" | tail -15 | sed 's/^/      /'
  fi
}
has_line() { grep -q -- "$1" <<<"$2"; }

# ---- install --------------------------------------------------------------------------
step "apt-get install ./$(basename "$deb")"
check "apt-get install resolves and installs the package's dependencies" \
  in_root sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkg"
step_done
check "dpkg status: installed" in_root sh -c "dpkg-query -W -f='\${Status}' edgecam | grep -qx 'install ok installed'"
check "binary: /usr/bin/edgecam runs (--help)" in_root /usr/bin/edgecam --help
check "default /etc/edgecam/config.yaml passes 'edgecam check-config'" \
  in_root /usr/bin/edgecam check-config /etc/edgecam/config.yaml
# The commented-out settings document the schema: uncommented, they must be
# valid too, so the file cannot drift from the daemon's (strict) parser.
# Settings are "#key:" or "#  key:" / "#    - ..."; prose is "# text".
sed -E 's/^#([a-z_]+:|  +(- |[a-z_0-9]+:))/\1/; /^#/d' "$R/etc/edgecam/config.yaml" > "$R/tmp/config-all.yaml"
check "default config with every example setting uncommented passes check-config" \
  in_root /usr/bin/edgecam check-config /tmp/config-all.yaml
n_repo=$(ls "$REPO"/profiles/*.yaml | wc -l)
check "profiles: all $n_repo in /usr/share/edgecam/profiles" \
  test "$(ls "$R"/usr/share/edgecam/profiles/*.yaml 2>/dev/null | wc -l)" = "$n_repo"
check "auth: postinst made the first user (a hash in the config, the password root-only)" \
  sh -c "grep -q \"admin: {hash: '\\\$argon2id\" '$R/etc/edgecam/config.yaml' && [ \"\$(stat -c %a '$R/etc/edgecam/initial-password')\" = 600 ]"
check "config: root:edgecam 0640 (it holds password hashes)" \
  in_root sh -c "[ \"\$(stat -c '%U:%G %a' /etc/edgecam/config.yaml)\" = 'root:edgecam 640' ]"
check "config: /etc/edgecam/config.yaml is a conffile" \
  in_root sh -c "dpkg-query -W -f='\${Conffiles}' edgecam | grep -q '/etc/edgecam/config.yaml'"
check "modules-load.d loads videodev (DeviceAllow=char-video4linux at boot)" \
  grep -qx videodev "$R/usr/lib/modules-load.d/edgecam.conf"
check "man page: edgecam(1)" test -f "$R/usr/share/man/man1/edgecam.1.gz"

# ---- user and groups ---------------------------------------------------------------------
pw=$(in_root getent passwd edgecam || true)
check "user edgecam exists" test -n "$pw"
uid=$(cut -d: -f3 <<<"$pw")
check "user edgecam is a system user (uid $uid < 1000)" test "${uid:-9999}" -lt 1000
check "user edgecam: home /var/lib/edgecam, no login shell" \
  sh -c "echo '$pw' | grep -q ':/var/lib/edgecam:/usr/sbin/nologin$'"
groups=$(in_root id -nG edgecam 2>&1 || true)
check "user edgecam in group video ($groups)" has_line '\bvideo\b' "$groups"
if in_root getent group render >/dev/null; then
  check "user edgecam in group render" has_line '\brender\b' "$groups"
else
  check "no render group here: postinst skipped it" true
fi

# ---- systemd unit -----------------------------------------------------------------------------
unit=$(ls "$R"/lib/systemd/system/edgecam.service "$R"/usr/lib/systemd/system/edgecam.service 2>/dev/null | head -1)
check "unit file installed (${unit#$R})" test -n "$unit"
check "unit enabled (systemctl is-enabled)" sh -c "chroot '$R' systemctl is-enabled edgecam | grep -qx enabled"
check "unit wanted by multi-user.target" test -L "$R/etc/systemd/system/multi-user.target.wants/edgecam.service"
check "systemd-analyze verify edgecam.service (in the root)" \
  in_root systemd-analyze verify --man=no /lib/systemd/system/edgecam.service
for key in Type=notify WatchdogSec= Restart=on-failure User=edgecam DevicePolicy=closed \
           'DeviceAllow=char-video4linux rw' ProtectSystem=strict NoNewPrivileges=yes; do
  check "unit has $key" grep -q "^$key" "$unit"
done
check "unit has no PrivateDevices / DynamicUser" sh -c "! grep -Eq '^(PrivateDevices|DynamicUser)=' '$unit'"

# ---- the installed binary works (no systemd here: run by hand) ----------------------------------
if [ $run = 1 ]; then
  step "runtime checks ($arch)"
  check "edgecam probe" in_root /usr/bin/edgecam probe
  check "edgecam probe --json is JSON" sh -c "chroot '$R' env GST_REGISTRY_FORK=no /usr/bin/edgecam probe --json | python3 -m json.tool >/dev/null"
  check "edgecam profiles: x264 listed" sh -c "chroot '$R' env GST_REGISTRY_FORK=no /usr/bin/edgecam profiles 2>&1 | grep -q x264"
  port=$(( 20000 + RANDOM % 20000 ))
  # The chroot shares this machine's network namespace, so the client runs on
  # the host; loopback only (ICE host candidates included).
  # Not through in_root: a shell function in the background is a subshell, and
  # $! would be that subshell, not the daemon (chroot and env exec, so here it is).
  chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 GST_REGISTRY_FORK=no \
    /usr/bin/edgecam run --demo 1 --listen 127.0.0.1:$port > "$R/tmp/run.log" 2>&1 &
  dpid=$!
  # The packaged config requires a login: the first user postinst made.
  login="$(sed -n 's/^user: //p' "$R/etc/edgecam/initial-password"):$(sed -n 's/^password: //p' "$R/etc/edgecam/initial-password")"
  checkv "edgecam run --demo 1: a websocket client receives an offer for demo1" \
    python3 "$REPO/tests/package/ws_offer.py" --url "ws://$login@127.0.0.1:$port/ws" --camera demo1 --timeout 180
  dcomm=$(cat /proc/$dpid/comm 2>/dev/null || echo gone)
  kill -TERM $dpid 2>/dev/null
  stopped() { ! kill -0 $dpid 2>/dev/null; }
  for _ in $(seq 40); do stopped && break; sleep 0.5; done
  check "edgecam run (pid $dpid: $dcomm) stops within 20 s of SIGTERM" sh -c "[ '$dcomm' != gone ] && ! kill -0 $dpid 2>/dev/null"
  stopped || { kill -KILL $dpid 2>/dev/null; echo "      log: $(tail -5 "$R/tmp/run.log")"; }
  wait $dpid 2>/dev/null
  step_done
fi

# ---- upgrade keeps the user's config edits ------------------------------------------------------
echo "# edited by the install test" >> "$R/etc/edgecam/config.yaml"
# A newer version of the same package: same content, version -1 -> -1+upgradetest.
up=$R/tmp/upgrade; mkdir -p "$up"
dpkg-deb -R "$deb" "$up/pkg"
sed -i 's/^Version: \(.*\)$/Version: \1+upgradetest/' "$up/pkg/DEBIAN/control"
dpkg-deb -b -Zxz "$up/pkg" "$up/edgecam-upgrade.deb" >/dev/null
check "upgrade to a newer version (dpkg -i, no conffile prompt)" \
  in_root sh -c "dpkg -i --force-confnew /tmp/upgrade/edgecam-upgrade.deb </dev/null 2>&1 && dpkg-query -W -f='\${Version}' edgecam | grep -q upgradetest" 
# (--force-confnew would overwrite the edit only if the shipped file changed;
#  it did not, so the user's version must survive untouched.)
check "conffile: the user's edit survived the upgrade" grep -q "edited by the install test" "$R/etc/edgecam/config.yaml"
check "unit still enabled after the upgrade" sh -c "chroot '$R' systemctl is-enabled edgecam | grep -qx enabled"
check "same uid after the upgrade" test "$(in_root getent passwd edgecam | cut -d: -f3)" = "$uid"

# ---- remove, then purge -------------------------------------------------------------------------------
check "apt-get remove edgecam" in_root sh -c "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q edgecam"
check "remove: binary gone" test ! -e "$R/usr/bin/edgecam"
check "remove: conffile kept" test -f "$R/etc/edgecam/config.yaml"
check "apt-get purge edgecam" in_root sh -c "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q edgecam"
check "purge: /etc/edgecam and its conffile removed" test ! -e "$R/etc/edgecam"
check "purge: /var/lib/edgecam and /var/cache/edgecam removed" sh -c "test ! -e '$R/var/lib/edgecam' && test ! -e '$R/var/cache/edgecam'"
check "purge: no enablement symlink left" test ! -e "$R/etc/systemd/system/multi-user.target.wants/edgecam.service"
check "purge: dpkg knows nothing of it" sh -c "! chroot '$R' dpkg-query -W -f='\${Status}' edgecam 2>/dev/null | grep -q installed"
check "purge: system user kept (Debian policy; deluser removes it)" in_root getent passwd edgecam

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]

#!/bin/bash
# The edgecam service under real systemd (PID 1) in a QEMU VM with Debian's
# kernel: install the .deb, READY, the web page, a hot-plugged camera through
# the device policy, an offer for --demo 1 and headless Chromium (in the guest,
# on loopback) decoding its video, the watchdog (a fault-injection build hangs
# on SIGUSR2; systemd must kill and restart it), a clean stop.
# The checks themselves are tests/package/vm-guest-test.sh, run in the guest.
#
# usage: tests/package/systemd-vm-test.sh [--deb DEB] [--fi-bin BIN] [--timeout SEC] [--shell]
#   --deb     default: the newest target/debian/edgecam_*_amd64.deb
#   --fi-bin  default: target/fault-injection/release/edgecam, built with
#             scripts/build-deb.sh --fault-injection when absent
#   --shell   boot with the console on this terminal instead (debugging)
# Prints the guest's check lines and 'N passed, M failed'.
# Needs root; the image (tests/package/vm-image.sh) is built once and cached.
# No KVM here (the host's /dev/kvm is PVM, which cannot run a stock kernel), so
# the guest runs under TCG: boot 20 s to 5 min and the whole test 8 to 20 min
# (Chromium is the slow part), depending on what else the host's two cores are doing.
set -uo pipefail
LOG_TAG=systemd-vm-test
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../../scripts/lib.sh"

deb=; fi_bin=; timeout_s=2700; shell=0
while [ $# -gt 0 ]; do
  case "$1" in
    --deb) deb=$2; shift 2;;
    --fi-bin) fi_bin=$2; shift 2;;
    --timeout) timeout_s=$2; shift 2;;
    --shell) shell=1; shift;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) die "unknown option $1 (see --help)";;
  esac
done
need_root
[ -n "$deb" ] || deb=$(ls -t "$REPO"/target/debian/edgecam_*_amd64.deb 2>/dev/null | head -1 || true)
[ -n "$deb" ] && [ -f "$deb" ] || die "no amd64 .deb: run scripts/build-deb.sh first (or pass --deb)"
[ -n "$fi_bin" ] || fi_bin=$REPO/target/fault-injection/release/edgecam
if [ ! -x "$fi_bin" ]; then
  log "no fault-injection build yet: scripts/build-deb.sh --fault-injection"
  "$REPO/scripts/build-deb.sh" --fault-injection >/dev/null || die "fault-injection build failed"
fi

IMG=$("$HERE/vm-image.sh" | tail -1) || die "VM image build failed"
share=$(mktemp -d /tmp/edgecam-vm-test.XXXXXX)
qpid=
# timeout(1) passes the TERM on to qemu: an interrupted test leaves no VM behind.
trap '[ -n "$qpid" ] && kill $qpid 2>/dev/null; rm -rf "$share"' EXIT
cp "$deb" "$share/edgecam.deb"
cp "$fi_bin" "$share/edgecam-fi"
install -m 755 "$HERE/vm-guest-test.sh" "$share/guest-test.sh"
install -m 755 "$HERE/ws_offer.py" "$share/ws_offer.py"
install -m 755 "$HERE/browser_frames.py" "$share/browser_frames.py"
log "package: $(basename "$deb"); fault-injection binary: $fi_bin"

# TCG with two threads; no NIC (the test only uses the guest's loopback);
# 3 GiB: the daemon and headless Chromium side by side;
# the root image is a throwaway snapshot, so every run starts fresh.
q=(qemu-system-x86_64 -nodefaults -no-user-config -M q35 -accel tcg,thread=multi -cpu max
   -smp 2 -m 3072 -display none -no-reboot -nic none
   -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img"
   -append "root=/dev/vda rw console=ttyS0 quiet loglevel=3 init=/lib/systemd/systemd systemd.show_status=false panic=-1"
   -drive "file=$IMG/rootfs.img,format=raw,if=virtio,snapshot=on,cache=unsafe"
   -virtfs "local,path=$share,mount_tag=edgecamtest,security_model=none,id=edgecamtest"
   -device virtio-rng-pci)
if [ $shell = 1 ]; then
  exec "${q[@]}" -serial mon:stdio
fi

t0=$(date +%s)
log "booting the VM (TCG); guest output follows"
# timeout(1) ends a hung guest, and exits when qemu does (no stray timer left).
timeout "$timeout_s" "${q[@]}" -serial "file:$share/console.log" < /dev/null &
qpid=$!
# Stream the guest's test output while it runs.
( while [ ! -f "$share/result.log" ] && kill -0 $qpid 2>/dev/null; do sleep 1; done
  [ -f "$share/result.log" ] && tail -n +1 -F --pid=$qpid "$share/result.log" 2>/dev/null ) &
tpid=$!
wait $qpid; qrc=$?
wait $tpid 2>/dev/null
log "VM ran $(( $(date +%s) - t0 ))s (boot, test, shutdown; qemu rc=$qrc)"

if [ ! -f "$share/rc" ]; then
  echo "the guest did not finish (timeout ${timeout_s}s or boot failure); console tail:" >&2
  tail -40 "$share/console.log" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
rc=$(cat "$share/rc")
[ "$rc" = 0 ] || log "guest test exit status $rc"
exit "$rc"

#!/bin/bash
# Hot-plug latency benchmark, run INSIDE the test VM:
#   tests/vm/run.sh -- bash bench/vm_hotplug.sh [ROUNDS]
# For each kind of plug event, the time from the command that causes it returning to the
# daemon's GET /api/cameras showing the result (polled every 0.1 s). Includes udev rule
# processing, the watcher's 300 ms debounce, probing and the supervisor; "streaming" also
# pipeline start. Under TCG emulation everything is several times slower than on hardware:
# compare runs with each other, not with a Raspberry Pi. Never a pass/fail test.
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${EDGECAM_BIN:-$root/target/debug/edgecam}
rounds=${1:-5}
listen=127.0.0.1:8089
api=http://$listen/api/cameras
vivid=platform-vivid-000-video-index0
usb=usb-fake0001
loop=v4l2-loopback-video10

now() { date +%s.%N; }
# until ID STATE_FILTER TIMEOUT: seconds until the camera matches, or "timeout"
until_state() {
  local t0 end=$((SECONDS + $3))
  t0=$(now)
  while [ $SECONDS -lt $end ]; do
    curl -sf --max-time 2 "$api" | jq -e --arg id "$1" "[.[] | select(.id == \$id and ($2))] | length == 1" >/dev/null 2>&1 \
      && { awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.2f\n", b-a}'; return 0; }
    sleep 0.1
  done
  echo timeout
}
declare -A samples
record() { samples[$1]="${samples[$1]:-} $2"; echo "  $1: $2 s"; }

RUST_LOG=warn "$bin" run --listen "$listen" > /tmp/edgecam-bench.log 2>&1 &
daemon=$!
for _ in $(seq 120); do curl -sf --max-time 2 "$api" > /dev/null && break; sleep 1; done

modprobe vivid n_devs=1 node_types=0x1
record "vivid modprobe -> streaming" "$(until_state $vivid '.state == "streaming"' 180)"
usbcam add -s FAKE0001 > /dev/null
record "usbcam add -> listed" "$(until_state $usb 'true' 60)"
fakecam add -f mjpeg -s 640x480 -r 30 10 > /dev/null
record "fakecam add -> streaming" "$(until_state $loop '.state == "streaming"' 180)"

for r in $(seq "$rounds"); do
  echo "round $r"
  echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind
  record "vivid unbind -> offline" "$(until_state $vivid '.state == "offline"' 60)"
  echo vivid.0 > /sys/bus/platform/drivers/vivid/bind
  record "vivid bind -> listed again" "$(until_state $vivid '.state != "offline"' 60)"
  record "vivid bind -> streaming" "$(until_state $vivid '.state == "streaming"' 180)"
  usbcam unplug
  record "usbcam unplug -> offline" "$(until_state $usb '.state == "offline"' 60)"
  usbcam plug > /dev/null
  record "usbcam plug -> listed again" "$(until_state $usb '.state != "offline"' 60)"
done

kill -TERM $daemon; wait $daemon 2>/dev/null
fakecam remove all 2>/dev/null; usbcam remove 2>/dev/null

echo
echo "hot-plug latency, $rounds rounds, kernel $(uname -r), $(nproc) vCPU (TCG unless KVM works here)"
printf '%-30s %6s %6s %6s %s\n' event min median max samples
for k in "${!samples[@]}"; do
  printf '%s\n' ${samples[$k]} | grep -v timeout | sort -n | awk -v k="$k" -v all="${samples[$k]}" '
    {v[NR]=$1} END {if (NR==0) {printf "%-30s %6s %6s %6s %s\n", k, "-", "-", "-", all; exit}
      printf "%-30s %6.2f %6.2f %6.2f%s\n", k, v[1], v[int((NR+1)/2)], v[NR], all}'
done | sort

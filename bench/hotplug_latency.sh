#!/bin/bash
# Hot-plug latency benchmark, run INSIDE the test VM:
#   tests/vm/run.sh -- bash bench/hotplug_latency.sh [ROUNDS]
# For each kind of plug event, seconds from the command that causes it returning to
#   watcher: the device watcher logging the camera added / gone (udev rules, the 300 ms
#            debounce and the probe), read from the daemon's log timestamps;
#   api:     GET /api/cameras showing it (polled every 0.1 s), which adds the supervisor and,
#            for "streaming", the pipeline start.
# Negative watcher times mean the watcher was done before the command returned (usbcam plug
# waits for the node itself). Under TCG emulation, with the cameras' encoders competing for two
# emulated CPUs, everything is several times slower than on hardware: compare runs with each
# other, not with a Raspberry Pi. Never a pass/fail test.
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${EDGECAM_BIN:-$root/target/debug/edgecam}
rounds=${1:-5}
listen=127.0.0.1:8089
api=http://$listen/api/cameras
blog=/tmp/edgecam-bench.log
vivid=platform-vivid-000-video-index0
usb=usb-fake0001
loop=v4l2-loopback-video10

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f\n", b-a}'; }
# api_after T0 ID FILTER TIMEOUT: seconds from T0 until the camera matches FILTER in /api/cameras
api_after() {
  local end=$((SECONDS + $4))
  while [ $SECONDS -lt $end ]; do
    curl -sf --max-time 2 "$api" | jq -e --arg id "$2" "[.[] | select(.id == \$id and ($3))] | length == 1" >/dev/null 2>&1 \
      && { elapsed "$1" "$(now)"; return 0; }
    sleep 0.1
  done
  echo timeout
}
logged() { sed 's/\x1b\[[0-9;]*m//g' "$blog" | grep -E "$1"; }
marks() { logged "$1" | wc -l; }
# watcher T0 N REGEX: seconds from T0 to the daemon's N-th log line matching REGEX
watcher() {
  local ts end=$((SECONDS + 120))
  while [ $SECONDS -lt $end ]; do
    ts=$(logged "$3" | sed -n "${2}p" | awk '{print $1}')
    [ -n "$ts" ] && { elapsed "$1" "$(date -d "$ts" +%s.%N)"; return 0; }
    sleep 0.2
  done
  echo timeout
}
declare -A samples
record() { samples[$1]="${samples[$1]:-} $2"; echo "  $1: $2 s"; }
added() { echo "camera added id=$1 "; }
gone() { echo "camera gone id=$1 "; }
# event NAME ID ADDED|GONE API_FILTER COMMAND...: run COMMAND, record watcher and api latency
event() {
  local name=$1 id=$2 re n t0 filter=$4
  if [ "$3" = ADDED ]; then re=$(added "$id"); else re=$(gone "$id"); fi
  shift 4
  n=$(( $(marks "$re") + 1 ))
  "$@" > /dev/null
  t0=$(now)
  record "$name: watcher" "$(watcher "$t0" "$n" "$re")"
  record "$name: api" "$(api_after "$t0" "$id" "$filter" 180)"
}

RUST_LOG=warn,edgecam::devices=info "$bin" run --listen "$listen" > "$blog" 2>&1 &
daemon=$!
for _ in $(seq 120); do curl -sf --max-time 2 "$api" > /dev/null && break; sleep 1; done

event "vivid modprobe -> streaming" $vivid ADDED '.state == "streaming"' modprobe vivid n_devs=1 node_types=0x1
event "usbcam add -> listed" $usb ADDED 'true' usbcam add -s FAKE0001
event "fakecam add -> streaming" $loop ADDED '.state == "streaming"' fakecam add -f mjpeg -s 640x480 -r 30 10
unbind() { echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind; }
bind() { echo vivid.0 > /sys/bus/platform/drivers/vivid/bind; }
for r in $(seq "$rounds"); do
  echo "round $r"
  event "vivid unbind -> offline" $vivid GONE '.state == "offline"' unbind
  event "vivid bind -> streaming" $vivid ADDED '.state == "streaming"' bind
  event "usbcam unplug -> offline" $usb GONE '.state == "offline"' usbcam unplug
  event "usbcam plug -> listed" $usb ADDED '.state != "offline"' usbcam plug
done

kill -TERM $daemon; wait $daemon 2>/dev/null
fakecam remove all 2>/dev/null; usbcam remove 2>/dev/null

echo
echo "hot-plug latency (s), $rounds rounds, kernel $(uname -r), $(nproc) vCPU"
printf '%-42s %6s %6s %6s  %s\n' event min median max samples
for k in "${!samples[@]}"; do
  printf '%s\n' ${samples[$k]} | grep -v timeout | sort -n | awk -v k="$k" -v all="${samples[$k]}" '
    {v[NR]=$1} END {if (NR==0) {printf "%-42s %6s %6s %6s  %s\n", k, "-", "-", "-", all; exit}
      printf "%-42s %6.2f %6.2f %6.2f %s\n", k, v[1], v[int((NR+1)/2)], v[NR], all}'
done | sort

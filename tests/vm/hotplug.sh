#!/bin/bash
# Runs INSIDE the test VM (tests/vm/run.sh boots it): edgecam's camera discovery against real
# kernel drivers and real udev events, with the binary built on the host.
#  1. `edgecam probe --json`: vivid (a capture node, and an output node beside one), usbcam (a
#     real USB UVC device: capture + metadata node, and the gadget's own output node).
#  2. `edgecam run`: cameras appear in /api/cameras and encode frames when plugged in (vivid,
#     v4l2loopback MJPEG and YUYV webcams), go offline when they stop delivering (a webcam's
#     producer killed) or are unplugged (vivid unbound while streaming) while the others keep streaming; vivid bound again comes back under the same id
#     and a WebRTC viewer left open (tests/vm/viewer.rs) gets its video again without asking; the
#     daemon lets go of the device (rmmod); a USB camera keeps its id across unplug/replug; the card
#     of a device that is gone can be forgotten (and a forgotten USB camera plugged again is back).
#     (usbcam cannot stream through usbip: it is checked for listing and id.)
# Prints PASS/FAIL per check and "N passed, M failed"; exit status 0 only if all passed.
# Timeouts are generous (the VM runs under TCG emulation); no timing is asserted.
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${EDGECAM_BIN:-$root/target/debug/edgecam}
# a WebRTC viewer that stays open across unplug/replug (tests/vm/viewer.rs, built beside the daemon)
viewer_bin=${EDGECAM_VM_VIEWER:-$(dirname "$bin")/examples/vm-viewer}
listen=127.0.0.1:8089
api=http://$listen/api/cameras
log=/tmp/edgecam-daemon.log
pass=0; fail=0
ok()  { echo "PASS: $*"; pass=$((pass+1)); }
bad() { echo "FAIL: $*"; fail=$((fail+1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
indent() { sed 's/^/  /'; }
# viewer_gets_video AFTER_SESSION: the open viewer decodes frames in a session numbered above
# AFTER_SESSION (a new receiver per offer); sets viewer_session to it
viewer_status=/tmp/edgecam-viewer.status
viewer_gets_video() {
  local i session frames
  for i in $(seq 60); do
    read -r session frames 2>/dev/null < "$viewer_status"
    if [ "${session:-0}" -gt "$1" ] && [ "${frames:-0}" -gt 10 ]; then viewer_session=$session; return 0; fi
    sleep 3
  done
  echo "  viewer status: $(cat "$viewer_status" 2>&1); its log:"; tail -5 /tmp/edgecam-viewer.log | indent
  return 1
}

# ---- edgecam probe ---------------------------------------------------------------------
# snapshot: `edgecam probe --json` once into $snap (and the table on the log) for the checks after it
snapshot() { "$bin" probe 2>/dev/null | grep -v '^        ' | indent; snap=$("$bin" probe --json 2>/dev/null); }
# probe_is JQ_FILTER: the last snapshot satisfies the filter
probe_is() { echo "$snap" | jq -e "$1" >/dev/null 2>&1 || { echo "  probe: $(echo "$snap" | jq -c '[.[] | {devnode, kind, reason, id}]' 2>&1)"; return 1; }; }

# ---- the daemon's /api/cameras ----------------------------------------------------------
cams() { curl -sf --max-time 5 "$api"; }
# wait_api "what" SECONDS JQ_FILTER: poll /api/cameras until the filter holds
wait_api() {
  local what=$1 end=$((SECONDS + $2)) filter=$3
  while [ $SECONDS -lt $end ]; do
    cams | jq -e "$filter" >/dev/null 2>&1 && { ok "$what"; return 0; }
    sleep 1
  done
  bad "$what"
  echo "  /api/cameras: $(cams | jq -c '[.[] | {id, state, device, mode, encoded_frames, detail}]' 2>&1)"
  return 1
}
# api_is JQ_FILTER: /api/cameras now satisfies the filter
api_is() { cams | jq -e "$1" >/dev/null 2>&1 || { echo "  /api/cameras: $(cams | jq -c '[.[] | {id, state, device}]' 2>&1)"; return 1; }; }
has() { printf '[.[] | select(.id == "%s" and %s)] | length == 1' "$1" "$2"; }
frames() { cams | jq -r --arg id "$1" '.[] | select(.id == $id) | .encoded_frames // empty'; }
# encoding: encoded_frames > 0 and still growing a few seconds later
# (polled for up to 60 s: under TCG emulation a pipeline can take a while to get going, and an API call
# can time out while the guest is busy)
encoding() {
  local a="" b="" i
  for i in $(seq 15); do
    b=$(frames "$1")
    if [ -n "$a" ] && [ -n "$b" ] && [ "$a" -gt 0 ] && [ "$b" -gt "$a" ]; then return 0; fi
    [ -n "$b" ] && a=$b
    sleep 4
  done
  echo "  $1: encoded_frames did not grow (last reads: ${a:-none}, ${b:-none})"
  return 1
}

echo "kernel $(uname -r), $(nproc) cpu; binary $bin"
[ -x "$bin" ] || { echo "FAIL: no edgecam binary at $bin"; echo "0 passed, 1 failed"; exit 1; }

vivid0=platform-vivid-000-video-index0
vivid1=platform-vivid-001-video-index0
loop10=v4l2-loopback-video10
loop11=v4l2-loopback-video11
usb=usb-fake0001

# ---- 1. edgecam probe -------------------------------------------------------------------
echo "== 1. edgecam probe"
# vivid.0: capture + output node (node_types bit 8), vivid.1: capture only
modprobe vivid n_devs=2 node_types=0x101,0x1 && udevadm settle
snapshot
check "vivid: 2 cameras ($vivid0, $vivid1)" probe_is \
  "[.[] | select(.kind == \"camera\") | .id] == [\"$vivid0\", \"$vivid1\"]"
check "vivid: the output node beside capture is skipped (output_only)" probe_is \
  '[.[] | select(.kind == "skipped") | .reason] == ["output_only"]'
check "vivid: explicit 640x480 mode, not the 3840x2160@2 v4l2src negotiates" probe_is \
  '[.[] | select(.kind == "camera") | .mode | "\(.format) \(.width)x\(.height)@\(.fps.num)/\(.fps.den)"] | unique == ["yuyv 640x480@25/1"]'
rmmod vivid; udevadm settle

usbcam add -n "Fake UVC Camera" -s FAKE0001 > /dev/null && udevadm settle
snapshot
check "usbcam: one camera, id $usb from its serial, bus usb2" probe_is \
  "[.[] | select(.kind == \"camera\") | \"\(.id) \(.driver) \(.bus.type) \(.bus.speed_mbps)\"] == [\"$usb uvcvideo usb 480\"]"
check "usbcam: its metadata node is skipped (metadata)" probe_is \
  '[.[] | select(.driver == "uvcvideo" and .kind == "skipped") | .reason] == ["metadata"]'
check "usbcam: the gadget's own node is skipped (output_only)" probe_is \
  '[.[] | select(.driver == "g_uvc") | .reason] == ["output_only"]'
check "usbcam: by-id link and serial reported" probe_is \
  '[.[] | select(.kind == "camera") | (.serial == "FAKE0001") and (.links | any(startswith("/dev/v4l/by-id/usb-")))] == [true]'
usbcam remove; udevadm settle

# ---- 2. edgecam run -----------------------------------------------------------------------
echo "== 2. edgecam run (hot-plug)"
RUST_LOG=${RUST_LOG:-info} "$bin" run --listen "$listen" --ice-local-address 127.0.0.1 > "$log" 2>&1 &
daemon=$!
wait_api "daemon serves /api/cameras" 120 'type == "array"'

# one vivid instance here (capture + output node): under TCG every camera's encoder costs
modprobe vivid n_devs=1 node_types=0x101 && udevadm settle
wait_api "vivid plugged: $vivid0 streaming" 180 "$(has $vivid0 '.state == "streaming"')"
check "vivid: only the capture node became a camera" api_is '[.[] | select(.kind == "v4l2")] | length == 1'
check "vivid: $vivid0 encodes frames" encoding "$vivid0"
"$viewer_bin" "$listen" "$vivid0" "$viewer_status" > /tmp/edgecam-viewer.log 2>&1 &
viewer=$!
viewer_session=0
check "a WebRTC viewer of $vivid0 decodes its video" viewer_gets_video 0

fakecam add -n "Fake MJPEG Webcam" -f mjpeg -s 640x480 -r 30 10 > /dev/null
wait_api "fakecam MJPEG 640x480: $loop10 streaming MJPG 640x480" 180 "$(has $loop10 '.state == "streaming" and (.mode | startswith("MJPG 640x480"))')"
check "fakecam MJPEG: $loop10 encodes frames" encoding "$loop10"
fakecam add -n "Fake YUYV Webcam" -f yuyv -s 640x480 -r 30 11 > /dev/null
wait_api "fakecam YUYV 640x480: $loop11 streaming YUYV 640x480" 180 "$(has $loop11 '.state == "streaming" and (.mode | startswith("YUYV 640x480"))')"
check "fakecam YUYV: $loop11 encodes frames" encoding "$loop11"

# a camera that simply stops delivering (its producer killed, the node left in place)
kill "$(cat /run/fakecam/video11.pid)"
wait_api "fakecam YUYV stopped delivering: $loop11 offline" 60 "$(has $loop11 '.state == "offline"')"
check "$loop10 did not notice: still streaming" api_is "$(has $loop10 '.state == "streaming"')"

echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind; udevadm settle
wait_api "vivid unbound while streaming: $vivid0 offline" 60 "$(has $vivid0 '.state == "offline"')"
check "the loopback camera still streams after vivid went away" api_is "$(has $loop10 '.state == "streaming"')"
check "$loop10 still encodes frames" encoding "$loop10"

# replug: the same id comes back and the viewer that stayed open gets video again, in a new session
echo vivid.0 > /sys/bus/platform/drivers/vivid/bind; udevadm settle
wait_api "vivid replugged: same id $vivid0 streaming again" 180 "$(has $vivid0 '.state == "streaming"')"
check "the open viewer gets $vivid0's video again without asking (new session)" viewer_gets_video "$viewer_session"
check "the viewer was never dropped (its process still runs)" kill -0 $viewer
echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind; udevadm settle
wait_api "vivid unbound again, with a viewer attached: $vivid0 offline" 60 "$(has $vivid0 '.state == "offline"')"
kill $viewer 2>/dev/null
removed=1
for _ in $(seq 20); do rmmod vivid 2>/dev/null && { removed=0; break; }; sleep 0.5; done
# v4l2src's buffer pool used to keep a duplicate of the device fd after an unbind while streaming
# (GStreamer 1.22's orphaned pools, fixed by draining instead: src/media/mod.rs); rmmod proves it let go.
if [ $removed = 0 ]; then
  ok "the daemon let go of vivid's nodes (rmmod vivid succeeds)"
else
  bad "the daemon let go of vivid's nodes (rmmod vivid refused)"
  echo "  the daemon's open video fds: $(ls -l /proc/$daemon/fd 2>/dev/null | grep -o '/dev/video[^ ]*.*' | tr '\n' ' ')"
fi

# forget: the card of a camera whose device is gone can be dropped (DELETE /api/cameras/ID); a
# camera that streams cannot
forget() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X DELETE "$api/$1"; }
check "vivid gone: $vivid0 may be forgotten" api_is "$(has $vivid0 '.forgettable == true')"
check "a streaming camera cannot be forgotten (409)" test "$(forget $loop10)" = 409
check "vivid gone: $vivid0 forgotten (204)" test "$(forget $vivid0)" = 204
check "$vivid0's card is gone, $loop10 still streams" \
  api_is "([.[] | select(.id == \"$vivid0\")] | length == 0) and ([.[] | select(.id == \"$loop10\" and .state == \"streaming\")] | length == 1)"

usbcam add -n "Fake UVC Camera" -s FAKE0001 > /dev/null && udevadm settle
wait_api "usbcam plugged: listed as $usb" 60 "$(has $usb 'true')"
check "usbcam: one camera for the device (metadata node not a camera)" \
  api_is "[.[] | select(.id | startswith(\"$usb\"))] | length == 1"
usbcam unplug
wait_api "usbcam unplugged: $usb offline" 60 "$(has $usb '.state == "offline"')"
usbcam plug > /dev/null && udevadm settle
# back = set up again from the new device (it cannot stream, so it may already be retrying)
wait_api "usbcam replugged: same id $usb back" 60 "$(has $usb '.detail != "device unplugged"')"
check "usbcam replugged: still one camera for it" api_is "[.[] | select(.id | startswith(\"$usb\"))] | length == 1"
usbcam unplug
wait_api "usbcam unplugged again: $usb may be forgotten" 60 "$(has $usb '.forgettable == true')"
check "usbcam gone: $usb forgotten (204)" test "$(forget $usb)" = 204
usbcam plug > /dev/null && udevadm settle
wait_api "usbcam plugged after being forgotten: $usb gets a card again" 60 "$(has $usb '.detail != "device unplugged"')"

kill -TERM $daemon
stopped=1
for _ in $(seq 40); do kill -0 $daemon 2>/dev/null || { stopped=0; break; }; sleep 0.5; done
check "daemon stops on SIGTERM" test $stopped = 0
kill -KILL $daemon 2>/dev/null; wait $daemon 2>/dev/null
fakecam remove all 2>/dev/null; usbcam remove 2>/dev/null

if [ $fail != 0 ]; then
  echo "-- daemon log (last 60 lines):"; tail -60 "$log" | indent
fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]

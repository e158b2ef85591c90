#!/bin/sh
# Every benchmark in one command: each measurement of edgecam-bench (bench/src/<measurement>.rs) and
# bench/encoders.sh, one result file each, then the report generated from them.
#
#   bench/run.sh [--quick]
#
# Results: bench/results/<measurement>.json and bench/results/REPORT.md (about 27 minutes). --quick is a
# smoke run with fewer tries, cycles, frames, windows and grid points (about 10 minutes), written to
# bench/results/quick/ so it never replaces the real results.
#
#   latency          glass to glass through the daemon (test_pattern: stamp), 300 frames        (~30 s)
#   first_frame      ready -> first decoded frame, 20 tries each for idle keep-encoding and stop  (~3 min)
#   idle_cost        CPU/RSS with 2 demo cameras and 0 viewers, per idle policy                   (~40 s)
#   viewer_cost      CPU/RSS with 2 demo cameras at 0, 1 and 3 viewer tabs                        (~1 min)
#   janus_push       CPU/RSS, 1 camera: 1 tab direct vs 3 tabs through Janus (WHIP push; root)   (~1 min)
#   leaks            1000 scripted join/leave cycles (keep-encoding), 300 with idle stop          (~3 min)
#   bitrate          Chromium getStats bytesReceived over 20 s, ball and smpte                    (~40 s)
#   peer_comparison  aiortc side by side (venv in target/aiortc-venv: pip install aiortc numpy)   (~2 min)
#   scaling          1,2,4,8 cameras x 1,2,4 viewers at 640x480 + 8x4 at 320x240                  (~10 min)
#   full_load        one camera at its 32 viewers and 128 websockets: threads, fds, RSS (systemd)  (~1.5 min)
#   shaped_comparison  edgecam, aiortc, a Chromium sender on 3 % loss, 250 kbit/s, 2M->300k->2M (root) (~9 min)
#   tier_cost        CPU/RSS, 1 camera, 2 viewers: both clean vs one at 300 kbit/s (low tier)  (~2 min, root)
#   encoders         bench/encoders.sh: each encoder profile in gst-launch-1.0, no daemon         (~2.5 min)
#
# Each measurement writes its own JSON, so a failed one leaves the others (and the exit status says it
# failed); the report is built from whatever JSON exists. Needs /usr/bin/chromium. The load average is
# recorded with every result: measure on an otherwise idle machine.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
quick=0
for a in "$@"; do
  case $a in
    --quick) quick=1 ;;
    *) echo "usage: bench/run.sh [--quick]" >&2; exit 2 ;;
  esac
done

cargo build --release --bin edgecam
cargo build -p edgecam-bench
export EDGECAM_BIN="$root/target/release/edgecam"
bench="$root/target/debug/edgecam-bench"

venv=${AIORTC_VENV:-$root/target/aiortc-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import aiortc, numpy' 2>/dev/null; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q --only-binary=:all: aiortc numpy \
    || echo "aiortc: install failed, peer_comparison will fail" >&2
fi

if [ $quick = 1 ]; then
  out="$root/bench/results/quick"
  frames=100; tries=5; seconds=5; cycles=200; stop_cycles=50; bitrate_s=10
  peer_tries=3; grid=1x1,2x2,8x1; encoder_s=3; warmup_s=1; window_s=10; phase_s=8; tier_s=5
else
  out="$root/bench/results"
  frames=300; tries=20; seconds=10; cycles=1000; stop_cycles=300; bitrate_s=20
  peer_tries=10; grid=1x1,1x2,1x4,2x1,2x2,2x4,4x1,4x2,4x4,8x1,8x2,8x4,8x4s; encoder_s=10; warmup_s=2
  window_s=30; phase_s=20; tier_s=20
fi

status=0
run() {
  echo "== $* (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$@" >/dev/null || { echo "== FAILED: $*" >&2; status=1; }
}
run "$bench" latency --frames $frames --out "$out"
run "$bench" first_frame --tries $tries --out "$out"
run "$bench" idle_cost --seconds $seconds --out "$out"
run "$bench" viewer_cost --seconds $seconds --out "$out"
run "$bench" janus_push --seconds $seconds --out "$out"
run "$bench" leaks --cycles $cycles --stop-cycles $stop_cycles --settle 5 --out "$out"
run "$bench" bitrate --seconds $bitrate_s --out "$out"
run "$bench" peer_comparison --tries $peer_tries --seconds $seconds --python "$venv/bin/python" --out "$out"
run "$bench" scaling --seconds $seconds --grid $grid --out "$out"
run "$bench" full_load --seconds $seconds --out "$out"
run "$bench" shaped_comparison --seconds $window_s --phase $phase_s --python "$venv/bin/python" --out "$out"
run "$bench" tier_cost --seconds $tier_s --out "$out"
run env DURATION=$encoder_s WARMUP=$warmup_s OUT="$out/encoders.json" bench/encoders.sh
"$bench" report --out "$out" >/dev/null || status=1
echo "== report: $out/REPORT.md" >&2
exit $status

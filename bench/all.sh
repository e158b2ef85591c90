#!/bin/sh
# Issue 7: every benchmark in one command. Results: bench/results/issue7_*.json and bench/results/issue7.md.
#
#   bench/all.sh [--quick] [--with-run-sh]
#
# Phases (each writes its own JSON, so a failed or skipped phase leaves the others; the markdown is
# rebuilt from whatever JSON exists):
#   ttff     ready -> first decoded frame, 20 tries each for idle keep-encoding and idle stop   (~3 min)
#   idle     daemon CPU/RSS with 2 demo cameras and 0 viewers, per idle policy                   (~40 s)
#   leak     1000 scripted ready/offer/stop cycles (keep-encoding), 300 with idle stop           (~3 min)
#   bitrate  Chromium getStats bytesReceived over 20 s, ball and smpte                           (~40 s)
#   latency  glass-to-glass through the daemon (test_pattern: stamp), 300 frames (latency.rs)   (~30 s)
#   peer     aiortc side by side (venv in target/aiortc-venv, `pip install aiortc numpy`)        (~2 min)
#   scaling  1,2,4,8 cameras x 1,2,4 viewers at 640x480 + 8x4 at 320x240                         (~10 min)
# --quick: fewer tries/cycles/grid points (a smoke run, results in bench/results/quick/). --with-run-sh: also run bench/run.sh (the
# other bench driver). Needs /usr/bin/chromium. Note the load average: results carry it.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
quick=0; with_run=0
for a in "$@"; do
  case $a in
    --quick) quick=1 ;;
    --with-run-sh) with_run=1 ;;
    *) echo "usage: bench/all.sh [--quick] [--with-run-sh]" >&2; exit 2 ;;
  esac
done

cargo build --release --bin edgecam
CARGO_TARGET_DIR="$root/target" cargo build --manifest-path bench/Cargo.toml --bin edgecam-issue7 --bin edgecam-latency
export EDGECAM_BIN="$root/target/release/edgecam"
b="$root/target/debug/edgecam-issue7"

venv=${AIORTC_VENV:-$root/target/aiortc-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import aiortc, numpy' 2>/dev/null; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q --only-binary=:all: aiortc numpy || echo "aiortc: install failed, peer phase will fail" >&2
fi

if [ $quick = 1 ]; then
  # A smoke run: its results go to bench/results/quick/, never over the real ones.
  export ISSUE7_OUT="$root/bench/results/quick"
  tries=5; cycles=200; stop_cycles=50; grid=1x1,2x2,8x1; frames=100
else
  export ISSUE7_OUT="$root/bench/results"
  tries=20; cycles=1000; stop_cycles=300; grid=1x1,1x2,1x4,2x1,2x2,2x4,4x1,4x2,4x4,8x1,8x2,8x4,8x4s; frames=300
fi

status=0
run() { echo "== $* (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2; "$@" >/dev/null || { echo "== FAILED: $*" >&2; status=1; }; }
run "$b" idle --seconds 10
run "$b" ttff --tries $tries
run "$b" leak --cycles $cycles --settle 5
run "$b" leak --cycles $stop_cycles --settle 5 --idle stop
run "$b" bitrate --seconds 20
run "$root/target/debug/edgecam-latency" --frames $frames
run "$b" peer --tries 10 --seconds 10 --python "$venv/bin/python"
run "$b" scaling --seconds 10 --grid $grid
[ $with_run = 1 ] && run bench/run.sh
"$b" report
exit $status

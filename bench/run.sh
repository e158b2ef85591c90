#!/bin/sh
# Benchmark the daemon: CPU and RSS with 2 demo cameras at 0, 1 and 3 viewers (headless Chromium tabs),
# and the time from `ready` to the first decoded frame. See bench/main.rs for what is measured and how.
#
#   bench/run.sh [--seconds 10] [--tries 7] [--out bench/results]
#
# Builds the daemon in release (EDGECAM_BENCH_PROFILE=dev for a debug build), then the driver in bench/
# (sharing target/), and writes bench/results/viewers-<unix time>.json, viewers.json (the latest run) and
# viewers.md (the table for the README, also printed). Needs /usr/bin/chromium. Measure on an otherwise
# idle machine: the load average at start is recorded with the results.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

profile=${EDGECAM_BENCH_PROFILE:-release}
case $profile in
  dev) dir=debug ;;
  *) dir=$profile ;;
esac

cargo build --profile "$profile" --bin edgecam
CARGO_TARGET_DIR="$root/target" cargo build --manifest-path bench/Cargo.toml --bin edgecam-bench
EDGECAM_BIN="$root/target/$dir/edgecam" exec "$root/target/debug/edgecam-bench" "$@"

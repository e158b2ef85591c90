#!/usr/bin/env bash
# The whole test suite, as CI runs it, from a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test

# Unit tests, then end-to-end tests (real daemon, real GStreamer, real headless browsers).
cargo test --no-fail-fast 2>&1 | tee target/test-cargo.log
cargo_status=${PIPESTATUS[0]}

# Real kernel V4L2 devices and udev hot-plug, in a throwaway VM (see tests/vm/README.md).
vm_status=0
if [ -x tests/vm/run.sh ]; then
  cargo build --release
  tests/vm/run.sh || vm_status=$?
fi

passed=$(grep -Eo '[0-9]+ passed' target/test-cargo.log | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-cargo.log | awk '{s+=$1} END {print s+0}')
echo "cargo test: $passed passed, $failed failed (exit $cargo_status); VM tests exit $vm_status"
[ "$cargo_status" = 0 ] && [ "$vm_status" = 0 ]

#!/usr/bin/env bash
# The whole test suite, as CI runs it, from a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test

mkdir -p target
set +e  # a failing suite must not stop the other one; the exit status is decided at the end

# Style gates: formatting and every clippy lint, on the whole workspace (daemon, test kit, bench driver).
{ cargo fmt --all --check && cargo clippy --workspace --all-targets -- -D warnings; } 2>&1 | tee target/test-style.log
style_status=${PIPESTATUS[0]}

# Unit tests, then end-to-end tests (real daemon, real GStreamer, real headless browsers).
cargo test --no-fail-fast 2>&1 | tee target/test-cargo.log
cargo_status=${PIPESTATUS[0]}

# The systemd unit's sandbox, rated offline by systemd-analyze (no root, under a second).
bash tests/package/unit-security.sh 2>&1 | tee target/test-unit.log
unit_status=${PIPESTATUS[0]}

# Real kernel V4L2 devices and udev hot-plug, in a throwaway VM (see tests/vm/run.sh).
# cargo test already built target/debug/edgecam (the e2e tests run it); building it again without
# dev-dependencies would recompile half the dependency tree with other features.
EDGECAM_BIN=$PWD/target/debug/edgecam tests/vm/run.sh 2>&1 | tee target/test-vm.log
vm_status=${PIPESTATUS[0]}

# One closing line over both: cargo's "N passed; M failed" lines and the VM suite's "N passed, M failed".
count() { grep -Eho "[0-9]+ $1" target/test-cargo.log target/test-vm.log | awk '{s+=$1} END {print s+0}'; }
echo "style exit $style_status, cargo exit $cargo_status, unit sandbox check exit $unit_status, VM tests exit $vm_status"
echo "total: $(count passed) passed, $(count failed) failed"
[ "$style_status" = 0 ] && [ "$cargo_status" = 0 ] && [ "$unit_status" = 0 ] && [ "$vm_status" = 0 ]

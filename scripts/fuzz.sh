#!/usr/bin/env bash
# A long fuzzing campaign over the parsers of everything a client or a config file sends in:
# signalling frames, ICE candidates, SDP offers and answers, WHEP trickle fragments, the config
# and encoder profiles (the `fuzz_*` property tests; CI runs them with 256 cases each).
#   scripts/fuzz.sh [CASES]      default 100000 cases per target, release build
# A failure prints the smallest input proptest found and saves its seed under proptest-regressions/
# (commit it: later runs try it first).
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-100000}
echo "fuzz: $cases cases per target"
start=$(date +%s)
PROPTEST_CASES=$cases cargo test --release --lib fuzz_ -- --test-threads 2
echo "fuzz: $cases cases per target passed in $(( $(date +%s) - start )) s"

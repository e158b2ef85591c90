#!/bin/bash
# `systemd-analyze security` of packaging/debian/edgecam.service, before and
# after its hardening block: "before" is the same unit with everything from
# "# ---- hardening" up to [Install] removed (a plain Type=notify service with a
# static user). Offline analysis of the unit file: no install, no root needed.
#
# usage: tests/package/unit-security.sh [--full]   (--full: the whole table for "after")
# Prints both exposure scores and fails if "after" is not rated OK (< 4.0)
# or not better than "before".
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
UNIT=$HERE/../../packaging/debian/edgecam.service
full=0; [ "${1:-}" = --full ] && full=1

w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
mkdir -p "$w/before" "$w/after"
cp "$UNIT" "$w/after/edgecam.service"
sed '/^# ---- hardening/,/^\[Install\]/{/^\[Install\]/!d}' "$UNIT" > "$w/before/edgecam.service"

score() {  # the "Overall exposure level" line's number
  systemd-analyze security --offline=true --no-pager "$1" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) \(.*\)$/\1 \2/p'
}
before=$(score "$w/before/edgecam.service")
after=$(score "$w/after/edgecam.service")
echo "systemd-analyze security --offline=true edgecam.service ($(systemctl --version | head -1))"
echo "  before hardening: $before"
echo "  after hardening:  $after"
if [ $full = 1 ]; then
  systemd-analyze security --offline=true --no-pager "$w/after/edgecam.service" 2>/dev/null | grep -v '^  *$'
fi
b=${before%% *}; a=${after%% *}
awk -v a="$a" -v b="$b" 'BEGIN { exit !(a < 4.0 && a < b) }' || { echo "FAIL: exposure $a (want < 4.0 and < $b)"; exit 1; }
echo "PASS: exposure $b -> $a"

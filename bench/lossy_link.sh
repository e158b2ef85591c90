#!/bin/sh
# Issue 12, item 1: "3 % loss: fps, freezes, NACKs" for edgecam, Chromium (H.264) and Firefox (VP8).
#
#   bench/lossy_link.sh [RUNS]        (default 3 runs; ~80 s each; needs root: network namespaces, nftables)
#
# Each run is the end-to-end scenario of tests/lossy_link.rs (daemon and browser in network namespaces of
# their own, 3 % of the daemon's UDP packets dropped at random once the browser decodes, 30 s observed),
# which appends one JSON line per browser to $EDGECAM_LOSSY_LINK_RESULTS. A run whose bounds fail still
# records its numbers. Output: bench/results/lossy_link.json (every window, plus the machine's load
# average before and after each run: the 2-core machine is shared, and freezes follow load).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=${1:-3}
out=bench/results/lossy_link.json
lines=$(mktemp)
loads=$(mktemp)
trap 'rm -f "$lines" "$loads"' EXIT

cargo test --test lossy_link --no-run
i=1
while [ "$i" -le "$runs" ]; do
  before=$(cut -d' ' -f1 /proc/loadavg)
  EDGECAM_LOSSY_LINK_RESULTS=$lines cargo test --test lossy_link -- --test-threads 1 >&2 || echo "run $i: bounds failed (numbers kept)" >&2
  echo "$i $before $(cut -d' ' -f1 /proc/loadavg)" >>"$loads"
  i=$((i + 1))
done

python3 - "$lines" "$loads" "$out" "$(git rev-parse --short HEAD)" <<'EOF'
import json, sys, datetime
lines, loads, out, commit = sys.argv[1:]
windows = [json.loads(l) for l in open(lines) if l.strip()]
load = [dict(zip(("run", "load_before", "load_after"), l.split())) for l in open(loads) if l.strip()]
result = {
    "what": "3 % random loss on the daemon's UDP egress (nftables numgen), 30 s window after 60 frames of warm-up",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "commit": commit,
    "load": load,
    "windows": windows,
}
json.dump(result, open(out, "w"), indent=1)
print(f"{'browser':9} {'codec':5} {'fps':>6} {'freezes':>7} {'frozen s':>8} {'NACKs':>6} {'PLIs':>5} {'kbit/s':>7}")
for w in windows:
    f = lambda k, fmt: format(w[k], fmt) if w.get(k) is not None else "-"
    print(f"{w['browser']:9} {w['codec']:5} {f('fps', '6.1f')} {f('freezes', '7.0f')} {f('freeze_seconds', '8.2f')} "
          f"{f('nacks', '6.0f')} {f('plis', '5.0f')} {f('kbps', '7.0f')}")
print(f"-> {out}")
EOF

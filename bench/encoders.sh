#!/usr/bin/env bash
# CPU cost of each usable encoder profile, per camera, at 640x480@30 and 1280x720@30.
#
# What is measured: one `gst-launch-1.0` process running the same chain the daemon builds for a camera
# (src/media/camera_pipeline.rs: source -> videoconvert -> I420 -> leaky queue -> <profile fragment> ->
# payloader), with the profile's fragment rendered as the daemon would (bitrate, GOP = 2 s), for
# DURATION seconds after WARMUP seconds, on `videotestsrc is-live=true pattern=ball`. CPU is that process's
# utime+stime from /proc/<pid>/stat over wall time: "% of one core" (100 = one core busy; may exceed 100
# on several cores). The encoded frame rate is counted behind the encoder (fpsdisplaysink on a tee branch),
# so a profile that cannot keep up shows fewer than 30 fps instead of a flattering CPU figure.
#
# Not included, deliberately: webrtcbin/DTLS/SRTP per viewer (notes/gstreamer-webrtc.md: 0.3-0.6 % of a core
# per viewer), the demo cameras' clockoverlay, and a real camera's capture/colour conversion. A "source
# only" row gives the cost of videotestsrc + videoconvert alone, to subtract.
#
# passthrough (camera H.264 sent as is) needs H.264 input, which videotestsrc (and so a demo camera) cannot
# give. It is measured on a stand-in: a clip encoded beforehand with x264 (not measured), read from a
# Matroska file at real-time pace (filesrc ! matroskademux, then the profile's fragment and the payloader).
# That is demux + parse + payload, without whatever a real UVC camera's v4l2src costs.
#
# Also one variant that is not a shipped profile: vp8 with threads=1 (see the note at that row).
#
# Usage: bench/encoders.sh            (about 2.5 minutes)
#   DURATION=10 WARMUP=2 bench/encoders.sh
# Output: a markdown table on stdout, bench/results/encoders.json.
# Needs: gst-launch-1.0 (GStreamer 1.22 plugins base/good/bad/ugly), python3 (JSON and the table).
# Other load on the machine inflates nothing in CPU-time terms but can starve the live pipeline; the load
# average before and after is recorded next to the numbers.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
OUT=${OUT:-$ROOT/bench/results/encoders.json}
FPS=30
GOP=$((FPS * 2)) # src/supervisor.rs: GOP_SECONDS = 2
# Resolution, bitrate (kbit/s): the daemon's default bitrate is 1000 kbit/s; 720p gets 2000 as in the
# packaged config's example.
SIZES=("640x480:1000" "1280x720:2000")
PROFILES=(x264 openh264 vp8 passthrough)

for tool in gst-launch-1.0 python3; do
    command -v "$tool" >/dev/null || { echo "encoders.sh: $tool not found" >&2; exit 1; }
done
CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/edgecam-bench-encoders.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Which profiles the daemon itself finds usable here (trial encode included), when a build exists;
# otherwise only the required GStreamer elements are checked.
EDGECAM=""
for b in target/release/edgecam target/debug/edgecam; do
    [[ -x $b ]] && { EDGECAM=$b; break; }
done
usable() { # profile -> prints "yes" or a reason
    local name=$1
    if [[ -n $EDGECAM ]]; then
        "$EDGECAM" profiles --json 2>/dev/null | python3 -c '
import json, sys
name = sys.argv[1]
for p in json.load(sys.stdin):
    if p["name"] == name:
        print("yes" if p["usable"] else "not usable: " + p["reason"])
        break
else:
    print("no such profile")' "$name"
    else
        local el
        for el in $(sed -n 's/^ *elements: *\[\(.*\)\].*/\1/p' "profiles/$name.yaml" | tr ',' ' '); do
            gst-inspect-1.0 "$el" >/dev/null 2>&1 || { echo "GStreamer element $el not found"; return; }
        done
        echo yes
    fi
}

fragment() { # profile width height kbps -> rendered pipeline fragment
    local file="profiles/$1.yaml" w=$2 h=$3 kbps=$4
    local raw
    raw=$(sed -n 's/^pipeline: *"\(.*\)" *$/\1/p' "$file")
    [[ -n $raw ]] || { echo "encoders.sh: no pipeline: line in $file" >&2; exit 1; }
    raw=${raw//\{bitrate_kbps\}/$kbps}
    raw=${raw//\{bitrate_bps\}/$((kbps * 1000))}
    raw=${raw//\{gop\}/$GOP}
    raw=${raw//\{fps\}/$FPS}
    raw=${raw//\{width\}/$w}
    raw=${raw//\{height\}/$h}
    if [[ $raw =~ \{[a-z0-9_]+\} ]]; then
        echo "encoders.sh: $file: placeholder ${BASH_REMATCH[0]} not known to this script" >&2
        exit 1
    fi
    printf '%s' "$raw"
}

codec_of() { sed -n 's/^codec: *\([a-z0-9]*\).*/\1/p' "profiles/$1.yaml"; }

payloader() { # codec -> the daemon's payloader (camera_pipeline.rs)
    case $1 in
        h264) echo "h264parse ! rtph264pay name=pay config-interval=-1 aggregate-mode=zero-latency pt=96 mtu=1200" ;;
        vp8) echo "rtpvp8pay name=pay picture-id-mode=15-bit pt=96 mtu=1200" ;;
        *) echo "encoders.sh: no payloader for codec $1" >&2; exit 1 ;;
    esac
}

ticks() { # pid -> utime+stime in clock ticks (fields 14 and 15 of /proc/pid/stat, after the comm)
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$stat"
}

rendered() { # log -> frames counted by fpsdisplaysink so far (0 before its first report)
    local n
    n=$(grep -o 'rendered: [0-9]*' "$1" | tail -n 1 | awk '{ print $2 }')
    echo "${n:-0}"
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# measure <label> <profile> <codec> <WxH> <kbps> <pipeline description>
measure() {
    local label=$1 profile=$2 codec=$3 size=$4 kbps=$5 desc=$6
    local log=$WORK/run-$label-$size.log
    # gst-launch-1.0 takes the description as separate words (one quoted argument is one token to it):
    # split on spaces, with globbing off.
    set -f
    # shellcheck disable=SC2086
    gst-launch-1.0 -v $desc >"$log" 2>&1 &
    set +f
    local pid=$!
    PIDS+=("$pid")
    sleep "$WARMUP"
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "encoders.sh: $label $size: gst-launch-1.0 exited during warm-up:" >&2
        tail -n 20 "$log" >&2
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$profile" "$codec" "$size" "$kbps" "" "" "" "pipeline failed" >>"$RESULTS"
        return
    fi
    local t0 c0 f0 t1 c1 f1 rss
    t0=$(date +%s.%N); c0=$(ticks "$pid"); f0=$(rendered "$log")
    sleep "$DURATION"
    t1=$(date +%s.%N); c1=$(ticks "$pid"); f1=$(rendered "$log")
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local cpu fps
    cpu=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", (b - a) / hz / (t1 - t0) * 100 }')
    fps=$(awk -v a="$f0" -v b="$f1" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", (b - a) / (t1 - t0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$profile" "$codec" "$size" "$kbps" "$cpu" "$fps" "$rss" "" >>"$RESULTS"
    echo "  $label $size: ${cpu} % of one core, ${fps} fps encoded, RSS ${rss} kB" >&2
}

SKIPPED=$WORK/skipped.tsv
: >"$SKIPPED"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "encoders.sh: ${DURATION} s per run after ${WARMUP} s warm-up; load average before: $LOAD_BEFORE" >&2

for entry in "${SIZES[@]}"; do
    size=${entry%%:*}; kbps=${entry##*:}
    w=${size%x*}; h=${size#*x}
    RAW="videotestsrc is-live=true pattern=ball ! video/x-raw,width=$w,height=$h,framerate=$FPS/1 ! videoconvert ! video/x-raw,format=I420"
    QUEUE="queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream"
    # After the encoder: one branch as the daemon's (payloader -> sink), one counting encoded frames.
    count() { echo "tee name=t t. ! queue ! ${1:+$1 ! }fakesink sync=true t. ! queue ! fpsdisplaysink video-sink=fakesink text-overlay=false sync=true"; }

    # The source alone, for reference: what every row below pays before encoding.
    measure "source-only" "" "" "$size" "" "$RAW ! $QUEUE ! $(count "")"

    for profile in "${PROFILES[@]}"; do
        if [[ ! -f profiles/$profile.yaml ]]; then
            printf '%s\t%s\n' "$profile" "no profiles/$profile.yaml" >>"$SKIPPED"; continue
        fi
        verdict=$(usable "$profile")
        if [[ $verdict != yes ]]; then
            # Once per profile, not per size.
            grep -q "^$profile	" "$SKIPPED" || printf '%s\t%s\n' "$profile" "$verdict" >>"$SKIPPED"
            continue
        fi
        codec=$(codec_of "$profile")
        frag=$(fragment "$profile" "$w" "$h" "$kbps")
        pay=$(payloader "$codec")
        if [[ $profile == passthrough ]]; then
            # Stand-in camera H.264 (Constrained Baseline, as a browser-friendly camera would send), made
            # before the measurement; read back at real-time pace.
            clip=$WORK/camera-$size.mkv
            gst-launch-1.0 -q videotestsrc pattern=ball num-buffers=$(((WARMUP + DURATION + 5) * FPS)) \
                ! video/x-raw,width=$w,height=$h,framerate=$FPS/1 ! videoconvert ! video/x-raw,format=I420 \
                ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=$kbps key-int-max=$GOP \
                ! video/x-h264,profile=constrained-baseline ! h264parse ! matroskamux ! filesink location="$clip" >/dev/null
            measure "$profile" "$profile" "$codec" "$size" "$kbps" \
                "filesrc location=$clip ! matroskademux ! $frag ! $(count "$pay")"
            continue
        fi
        measure "$profile" "$profile" "$codec" "$size" "$kbps" "$RAW ! $QUEUE ! $frag ! $(count "$pay")"
        if [[ $profile == vp8 && $frag == *" threads=2 "* ]]; then
            # Not a shipped profile: the same with libvpx on one thread. On a loaded 2-core machine the
            # shipped threads=2 fell to a few fps (its threads wait on each other); this row shows whether
            # that is happening in this run.
            measure "vp8-threads=1" "$profile" "$codec" "$size" "$kbps" "$RAW ! $QUEUE ! ${frag/ threads=2 / threads=1 } ! $(count "$pay")"
        fi
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$(dirname "$OUT")"
python3 - "$RESULTS" "$SKIPPED" "$OUT" "$LOAD_BEFORE" "$LOAD_AFTER" "$DURATION" "$WARMUP" <<'PY'
import json, os, platform, subprocess, sys, datetime
results_tsv, skipped_tsv, out, load_before, load_after, duration, warmup = sys.argv[1:8]

def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()

gst = subprocess.run(["gst-launch-1.0", "--version"], capture_output=True, text=True).stdout.splitlines()
rows = []
for line in open(results_tsv):
    label, profile, codec, size, kbps, cpu, fps, rss, error = line.rstrip("\n").split("\t")
    w, h = (int(x) for x in size.split("x"))
    rows.append({
        "case": label,
        "profile": profile or None,
        "codec": codec or None,
        "width": w, "height": h, "fps_target": 30,
        "bitrate_kbps": int(kbps) if kbps else None,
        "cpu_percent_of_one_core": float(cpu) if cpu else None,
        "fps_encoded": float(fps) if fps else None,
        "rss_kb": int(rss) if rss else None,
        "error": error or None,
    })
skipped = [dict(zip(("profile", "reason"), l.rstrip("\n").split("\t", 1))) for l in open(skipped_tsv)]
doc = {
    "benchmark": "encoders",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "gstreamer": gst[1] if len(gst) > 1 else None,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    },
    "method": (
        f"one gst-launch-1.0 process per case: videotestsrc is-live=true pattern=ball -> videoconvert -> I420 -> "
        f"leaky queue -> profile fragment (bitrate as listed, GOP 60) -> payloader as in the daemon; "
        f"CPU = utime+stime of the process over {duration} s wall after {warmup} s warm-up, in % of one core; "
        f"fps_encoded counted after the encoder. passthrough: pre-encoded x264 clip from a Matroska file at "
        f"real-time pace (demux + parse + payload), since a test source cannot give H.264. No webrtcbin, no viewers."
    ),
    "results": rows,
    "skipped": skipped,
}

m = doc["machine"]
print(f"Encoder cost per camera: {m['nproc']} x {m['cpu_model']}, {m['gstreamer']}, load average {load_before} -> {load_after}")
print()
print("| profile | codec | size | bitrate kbit/s | CPU % of one core | fps encoded | CPU ms per frame | RSS MB |")
print("|---|---|---|---|---|---|---|---|")
behind = False
for r in rows:
    name = r["profile"] or "source only (reference)"
    if r["case"] != (r["profile"] or "source-only"):
        name = f"{r['case']} (variant, not shipped)"
    cpu = "failed: " + r["error"] if r["error"] else f"{r['cpu_percent_of_one_core']:.1f}"
    fps = "" if r["fps_encoded"] is None else f"{r['fps_encoded']:.1f}"
    if r["fps_encoded"] is not None and r["fps_encoded"] < 0.9 * r["fps_target"]:
        fps += " *"
        behind = True
    per_frame = ""
    if r["cpu_percent_of_one_core"] is not None and r["fps_encoded"]:
        per_frame = f"{r['cpu_percent_of_one_core'] * 10 / r['fps_encoded']:.1f}"
        r["cpu_ms_per_frame"] = float(per_frame)
    rss = "" if r["rss_kb"] is None else f"{r['rss_kb'] / 1024:.1f}"
    print(f"| {name} | {r['codec'] or ''} | {r['width']}x{r['height']} | {r['bitrate_kbps'] or ''} | {cpu} | {fps} | {per_frame} | {rss} |")
if behind:
    print("\n\\* below 27 fps: the encoder did not keep up (the leaky queue in front of it dropped frames), so its CPU %"
          " is for fewer frames than 30 per second; CPU ms per frame is the comparable figure.")
for s in skipped:
    print(f"\nskipped {s['profile']}: {s['reason']}")
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(f"\nJSON: {out}")
PY

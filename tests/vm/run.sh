#!/bin/bash
# edgecam's VM tests, one entry point: builds edgecam on the host, builds (once, cached under
# /tmp/edgecam-vm-cache) a Debian 12 guest with real V4L2 drivers, udev and the GStreamer
# plugins the daemon needs, and runs tests/vm/hotplug.sh in it. Root is needed (debootstrap
# for the image, qemu for the VM). Exit status: hotplug.sh's; 124 timeout, 125 VM failure.
#
#   tests/vm/run.sh                      # whole suite, about 5 min under TCG after the image
#   EDGECAM_BIN=/path/edgecam tests/vm/run.sh   # test that binary instead of building one
#   tests/vm/run.sh -- bash -c 'edgecam probe'  # any other command in the guest
# The guest scripts, image builder and runner (vm-run.sh, build-image.sh, guest/) come from
# ../shared/v4l2vm, copied so the project does not need that folder to run.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# webrtcbin (bad), x264enc (ugly), nice (ICE) for the daemon; jq and curl for the checks
export V4L2VM_EXTRA_PACKAGES=${V4L2VM_EXTRA_PACKAGES:-gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-nice jq curl}

bin=${EDGECAM_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --bin edgecam --example vm-viewer)
  bin=$root/target/debug/edgecam
fi
case "$bin" in /*) ;; *) bin=$PWD/$bin;; esac

cmd=(bash "$here/hotplug.sh")
if [ "${1:-}" = -- ]; then shift; cmd=("$@"); fi
# the binary's folder is shared too when it lives outside the repository
shares=(--share "$root")
case "$bin" in "$root"/*) ;; *) shares+=(--share "$(dirname "$bin")");; esac
# under TCG four cameras encoding at once make the suite take several minutes: allow 30
exec "$here/vm-run.sh" "${shares[@]}" --cwd "$root" --mem "${V4L2VM_MEM:-1536}" --timeout "${V4L2VM_TIMEOUT:-1800}" \
  --env EDGECAM_BIN="$bin" --env PATH="$(dirname "$bin"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --env RUST_LOG="${RUST_LOG:-info}" -- "${cmd[@]}"

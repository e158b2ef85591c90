#!/usr/bin/env bash
# Installs what building, running and testing edgecam needs on Debian 12, from Debian's archive and
# crates.io only. Safe to run again: it installs only what is missing (and skips apt-get update then).
#   scripts/install-deps.sh run    build + runtime packages (enough for `make demo`)
#   scripts/install-deps.sh test   also the browsers, decoders and VM tools the test suite uses
set -euo pipefail
what=${1:-run}

build=(pkg-config gcc libc6-dev make libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
       libgstreamer-plugins-bad1.0-dev libudev-dev libclang-dev)
# gstreamer1.0-x carries clockoverlay (the running clock drawn on demo cameras).
runtime=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
         gstreamer1.0-plugins-ugly gstreamer1.0-nice gstreamer1.0-x gstreamer1.0-tools)
# chromium/firefox-esr: real browsers for end-to-end tests; gstreamer1.0-libav: the H.264 decoder of
# the scripted test client; gstreamer1.0-vaapi: an encoder element with no hardware behind it, which
# must be reported unusable; systemd: systemd-analyze rates the unit's sandbox; iproute2 (ip, tc) and
# nftables: the shaped links of tests/lossy_link.rs (network namespaces, tbf rate caps, random drop).
# (tests/vm/build-image.sh installs the VM's own tools itself.)
# janus: the SFU that tests/whip_push.rs pushes a camera to (Debian 12's 1.1.2), with Node for its WHIP
# front (below).
test=(chromium firefox-esr gstreamer1.0-libav gstreamer1.0-vaapi python3 python3-websocket iproute2 nftables procps curl systemd
      janus)

packages=("${build[@]}" "${runtime[@]}")
if [ "$what" = test ]; then
  packages+=("${test[@]}")
  # Debian's nodejs and npm, unless a Node is there already (another vendor's nodejs carries its own npm).
  command -v node >/dev/null || packages+=(nodejs)
  command -v npm >/dev/null || packages+=(npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (Debian 12's rustc 1.63 is too old)" >&2
  exit 1
fi

# The test command's style gates need rustfmt and clippy (in rustup's default profile, not the minimal one).
if [ "$what" = test ] && command -v rustup >/dev/null; then
  for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
  done
fi

# Janus's WHIP front, simple-whip-server, for tests/whip_push.rs and bench/ (testkit/src/janus.rs). Debian's
# package depends on Debian's node-websocket, which conflicts with newer Node, so only its code is taken
# from the .deb and its Node modules come from npm, into WHIP_SERVER_DIR.
WHIP_SERVER_DIR=${EDGECAM_WHIP_SERVER_DIR:-/var/cache/edgecam-test/simple-whip-server}
if [ "$what" = test ] && [ ! -f "$WHIP_SERVER_DIR/.installed" ]; then
  echo "installing simple-whip-server into $WHIP_SERVER_DIR" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download simple-whip-server 2>/dev/null && dpkg-deb -x simple-whip-server_*.deb root)
  $sudo mkdir -p "$WHIP_SERVER_DIR"
  $sudo rm -rf "$WHIP_SERVER_DIR/src"
  $sudo cp -r "$tmp/root/usr/share/simple-whip-server/src" "$WHIP_SERVER_DIR/"
  # The packaged config.js is a link into /etc; each test writes its own next to a copy of the code.
  $sudo rm -f "$WHIP_SERVER_DIR/src/config.js"
  rm -rf "$tmp"
  (cd "$WHIP_SERVER_DIR" && $sudo npm install --no-audit --no-fund --no-save --loglevel=error \
      async body-parser colors cors debug express@4 websocket)
  $sudo touch "$WHIP_SERVER_DIR/.installed"
fi

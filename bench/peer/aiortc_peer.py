"""aiortc sender for the peer comparisons (bench/src/peer_comparison.rs and shaped_comparison.rs drive it;
not a product component).

A 640x480@30 synthetic stream (grey background, a white 64x64 square bouncing, like videotestsrc's ball;
with `--pattern bars`, colour bars behind it and a 128x96 patch of fresh noise each frame, so the encoder
spends its whole bitrate like edgecam's SMPTE test pattern does; `--max-kbps N` caps the bitrate its
encoder follows the receiver's REMB estimate up to, 3 Mbit/s by default in aiortc)
sent as H.264 (aiortc's libx264 encoder through PyAV; VP8 disabled by codec preferences so the codec
matches edgecam's). One source for every peer connection, fanned out with aiortc's MediaRelay: each peer
connection gets every raw frame and encodes it itself (aiortc's design, unlike edgecam's one encoder per
camera). Signalling is line-based JSON on stdin/stdout, relayed by the driver to Chromium; "id" names the
peer connection (0 if absent, so a single-peer driver needs no ids):
  stdin  {"type":"ready","id":N}              -> stdout {"type":"offer","id":N,"sdp":...} (candidates inside the SDP)
  stdin  {"type":"answer","id":N,"sdp":...}   -> peer connection N starts sending
  stdin  {"type":"stop","id":N}               -> closes peer connection N; stdout {"type":"stopped","id":N}
A "ready" for an id that already has a peer connection replaces it. No ICE servers (aiortc would otherwise
use a public STUN server).
"""
import argparse
import asyncio
import fractions
import json
import sys
import time

import numpy as np
from av import VideoFrame
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, MediaStreamTrack
from aiortc.codecs import h264
from aiortc.contrib.media import MediaRelay
from aiortc.rtcrtpsender import RTCRtpSender

W, H, FPS = 640, 480, 30


class Ball(MediaStreamTrack):
    kind = "video"

    def __init__(self, pattern):
        super().__init__()
        self.n = 0
        self.start = None
        self.noise = pattern == "bars"
        self.rng = np.random.default_rng(1)
        if self.noise:
            self.bg = bars()
        else:
            self.bg = np.full((H, W, 3), 40, dtype=np.uint8)

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.n / FPS
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        img = self.bg.copy()
        x = (self.n * 7) % (2 * (W - 64))
        x = x if x < W - 64 else 2 * (W - 64) - x
        y = (self.n * 5) % (2 * (H - 64))
        y = y if y < H - 64 else 2 * (H - 64) - y
        img[y:y + 64, x:x + 64] = 255
        if self.noise:
            img[H - 96:, W - 128:] = self.rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self.n * (90000 // FPS)
        frame.time_base = fractions.Fraction(1, 90000)
        self.n += 1
        return frame


def bars():
    """Seven 75 % colour bars over the top two thirds, a grey ramp below."""
    img = np.zeros((H, W, 3), dtype=np.uint8)
    colours = [(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0), (192, 0, 192), (192, 0, 0), (0, 0, 192)]
    for i, c in enumerate(colours):
        img[: H * 2 // 3, i * W // 7:(i + 1) * W // 7] = c
    img[H * 2 // 3:] = np.linspace(0, 255, W, dtype=np.uint8)[None, :, None]
    return img


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pattern", choices=["ball", "bars"], default="ball")
    parser.add_argument("--max-kbps", type=int)
    args = parser.parse_args()
    pattern = args.pattern
    if args.max_kbps:
        # aiortc's H.264 encoder clamps every new target to this module constant; it has no API for it.
        h264.MAX_BITRATE = args.max_kbps * 1000
        h264.DEFAULT_BITRATE = min(h264.DEFAULT_BITRATE, h264.MAX_BITRATE)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    # The relay reads the source from the first subscriber's first frame on, also while no peer is left
    # (like a camera that keeps running); the source is cheap next to an encoder.
    source, relay = Ball(pattern), MediaRelay()
    pcs = {}

    def out(msg):
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    async def close(pid):
        pc = pcs.pop(pid, None)
        if pc:
            await pc.close()

    while True:
        line = await reader.readline()
        if not line:
            break
        msg = json.loads(line)
        pid = msg.get("id", 0)
        if msg["type"] == "ready":
            await close(pid)
            pc = pcs[pid] = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            tr = pc.addTransceiver(relay.subscribe(source), direction="sendonly")
            caps = RTCRtpSender.getCapabilities("video").codecs
            tr.setCodecPreferences([c for c in caps if c.mimeType in ("video/H264", "video/rtx")])
            await pc.setLocalDescription(await pc.createOffer())
            out({"type": "offer", "id": pid, "sdp": pc.localDescription.sdp})
        elif msg["type"] == "answer":
            await pcs[pid].setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
        elif msg["type"] == "stop":
            await close(pid)
            out({"type": "stopped", "id": pid})


asyncio.run(main())

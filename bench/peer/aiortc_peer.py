"""aiortc sender for the issue-7 side-by-side (bench/peer.rs drives it; not a product component).

A 640x480@30 synthetic stream (grey background, a white 64x64 square bouncing, like videotestsrc's ball)
sent as H.264 (aiortc's libx264 encoder through PyAV; VP8 disabled by codec preferences so the codec
matches edgecam's). Signalling is line-based JSON on stdin/stdout, relayed by the driver to Chromium:
  stdin  {"type":"ready"}                 -> stdout {"type":"offer","sdp":...} (candidates inside the SDP)
  stdin  {"type":"answer","sdp":...}      -> the peer connection starts sending
  stdin  {"type":"stop"}                  -> closes the current peer connection
No ICE servers (aiortc would otherwise use a public STUN server).
"""
import asyncio
import fractions
import json
import sys
import time

import numpy as np
from av import VideoFrame
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

W, H, FPS = 640, 480, 30


class Ball(MediaStreamTrack):
    kind = "video"

    def __init__(self):
        super().__init__()
        self.n = 0
        self.start = None
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
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self.n * (90000 // FPS)
        frame.time_base = fractions.Fraction(1, 90000)
        self.n += 1
        return frame


async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pc = None

    def out(msg):
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    while True:
        line = await reader.readline()
        if not line:
            break
        msg = json.loads(line)
        if msg["type"] == "ready":
            if pc:
                await pc.close()
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            tr = pc.addTransceiver(Ball(), direction="sendonly")
            caps = RTCRtpSender.getCapabilities("video").codecs
            tr.setCodecPreferences([c for c in caps if c.mimeType in ("video/H264", "video/rtx")])
            await pc.setLocalDescription(await pc.createOffer())
            out({"type": "offer", "sdp": pc.localDescription.sdp})
        elif msg["type"] == "answer":
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
        elif msg["type"] == "stop":
            if pc:
                await pc.close()
                pc = None
            out({"type": "stopped"})


asyncio.run(main())

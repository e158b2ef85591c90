#!/usr/bin/env python3
"""Headless signalling client for the package tests: connect to edgecam's /ws,
wait until CAMERA is listed, send {"type":"ready","camera":CAMERA} and wait for
the daemon's {"type":"offer",...}. Exit 0 when an SDP offer with a video m-line
arrives, 1 otherwise.

Standard library only (a hand-rolled RFC 6455 client), so it runs unchanged on
the host, in a minimal VM guest and in an arm64 root under qemu-user, with no
python3-websocket to install.

usage: ws_offer.py [--url ws://[user:password@]127.0.0.1:8080/ws] [--camera demo1|'*'] [--timeout 60]
  --camera '*': the first camera the daemon lists
"""
import argparse
import base64
import json
import os
import socket
import struct
import sys
import time
from urllib.parse import urlparse


class WebSocket:
    def __init__(self, url, timeout):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        # ws://user:password@host/ws: log in with HTTP Basic on the upgrade (the daemon's auth:).
        login = ""
        if u.username is not None:
            basic = base64.b64encode(f"{u.username}:{u.password or ''}".encode()).decode()
            login = f"Authorization: Basic {basic}\r\n"
        req = (f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.hostname}:{u.port or 80}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n" + login +
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("connection closed during the handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"handshake refused: {status.decode(errors='replace')}")

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        return buf

    def send_text(self, text):
        # Client frames must be masked (RFC 6455 5.3).
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv_text(self):
        """The next text message (fragments joined); answers pings."""
        parts = []
        while True:
            b0, b1 = self._recv_exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._recv_exact(8))[0]
            mask = self._recv_exact(4) if b1 & 0x80 else None
            data = self._recv_exact(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise ConnectionError("server closed the websocket")
            if opcode == 0x9:  # ping -> pong
                self.sock.sendall(struct.pack("!BB", 0x8A, 0x80 | len(data)) + b"\0\0\0\0" + data)
                continue
            if opcode in (0x1, 0x0):
                parts.append(data)
                if b0 & 0x80:
                    return b"".join(parts).decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    ap.add_argument("--camera", default="demo1")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()

    deadline = time.monotonic() + a.timeout
    ws = None
    while ws is None:  # the daemon may still be starting
        try:
            ws = WebSocket(a.url, timeout=5)
        except OSError as e:
            if time.monotonic() > deadline:
                print(f"ws_offer: cannot connect to {a.url}: {e}")
                return 1
            time.sleep(1)
    ws.sock.settimeout(2)
    print(f"ws_offer: connected to {a.url}")

    # One "ready" per attempt: every ready makes the daemon start a new viewer
    # branch, so ask again only after an error reply (a camera still starting).
    want_ready = False
    retry_at = None
    connected = time.monotonic()
    while time.monotonic() < deadline:
        # No camera list naming it after 10 s: ask anyway, the error says why.
        if not want_ready and retry_at is None and time.monotonic() - connected > 10:
            want_ready = True
        if retry_at is not None and time.monotonic() >= retry_at:
            want_ready, retry_at = True, None
        if want_ready:
            ws.send_text(json.dumps({"type": "ready", "camera": a.camera}))
            want_ready = False
            retry_at = float("inf")  # until an answer comes
            print(f"ws_offer: sent ready for {a.camera}")
        try:
            msg = json.loads(ws.recv_text())
        except socket.timeout:
            continue
        except (ConnectionError, ValueError) as e:
            print(f"ws_offer: {e}")
            return 1
        kind = msg.get("type")
        if kind == "cameras":
            ids = [c.get("id") for c in msg.get("cameras", [])]
            states = {c.get("id"): c.get("state") for c in msg.get("cameras", [])}
            print(f"ws_offer: cameras {states}")
            if a.camera == "*" and ids:  # any camera: the first one listed
                a.camera = ids[0]
                print(f"ws_offer: using camera {a.camera}")
            if a.camera in ids and retry_at is None:
                want_ready = True
        elif kind == "offer" and msg.get("camera") == a.camera:
            sdp = msg.get("sdp", "")
            ok = sdp.startswith("v=0") and "m=video" in sdp
            codecs = [l.split(" ", 1)[1] for l in sdp.splitlines() if l.startswith("a=rtpmap:")]
            print(f"ws_offer: offer for {a.camera}: {len(sdp)} bytes of SDP, codecs {codecs}")
            # Answer with a stop so the daemon tears the viewer down cleanly.
            ws.send_text(json.dumps({"type": "stop", "camera": a.camera}))
            return 0 if ok else 1
        elif kind == "error":
            print(f"ws_offer: error from daemon: {msg.get('message')}")
            retry_at = time.monotonic() + 2  # ask again after a pause
    print(f"ws_offer: no offer for {a.camera} within {a.timeout:.0f}s")
    return 1


if __name__ == "__main__":
    sys.exit(main())

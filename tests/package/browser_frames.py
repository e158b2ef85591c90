#!/usr/bin/env python3
"""A real browser for the package tests: start Debian's headless Chromium on
edgecam's viewer page, read the page's peer connection for CAMERA through the
DevTools protocol and exit 0 once the browser decodes video from it, that is
once getStats' inbound-rtp video framesDecoded is above zero and, in a later
read on the same peer connection, higher still. Exit 1 otherwise.

Made for a slow machine (a VM under TCG emulation): the page is opened with
?autoconnect=0, and only once it lists CAMERA and the CPUs have calmed down
after Chromium's start (--settle) does the script ask the page to connect
(window.edgecam.connect), because the daemon drops a viewer that has not
finished negotiating within 10 s. The page retries failed attempts by itself.

Standard library only: the DevTools websocket uses ws_offer.py's RFC 6455
client (same folder), so a minimal VM guest needs nothing but chromium.

Loopback WebRTC in headless Chromium needs --allow-loopback-in-peer-connection
and --disable-features=WebRtcHideLocalIpsWithMdns (../shared/notes), and the
daemon needs ice.local_addresses: [127.0.0.1] (libnice gathers no loopback
candidates by itself).

usage: browser_frames.py [--url http://127.0.0.1:8080/] [--camera demo1]
                         [--timeout 480] [--settle 180] [--chromium /usr/bin/chromium]
  --settle  at most this many seconds waiting for the CPUs to be at least 40 %
            idle over 5 s before connecting (0: connect at once)
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ws_offer import WebSocket  # noqa: E402

# One read of the camera's card and peer connection, through the page's test
# hook window.edgecam (web/app.js). The pc gets a random tag the first time, so
# a replaced peer connection is told apart from a rising one.
STATS_JS = r"""
(async (id) => {
  const cam = window.edgecam && window.edgecam.cameras && window.edgecam.cameras.get(id);
  if (!cam) return { listed: false, href: location.href, ready: document.readyState,
                     ids: window.edgecam ? [...window.edgecam.cameras.keys()] : null };
  const r = { listed: true, status: cam.status, pc: null, state: null, frames: 0,
              width: null, height: null, lost: null, codec: null };
  const pc = cam.pc;
  if (pc) {
    if (!pc.__packageTestTag) pc.__packageTestTag = Math.random().toString(36).slice(2);
    r.pc = pc.__packageTestTag;
    r.state = pc.connectionState;
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        r.frames += s.framesDecoded || 0;
        r.width = s.frameWidth ?? null; r.height = s.frameHeight ?? null;
        r.lost = s.packetsLost ?? null;
        const c = s.codecId && stats.get(s.codecId);
        if (c) r.codec = c.mimeType;
      }
    });
  }
  return r;
})
"""


def log(msg):
    print(f"browser_frames: {msg}", flush=True)


class DevTools:
    """One page target's DevTools websocket: call() sends a command and waits for
    its reply; events in between are kept as console lines for failure reports."""

    def __init__(self, ws_url, console):
        self.ws = WebSocket(ws_url, timeout=30)
        self.ws.sock.settimeout(60)  # a reply under TCG emulation can take a while
        self.next_id = 1
        self.console = console

    def call(self, method, params=None):
        cid = self.next_id
        self.next_id += 1
        self.ws.send_text(json.dumps({"id": cid, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(self.ws.recv_text())
            if msg.get("id") == cid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg):
        p = msg.get("params", {})
        if msg.get("method") == "Inspector.targetCrashed":
            raise ConnectionError("the page's renderer crashed")
        if msg.get("method") == "Runtime.consoleAPICalled":
            args = [str(a.get("value", a.get("description", "?"))) for a in p.get("args", [])]
            self.console.append(f"console.{p.get('type')}: {' '.join(args)}")
        elif msg.get("method") == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.console.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
        del self.console[:-40]

    def evaluate(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "awaitPromise": True,
                                           "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate: {r['exceptionDetails'].get('text')}")
        return r.get("result", {}).get("value")


def devtools_port(errlog, proc, deadline):
    """Chromium prints 'DevTools listening on ws://127.0.0.1:PORT/...' on stderr."""
    while time.monotonic() < deadline:
        with open(errlog, errors="replace") as f:
            for line in f:
                if line.startswith("DevTools listening on "):
                    return int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with status {proc.returncode}")
        time.sleep(0.5)
    raise RuntimeError("chromium printed no DevTools endpoint")


def new_tab(port, url):
    """A new tab on URL (DevTools' HTTP endpoint): its target id and websocket URL."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?{url}", method="PUT")
    with urllib.request.urlopen(req, timeout=60) as r:
        t = json.load(r)
    return t["id"], t["webSocketDebuggerUrl"]


def close_tab(port, target):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/json/close/{target}", timeout=30).close()
    except OSError:
        pass


def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[3] + v[4], sum(v)  # idle + iowait, total


def settle(limit):
    """Wait (at most LIMIT s) until the CPUs are at least 40 % idle over 5 s; the idle share reached."""
    end = time.monotonic() + limit
    idle = 0.0
    while True:
        i0, t0 = cpu_times()
        time.sleep(5)
        i1, t1 = cpu_times()
        idle = (i1 - i0) / max(1, t1 - t0)
        if idle >= 0.4 or time.monotonic() >= end:
            return idle


def run(a, profile, errlog):
    deadline = time.monotonic() + a.timeout
    page = f"{a.url.rstrip('/')}/?autoconnect=0"
    cmd = [a.chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-quic", "--remote-debugging-port=0",
           "--autoplay-policy=no-user-gesture-required", "--mute-audio",
           "--disable-extensions", "--window-size=320,240",  # less to paint
           "--allow-loopback-in-peer-connection",
           "--disable-features=WebRtcHideLocalIpsWithMdns",
           f"--user-data-dir={profile}", "about:blank"]
    t0 = time.monotonic()
    with open(errlog, "w") as err:
        # Its own session, so the whole process tree (renderers, GPU and
        # utility processes) can be killed at the end.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
    try:
        port = devtools_port(errlog, proc, deadline)
        log(f"chromium {proc.pid} up in {time.monotonic() - t0:.0f}s, DevTools port {port}")
        expr = f"({STATS_JS.strip()})({json.dumps(a.camera)})"
        console = []
        cdp = None
        tab = None
        t_nav = 0
        base = None  # the first read that decodes, on the pc of that read
        last = {}
        seen = None
        connect_sent = False
        # Under TCG a DevTools reply can be late and a Chromium helper process
        # can die and be restarted (seen: the network service): a missing
        # reply is read as "not yet", a lost DevTools connection is made again
        # and the page loaded anew; only the overall timeout fails the test.
        while time.monotonic() < deadline:
            try:
                if cdp is None:
                    # A tab of its own, opened from DevTools rather than by the
                    # command line, so a crashed or hung one can be replaced.
                    if tab is not None:
                        close_tab(port, tab)
                    t_nav = time.monotonic()
                    tab, ws_url = new_tab(port, page)
                    cdp = DevTools(ws_url, console)
                    cdp.call("Runtime.enable")
                    cdp.call("Inspector.enable")  # for Inspector.targetCrashed
                    connect_sent = False
                    log(f"+{time.monotonic() - t0:.0f}s opened {page}")
                try:
                    last = cdp.evaluate(expr) or {}
                except RuntimeError as e:  # the page is between documents
                    last = {"error": str(e)}
                now = time.monotonic()
                if last.get("listed") and not connect_sent:
                    log(f"+{now - t0:.0f}s page lists {a.camera}; waiting for idle CPUs (at most {a.settle:.0f}s)")
                    idle = settle(min(a.settle, max(0, deadline - time.monotonic() - 60))) if a.settle > 0 else 1
                    cdp.evaluate(f"window.edgecam.connect({json.dumps(a.camera)})")
                    connect_sent = True
                    log(f"+{time.monotonic() - t0:.0f}s CPUs {idle:.0%} idle; window.edgecam.connect({a.camera!r})")
                    continue
                if not last.get("listed") and last.get("ids") is None and now - t_nav > 120:
                    # The viewer script never ran: the page again, in a new tab.
                    log(f"+{now - t0:.0f}s no window.edgecam after {now - t_nav:.0f}s "
                        f"({json.dumps(last)}): opening the page in a new tab")
                    cdp.ws.sock.close()
                    cdp = None
                    continue
            except (socket.timeout, ConnectionError, OSError) as e:
                # No reply within 60 s (a hung or crashed renderer answers
                # nothing) or a lost connection: the page in a new tab.
                what = "no DevTools reply within 60 s" if isinstance(e, socket.timeout) else e
                log(f"+{time.monotonic() - t0:.0f}s {what}; opening the page in a new tab")
                if cdp is not None:
                    cdp.ws.sock.close()
                cdp = None
                time.sleep(2)
                continue
            # One line per change of the card's state: the story of a slow connect.
            brief = (last.get("status"), last.get("state")) if last.get("listed") else None
            if brief != seen and brief is not None:
                log(f"+{now - t0:.0f}s {a.camera}: status {brief[0]}, pc {brief[1]}")
            seen = brief
            decoding = last.get("pc") and last.get("frames", 0) > 0 and last.get("status") == "live"
            if decoding and (base is None or last["pc"] != base["pc"]):
                base, tb = last, now
                log(f"+{now - t0:.0f}s {a.camera} decoding: {json.dumps(last)}")
            elif decoding and last["frames"] > base["frames"]:
                log(f"{a.camera}: framesDecoded {base['frames']} -> {last['frames']} in "
                    f"{now - tb:.0f}s, {last.get('width')}x{last.get('height')} "
                    f"{last.get('codec')}, packetsLost {last.get('lost')}, pc {last.get('state')}")
                return 0
            time.sleep(2)
        log(f"no rising framesDecoded for {a.camera} within {a.timeout:.0f}s; last read: {json.dumps(last)}")
        if base:
            log(f"first decoding read was {json.dumps(base)}")
        for line in console:
            log(f"  page {line}")
        return 1
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080/")
    ap.add_argument("--camera", default="demo1")
    ap.add_argument("--timeout", type=float, default=480)
    ap.add_argument("--settle", type=float, default=180)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    a = ap.parse_args()
    profile = tempfile.mkdtemp(prefix="edgecam-chromium.")
    errlog = os.path.join(profile, "stderr.log")
    try:
        rc = run(a, profile, errlog)
    except (OSError, RuntimeError, ValueError) as e:
        log(f"failed: {e}")
        rc = 1
    if rc != 0:  # Chromium's own word on what went wrong, if anything
        try:
            with open(errlog, errors="replace") as f:
                tail = [l.rstrip() for l in f if "dbus" not in l and l.strip()][-15:]
            for line in tail:
                log(f"  chromium: {line}")
        except OSError:
            pass
    shutil.rmtree(profile, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

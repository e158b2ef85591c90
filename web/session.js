// One camera's WebRTC session on this page. The daemon always offers and the page always answers: the
// page sends `ready`, the daemon an offer and candidates, the page an answer and candidates, over the
// page's one websocket. A session that fails or does not come up in time is torn down and retried with
// backoff; the daemon's state for the camera and the page's wish (connect or not) decide whether to run one.

import { backoff } from './backoff.js';
import { StatsMeter } from './stats.js';

/** What the card shows, and the test hook reads as `cam.status`: keep these strings. */
export const Status = Object.freeze({
  OFFLINE: 'offline', // no video here, on purpose or because the device has none
  CONNECTING: 'connecting',
  LIVE: 'live',
  FAILED: 'failed',
});

/** Why a session is in its status; the card turns it into words. */
export const Reason = Object.freeze({
  NONE: 'none',
  NOT_CONNECTED: 'not-connected', // this page doesn't want the camera
  NO_DAEMON: 'no-daemon', // the websocket is down
  CAMERA_OFFLINE: 'camera-offline', // the device has no such camera now; detail: why
  CAMERA_FAILED: 'camera-failed', // detail: the daemon's reason
  CAMERA_STARTING: 'camera-starting', // the daemon is bringing its pipeline up
  CONNECTING: 'connecting',
  INTERRUPTED: 'interrupted', // ICE went from connected to disconnected
  TIMED_OUT: 'timed-out', // never became live
  LOST: 'lost', // did not recover from 'disconnected' / 'failed'
  REFUSED: 'refused', // the browser refused the offer; detail: its error
  DAEMON_ERROR: 'daemon-error', // detail: the daemon's message
});

// ICE often recovers from 'disconnected' by itself (Wi-Fi hiccup), so wait before rebuilding.
const PC_GRACE_MS = 5000;
// A lost offer never arrives and ICE can sit in 'checking' for ~30 s: give up sooner than that.
const CONNECT_TIMEOUT_MS = 15000;
// A session has a handful of candidates; the cap only guards against a runaway sender.
const MAX_PENDING_CANDIDATES = 64;
// Daemon states in which a `ready` is welcome ('idle': the pipeline is parked and a viewer wakes it).
const JOINABLE = new Set(['streaming', 'idle']);

// The video codecs this browser can decode, so the daemon can serve VP8 to a Firefox without H.264.
const RECEIVE_CODECS = [
  ...new Set(
    (window.RTCRtpReceiver?.getCapabilities?.('video')?.codecs ?? [])
      .map((c) => c.mimeType.split('/')[1])
      .filter((name) => name && !/^(rtx|red|ulpfec|flexfec)/i.test(name)),
  ),
];

export class CameraSession {
  /**
   * @param {object} info the daemon's entry for the camera (`id`, `state`, `detail`, ...)
   * @param {object} deps
   * @param {(msg: object) => boolean} deps.send sends on the page's websocket; false if it is down
   * @param {() => Promise<object[]>} deps.iceServers the daemon's ICE servers
   * @param {() => boolean} deps.wanted whether the page wants this camera's video
   * @param {(session: CameraSession) => void} deps.changed status, reason or info changed
   * @param {(stream: MediaStream | null) => void} deps.stream the video to show, null for none
   */
  constructor(info, deps) {
    this.id = info.id;
    this.info = info;
    this.deps = deps;
    this.status = Status.OFFLINE;
    this.reason = Reason.NONE;
    this.detail = '';
    /** While a retry is pending: its delay, for the card. */
    this.retryMs = 0;
    this.pc = null;
    /** The daemon's last `link` message for this session (tier, estimate, rtt), or null. */
    this.link = null;
    /** A `ready` went out (or an offer came) and no stop or teardown since. */
    this.joined = false;
    /** The daemon's candidates that came before its offer was applied. */
    this.pending = [];
    this.meter = new StatsMeter();
    this.attempt = 0;
    this.retryTimer = 0;
    this.watchdog = 0;
  }

  /** A new camera list from the daemon. */
  update(info) {
    this.info = info;
    this.reconcile();
  }

  /** The user asked for video: now, not after the backoff. */
  connect() {
    this.clearRetry();
    this.attempt = 0;
    this.reconcile();
  }

  disconnect() {
    this.clearRetry();
    this.end(true);
    this.reconcile();
  }

  /** The websocket closed, and the daemon dropped this session with it; the wish stays for the next socket. */
  socketClosed() {
    this.end(false);
    this.clearRetry();
    this.attempt = 0;
    this.set(this.deps.wanted() ? Status.CONNECTING : Status.OFFLINE, Reason.NO_DAEMON);
  }

  /** The daemon no longer lists the camera, so there is nothing to stop there. */
  forget() {
    this.end(false);
    this.clearRetry();
  }

  /** An offer, candidate or error from the daemon for this camera. */
  handle(msg) {
    switch (msg.type) {
      case 'offer':
        this.onOffer(msg);
        break;
      case 'candidate':
        this.onRemoteCandidate(msg);
        break;
            case 'error':
        this.onError(String(msg.message ?? 'unknown error'));
        break;
      case 'link':
        // The daemon's view of this viewer's link: its tier and what it estimates the path carries.
        this.link = msg;
        break;
    }
  }

  /** The video plays: frames arrive and decode. */
  markLive() {
    if (!this.pc || this.status === Status.LIVE) return;
    this.disarm();
    this.attempt = 0;
    this.set(Status.LIVE, Reason.NONE);
  }

  /** One stats read of the current peer connection (null if none, or it changed mid-read); nothing kept. */
  async readStats() {
    const pc = this.pc;
    if (!pc) return null;
    const result = await this.meter.read(pc).catch(() => null); // the pc may close mid-read
    return this.pc === pc ? result : null;
  }

  /** The periodic stats read: kept for rates and for noticing decoded frames. Resolves to stats while live. */
  async pollStats() {
    const result = await this.readStats();
    if (!result) return null;
    this.meter.commit(result.sample);
    if (result.stats.framesDecoded > 0 && this.pc.connectionState === 'connected') this.markLive();
    return this.status === Status.LIVE ? result.stats : null;
  }

  /** Brings the session in line with the daemon's state and what the page wants. */
  reconcile() {
    const { state, detail } = this.info;
    if (state === 'offline' || state === 'failed') {
      // Its pipeline is gone on the device, and our peer with it.
      this.end(false);
      this.clearRetry();
      this.attempt = 0; // so it comes back at once when the camera does
      if (state === 'failed') this.set(Status.FAILED, Reason.CAMERA_FAILED, detail);
      else this.set(Status.OFFLINE, Reason.CAMERA_OFFLINE, detail);
    } else if (!this.deps.wanted()) {
      this.set(Status.OFFLINE, Reason.NOT_CONNECTED);
    } else if (!this.joined && !this.retryTimer) {
      if (JOINABLE.has(state)) this.join();
      else this.set(Status.CONNECTING, Reason.CAMERA_STARTING);
    } else {
      this.deps.changed(this); // the daemon's side of the card (viewers, encoder) may have changed
    }
  }

  join() {
    // links: the daemon also reports this viewer's link (tier, estimate, rtt) for the card.
    const msg = { type: 'ready', camera: this.id, links: true };
    if (RECEIVE_CODECS.length) msg.codecs = RECEIVE_CODECS;
    if (!this.deps.send(msg)) return;
    this.joined = true;
    this.pending = [];
    this.set(Status.CONNECTING, Reason.CONNECTING);
    this.arm(CONNECT_TIMEOUT_MS, Reason.TIMED_OUT);
  }

  /** Ends the session; with tellDaemon, sends `stop` so the daemon frees its side now. */
  end(tellDaemon) {
    if (tellDaemon && this.joined) this.deps.send({ type: 'stop', camera: this.id });
    this.joined = false;
    this.pending = [];
    this.disarm();
    this.closePeer();
  }

  closePeer() {
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
    this.meter.reset();
    this.deps.stream(null);
  }

  newPeer(servers) {
    this.closePeer();
    const pc = new RTCPeerConnection({ iceServers: servers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    pc.onicecandidate = (ev) => {
      // A null or empty candidate only marks the end of gathering; the daemon has no use for it.
      if (!ev.candidate?.candidate) return;
      this.deps.send({
        type: 'candidate',
        camera: this.id,
        candidate: ev.candidate.candidate,
        sdpMLineIndex: ev.candidate.sdpMLineIndex ?? 0,
      });
    };
    pc.ontrack = (ev) => {
      if (this.pc === pc) this.deps.stream(ev.streams[0] ?? new MediaStream([ev.track]));
    };
    pc.onconnectionstatechange = () => {
      if (this.pc === pc) this.onPeerState(pc.connectionState);
    };
    return pc;
  }

  async onOffer(msg) {
    // A late offer for a camera the user just stopped (our `stop` crossed it) is dropped.
    if (!this.deps.wanted() || typeof msg.sdp !== 'string') return;
    this.clearRetry();
    this.joined = true;
    // Every offer starts a new session: the daemon never renegotiates a running one, it sends a new offer
    // only after rebuilding its side (encoder fallback, camera replugged). Reusing the old pc would keep its
    // DTLS session, which the new sender never saw, and no media would flow.
    const servers = await this.deps.iceServers();
    if (!this.joined) return; // stopped while waiting
    const pc = this.newPeer(servers);
    const err = await this.answer(pc, { type: 'offer', sdp: msg.sdp });
    if (err && this.pc === pc) this.failAndRetry(Reason.REFUSED, err.message);
  }

  /** Answers `offer` on `pc`; resolves to null on success or to the error. */
  async answer(pc, offer) {
    try {
      await pc.setRemoteDescription(offer);
      for (const cand of this.pending.splice(0)) addCandidate(pc, cand);
      await pc.setLocalDescription(await pc.createAnswer());
      if (this.pc === pc) this.deps.send({ type: 'answer', camera: this.id, sdp: pc.localDescription.sdp });
      return null;
    } catch (err) {
      console.warn(`edgecam: ${this.id}: offer refused`, err);
      return err;
    }
  }

  onRemoteCandidate(msg) {
    if (!this.joined || typeof msg.candidate !== 'string') return;
    const cand = { candidate: msg.candidate, sdpMLineIndex: msg.sdpMLineIndex ?? 0 };
    // Until the offer is applied a candidate has nowhere to go: keep it for answer().
    if (this.pc?.remoteDescription) addCandidate(this.pc, cand);
    else if (this.pending.length < MAX_PENDING_CANDIDATES) this.pending.push(cand);
  }

  onError(text) {
    if (this.joined) {
      this.failAndRetry(Reason.DAEMON_ERROR, text);
    } else {
      // No session: a reply to our `stop` or to an ended session, nothing the card should show.
      console.warn(`edgecam: ${this.id}:`, text);
    }
  }

  onPeerState(state) {
    if (state === 'connected') {
      // Back from a short 'disconnected' with frames already seen: live again without waiting a tick.
      if (this.meter.decoding) this.markLive();
    } else if (state === 'disconnected' || state === 'failed') {
      if (this.status === Status.LIVE) this.set(Status.CONNECTING, Reason.INTERRUPTED);
      if (!this.watchdog) this.arm(PC_GRACE_MS, Reason.LOST);
    }
  }

  failAndRetry(reason, detail) {
    this.end(true);
    this.scheduleRetry(Status.FAILED, reason, detail);
  }

  /** If the session isn't live within `ms`, it is torn down and retried with backoff. */
  arm(ms, reason) {
    this.disarm();
    this.watchdog = setTimeout(() => {
      this.watchdog = 0;
      this.end(true);
      this.scheduleRetry(Status.CONNECTING, reason);
    }, ms);
  }

  disarm() {
    clearTimeout(this.watchdog);
    this.watchdog = 0;
  }

  scheduleRetry(status, reason, detail = '') {
    this.clearRetry();
    const delay = backoff(this.attempt++);
    this.set(status, reason, detail, delay);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = 0;
      this.reconcile();
    }, delay);
  }

  clearRetry() {
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
  }

  set(status, reason, detail = '', retryMs = 0) {
    this.status = status;
    this.reason = reason;
    this.detail = detail ?? '';
    this.retryMs = retryMs;
    this.deps.changed(this);
  }
}

function addCandidate(pc, cand) {
  // One unusable candidate (say, an address family we lack) must not end the session.
  pc.addIceCandidate(cand).catch((err) => console.warn('edgecam: candidate rejected', cand.candidate, err));
}

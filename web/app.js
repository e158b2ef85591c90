'use strict';
// edgecam viewer. One websocket carries the signalling of every camera (the `camera` field tells
// them apart); each camera gets its own card and RTCPeerConnection. The daemon always offers, the
// page always answers. The daemon's `cameras` list is the source of truth for which cards exist.

const params = new URLSearchParams(location.search);
const AUTOCONNECT = params.get('autoconnect') !== '0';
// ?cameras=a,b narrows auto-connect only: every camera still gets a card and a Connect button.
const AUTO_ONLY = params.has('cameras')
  ? new Set(params.get('cameras').split(',').map((s) => s.trim()).filter(Boolean))
  : null;

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
// ICE often recovers from 'disconnected' by itself (Wi-Fi hiccup), so wait before rebuilding.
const PC_GRACE_MS = 5000;
// A lost offer never arrives and ICE can sit in 'checking' for ~30 s: give up sooner than that.
const CONNECT_TIMEOUT_MS = 15000;
const STATS_INTERVAL_MS = 1000;
// Rates are taken over at least this span, so an extra stats() call between ticks is not noise.
const MIN_RATE_SPAN_MS = 500;
// A session has a handful of candidates; the cap only guards against a runaway sender.
const MAX_PENDING_CANDIDATES = 64;
const NOTICE_MS = 8000;
// Daemon states in which a `ready` is welcome ('idle': the pipeline is parked and a viewer wakes it).
const JOINABLE = new Set(['streaming', 'idle']);

const $ = (sel, root = document) => root.querySelector(sel);
const grid = $('#grid');
const template = $('#card-template');

/** id -> camera: { id, info, pc, status, session, ... }; exposed as window.edgecam.cameras. */
const cameras = new Map();
/** id -> 'connect' | 'disconnect': the user's click beats auto-connect and outlives unplug/replug. */
const choices = new Map();

let ws = null;
let wsAttempt = 0;
let iceServers = Promise.resolve([]);
let listSeen = false;
let noticeTimer = 0;

// The video codecs this browser can decode, so the daemon can serve VP8 to a Firefox without H.264.
const RECEIVE_CODECS = [...new Set(
  (window.RTCRtpReceiver?.getCapabilities?.('video')?.codecs ?? [])
    .map((c) => c.mimeType.split('/')[1])
    .filter((name) => name && !/^(rtx|red|ulpfec|flexfec)/i.test(name)),
)];

function backoff(attempt) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  // Jitter, so pages reconnecting to a restarted daemon don't arrive in lockstep.
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

function wanted(id) {
  const choice = choices.get(id);
  if (choice) return choice === 'connect';
  return AUTOCONNECT && (!AUTO_ONLY || AUTO_ONLY.has(id));
}

// ---------------------------------------------------------------- websocket

async function openSocket() {
  setConn('connecting', 'Connecting…');
  let url;
  try {
    url = await socketUrl(); // ticket.js
  } catch (err) {
    console.warn('edgecam:', err);
    const delay = backoff(wsAttempt++);
    setConn('closed', `Cannot log in, retrying in ${(delay / 1000).toFixed(1)} s`);
    setTimeout(openSocket, delay);
    return;
  }
  const sock = new WebSocket(url);
  ws = sock;
  sock.onopen = () => {
    setConn('open', 'Connected');
    // Re-read on every connect: a restarted daemon may have a new config. Cameras are (re)joined
    // when its camera list arrives, which it sends first.
    iceServers = loadIceServers();
  };
  sock.onmessage = (ev) => {
    // Only a daemon that talks resets the backoff: one that accepts and drops at once isn't hammered.
    wsAttempt = 0;
    onMessage(ev.data);
  };
  sock.onclose = () => {
    ws = null;
    // The daemon drops a socket's sessions with it; keep the user's intent and rejoin later.
    for (const cam of cameras.values()) {
      endSession(cam, false);
      clearRetry(cam);
      cam.attempt = 0;
      setStatus(cam, wanted(cam.id) ? 'connecting' : 'offline', 'Waiting for the device…');
    }
    const delay = backoff(wsAttempt++);
    setConn('closed', `Disconnected, retrying in ${(delay / 1000).toFixed(1)} s`);
    setTimeout(openSocket, delay);
  };
}

async function loadIceServers() {
  try {
    const res = await fetch(pageUrl('api/config'), { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const cfg = await res.json();
    return Array.isArray(cfg.ice_servers) ? cfg.ice_servers : [];
  } catch (err) {
    console.warn('edgecam: no ICE servers from /api/config, a LAN needs none', err);
    return [];
  }
}

function send(msg) {
  if (ws?.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(msg));
  return true;
}

function onMessage(data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    console.warn('edgecam: ignoring a frame that is not JSON', data);
    return;
  }
  switch (msg.type) {
    case 'cameras': updateCameras(Array.isArray(msg.cameras) ? msg.cameras : []); break;
    case 'offer': onOffer(msg); break;
    case 'candidate': onRemoteCandidate(msg); break;
    case 'error': onError(msg); break;
    default: console.warn('edgecam: ignoring message', msg.type);
  }
}

// ---------------------------------------------------------------- camera list

function updateCameras(list) {
  listSeen = true;
  const seen = new Set();
  for (const info of list) {
    if (typeof info?.id !== 'string' || seen.has(info.id)) continue;
    let cam = cameras.get(info.id);
    if (!cam) {
      cam = makeCamera(info);
      cameras.set(info.id, cam);
    }
    cam.info = info;
    // Follow the daemon's order; moving a card only when needed keeps its video playing.
    const slot = grid.children[seen.size];
    if (slot !== cam.el.card) grid.insertBefore(cam.el.card, slot ?? null);
    seen.add(info.id);
    reconcile(cam);
  }
  for (const cam of cameras.values()) {
    if (seen.has(cam.id)) continue;
    endSession(cam, false); // the daemon forgot it, so there is nothing to stop there
    clearRetry(cam);
    cam.el.card.remove();
    cameras.delete(cam.id);
  }
  renderPage();
}

function makeCamera(info) {
  const card = template.content.firstElementChild.cloneNode(true);
  const cam = {
    id: info.id,
    info,
    pc: null,
    status: 'offline',
    message: '',
    session: false, // a `ready` went out and no stop/teardown since
    pending: [], // daemon candidates that came before the remote description
    samples: [], // last two stats samples, for rates
    attempt: 0,
    retryTimer: 0,
    watchdog: 0,
    el: {
      card,
      media: $('.media', card),
      video: $('video', card),
      overlay: $('.overlay', card),
      hud: $('.hud', card),
      name: $('.name', card),
      badge: $('.badge', card),
      toggle: $('.toggle', card),
      id: $('.cam-id', card),
      daemon: $('.daemon', card),
    },
  };
  cam.el.toggle.addEventListener('click', () => (wanted(cam.id) ? disconnectCamera(cam.id) : connectCamera(cam.id)));
  cam.el.video.addEventListener('playing', () => markLive(cam));
  cam.el.video.addEventListener('resize', () => fitAspect(cam));
  return cam;
}

/** Brings one camera in line with the daemon's state and what this page wants. */
function reconcile(cam) {
  const { state, detail } = cam.info;
  if (state === 'offline' || state === 'failed') {
    // Its pipeline is gone on the device, and our peer with it.
    endSession(cam, false);
    clearRetry(cam);
    cam.attempt = 0; // so it comes back at once when the camera does
    if (state === 'failed') setStatus(cam, 'failed', detail || 'The camera failed on the device');
    else setStatus(cam, 'offline', detail ? `Camera offline: ${detail}` : 'Camera offline');
  } else if (!wanted(cam.id)) {
    setStatus(cam, 'offline', 'Not connected');
  } else if (!cam.session && !cam.retryTimer) {
    if (JOINABLE.has(state)) startSession(cam);
    else setStatus(cam, 'connecting', 'Camera starting…');
  } else {
    render(cam);
  }
}

function connectCamera(id) {
  choices.set(id, 'connect');
  const cam = cameras.get(id);
  if (!cam) return;
  clearRetry(cam); // a click means now, not after the backoff
  cam.attempt = 0;
  reconcile(cam);
}

function disconnectCamera(id) {
  choices.set(id, 'disconnect');
  const cam = cameras.get(id);
  if (!cam) return;
  clearRetry(cam);
  endSession(cam, true);
  reconcile(cam);
}

function connectAll() {
  for (const id of cameras.keys()) connectCamera(id);
}

// ---------------------------------------------------------------- one camera's session

function startSession(cam) {
  const msg = { type: 'ready', camera: cam.id };
  if (RECEIVE_CODECS.length) msg.codecs = RECEIVE_CODECS;
  if (!send(msg)) return;
  cam.session = true;
  cam.pending = [];
  setStatus(cam, 'connecting', 'Connecting…');
  arm(cam, CONNECT_TIMEOUT_MS, 'Timed out connecting');
}

/** Ends the session; with tellDaemon, sends `stop` so the daemon frees its side now. */
function endSession(cam, tellDaemon) {
  if (tellDaemon && cam.session) send({ type: 'stop', camera: cam.id });
  cam.session = false;
  cam.pending = [];
  disarm(cam);
  closePeer(cam);
}

function closePeer(cam) {
  if (cam.pc) {
    cam.pc.close();
    cam.pc = null;
  }
  cam.samples = [];
  cam.el.video.srcObject = null;
}

function newPeer(cam, servers) {
  closePeer(cam);
  const pc = new RTCPeerConnection({ iceServers: servers, bundlePolicy: 'max-bundle' });
  cam.pc = pc;
  pc.onicecandidate = (ev) => {
    // A null or empty candidate only marks the end of gathering; the daemon has no use for it.
    if (!ev.candidate?.candidate) return;
    send({
      type: 'candidate',
      camera: cam.id,
      candidate: ev.candidate.candidate,
      sdpMLineIndex: ev.candidate.sdpMLineIndex ?? 0,
    });
  };
  pc.ontrack = (ev) => {
    if (cam.pc === pc) cam.el.video.srcObject = ev.streams[0] ?? new MediaStream([ev.track]);
  };
  pc.onconnectionstatechange = () => {
    if (cam.pc === pc) onPeerState(cam, pc.connectionState);
  };
  return pc;
}

async function onOffer(msg) {
  const cam = cameras.get(msg.camera);
  // A late offer for a camera the user just stopped (our `stop` crossed it) is dropped.
  if (!cam || !wanted(cam.id) || typeof msg.sdp !== 'string') return;
  clearRetry(cam);
  cam.session = true;
  const offer = { type: 'offer', sdp: msg.sdp };
  // Every offer starts a new session: the daemon never renegotiates a running one, it sends a new
  // offer only after rebuilding its side (encoder fallback, camera replugged). Reusing the old pc
  // would keep its DTLS session, which the new sender never saw, and no media would flow.
  const servers = await iceServers;
  if (!cam.session) return; // stopped while waiting
  const pc = newPeer(cam, servers);
  const err = await answer(cam, pc, offer);
  if (err && cam.pc === pc) failAndRetry(cam, `The browser refused the offer: ${err.message}`);
}

/** Answers `offer` on `pc`; resolves to null on success or to the error. */
async function answer(cam, pc, offer) {
  try {
    await pc.setRemoteDescription(offer);
    for (const cand of cam.pending.splice(0)) addCandidate(pc, cand);
    await pc.setLocalDescription(await pc.createAnswer());
    if (cam.pc === pc) send({ type: 'answer', camera: cam.id, sdp: pc.localDescription.sdp });
    return null;
  } catch (err) {
    console.warn(`edgecam: ${cam.id}: offer refused`, err);
    return err;
  }
}

function onRemoteCandidate(msg) {
  const cam = cameras.get(msg.camera);
  if (!cam?.session || typeof msg.candidate !== 'string') return;
  const cand = { candidate: msg.candidate, sdpMLineIndex: msg.sdpMLineIndex ?? 0 };
  // Until the offer is applied a candidate has nowhere to go: keep it for answer().
  if (cam.pc?.remoteDescription) addCandidate(cam.pc, cand);
  else if (cam.pending.length < MAX_PENDING_CANDIDATES) cam.pending.push(cand);
}

function addCandidate(pc, cand) {
  // One unusable candidate (say, an address family we lack) must not end the session.
  pc.addIceCandidate(cand).catch((err) => console.warn('edgecam: candidate rejected', cand.candidate, err));
}

function onError(msg) {
  const text = String(msg.message ?? 'unknown error');
  const cam = msg.camera == null ? null : cameras.get(msg.camera);
  if (!cam) {
    showNotice(msg.camera == null ? text : `${msg.camera}: ${text}`);
  } else if (cam.session) {
    failAndRetry(cam, text);
  } else {
    // No session: a reply to our `stop` or to an ended session, nothing the card should show.
    console.warn(`edgecam: ${cam.id}:`, text);
  }
}

function onPeerState(cam, state) {
  if (state === 'connected') {
    // Back from a short 'disconnected' with frames already seen: live again without waiting a tick.
    if (cam.samples.at(-1)?.frames > 0) markLive(cam);
  } else if (state === 'disconnected' || state === 'failed') {
    if (cam.status === 'live') setStatus(cam, 'connecting', 'Connection interrupted…');
    if (!cam.watchdog) arm(cam, PC_GRACE_MS, 'Connection lost');
  }
}

function markLive(cam) {
  if (!cam.pc || cam.status === 'live') return;
  disarm(cam);
  cam.attempt = 0;
  setStatus(cam, 'live', '');
}

function failAndRetry(cam, reason) {
  endSession(cam, true);
  scheduleRetry(cam, 'failed', reason);
}

/** If the session isn't live within `ms`, it is torn down and retried with backoff. */
function arm(cam, ms, reason) {
  disarm(cam);
  cam.watchdog = setTimeout(() => {
    cam.watchdog = 0;
    endSession(cam, true);
    scheduleRetry(cam, 'connecting', reason);
  }, ms);
}

function disarm(cam) {
  clearTimeout(cam.watchdog);
  cam.watchdog = 0;
}

function scheduleRetry(cam, status, reason) {
  clearRetry(cam);
  const delay = backoff(cam.attempt++);
  setStatus(cam, status, `${reason}. Retrying in ${(delay / 1000).toFixed(1)} s`);
  cam.retryTimer = setTimeout(() => {
    cam.retryTimer = 0;
    reconcile(cam);
  }, delay);
}

function clearRetry(cam) {
  clearTimeout(cam.retryTimer);
  cam.retryTimer = 0;
}

// ---------------------------------------------------------------- stats

/** One getStats() read: the hook's result plus the raw sample that later rates are taken against. */
async function measure(cam) {
  const pc = cam.pc;
  if (!pc) return null;
  const report = await pc.getStats();
  let rtp = null;
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'video') rtp = s;
  });
  if (!rtp || cam.pc !== pc) return null;
  const sample = { t: rtp.timestamp, frames: rtp.framesDecoded ?? 0, bytes: rtp.bytesReceived ?? 0 };
  const base = cam.samples.findLast((s) => sample.t - s.t >= MIN_RATE_SPAN_MS) ?? cam.samples[0];
  const secs = base ? (sample.t - base.t) / 1000 : 0;
  const fps = rtp.framesPerSecond ?? (secs > 0 ? (sample.frames - base.frames) / secs : 0);
  const kbps = secs > 0 ? ((sample.bytes - base.bytes) * 8) / 1000 / secs : 0;
  const codec = rtp.codecId ? report.get(rtp.codecId) : null;
  return {
    sample,
    stats: {
      framesDecoded: sample.frames,
      frameWidth: rtp.frameWidth ?? 0,
      frameHeight: rtp.frameHeight ?? 0,
      fps: Math.round(fps * 10) / 10,
      kbps: Math.round(kbps),
      codec: codec?.mimeType?.split('/')[1] ?? null,
    },
  };
}

async function refreshStats(cam) {
  const result = await measure(cam).catch(() => null); // the pc may close mid-read
  if (!result || !cam.pc) return;
  const { sample, stats } = result;
  cam.samples = [...cam.samples, sample].slice(-2);
  if (stats.framesDecoded > 0 && cam.pc.connectionState === 'connected') markLive(cam);
  if (cam.status !== 'live') return;
  const size = stats.frameWidth ? `${stats.frameWidth}×${stats.frameHeight}` : '';
  cam.el.hud.textContent = [size, `${Math.round(stats.fps)} fps`, `${stats.kbps} kbps`, stats.codec]
    .filter(Boolean).join(' · ');
}

// ---------------------------------------------------------------- rendering

function setStatus(cam, status, message) {
  cam.status = status;
  cam.message = message;
  render(cam);
}

function render(cam) {
  const { el, info } = cam;
  el.card.dataset.status = cam.status;
  el.name.textContent = info.name || info.id;
  el.id.textContent = info.id;
  el.id.title = info.device ?? '';
  // 'offline' is the hook's word for "no video here"; on a camera the daemon is serving, say idle.
  el.badge.textContent = cam.status === 'offline' && info.state !== 'offline' ? 'idle' : cam.status;
  const viewers = Number.isInteger(info.viewers) ? `${info.viewers} viewer${info.viewers === 1 ? '' : 's'}` : '';
  el.daemon.textContent = [info.state, info.mode, info.encoder, viewers].filter(Boolean).join(' · ');
  el.overlay.textContent = cam.message;
  if (cam.status !== 'live') el.hud.textContent = '';
  el.toggle.textContent = wanted(cam.id) ? 'Disconnect' : 'Connect';
  // Nothing to connect to while the device is gone; auto-connect still brings it back.
  el.toggle.hidden = info.state === 'offline' || info.state === 'failed';
  fitAspect(cam);
  renderPage();
}

/** Sizes the video box to the stream (or, before any frame, to the daemon's mode): no letterboxing. */
function fitAspect(cam) {
  let w = cam.el.video.videoWidth;
  let h = cam.el.video.videoHeight;
  if (!w || !h) [, w, h] = /(\d+)x(\d+)/.exec(cam.info.mode ?? '') ?? [];
  cam.el.media.style.aspectRatio = w && h ? `${w} / ${h}` : '';
}

function renderPage() {
  const all = [...cameras.values()];
  const live = all.filter((c) => c.status === 'live').length;
  $('#summary').textContent = all.length ? `${all.length} camera${all.length === 1 ? '' : 's'} · ${live} live` : '';
  $('#connect-all').disabled = all.length === 0;
  const empty = $('#empty');
  empty.hidden = all.length > 0;
  empty.textContent = listSeen
    ? 'No cameras found. Plug one in and it will appear here.'
    : 'Waiting for the device…';
}

function setConn(state, text) {
  $('#conn').dataset.state = state;
  $('#conn-text').textContent = text;
}

function showNotice(text) {
  const notice = $('#notice');
  notice.textContent = text;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { notice.hidden = true; }, NOTICE_MS);
}

// ---------------------------------------------------------------- start

// Automated browser tests drive and read the page through this; keep its shape.
window.edgecam = {
  get ws() { return ws; },
  cameras,
  connect: connectCamera,
  disconnect: disconnectCamera,
  connectAll,
  async stats(id) {
    const cam = cameras.get(id);
    const result = cam ? await measure(cam).catch(() => null) : null;
    return result?.stats ?? null;
  },
};

$('#connect-all').addEventListener('click', connectAll);
setInterval(() => cameras.forEach((cam) => cam.pc && refreshStats(cam)), STATS_INTERVAL_MS);
renderPage();
openSocket();

// edgecam viewer, the entry point: wires the page's one websocket (transport.js) to one session per camera
// (session.js), polls their stats (stats.js) and draws them (render.js). The daemon's `cameras` list is the
// source of truth for which cards exist; what the user clicked decides which of them play.

import { PageView, sessionText } from './render.js';
import { CameraSession, Status } from './session.js';
import { STATS_INTERVAL_MS } from './stats.js';
import { pageUrl } from './ticket.js';
import { Transport } from './transport.js';

const params = new URLSearchParams(location.search);
const AUTOCONNECT = params.get('autoconnect') !== '0';
// ?cameras=a,b narrows auto-connect only: every camera still gets a card and a Connect button.
const AUTO_ONLY = params.has('cameras')
  ? new Set(
      params
        .get('cameras')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    )
  : null;

/** id -> Camera, in the daemon's order; exposed as window.edgecam.cameras. */
const cameras = new Map();
/** id -> 'connect' | 'disconnect': the user's click beats auto-connect and outlives unplug/replug. */
const choices = new Map();
let listSeen = false;

const view = new PageView(document);
const transport = new Transport({
  link: (state, retryMs) => view.link(state, retryMs),
  closed: () => cameras.forEach((cam) => cam.session.socketClosed()),
  cameras: updateCameras,
  session: (id) => cameras.get(id)?.session,
  notice: (text) => view.notice(text),
});

function wanted(id) {
  const choice = choices.get(id);
  if (choice) return choice === 'connect';
  return AUTOCONNECT && (!AUTO_ONLY || AUTO_ONLY.has(id));
}

/** A camera on the page: its session and its card. The getters are the shape the test hook promises. */
class Camera {
  constructor(info) {
    this.id = info.id;
    this.card = view.newCard({
      toggle: () => (wanted(this.id) ? disconnectCamera(this.id) : connectCamera(this.id)),
      forget: () => forgetCamera(this.id),
      playing: () => this.session.markLive(),
    });
    this.session = new CameraSession(info, {
      send: (msg) => transport.send(msg),
      iceServers: () => transport.iceServers,
      wanted: () => wanted(this.id),
      changed: () => {
        this.card.render(this.session, wanted(this.id));
        renderSummary();
      },
      stream: (stream) => this.card.show(stream),
    });
  }

  get info() {
    return this.session.info;
  }

  get status() {
    return this.session.status;
  }

  /** The card's words for the status. */
  get message() {
    return sessionText(this.session);
  }

  get pc() {
    return this.session.pc;
  }

  get el() {
    return this.card.el;
  }
}

function updateCameras(list) {
  listSeen = true;
  const seen = new Set();
  for (const info of list) {
    if (typeof info?.id !== 'string' || seen.has(info.id)) continue;
    let cam = cameras.get(info.id);
    if (!cam) {
      cam = new Camera(info);
      cameras.set(info.id, cam);
    }
    view.place(cam.card, seen.size); // the daemon's order
    seen.add(info.id);
    cam.session.update(info);
  }
  for (const cam of cameras.values()) {
    if (seen.has(cam.id)) continue;
    cam.session.forget();
    cam.card.remove();
    cameras.delete(cam.id);
  }
  renderSummary();
}

function renderSummary() {
  const live = [...cameras.values()].filter((cam) => cam.status === Status.LIVE).length;
  view.summary(cameras.size, live, listSeen);
}

function connectCamera(id) {
  choices.set(id, 'connect');
  cameras.get(id)?.session.connect();
}

function disconnectCamera(id) {
  choices.set(id, 'disconnect');
  cameras.get(id)?.session.disconnect();
}

/** Asks the daemon to drop the card of a camera whose device is gone; the next list removes it. */
async function forgetCamera(id) {
  const res = await fetch(pageUrl(`api/cameras/${encodeURIComponent(id)}`), { method: 'DELETE' }).catch((e) => e);
  if (!(res instanceof Response)) view.notice(`Could not forget ${id}: ${res}`);
  else if (!res.ok) view.notice(`Could not forget ${id}: ${(await res.text()).trim() || `HTTP ${res.status}`}`);
}

function connectAll() {
  for (const id of cameras.keys()) connectCamera(id);
}

function pollStats() {
  for (const cam of cameras.values()) {
    if (!cam.pc) continue;
    cam.session.pollStats().then((stats) => stats && cam.card.showStats(stats, cam.session.link));
  }
}

// Automated browser tests and benches drive and read the page through this; keep its shape.
window.edgecam = {
  get ws() {
    return transport.ws;
  },
  cameras,
  connect: connectCamera,
  disconnect: disconnectCamera,
  connectAll,
  forget: forgetCamera,
  /** The page's own stats of camera `id`: {framesDecoded, frameWidth, frameHeight, fps, kbps, codec, ...}. */
  async stats(id) {
    const result = await cameras.get(id)?.session.readStats();
    return result?.stats ?? null;
  },
};

view.connectAll.addEventListener('click', connectAll);
setInterval(pollStats, STATS_INTERVAL_MS);
renderSummary();
transport.open();

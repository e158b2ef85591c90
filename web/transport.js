// The page's one websocket to the daemon: it carries the signalling of every camera (the `camera` field
// tells them apart). It reconnects with backoff, speaks JSON, and routes each message: the camera list to
// the page, a camera's offer, candidate or error to that camera's session.

import { backoff } from './backoff.js';
import { pageUrl, socketUrl } from './ticket.js';

/** The socket's state, as the header shows it. */
export const Link = Object.freeze({
  CONNECTING: 'connecting',
  OPEN: 'open',
  CLOSED: 'closed',
});

/** Messages that belong to one camera's session. */
const SESSION_MESSAGES = new Set(['offer', 'candidate', 'error', 'link']);

export class Transport {
  /**
   * @param {object} on
   * @param {(link: string, retryMs: number) => void} on.link the socket opened, closed or is connecting
   * @param {() => void} on.closed the daemon dropped every session of this socket with it
   * @param {(list: object[]) => void} on.cameras the daemon's camera list, the first message on a socket
   * @param {(id: string) => {handle(msg: object): void} | undefined} on.session the session of camera `id`
   * @param {(text: string) => void} on.notice an error that belongs to no camera on this page
   */
  constructor(on) {
    this.on = on;
    /** The open (or opening) socket, null between sockets; the test hook exposes it as `edgecam.ws`. */
    this.ws = null;
    /** Resolves to the ICE servers of the daemon this socket talks to. */
    this.iceServers = Promise.resolve([]);
    this.attempt = 0;
  }

  async open() {
    this.on.link(Link.CONNECTING, 0);
    let url;
    try {
      url = await socketUrl();
    } catch (err) {
      // Not logged in (yet), or the daemon is away: try again like a closed socket.
      console.warn('edgecam:', err);
      const delay = backoff(this.attempt++);
      this.on.link(Link.CLOSED, delay);
      setTimeout(() => this.open(), delay);
      return;
    }
    const sock = new WebSocket(url);
    this.ws = sock;
    sock.onopen = () => {
      this.on.link(Link.OPEN, 0);
      // Re-read on every connect: a restarted daemon may have a new config. Cameras are (re)joined when
      // its camera list arrives, which it sends first.
      this.iceServers = loadIceServers();
    };
    sock.onmessage = (ev) => {
      // Only a daemon that talks resets the backoff: one that accepts and drops at once isn't hammered.
      this.attempt = 0;
      this.receive(ev.data);
    };
    sock.onclose = () => {
      this.ws = null;
      this.on.closed();
      const delay = backoff(this.attempt++);
      this.on.link(Link.CLOSED, delay);
      setTimeout(() => this.open(), delay);
    };
  }

  /** Sends `msg` as JSON; false if there is no open socket to send it on. */
  send(msg) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    // Through the socket object each time: benches wrap `edgecam.ws.send` to time what leaves.
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn('edgecam: ignoring a frame that is not JSON', data);
      return;
    }
    if (typeof msg !== 'object' || msg === null) {
      console.warn('edgecam: ignoring a frame that is not a JSON object', data);
    } else if (msg.type === 'cameras') {
      this.on.cameras(Array.isArray(msg.cameras) ? msg.cameras : []);
    } else if (SESSION_MESSAGES.has(msg.type)) {
      this.route(msg);
    } else {
      console.warn('edgecam: ignoring message', msg.type);
    }
  }

  route(msg) {
    const session = typeof msg.camera === 'string' ? this.on.session(msg.camera) : undefined;
    if (session) {
      session.handle(msg);
    } else if (msg.type === 'error') {
      // Not about a camera this page shows: a bad message of ours, or a camera that just went away.
      const text = String(msg.message ?? 'unknown error');
      this.on.notice(msg.camera == null ? text : `${msg.camera}: ${text}`);
    }
    // An offer or candidate for a camera the page no longer lists has nowhere to go.
  }
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

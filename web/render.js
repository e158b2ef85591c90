// Everything the page shows: one card per camera (status, the reason in words, the retry time, the
// daemon's view, the live stats), the header's link state and summary, and the notice bar. Nothing here
// decides anything; it draws what the sessions and the transport report.

import { Link } from './transport.js';
import { Reason, Status } from './session.js';

const NOTICE_MS = 8000;

const REASON_TEXT = {
  [Reason.NONE]: () => '',
  [Reason.NOT_CONNECTED]: () => 'Not connected',
  [Reason.NO_DAEMON]: () => 'Waiting for the device…',
  [Reason.CAMERA_OFFLINE]: (detail) => (detail ? `Camera offline: ${detail}` : 'Camera offline'),
  [Reason.CAMERA_FAILED]: (detail) => detail || 'The camera failed on the device',
  [Reason.CAMERA_STARTING]: () => 'Camera starting…',
  [Reason.CONNECTING]: () => 'Connecting…',
  [Reason.INTERRUPTED]: () => 'Connection interrupted…',
  [Reason.TIMED_OUT]: () => 'Timed out connecting',
  [Reason.LOST]: () => 'Connection lost',
  [Reason.REFUSED]: (detail) => `The browser refused the offer: ${detail}`,
  [Reason.DAEMON_ERROR]: (detail) => detail,
};

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

/** The card's words for a session: why it is in its status and, if a retry is pending, when. */
export function sessionText({ reason, detail, retryMs }) {
  const text = (REASON_TEXT[reason] ?? REASON_TEXT[Reason.NONE])(detail);
  return retryMs ? `${text}. Retrying in ${seconds(retryMs)}` : text;
}

const LINK_TEXT = {
  [Link.CONNECTING]: () => 'Connecting…',
  [Link.OPEN]: () => 'Connected',
  [Link.CLOSED]: (retryMs) => `Disconnected, retrying in ${seconds(retryMs)}`,
};

/** The camera's push to a media server (WHIP): its state, when it retries, and why the last session ended. */
export function pushText({ state, last_error: lastError, next_retry_at: nextRetryAt }) {
  const parts = [`Push to media server: ${state}`];
  // A time rather than a countdown: the card is drawn when the daemon's info changes, not every second.
  if (state === 'retrying' && nextRetryAt) parts.push(`next try at ${new Date(nextRetryAt * 1000).toLocaleTimeString()}`);
  if (lastError) parts.push(`last error: ${lastError}`);
  return parts.join(' · ');
}

/** One camera's card. */
export class Card {
  /**
   * @param {HTMLTemplateElement} template
   * @param {object} on
   * @param {() => void} on.toggle the Connect / Disconnect button was clicked
   * @param {() => void} on.forget the Forget button (cards of unplugged devices) was clicked
   * @param {() => void} on.playing the video started playing
   */
  constructor(template, on) {
    const card = template.content.firstElementChild.cloneNode(true);
    const $ = (sel) => card.querySelector(sel);
    // The test hook exposes this as `cam.el` (benches read `cam.el.video`).
    this.el = {
      card,
      media: $('.media'),
      video: $('video'),
      overlay: $('.overlay'),
      hud: $('.hud'),
      name: $('.name'),
      badge: $('.badge'),
      toggle: $('.toggle'),
      forget: $('.forget'),
      id: $('.cam-id'),
      daemon: $('.daemon'),
      push: $('.push'),
    };
    this.mode = '';
    this.el.toggle.addEventListener('click', on.toggle);
    this.el.forget.addEventListener('click', on.forget);
    this.el.video.addEventListener('playing', on.playing);
    this.el.video.addEventListener('resize', () => this.fitAspect());
  }

  /** Draws `session` (status, reason, the daemon's info); `wanted`: whether the page wants its video. */
  render(session, wanted) {
    const { el } = this;
    const { info, status } = session;
    el.card.dataset.status = status;
    el.name.textContent = info.name || info.id;
    el.id.textContent = info.id;
    el.id.title = info.device ?? '';
    // 'offline' is the hook's word for "no video here"; on a camera the daemon is serving, say idle.
    el.badge.textContent = status === Status.OFFLINE && info.state !== 'offline' ? 'idle' : status;
    const viewers = Number.isInteger(info.viewers) ? `${info.viewers} viewer${info.viewers === 1 ? '' : 's'}` : '';
    el.daemon.textContent = [info.state, info.mode, info.encoder, viewers].filter(Boolean).join(' · ');
    el.push.hidden = !info.push;
    if (info.push) {
      el.push.dataset.state = info.push.state;
      el.push.textContent = pushText(info.push);
      el.push.title = info.push.last_error ? `last error: ${info.push.last_error}` : '';
    }
    el.overlay.textContent = sessionText(session);
    if (status !== Status.LIVE) el.hud.textContent = '';
    el.toggle.textContent = wanted ? 'Disconnect' : 'Connect';
    // Nothing to connect to while the device is gone; auto-connect still brings it back.
    el.toggle.hidden = info.state === 'offline' || info.state === 'failed';
    // The daemon says when the device is gone for good enough to drop its card.
    el.forget.hidden = info.forgettable !== true;
    this.mode = info.mode ?? '';
    this.fitAspect();
  }

  /** The live numbers over the video. */
  showStats(stats, link) {
    const size = stats.frameWidth ? `${stats.frameWidth}×${stats.frameHeight}` : '';
    const loss = stats.lossPercent > 0 ? `${stats.lossPercent}% lost` : '';
    // From the daemon: the low tier is named, and the link estimate and round trip are shown once known.
    const tier = link?.tier === 'low' ? 'low tier' : '';
    const estimate = link?.estimate_kbps ? `link ~${link.estimate_kbps} kbps` : '';
    const rtt = link?.rtt_ms ? `${link.rtt_ms} ms rtt` : '';
    const fec = link?.fec_percent ? `FEC ${link.fec_percent}%` : '';
    this.el.hud.textContent = [size, `${Math.round(stats.fps)} fps`, `${stats.kbps} kbps`, loss, stats.codec, tier, estimate, rtt, fec]
      .filter(Boolean)
      .join(' · ');
  }

  /** The video to play; null for none. */
  show(stream) {
    this.el.video.srcObject = stream;
  }

  remove() {
    this.el.card.remove();
  }

  /** Sizes the video box to the stream (or, before any frame, to the daemon's mode): no letterboxing. */
  fitAspect() {
    let w = this.el.video.videoWidth;
    let h = this.el.video.videoHeight;
    if (!w || !h) [, w, h] = /(\d+)x(\d+)/.exec(this.mode) ?? [];
    this.el.media.style.aspectRatio = w && h ? `${w} / ${h}` : '';
  }
}

/** The page around the cards: grid, header, notice bar. */
export class PageView {
  constructor(doc) {
    const $ = (sel) => doc.querySelector(sel);
    this.grid = $('#grid');
    this.template = $('#card-template');
    this.summaryText = $('#summary');
    this.connectAll = $('#connect-all');
    this.empty = $('#empty');
    this.conn = $('#conn');
    this.connText = $('#conn-text');
    this.noticeBar = $('#notice');
    this.noticeTimer = 0;
  }

  newCard(on) {
    return new Card(this.template, on);
  }

  /** Puts `card` at position `index` of the grid; moving a card only when needed keeps its video playing. */
  place(card, index) {
    const slot = this.grid.children[index];
    if (slot !== card.el.card) this.grid.insertBefore(card.el.card, slot ?? null);
  }

  /** The header's count; `listSeen`: whether the daemon has sent its camera list yet. */
  summary(total, live, listSeen) {
    this.summaryText.textContent = total ? `${total} camera${total === 1 ? '' : 's'} · ${live} live` : '';
    this.connectAll.disabled = total === 0;
    this.empty.hidden = total > 0;
    this.empty.textContent = listSeen
      ? 'No cameras found. Plug one in and it will appear here.'
      : 'Waiting for the device…';
  }

  /** The websocket's state; `retryMs`: when closed, the delay before the next try. */
  link(state, retryMs) {
    this.conn.dataset.state = state;
    this.connText.textContent = LINK_TEXT[state](retryMs);
  }

  notice(text) {
    this.noticeBar.textContent = text;
    this.noticeBar.hidden = false;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => {
      this.noticeBar.hidden = true;
    }, NOTICE_MS);
  }
}

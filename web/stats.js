// What a peer connection's getStats() says about its video: frames decoded, frame size, and rates (fps,
// bitrate, packet loss) taken between two reads.

/** How often the page reads every live camera's stats. */
export const STATS_INTERVAL_MS = 1000;
// Rates are taken over at least this span, so an extra read between ticks (the test hook's) is not noise.
const MIN_RATE_SPAN_MS = 500;
// The newest sample plus one at least MIN_RATE_SPAN_MS older is all a rate needs.
const SAMPLES_KEPT = 2;

/** One peer connection's counters over time. A new peer connection needs a new (or reset) meter. */
export class StatsMeter {
  constructor() {
    this.samples = [];
  }

  reset() {
    this.samples = [];
  }

  /** Whether the last committed read had decoded frames. */
  get decoding() {
    return (this.samples.at(-1)?.frames ?? 0) > 0;
  }

  /**
   * One getStats() read of `pc`: `stats` (what the page and the test hook show) and the raw `sample`,
   * which `commit` keeps for later rates. Null before the video's inbound-rtp exists.
   */
  async read(pc) {
    const report = await pc.getStats();
    let rtp = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'video') rtp = s;
    });
    if (!rtp) return null;
    const sample = {
      t: rtp.timestamp,
      frames: rtp.framesDecoded ?? 0,
      bytes: rtp.bytesReceived ?? 0,
      received: rtp.packetsReceived ?? 0,
      // Negative when duplicates outnumber losses: that is no loss.
      lost: Math.max(0, rtp.packetsLost ?? 0),
    };
    const base = this.samples.findLast((s) => sample.t - s.t >= MIN_RATE_SPAN_MS) ?? this.samples[0];
    const secs = base ? (sample.t - base.t) / 1000 : 0;
    const fps = rtp.framesPerSecond ?? (secs > 0 ? (sample.frames - base.frames) / secs : 0);
    const kbps = secs > 0 ? ((sample.bytes - base.bytes) * 8) / 1000 / secs : 0;
    const lost = base ? sample.lost - base.lost : 0;
    const expected = base ? lost + sample.received - base.received : 0;
    const codec = rtp.codecId ? report.get(rtp.codecId) : null;
    return {
      sample,
      stats: {
        framesDecoded: sample.frames,
        frameWidth: rtp.frameWidth ?? 0,
        frameHeight: rtp.frameHeight ?? 0,
        fps: Math.round(fps * 10) / 10,
        kbps: Math.round(kbps),
        packetsLost: sample.lost,
        // Of the packets sent since the base sample, the share that never came.
        lossPercent: expected > 0 ? Math.round((lost / expected) * 1000) / 10 : 0,
        codec: codec?.mimeType?.split('/')[1] ?? null,
      },
    };
  }

  commit(sample) {
    this.samples = [...this.samples, sample].slice(-SAMPLES_KEPT);
  }
}

//! Glass-to-glass latency through the daemon, at the default 640x480@30.
//!
//! `edgecam run` with one camera `g2g: {test_pattern: stamp}`: the daemon's own pipeline draws each frame's
//! wall-clock capture time into it (edgecam::media::timecode) before its encoder, and streams it like any
//! camera. Headless Chromium opens the daemon's own viewer page (`?cameras=g2g`, ICE on 127.0.0.1). For
//! each frame that page's <video> presents (requestVideoFrameCallback), the code's corner is drawn to a
//! canvas and one pixel per block is read back (getImageData); this measurement decodes them with the
//! daemon's own decoder and compares the capture time with the page's clock at:
//! - the frame's expected display time (performance.timeOrigin + expectedDisplayTime): glass to glass;
//! - the callback itself (Date.now()), a second view;
//! - the arrival of the frame's last packet (receiveTime), which splits the total into the daemon plus
//!   network part and the browser part (jitter buffer, decode, render).
//!
//! Daemon and page read the same CLOCK_REALTIME of this machine: no clock sync is involved.
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use edgecam::media::timecode;
use edgecam_testkit::chromium::{Browser, Page};
use edgecam_testkit::daemon::Daemon;
use edgecam_testkit::viewer::{open_viewer, wait_decoding};
use edgecam_testkit::{api_camera, wait_streaming};

use crate::daemon_proc::{cpu_percent, proc_read};
use crate::harness::{daemon_bin, loadavg, round1, summary, Options};

pub const NAME: &str = "latency";
pub const OPTIONS: &[&str] = &["frames"];

/// Past the first keyframes before the window opens.
const SETTLE: Duration = Duration::from_secs(2);

const CAMERA: &str = "g2g";
const CONFIG: &str = "discovery: false\ncameras:\n  g2g: {test_pattern: stamp, name: Glass to glass}\n";

/// Starts collecting, per presented frame of camera `id`: one sample per time-code block (red channel),
/// the callback's Date.now(), the expected display and receive times on the same epoch scale, and
/// presentedFrames (its gaps are frames the compositor showed without a callback).
const COLLECT_JS: &str = r#"
(id, points, w, h) => {
  const cam = window.edgecam.cameras.get(id);
  const v = cam && cam.el && cam.el.video;
  if (!v || !v.requestVideoFrameCallback) throw new Error(`no <video> with requestVideoFrameCallback for ${id}`);
  const canvas = document.createElement('canvas');
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const out = window.__g2g = { frames: [], stop: false };
  const t0 = performance.timeOrigin;
  const step = (now, meta) => {
    const cb = Date.now();
    ctx.drawImage(v, 0, 0, w, h, 0, 0, w, h); // the top-left corner, unscaled
    const d = ctx.getImageData(0, 0, w, h).data;
    out.frames.push({
      s: points.map(([x, y]) => d[(y * w + x) * 4]),
      cb,
      display: t0 + meta.expectedDisplayTime,
      receive: meta.receiveTime === undefined ? null : t0 + meta.receiveTime,
      presented: meta.presentedFrames,
      width: meta.width,
    });
    if (!out.stop) v.requestVideoFrameCallback(step);
  };
  v.requestVideoFrameCallback(step);
  return true;
}"#;

/// The camera's inbound-rtp counters, and how far Date.now() is from timeOrigin + performance.now().
const STATS_JS: &str = r#"
async (id) => {
  const r = { clock_offset_ms: Date.now() - (performance.timeOrigin + performance.now()) };
  (await window.edgecam.cameras.get(id).pc.getStats()).forEach(s => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') Object.assign(r, {
      t: s.timestamp, decoded: s.framesDecoded, dropped: s.framesDropped || 0,
      jitter_delay: s.jitterBufferDelay, jitter_emitted: s.jitterBufferEmittedCount,
      decode_time: s.totalDecodeTime, processing_delay: s.totalProcessingDelay,
    });
  });
  return r;
}"#;

/// Chromium's own view of the window between two STATS_JS reads: per-frame averages.
fn chromium_window(a: &Value, b: &Value) -> Value {
    let d = |k: &str| b[k].as_f64().unwrap_or(f64::NAN) - a[k].as_f64().unwrap_or(f64::NAN);
    let per_frame_ms = |k: &str, n: &str| round1(d(k) / d(n) * 1000.0);
    json!({
        "fps_decoded": round1(d("decoded") / (d("t") / 1000.0)),
        "frames_dropped": d("dropped") as i64,
        "jitter_buffer_ms_per_frame": per_frame_ms("jitter_delay", "jitter_emitted"),
        "decode_ms_per_frame": per_frame_ms("decode_time", "decoded"),
        "processing_delay_ms_per_frame": per_frame_ms("processing_delay", "decoded"),
        "clock_offset_ms": round1(b["clock_offset_ms"].as_f64().unwrap_or(f64::NAN)),
    })
}

/// What the frames read so far add up to.
#[derive(Default)]
struct Readings {
    callbacks: usize,
    unreadable: usize,
    display: Vec<f64>,
    callback: Vec<f64>,
    receive: Vec<f64>,
    receive_to_display: Vec<f64>,
    skipped: u64,
    last_presented: Option<u64>,
    last_code: Option<u64>,
    not_increasing: usize,
}

impl Readings {
    fn add(&mut self, frame: &Value) {
        self.callbacks += 1;
        if let Some(p) = frame["presented"].as_u64() {
            if let Some(last) = self.last_presented {
                self.skipped += p.saturating_sub(last + 1);
            }
            self.last_presented = Some(p);
        }
        let samples: Vec<u8> = frame["s"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_u64().unwrap_or(0) as u8)
            .collect();
        let Ok(code) = timecode::decode(&samples) else {
            self.unreadable += 1;
            return;
        };
        if self.last_code.is_some_and(|last| code <= last) {
            self.not_increasing += 1;
        }
        self.last_code = Some(code);
        let at = |k: &str| frame[k].as_f64();
        let display = at("display").unwrap_or(f64::NAN);
        self.display.push(timecode::age_ms(code, display));
        self.callback.push(timecode::age_ms(code, at("cb").unwrap_or(f64::NAN)));
        if let Some(receive) = at("receive") {
            self.receive.push(timecode::age_ms(code, receive));
            self.receive_to_display.push(display - receive);
        }
    }
}

async fn collect(page: &Page, frames: usize) -> Result<(Readings, f64)> {
    let points: Vec<[usize; 2]> = timecode::sample_points().iter().map(|&(x, y)| [x, y]).collect();
    page.eval(&format!(
        "({COLLECT_JS})({}, {}, {}, {})",
        json!(CAMERA),
        json!(points),
        timecode::WIDTH,
        timecode::HEIGHT
    ))
    .await?;
    let mut r = Readings::default();
    let start = Instant::now();
    // Generous: 300 frames take 10 s at 30 fps; a loaded machine presents fewer.
    let limit = Duration::from_secs(60) + Duration::from_millis(frames as u64 * 200);
    while r.display.len() < frames {
        if start.elapsed() > limit {
            bail!(
                "only {} readable frames of {frames} in {limit:?} ({} callbacks)",
                r.display.len(),
                r.callbacks
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let batch = page.eval("window.__g2g.frames.splice(0)").await?;
        for frame in batch.as_array().into_iter().flatten() {
            r.add(frame);
        }
    }
    page.eval("window.__g2g.stop = true").await?;
    Ok((r, start.elapsed().as_secs_f64()))
}

pub async fn run(opt: &Options) -> Result<Value> {
    let frames: usize = opt.get("frames", 300)?;
    let daemon_bin = daemon_bin()?;

    let daemon = Daemon::start(CONFIG, &[])?;
    let pid = daemon.pid().context("daemon not running")?;
    wait_streaming(daemon.addr, CAMERA).await?;
    let browser = Browser::launch().await?;
    let page = open_viewer(&browser, &daemon, &format!("?cameras={CAMERA}")).await?;
    wait_decoding(&page, &[CAMERA], None).await?;
    tokio::time::sleep(SETTLE).await;
    let camera = api_camera(daemon.addr, CAMERA).await?;

    let load_before = loadavg();
    let stats_before = page.eval(&format!("({STATS_JS})({})", json!(CAMERA))).await?;
    let proc_before = proc_read(pid)?;
    let (r, seconds) = collect(&page, frames).await?;
    let proc_after = proc_read(pid)?;
    let stats_after = page.eval(&format!("({STATS_JS})({})", json!(CAMERA))).await?;
    page.close().await.ok();

    let result = json!({
        "what": "through the daemon: edgecam run, camera {test_pattern: stamp}, its viewer page in headless Chromium",
        "daemon": daemon_bin,
        "camera": camera,
        "stamp": "wall-clock ms drawn into the luma plane at the source's output, before the encoder (edgecam::media::timecode)",
        "frames_wanted": frames,
        "callbacks": r.callbacks,
        "unreadable": r.unreadable,
        "not_increasing": r.not_increasing,
        "presented_without_callback": r.skipped,
        "seconds": round1(seconds),
        "glass_to_glass_ms": summary(r.display),
        "stamp_to_callback_ms": summary(r.callback),
        "stamp_to_receive_ms": summary(r.receive),
        "receive_to_display_ms": summary(r.receive_to_display),
        "chromium": chromium_window(&stats_before, &stats_after),
        "daemon_cpu_percent_of_one_core": round1(cpu_percent(&proc_before, &proc_after)),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    });
    let g = &result["glass_to_glass_ms"];
    eprintln!(
        "latency: glass to glass p50 {} ms, p95 {} ms, max {} ms over {} frames ({} unreadable)",
        g["median"], g["p95"], g["max"], g["n"], r.unreadable
    );
    Ok(result)
}

/// The report's section; `earlier` are other runs kept in earlier/ (how much the load moves the numbers).
pub fn section(l: &Value, earlier: &[Value]) -> String {
    let row = |what: &str, k: &str, target: &str| {
        let s = &l[k];
        format!(
            "| {what} | {} | {} | {} | {} | {} | {} | {target} |\n",
            s["n"], s["median"], s["p95"], s["max"], s["min"], s["mean"]
        )
    };
    let c = &l["chromium"];
    let mut md = format!("## Glass-to-glass latency, 640x480@30, through the daemon (bench/src/latency.rs)\n\n\
        `edgecam run` with a `test_pattern: stamp` camera: the daemon draws the wall-clock ms into each frame (48 binary \
        16x16 blocks in the luma plane) at the source's output, before its encoder; its own viewer page in headless Chromium \
        reads it back per presented frame (requestVideoFrameCallback + canvas getImageData) and compares with the same clock. \
        Encoder: {}.\n\n\
        | measure | frames | p50 ms | p95 ms | max ms | min | mean | target |\n|---|---|---|---|---|---|---|---|\n{}{}{}{}\n\
        Chromium over the window: {} fps decoded, jitter buffer {} ms/frame, decode {} ms/frame, {} frames dropped. \
        Frames with an unreadable stamp: {} of {}; presented without a callback: {}. Daemon CPU {} % of one core. \
        Load avg {} -> {}.\n\n",
        l["camera"]["encoder"].as_str().unwrap_or("?"),
        row("stamp -> expected display time (glass to glass)", "glass_to_glass_ms", "p50 <= 80 ms"),
        row("stamp -> frame callback (Date.now)", "stamp_to_callback_ms", ""),
        row("stamp -> last packet received (daemon + loopback)", "stamp_to_receive_ms", ""),
        row("last packet received -> expected display (Chromium)", "receive_to_display_ms", ""),
        c["fps_decoded"], c["jitter_buffer_ms_per_frame"], c["decode_ms_per_frame"], c["frames_dropped"],
        l["unreadable"], l["callbacks"], l["presented_without_callback"], l["daemon_cpu_percent_of_one_core"],
        l["loadavg_before"].as_str().unwrap_or("?"), l["loadavg_after"].as_str().unwrap_or("?"));
    let runs: Vec<String> = earlier
        .iter()
        .map(|r| {
            let (g, s) = (&r["glass_to_glass_ms"], &r["stamp_to_receive_ms"]);
            format!(
                "{} / {} / {} (daemon + loopback p50 {}; load {})",
                g["median"],
                g["p95"],
                g["max"],
                s["median"],
                r["loadavg_before"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if !runs.is_empty() {
        md += &format!(
            "Other runs, glass to glass p50 / p95 / max ms: {}.\n\n",
            runs.join("; ")
        );
    }
    md
}

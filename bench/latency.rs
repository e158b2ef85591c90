//! Glass-to-glass latency (issue 7, item 5), measured with a STANDALONE sender that mirrors the daemon's
//! demo-camera chain, because the daemon has no source that stamps a machine-readable capture time:
//!
//!   videotestsrc is-live=true pattern=ball ! video/x-raw,640x480@30 ! videoconvert ! I420
//!     [pad probe on videoconvert's src: writes the wall-clock time (ms since the Unix epoch) into the
//!      luma plane as 48 black/white 16x16 blocks: 40 bits of time + an 8-bit xor check]
//!     ! tee ! queue (leaky, 2) ! x264enc (the x264 profile: tune=zerolatency speed-preset=ultrafast
//!     bitrate=1000 key-int-max=60) ! constrained-baseline ! h264parse ! rtph264pay config-interval=-1
//!     aggregate-mode=zero-latency pt=96 mtu=1200 ! tee ! queue (leaky, 100) ! webrtcbin (max-bundle)
//!
//! Signalling goes through the DevTools protocol (no websocket server): the offer and candidates are
//! handed to a headless Chromium tab, its answer comes back the same way. On the page, for each frame
//! presented (requestVideoFrameCallback) the frame is drawn to a canvas, the blocks are read back with
//! getImageData, and the stamp is compared with the page's wall clock at the frame's expected display
//! time (performance.timeOrigin + metadata.expectedDisplayTime), and, as a second view, Date.now() in the
//! callback. Both clocks are this machine's CLOCK_REALTIME, so no clock sync is involved.
//!
//!   edgecam-latency [--frames 300] [--out bench/results]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use gst::glib;
use gst::prelude::*;
use serde_json::{json, Value};

use common::chromium::Browser;

const W: usize = 640;
const BLOCK: usize = 16;
const PER_ROW: usize = 24;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Writes `ms` into the Y plane (I420, stride 640) as 2 rows of 24 blocks.
fn stamp(y: &mut [u8], ms: u64) {
    let t = ms & ((1u64 << 40) - 1);
    let check = (0..5).fold(0u8, |a, i| a ^ ((t >> (8 * i)) as u8));
    let bits = (t << 8) | check as u64; // 48 bits, MSB first
    for i in 0..48 {
        let on = (bits >> (47 - i)) & 1 == 1;
        let (bx, by) = ((i % PER_ROW) * BLOCK, (i / PER_ROW) * BLOCK);
        for row in by..by + BLOCK {
            let line = &mut y[row * W + bx..row * W + bx + BLOCK];
            line.fill(if on { 235 } else { 16 });
        }
    }
}

const PAGE_SETUP_JS: &str = r#"
async (offer, cands) => {
  document.body.innerHTML = '<video id=v autoplay muted playsinline width=640 height=480></video>';
  const v = document.getElementById('v');
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers: [] });
  window.__pc = pc;
  pc.ontrack = (e) => { v.srcObject = e.streams[0] || new MediaStream([e.track]); v.play().catch(() => {}); };
  await pc.setRemoteDescription({ type: 'offer', sdp: offer });
  for (const c of cands) await pc.addIceCandidate({ candidate: c[1], sdpMLineIndex: c[0] });
  await pc.setLocalDescription(await pc.createAnswer());
  const deadline = performance.now() + 10000;
  while (pc.iceGatheringState !== 'complete' && performance.now() < deadline)
    await new Promise(r => setTimeout(r, 20));
  return pc.localDescription.sdp;
}"#;

const PAGE_MEASURE_JS: &str = r#"
(n) => {
  const v = document.getElementById('v');
  const c = document.createElement('canvas'); c.width = 640; c.height = 480;
  const ctx = c.getContext('2d', { willReadFrequently: true });
  window.__lat = { display: [], callback: [], bad: 0, frames: 0, done: false };
  const L = window.__lat;
  const step = (now, meta) => {
    const cbWall = Date.now();
    ctx.drawImage(v, 0, 0, 640, 480);
    const d = ctx.getImageData(0, 0, 24 * 16, 32).data;
    let hi = 0, lo = 0; // 48 bits: hi = top 16 bits, lo = low 32 bits
    for (let i = 0; i < 48; i++) {
      const x = (i % 24) * 16 + 8, y = Math.floor(i / 24) * 16 + 8;
      const bit = d[(y * 384 + x) * 4] > 128 ? 1 : 0;
      if (i < 16) hi = hi * 2 + bit; else lo = lo * 2 + bit;
    }
    const bits = hi * 4294967296 + lo;
    const check = bits % 256, t = Math.floor(bits / 256);
    let x = 0; for (let k = 0; k < 5; k++) x ^= Math.floor(t / Math.pow(256, k)) % 256;
    L.frames++;
    if (x !== check) { L.bad++; }
    else {
      // Reconstruct the full epoch ms from the 40 low bits and the current time.
      const span = 1099511627776, base = cbWall - (cbWall % span);
      let ts = base + t; if (ts > cbWall + 1000) ts -= span;
      L.display.push(performance.timeOrigin + meta.expectedDisplayTime - ts);
      L.callback.push(cbWall - ts);
    }
    if (L.display.length < n) v.requestVideoFrameCallback(step); else L.done = true;
  };
  v.requestVideoFrameCallback(step);
  return true;
}"#;

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((q / 100.0) * (v.len() as f64 - 1.0)).round() as usize];
    json!({"n": v.len(), "p50": (p(50.0) * 10.0).round() / 10.0, "p95": (p(95.0) * 10.0).round() / 10.0,
           "max": (v[v.len() - 1] * 10.0).round() / 10.0, "min": (v[0] * 10.0).round() / 10.0,
           "mean": (v.iter().sum::<f64>() / v.len() as f64 * 10.0).round() / 10.0})
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut frames = 300usize;
    let mut out: std::path::PathBuf = "bench/results".into();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--frames" => frames = it.next().context("value")?.parse()?,
            "--out" => out = it.next().context("value")?.into(),
            _ => bail!("usage: edgecam-latency [--frames N] [--out DIR]"),
        }
    }
    gst::init()?;
    let pipeline = gst::parse::launch(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=30/1 \
         ! videoconvert name=conv ! video/x-raw,format=I420 ! tee name=raw allow-not-linked=true \
         ! queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream \
         ! x264enc name=enc tune=zerolatency speed-preset=ultrafast bitrate=1000 key-int-max=60 \
         ! video/x-h264,profile=constrained-baseline ! h264parse \
         ! rtph264pay name=pay config-interval=-1 aggregate-mode=zero-latency pt=96 mtu=1200 \
         ! tee name=fanout allow-not-linked=true \
         ! queue leaky=downstream max-size-buffers=100 max-size-bytes=0 max-size-time=0 \
         ! webrtcbin name=web bundle-policy=max-bundle",
    )?
    .downcast::<gst::Pipeline>()
    .unwrap();
    let conv = pipeline.by_name("conv").unwrap();
    conv.static_pad("src").unwrap().add_probe(gst::PadProbeType::BUFFER, |_, info| {
        if let Some(gst::PadProbeData::Buffer(buf)) = info.data.as_mut() {
            let b = buf.make_mut();
            if let Ok(mut map) = b.map_writable() {
                if map.len() >= W * 480 {
                    stamp(&mut map[..W * 480], now_ms());
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    let web = pipeline.by_name("web").unwrap();
    if let Some(t) = web.static_pad("sink_0").and_then(|p| p.property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver")) {
        t.set_property("direction", gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
    }
    let agent = web.property::<glib::Object>("ice-agent");
    agent.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]);

    let cands: Arc<Mutex<Vec<(u32, String)>>> = Arc::default();
    let offer: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let cands = cands.clone();
        web.connect("on-ice-candidate", false, move |v| {
            let idx = v[1].get::<u32>().unwrap();
            let c = v[2].get::<String>().unwrap();
            cands.lock().unwrap().push((idx, c));
            None
        });
    }
    {
        let offer = offer.clone();
        web.connect("on-negotiation-needed", false, move |v| {
            let w = v[0].get::<gst::Element>().unwrap();
            let w2 = w.clone();
            let offer = offer.clone();
            let p = gst::Promise::with_change_func(move |r| {
                if let Ok(Some(r)) = r {
                    if let Ok(o) = r.get::<gst_webrtc::WebRTCSessionDescription>("offer") {
                        w2.emit_by_name::<()>("set-local-description", &[&o, &None::<gst::Promise>]);
                        *offer.lock().unwrap() = Some(o.sdp().as_text().unwrap());
                    }
                }
            });
            w.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &p]);
            None
        });
    }
    pipeline.set_state(gst::State::Playing)?;
    // Wait for the offer and for gathering to finish.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let done = offer.lock().unwrap().is_some()
            && web.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
                == gst_webrtc::WebRTCICEGatheringState::Complete;
        if done || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let offer_sdp = offer.lock().unwrap().clone().context("no offer from webrtcbin")?;
    let cl: Vec<Value> = cands.lock().unwrap().iter().map(|(i, c)| json!([i, c])).collect();
    eprintln!("latency: offer ready, {} candidates", cl.len());

    let browser = Browser::launch().await?;
    let page = browser.open("about:blank").await?;
    let answer = page
        .eval(&format!("({PAGE_SETUP_JS})({}, {})", json!(offer_sdp), json!(cl)))
        .await?;
    let answer = answer.as_str().context("no answer")?.to_string();
    let msg = gst_sdp::SDPMessage::parse_buffer(answer.as_bytes())?;
    let desc = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, msg);
    web.emit_by_name::<()>("set-remote-description", &[&desc, &None::<gst::Promise>]);
    for line in answer.lines() {
        if let Some(c) = line.strip_prefix("a=") {
            if c.starts_with("candidate:") {
                web.emit_by_name::<()>("add-ice-candidate", &[&0u32, &c]);
            }
        }
    }
    // Wait until frames are shown, then let the first keyframe burst pass.
    common::wait_until("video playing", Duration::from_secs(30), || async {
        let ok = page.eval("(document.getElementById('v')||{}).videoWidth === 640 && window.__pc.connectionState === 'connected'").await?;
        if ok != Value::Bool(true) {
            bail!("not yet: {}", page.eval("window.__pc.connectionState").await?);
        }
        Ok(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let load_before = loadavg();
    page.eval(&format!("({PAGE_MEASURE_JS})({frames})")).await?;
    let t0 = std::time::Instant::now();
    let lat = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let l = page.eval("window.__lat").await?;
        if l["done"] == true || t0.elapsed() > Duration::from_secs(120) {
            break l;
        }
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let f = |k: &str| -> Vec<f64> { lat[k].as_array().into_iter().flatten().filter_map(|x| x.as_f64()).collect() };
    let display = f("display");
    if display.is_empty() {
        bail!("no stamped frame read back: {lat}");
    }
    let result = json!({
        "what": "standalone sender mirroring the daemon's demo chain (bench/latency.rs), NOT the daemon",
        "source": "videotestsrc ball 640x480@30, stamp written by a pad probe after videoconvert",
        "encoder": "x264enc tune=zerolatency speed-preset=ultrafast bitrate=1000 key-int-max=60",
        "frames_seen": lat["frames"], "frames_bad_stamp": lat["bad"], "seconds": (elapsed * 10.0).round() / 10.0,
        "glass_to_glass_ms_at_expected_display": summary(display),
        "stamp_to_frame_callback_ms": summary(f("callback")),
        "loadavg_before": load_before, "loadavg_after": loadavg(),
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("issue7_latency.json"), serde_json::to_string_pretty(&result)? + "\n")?;
    page.close().await.ok();
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}

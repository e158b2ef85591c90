//! Shaped-link comparison (issue 12's table): edgecam, aiortc and a Chromium (libwebrtc) sender, each sending
//! 640x480@30 H.264 at about 1 Mbit/s to a headless Chromium viewer over the same shaped cable, in one run.
//! The sender lives in the daemon's network namespace, the viewer behind the shaping (testkit's
//! `ShapedLink`: `tc tbf` on the sender's egress, an nftables random drop of its UDP packets); every
//! sender gets a fresh cable, a fresh viewer browser and the same windows.
//!
//! Links: 3 % random UDP loss (once the viewer decodes); a 250 kbit/s cap from the start; and 2 Mbit/s ->
//! 300 kbit/s -> 2 Mbit/s (how much still arrives during the squeeze, and how soon the received rate is back
//! at 90 % of what it was before). Per sender: fps, freezes (count and total seconds), NACKs and kbit/s from
//! the viewer's getStats, and the time to the first frame.
//!
//! The senders (all encoders at most 1 Mbit/s, content that fills it):
//! - edgecam: the release daemon, one camera `test_pattern: smpte` at `bitrate: 1000` (its ceiling), with
//!   everything it does on real links (NACK/RTX, FEC, congestion control, tiers);
//! - aiortc (bench/peer/aiortc_peer.py `--pattern bars --max-kbps 1000`): PyAV libx264, colour bars, a
//!   moving square and a patch of fresh noise; its encoder follows the viewer's REMB between 500 kbit/s
//!   (aiortc's floor) and 1 Mbit/s;
//! - Chromium: a second headless Chromium in the sender's namespace capturing a canvas with the same
//!   picture (`captureStream(30)`), H.264 preferred, `maxBitrate` 1 Mbit/s; libwebrtc's own NACK, RTX,
//!   congestion control and quality scaling.
//!
//! Needs root (network namespaces) and the aiortc venv (bench/run.sh makes it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use edgecam_testkit::chromium::{Browser, Page};
use edgecam_testkit::daemon::Daemon;
use edgecam_testkit::link_stats::{num, without_offer, LinkViewer, Window};
use edgecam_testkit::shaped_link::{self, ShapedLink};
use edgecam_testkit::viewer::open_viewer;
use edgecam_testkit::{api_camera, wait_until, LIVENESS};

use crate::harness::{round1, Options};
use crate::page_stats::{ready_to_first_frame_ms, wait_ws_lists};
use crate::peer_comparison::{aiortc_version, Aiortc, PEER_FIRST_FRAME_JS, PEER_SETUP_JS};
use crate::remote_page::RemotePage;

pub const NAME: &str = "shaped_comparison";
pub const OPTIONS: &[&str] = &["seconds", "phase", "python", "senders", "links"];

/// edgecam's one camera: SMPTE bars with a running clock, on which x264 spends its whole 1 Mbit/s.
/// `auth: none`: only this run's namespaces reach the daemon.
pub(crate) const CONFIG: &str = "discovery: false\nauth: none\ncameras:\n  cap: {test_pattern: smpte, bitrate: 1000}\n";
pub(crate) const CAMERA: &str = "cap";
/// The name the viewer page gives an offering sender's peer connection (see `PEER_SHIM_JS`).
const PEER: &str = "peer";

/// The issue's links.
const LOSS_PERCENT: u32 = 3;
const NARROW_KBIT: u32 = 250;
const WIDE_KBIT: u32 = 2000;
const SQUEEZED_KBIT: u32 = 300;
/// Every sender's ceiling: edgecam's configured `bitrate`, aiortc's `--max-kbps`, the Chromium sender's
/// `maxBitrate`.
const SENDER_MAX_KBPS: u32 = 1000;

/// Frames decoded before the loss starts: the join is not what the loss row measures.
const WARM_UP_FRAMES: f64 = 60.0;
/// "kbit/s received in the last 5 s" of a phase.
const TAIL: Duration = Duration::from_secs(5);
/// Back to "about full rate": this share of what arrived in the last `TAIL` before the squeeze,
/// measured over the trailing `RATE_SPAN`.
const FULL_SHARE: f64 = 0.9;
const RATE_SPAN: Duration = Duration::from_secs(2);
/// How often the viewer's counters are read during a window.
const SAMPLE: Duration = Duration::from_millis(500);

const SENDERS: [&str; 3] = ["edgecam", "aiortc", "chromium"];
const LINKS: [&str; 3] = ["loss", "cap250", "recovery"];

/// The Chromium sender's page: a 640x480 canvas redrawn 30 times a second (colour bars, a grey ramp, a
/// bouncing square and a 128x96 patch of fresh noise, as aiortc_peer.py's `bars`), captured and offered
/// with H.264 first; returns the offer once ICE gathering is complete (no trickle through the driver).
const CHROMIUM_SENDER_JS: &str = r#"
async (maxKbps) => {
  const W = 640, H = 480;
  const c = document.createElement('canvas'); c.width = W; c.height = H; document.body.appendChild(c);
  const g = c.getContext('2d');
  const bars = ['#c0c0c0', '#c0c000', '#00c0c0', '#00c000', '#c000c0', '#c00000', '#0000c0'];
  const ramp = g.createLinearGradient(0, 0, W, 0); ramp.addColorStop(0, '#000'); ramp.addColorStop(1, '#fff');
  const noise = g.createImageData(128, 96);
  const bounce = (v, span) => { v %= 2 * span; return v < span ? v : 2 * span - v; };
  let n = 0;
  const draw = () => {
    bars.forEach((b, i) => { g.fillStyle = b; g.fillRect(Math.floor(i * W / 7), 0, Math.ceil(W / 7), H * 2 / 3); });
    g.fillStyle = ramp; g.fillRect(0, H * 2 / 3, W, H / 3);
    g.fillStyle = '#fff'; g.fillRect(bounce(n * 7, W - 64), bounce(n * 5, H - 64), 64, 64);
    const d = noise.data;
    for (let i = 0; i < d.length; i++) d[i] = (i & 3) === 3 ? 255 : Math.random() * 256;
    g.putImageData(noise, W - 128, H - 96);
    n++;
  };
  draw(); setInterval(draw, 1000 / 30);
  const track = c.captureStream(30).getVideoTracks()[0];
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers: [] });
  window.__pc = pc;
  const tr = pc.addTransceiver(track, { direction: 'sendonly', sendEncodings: [{ maxBitrate: maxKbps * 1000 }] });
  const codecs = RTCRtpSender.getCapabilities('video').codecs;
  const h264 = (k) => k.mimeType === 'video/H264' && /packetization-mode=1/.test(k.sdpFmtpLine || '');
  tr.setCodecPreferences([...codecs.filter(h264), ...codecs.filter(k => !h264(k))]);
  await pc.setLocalDescription(await pc.createOffer());
  const deadline = performance.now() + 10000;
  while (pc.iceGatheringState !== 'complete' && performance.now() < deadline)
    await new Promise(r => setTimeout(r, 5));
  return pc.localDescription.sdp;
}"#;

const CHROMIUM_ANSWER_JS: &str = "async (sdp) => { await window.__pc.setRemoteDescription({ type: 'answer', sdp }); }";

/// Lets testkit's link stats read an offering sender's peer connection as if it were a camera of the
/// viewer page.
const PEER_SHIM_JS: &str =
    "window.edgecam = { cameras: new Map([['peer', { status: 'live', get pc() { return window.__pc; } }]]) }";

#[derive(Clone)]
struct Params {
    window: Duration,
    phase: Duration,
    python: String,
}

/// A sender running in the daemon's namespace.
enum Running {
    Edgecam(Daemon),
    Aiortc(Aiortc),
    Chromium(RemotePage),
}

impl Running {
    async fn start(sender: &str, link: &ShapedLink, p: &Params) -> Result<Running> {
        Ok(match sender {
            "edgecam" => {
                let ip = link.daemon_ip();
                Running::Edgecam(link.run_in_daemon(move || Daemon::start_on(ip, CONFIG, &[]))?)
            }
            "aiortc" => {
                let python = p.python.clone();
                let max = SENDER_MAX_KBPS.to_string();
                Running::Aiortc(
                    link.run_in_daemon(move || Aiortc::start(&python, &["--pattern", "bars", "--max-kbps", &max]))?,
                )
            }
            "chromium" => Running::Chromium(RemotePage::open(&|f| link.spawn_in_daemon(f), "about:blank").await?),
            other => bail!("unknown sender {other} (one of {SENDERS:?})"),
        })
    }

    /// The offer of a sender that makes one (aiortc, Chromium).
    async fn offer(&mut self) -> Result<String> {
        let sdp = match self {
            Running::Edgecam(_) => bail!("edgecam's page negotiates by itself"),
            Running::Aiortc(ai) => {
                ai.send(&json!({"type": "ready", "id": 0}))?;
                ai.recv("offer").await?["sdp"].clone()
            }
            Running::Chromium(page) => page.eval(&format!("({CHROMIUM_SENDER_JS})({SENDER_MAX_KBPS})")).await?,
        };
        sdp.as_str().map(str::to_string).context("no offer SDP")
    }

    async fn answer(&mut self, sdp: &str) -> Result<()> {
        match self {
            Running::Edgecam(_) => bail!("edgecam's page negotiates by itself"),
            Running::Aiortc(ai) => ai.send(&json!({"type": "answer", "id": 0, "sdp": sdp})),
            Running::Chromium(page) => page
                .eval(&format!("({CHROMIUM_ANSWER_JS})({})", json!(sdp)))
                .await
                .map(drop),
        }
    }
}

/// The viewer's page, the name of the stream on it, and ms from the start of negotiation to the first
/// decoded frame (None: no frame within 30 s).
async fn connect(browser: &Browser, sender: &mut Running) -> Result<(Page, &'static str, Option<f64>)> {
    if let Running::Edgecam(daemon) = sender {
        let page = open_viewer(browser, daemon, &format!("?autoconnect=0&cameras={CAMERA}")).await?;
        wait_ws_lists(&page, CAMERA).await?;
        let ms = ready_to_first_frame_ms(&page, CAMERA, false).await?;
        return Ok((page, CAMERA, ms.as_f64().filter(|t| *t >= 0.0)));
    }
    let page = browser.open("about:blank").await?;
    page.eval("window.__t0 = performance.now()").await?;
    let offer = sender.offer().await?;
    let answer = page.eval(&format!("({PEER_SETUP_JS})({})", json!(offer))).await?;
    sender.answer(answer.as_str().context("no answer SDP")?).await?;
    page.eval(PEER_SHIM_JS).await?;
    let ms = page.eval(&format!("({PEER_FIRST_FRAME_JS})()")).await?;
    Ok((page, PEER, ms.as_f64()))
}

/// A reading of the viewer's counters and when it was taken.
type Reading = (Instant, Value);

async fn read(page: &Page, key: &str) -> Result<Reading> {
    Ok((Instant::now(), LinkViewer::Chromium(page).read(key).await?))
}

/// Readings every `SAMPLE` for `span`, the first at once.
async fn watch(page: &Page, key: &str, span: Duration) -> Result<Vec<Reading>> {
    let start = Instant::now();
    let mut out = vec![read(page, key).await?];
    while start.elapsed() < span {
        tokio::time::sleep(SAMPLE).await;
        out.push(read(page, key).await?);
    }
    Ok(out)
}

/// kbit/s received between two readings (None before any RTP arrived).
fn kbps(a: &Value, b: &Value) -> Option<f64> {
    let seconds = (num(b, "t")? - num(a, "t")?) / 1000.0;
    let bytes = num(b, "bytesReceived")? - num(a, "bytesReceived")?;
    (seconds > 0.0).then(|| bytes * 8.0 / 1000.0 / seconds)
}

/// kbit/s over the readings of the trailing `span` of `readings`.
fn trailing_kbps(readings: &[Reading], span: Duration) -> Option<f64> {
    let (end, last) = readings.last()?;
    let (_, first) = readings.iter().find(|(at, _)| end.duration_since(*at) <= span)?;
    kbps(first, last)
}

pub(crate) fn window_json(first: &Value, last: &Value) -> Value {
    match Window::between(first, last) {
        Ok(w) => json!({
            "seconds": round1(w.seconds), "fps": round1(w.fps), "freezes": w.freezes,
            "freeze_seconds": w.freeze_seconds.map(|s| (s * 100.0).round() / 100.0), "nacks": w.nacks, "plis": w.plis,
            "retransmits": w.retransmits, "lost": w.lost, "kbps": w.kbps.map(round1),
        }),
        // No RTP reached the viewer at all.
        Err(e) => json!({"error": format!("{e:#}"), "last": without_offer(last)}),
    }
}

fn span_json(readings: &[Reading]) -> Value {
    match (readings.first(), readings.last()) {
        (Some((_, a)), Some((_, b))) => window_json(a, b),
        _ => Value::Null,
    }
}

/// 3 % loss once the viewer decodes, after `WARM_UP_FRAMES`; one window.
async fn loss(link: &ShapedLink, page: &Page, key: &str, p: &Params) -> Result<Value> {
    let (_, first) = read(page, key).await?;
    let start = num(&first, "framesDecoded").unwrap_or(0.0);
    wait_until("warm-up frames", LIVENESS, || async {
        let (_, v) = read(page, key).await?;
        if num(&v, "framesDecoded").unwrap_or(0.0) < start + WARM_UP_FRAMES {
            bail!("{}", without_offer(&v));
        }
        Ok(())
    })
    .await?;
    link.set_loss(LOSS_PERCENT)?;
    let dropped_before = link.dropped_packets()?;
    let readings = watch(page, key, p.window).await?;
    Ok(json!({
        "window": span_json(&readings),
        "packets_dropped_by_link": link.dropped_packets()? - dropped_before,
        "protocol": first["protocol"],
    }))
}

/// 250 kbit/s from the start: one window from the first frame (or from 30 s without one).
async fn narrow(page: &Page, key: &str, p: &Params) -> Result<Value> {
    let readings = watch(page, key, p.window).await?;
    Ok(json!({"window": span_json(&readings), "kbps_last_5_s": trailing_kbps(&readings, TAIL).map(round1)}))
}

/// 2 Mbit/s -> 300 kbit/s -> 2 Mbit/s, one `phase` each.
async fn recovery(link: &ShapedLink, page: &Page, key: &str, p: &Params) -> Result<Value> {
    let wide = watch(page, key, p.phase).await?;
    let full = trailing_kbps(&wide, TAIL);
    link.set_rate(Some(SQUEEZED_KBIT))?;
    let squeezed = watch(page, key, p.phase).await?;
    link.set_rate(Some(WIDE_KBIT))?;
    let lifted = Instant::now();
    let after = watch(page, key, p.phase).await?;
    // The first reading whose trailing `RATE_SPAN` carries `FULL_SHARE` of the rate before the squeeze.
    let back_after = full.and_then(|full| {
        (1..after.len()).find_map(|i| {
            let rate = trailing_kbps(&after[..=i], RATE_SPAN)?;
            let spanned = after[i].0.duration_since(after[0].0) >= RATE_SPAN;
            (spanned && rate >= FULL_SHARE * full).then(|| round1(after[i].0.duration_since(lifted).as_secs_f64()))
        })
    });
    let whole: Vec<Reading> = [wide.first(), after.last()].into_iter().flatten().cloned().collect();
    Ok(json!({
        "window": span_json(&whole),
        "squeezed": span_json(&squeezed),
        "after": span_json(&after),
        "kbps_full_last_5_s": full.map(round1),
        "kbps_squeezed_last_5_s": trailing_kbps(&squeezed, TAIL).map(round1),
        "kbps_after_last_5_s": trailing_kbps(&after, TAIL).map(round1),
        "back_to_full_after_s": back_after,
    }))
}

/// One sender on one fresh link, measured from the viewers' namespace.
async fn measure(link: Arc<ShapedLink>, which: &str, sender_name: &str, p: Params) -> Result<Value> {
    let mut sender = Running::start(sender_name, &link, &p).await?;
    let browser = Browser::launch().await?;
    let (page, key, first_frame_ms) = connect(&browser, &mut sender).await?;
    eprintln!("{NAME}: {which}, {sender_name}: first frame {first_frame_ms:?} ms");
    let mut result = match which {
        "loss" => loss(&link, &page, key, &p).await?,
        "cap250" => narrow(&page, key, &p).await?,
        "recovery" => recovery(&link, &page, key, &p).await?,
        other => bail!("unknown link {other} (one of {LINKS:?})"),
    };
    let (_, last) = read(&page, key).await?;
    result["first_frame_ms"] = json!(first_frame_ms.map(round1));
    result["codec"] = last["codec"].clone();
    result["frame_size"] = json!([last["frameWidth"], last["frameHeight"]]);
    if let Running::Edgecam(daemon) = &sender {
        result["encodings"] = api_camera(daemon.addr, CAMERA).await?["encodings"].clone();
    }
    Ok(result)
}

fn run_one(which: &str, sender: &str, p: &Params) -> Result<Value> {
    let link = Arc::new(ShapedLink::create()?);
    link.set_rate(match which {
        "cap250" => Some(NARROW_KBIT),
        "recovery" => Some(WIDE_KBIT),
        _ => None,
    })?;
    let (l, which, sender, p) = (link.clone(), which.to_string(), sender.to_string(), p.clone());
    link.run_in_viewer(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(measure(l, &which, &sender, p))
    })
}

fn list(opt: &Options, name: &str, all: &[&str]) -> Result<Vec<String>> {
    let v: Vec<String> = opt.text(name, &all.join(",")).split(',').map(str::to_string).collect();
    if let Some(bad) = v.iter().find(|x| !all.contains(&x.as_str())) {
        bail!("--{name}: {bad} is not one of {all:?}");
    }
    Ok(v)
}

pub async fn run(opt: &Options) -> Result<Value> {
    if let Some(reason) = shaped_link::unavailable() {
        bail!("{NAME} cannot run here: {reason}");
    }
    let p = Params {
        window: Duration::from_secs(opt.get("seconds", 30)?),
        phase: Duration::from_secs(opt.get("phase", 20)?),
        python: opt.text("python", "python3"),
    };
    let senders = list(opt, "senders", &SENDERS)?;
    let links = list(opt, "links", &LINKS)?;
    let mut runs = Vec::new();
    // Link by link, the senders one after another, so that each row is measured under similar load.
    for which in &links {
        for sender in &senders {
            let load_before = crate::harness::loadavg();
            let (w, s, params) = (which.clone(), sender.clone(), p.clone());
            let result = tokio::task::spawn_blocking(move || run_one(&w, &s, &params)).await?;
            let mut row = result.unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
            row["link"] = json!(which);
            row["sender"] = json!(sender);
            row["loadavg_before"] = json!(load_before);
            eprintln!("{NAME}: {row}");
            runs.push(row);
        }
    }
    Ok(json!({
        "setup": format!(
            "sender and a headless Chromium viewer in two network namespaces joined by a veth, the sender's egress \
             shaped (tc tbf; 3 % loss: nftables random drop of its UDP packets at the viewer's end); 640x480@30 \
             H.264 at up to {SENDER_MAX_KBPS} kbit/s; windows of {} s, phases of {} s",
            p.window.as_secs(), p.phase.as_secs()),
        "senders": {
            "edgecam": "release daemon, one camera test_pattern: smpte, bitrate: 1000 (x264)",
            "aiortc": format!("{} (PyAV libx264), bench/peer/aiortc_peer.py --pattern bars --max-kbps {SENDER_MAX_KBPS}",
                              aiortc_version(&p.python)),
            "chromium": format!("{} capturing a canvas (bars, ramp, square, noise), H.264 preferred, maxBitrate {SENDER_MAX_KBPS} kbit/s",
                                crate::harness::machine()["chromium"].as_str().unwrap_or("chromium")),
        },
        "first_frame_definition": "edgecam: the page's ready -> framesDecoded > 0 (trickle ICE); aiortc and Chromium: \
                                   the driver asks for the offer -> framesDecoded > 0 (complete candidates in the SDP)",
        "recovery_definition": format!("back to full: the first moment after the cap lifts when the trailing {} s carry {} % \
                                        of the kbit/s of the last {} s before the squeeze",
                                       RATE_SPAN.as_secs(), FULL_SHARE * 100.0, TAIL.as_secs()),
        "runs": runs,
    }))
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        // Counts are read as floats: 3, not 3.0.
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// "fps | freezes (s) | NACKs | kbit/s" of a window, or its error across them.
fn window_cells(w: &Value) -> String {
    if let Some(e) = w["error"].as_str() {
        return format!("no video ({}) | - | - | -", e.lines().next().unwrap_or(""));
    }
    format!(
        "{} | {} ({} s) | {} | {}",
        cell(&w["fps"]),
        cell(&w["freezes"]),
        cell(&w["freeze_seconds"]),
        cell(&w["nacks"]),
        cell(&w["kbps"])
    )
}

/// The report's section.
pub fn section(v: &Value) -> String {
    let mut md = format!(
        "## Shaped links: edgecam beside aiortc and a Chromium sender\n\n{}. fps, freezes, NACKs and kbit/s \
         over the window (the whole session for the capacity change); size: the last frame's.\n\n\
         | link | sender | size | fps | freezes (total s) | NACKs | kbit/s | first frame ms | kbit/s 2M / 300k / 2M again (last 5 s each) | back to 90 % after | load1 before |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        v["setup"].as_str().unwrap_or("")
    );
    for r in v["runs"].as_array().into_iter().flatten() {
        let load1 = r["loadavg_before"]
            .as_str()
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("?");
        let link = match r["link"].as_str() {
            Some("loss") => format!("{LOSS_PERCENT} % loss"),
            Some("cap250") => format!("{NARROW_KBIT} kbit/s"),
            Some("recovery") => format!("{WIDE_KBIT} -> {SQUEEZED_KBIT} -> {WIDE_KBIT} kbit/s"),
            other => cell(&json!(other)),
        };
        if let Some(e) = r["error"].as_str() {
            md += &format!(
                "| {link} | {} | | failed: {} | | | | | | | {load1} |\n",
                cell(&r["sender"]),
                e.lines().next().unwrap_or("")
            );
            continue;
        }
        let recovery = if r["link"] == "recovery" {
            format!(
                "{} / {} / {} | {}",
                cell(&r["kbps_full_last_5_s"]),
                cell(&r["kbps_squeezed_last_5_s"]),
                cell(&r["kbps_after_last_5_s"]),
                match &r["back_to_full_after_s"] {
                    Value::Null => "not within the phase".to_string(),
                    s => format!("{} s", cell(s)),
                }
            )
        } else {
            "| ".into()
        };
        md += &format!(
            "| {link} | {} | {}x{} | {} | {} | {recovery} | {load1} |\n",
            cell(&r["sender"]),
            cell(&r["frame_size"][0]),
            cell(&r["frame_size"][1]),
            window_cells(&r["window"]),
            match &r["first_frame_ms"] {
                Value::Null => "none in 30 s".to_string(),
                t => cell(t),
            },
        );
    }
    md += &format!(
        "\nSenders: {}. First frame: {}. Recovery: {}.\n\n",
        ["edgecam", "aiortc", "chromium"]
            .iter()
            .map(|s| format!("{s}: {}", v["senders"][s].as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join("; "),
        v["first_frame_definition"].as_str().unwrap_or(""),
        v["recovery_definition"].as_str().unwrap_or("")
    );
    md
}

//! Peer comparison: edgecam against aiortc, a Python WebRTC sender (bench/peer/aiortc_peer.py, in a venv
//! that bench/run.sh makes), sending the same 640x480@30 H.264 stream to 1, 2 and 4 headless Chromium
//! tabs on loopback. Sender process CPU and RSS only (the tabs are not counted), each tab's received fps
//! and kbit/s, and the time to first frame of each. edgecam encodes once per camera and fans out with a
//! tee; aiortc encodes once per peer connection.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use edgecam_testkit::chromium::{Browser, Page};
use edgecam_testkit::daemon::Daemon;
use edgecam_testkit::viewer::{open_viewer, wait_decoding};
use edgecam_testkit::{wait_streaming, wait_viewers, LIVENESS};

use crate::daemon_proc::measure;
use crate::harness::{demo_config, ratio, round1, summary, Options};
use crate::page_stats::{rates, ready_to_first_frame_ms, stats_expr, wait_ws_lists};

pub const NAME: &str = "peer_comparison";
pub const OPTIONS: &[&str] = &["tries", "seconds", "python"];

/// The viewer side of a page for a sender that offers (aiortc, a Chromium sender): a fresh
/// RTCPeerConnection per offer as `window.__pc`; returns the answer once gathered.
pub(crate) const PEER_SETUP_JS: &str = r#"
async (offer) => {
  if (window.__pc) window.__pc.close();
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers: [] });
  window.__pc = pc;
  await pc.setRemoteDescription({ type: 'offer', sdp: offer });
  await pc.setLocalDescription(await pc.createAnswer());
  const deadline = performance.now() + 10000;
  while (pc.iceGatheringState !== 'complete' && performance.now() < deadline)
    await new Promise(r => setTimeout(r, 5));
  return pc.localDescription.sdp;
}"#;

/// Ms from `window.__t0` to the first decoded frame on `window.__pc`, or null after 30 s.
pub(crate) const PEER_FIRST_FRAME_JS: &str = r#"
async () => {
  const pc = window.__pc, deadline = performance.now() + 30000;
  while (performance.now() < deadline) {
    let frames = 0;
    (await pc.getStats()).forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0; });
    if (frames > 0) return performance.now() - window.__t0;
    await new Promise(r => setTimeout(r, 5));
  }
  return null;
}"#;

const PEER_STATS_JS: &str = r#"
async () => {
  const r = { frames: 0, bytes: 0, width: null, height: null, lost: 0, codec: null, t: performance.now() };
  const st = await window.__pc.getStats();
  st.forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'video') {
    r.frames += s.framesDecoded || 0; r.bytes += s.bytesReceived || 0; r.lost += s.packetsLost || 0;
    r.width = s.frameWidth; r.height = s.frameHeight;
    const c = st.get(s.codecId); if (c) r.codec = c.mimeType; } });
  return { peer: r };
}"#;

pub(crate) struct Aiortc {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Aiortc {
    /// bench/peer/aiortc_peer.py with `args`, started by `python`.
    pub(crate) fn start(python: &str, args: &[&str]) -> Result<Aiortc> {
        use std::io::BufRead;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peer/aiortc_peer.py");
        let mut child = std::process::Command::new(python)
            .arg(&script)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {python} {}", script.display()))?;
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Aiortc {
            child,
            stdin,
            lines: rx,
        })
    }

    pub(crate) fn send(&mut self, v: &Value) -> Result<()> {
        use std::io::Write;
        writeln!(self.stdin, "{v}")?;
        self.stdin.flush()?;
        Ok(())
    }

    pub(crate) async fn recv(&self, ty: &str) -> Result<Value> {
        let deadline = Instant::now() + LIVENESS;
        loop {
            match self.lines.try_recv() {
                Ok(l) => {
                    let v: Value = serde_json::from_str(&l)?;
                    if v["type"] == ty {
                        return Ok(v);
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(e) => bail!("aiortc peer: {e}"),
            }
            if Instant::now() > deadline {
                bail!("aiortc peer: no {ty} within {LIVENESS:?}");
            }
        }
    }
}

impl Drop for Aiortc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Viewer counts of the CPU comparison: aiortc encodes once per peer connection, edgecam once per camera.
const PEER_VIEWERS: [usize; 3] = [1, 2, 4];

/// Sender CPU over `seconds` while every page receives (after 2 s of settling), and each page's received
/// fps and kbit/s; `expr` reads a page's getStats as `{key: {frames, bytes, t, ...}}`.
async fn peer_point(pid: u32, pages: &[Page], expr: &str, key: &str, seconds: u64) -> Result<Value> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut before = Vec::new();
    for p in pages {
        before.push(p.eval(expr).await?);
    }
    let cpu = measure(pid, seconds).await?;
    let ids = [key.to_string()];
    let mut per_viewer = Vec::new();
    for (p, a) in pages.iter().zip(&before) {
        let b = p.eval(expr).await?;
        let mut r = rates(a, &b, &ids)[key].clone();
        if !b[key]["codec"].is_null() {
            r["codec"] = b[key]["codec"].clone();
        }
        per_viewer.push(r);
    }
    let col = |k: &str| {
        per_viewer
            .iter()
            .map(|r| r[k].as_f64().unwrap_or(0.0))
            .collect::<Vec<_>>()
    };
    let (fps, kbps) = (col("fps"), col("kbps"));
    Ok(json!({"cpu": cpu, "received": {
        "fps_min": round1(fps.iter().cloned().fold(f64::INFINITY, f64::min)),
        "fps_mean": round1(fps.iter().sum::<f64>() / fps.len() as f64),
        "kbps_mean": round1(kbps.iter().sum::<f64>() / kbps.len() as f64),
        "per_viewer": per_viewer}}))
}

/// Connects aiortc peer connection `id` to `page` (its `window.__pc`): ms from asking for the offer to the
/// first decoded frame.
async fn aiortc_connect(ai: &mut Aiortc, page: &Page, id: usize) -> Result<f64> {
    page.eval("window.__t0 = performance.now()").await?;
    ai.send(&json!({"type": "ready", "id": id}))?;
    let offer = ai.recv("offer").await?;
    let answer = page.eval(&format!("({PEER_SETUP_JS})({})", offer["sdp"])).await?;
    ai.send(&json!({"type": "answer", "id": id, "sdp": answer}))?;
    let v = page.eval(&format!("({PEER_FIRST_FRAME_JS})()")).await?;
    v.as_f64().with_context(|| format!("aiortc peer {id}: no first frame"))
}

fn cpu_of(point: &Value) -> f64 {
    point["cpu"]["cpu_percent_of_one_core"].as_f64().unwrap_or(f64::NAN)
}

/// "aiortc X, PyAV Y" as the venv has them, or why not.
pub(crate) fn aiortc_version(python: &str) -> String {
    let probe = "import aiortc, av; print(f'aiortc {aiortc.__version__}, PyAV {av.__version__}')";
    match std::process::Command::new(python).args(["-c", probe]).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => format!("unknown: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("unknown: {python}: {e}"),
    }
}

pub async fn run(opt: &Options) -> Result<Value> {
    let tries: usize = opt.get("tries", 10)?;
    let seconds = opt.get("seconds", 10)?;
    let python = opt.text("python", "python3");
    let browser = Browser::launch().await?;
    // edgecam: one demo camera (ball, 640x480@30, x264 1000 kbit/s), kept encoding.
    let daemon = Daemon::start(&demo_config("keep-encoding", ""), &["--demo", "1"])?;
    let pid = daemon.pid().context("daemon not running")?;
    wait_streaming(daemon.addr, "demo1").await?;
    let idle_cpu = measure(pid, 5).await?;
    let page = open_viewer(&browser, &daemon, "?autoconnect=0").await?;
    wait_ws_lists(&page, "demo1").await?;
    let mut e_ttff = Vec::new();
    for _ in 0..tries {
        wait_viewers(daemon.addr, "demo1", 0).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = ready_to_first_frame_ms(&page, "demo1", true).await?;
        e_ttff.push(v.as_f64().filter(|t| *t >= 0.0).context("edgecam: no first frame")?);
    }
    wait_viewers(daemon.addr, "demo1", 0).await?;
    page.eval("window.edgecam.connect('demo1')").await?;
    wait_decoding(&page, &["demo1"], None).await?;
    // N viewers = N pages on the one camera; pages are added between counts (1 -> 2 -> 4).
    let mut pages = vec![page];
    let mut e_points = Vec::new();
    let expr = stats_expr(&["demo1".to_string()]);
    for n in PEER_VIEWERS {
        while pages.len() < n {
            let p = open_viewer(&browser, &daemon, "").await?;
            wait_decoding(&p, &["demo1"], None).await?;
            pages.push(p);
        }
        wait_viewers(daemon.addr, "demo1", n as u64).await?;
        let point = peer_point(pid, &pages, &expr, "demo1", seconds).await?;
        eprintln!("peer_comparison: edgecam, {n} viewers: {point}");
        e_points.push(point);
    }
    for p in pages {
        p.close().await?;
    }
    drop(daemon);

    // aiortc: the same, one tab per peer connection (its `window.__pc`), peer id = tab index.
    let mut ai = Aiortc::start(&python, &[])?;
    let apid = ai.child.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ai_idle = measure(apid, 3).await?;
    let page = browser.open("about:blank").await?;
    let mut a_ttff = Vec::new();
    for i in 0..tries {
        if i > 0 {
            ai.send(&json!({"type": "stop", "id": 0}))?;
            ai.recv("stopped").await?;
            page.eval("window.__pc && window.__pc.close()").await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let t = aiortc_connect(&mut ai, &page, 0).await?;
        eprintln!("peer_comparison: aiortc first frame {t:.0} ms");
        a_ttff.push(t);
    }
    let mut pages = vec![page];
    let mut a_points = Vec::new();
    let expr = format!("({PEER_STATS_JS})()");
    for n in PEER_VIEWERS {
        while pages.len() < n {
            let p = browser.open("about:blank").await?;
            aiortc_connect(&mut ai, &p, pages.len()).await?;
            pages.push(p);
        }
        let point = peer_point(apid, &pages, &expr, "peer", seconds).await?;
        eprintln!("peer_comparison: aiortc, {n} viewers: {point}");
        a_points.push(point);
    }
    for p in pages {
        p.close().await?;
    }
    let by_viewers: Vec<Value> = PEER_VIEWERS
        .iter()
        .zip(e_points.iter().zip(&a_points))
        .map(|(n, (e, a))| json!({"viewers": n, "edgecam": e, "aiortc": a, "cpu_ratio": ratio(cpu_of(e), cpu_of(a))}))
        .collect();
    let es = summary(e_ttff);
    let as_ = summary(a_ttff);
    Ok(json!({
        "setup": "1 stream 640x480@30 H.264 to 1, 2 and 4 viewers, each a headless Chromium tab on loopback \
                  (edgecam: one viewer page per viewer on the one demo camera; aiortc: one peer connection per tab, \
                  one source fanned out by MediaRelay); sender process CPU only",
        "edgecam": {"cpu_0_viewers": idle_cpu, "first_frame_ms": es,
                    "first_frame_definition": "page sends ready -> framesDecoded > 0 (trickle ICE)"},
        "aiortc": {"version": aiortc_version(&python), "cpu_0_viewers": ai_idle, "first_frame_ms": as_,
                   "first_frame_definition": "driver asks for an offer -> framesDecoded > 0 (offer/answer with full candidates, relayed over DevTools)"},
        "by_viewers": by_viewers,
        "first_frame_ratio_median": ratio(es["median"].as_f64().unwrap_or(0.0), as_["median"].as_f64().unwrap_or(1.0)),
    }))
}

/// The report's section.
pub fn section(p: &Value) -> String {
    let mut md = String::new();
    let (e, a) = (&p["edgecam"], &p["aiortc"]);
    let rows = p["by_viewers"].as_array().cloned().unwrap_or_default();
    md += &format!("## Peer comparison: side by side with aiortc ({})\n\n\
            edgecam: x264, the daemon's demo ball, one encoder per camera (a tee to one webrtcbin per viewer). \
            aiortc: PyAV libx264, a numpy ball, one encoder per peer connection.\n\n\
            | viewers | CPU % of one core, edgecam | aiortc | edgecam / aiortc | received fps min / mean, edgecam | aiortc | kbit/s per viewer, edgecam | aiortc | RSS MiB, edgecam | aiortc | load1 before, edgecam / aiortc window |\n\
            |---|---|---|---|---|---|---|---|---|---|---|\n",
            p["setup"].as_str().unwrap_or(""));
    let load1 = |m: &Value| {
        m["loadavg_before"]
            .as_str()
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("?")
            .to_string()
    };
    for r in &rows {
        let (re, ra) = (&r["edgecam"], &r["aiortc"]);
        md += &format!(
            "| {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} | {} | {} / {} |\n",
            r["viewers"],
            re["cpu"]["cpu_percent_of_one_core"],
            ra["cpu"]["cpu_percent_of_one_core"],
            r["cpu_ratio"],
            re["received"]["fps_min"],
            re["received"]["fps_mean"],
            ra["received"]["fps_min"],
            ra["received"]["fps_mean"],
            re["received"]["kbps_mean"],
            ra["received"]["kbps_mean"],
            re["cpu"]["rss_mib_mean"],
            ra["cpu"]["rss_mib_mean"],
            load1(&re["cpu"]),
            load1(&ra["cpu"])
        );
    }
    md += &format!(
        "\nCPU ratio target <= 0.2. 0 viewers: edgecam {} % (keeps encoding), aiortc {} % (its source starts \
            with the first peer). First frame median / p95 ms: edgecam {} / {}, aiortc {} / {}; ratio of medians {}. \
            First frame, edgecam: {}; aiortc: {}.\n\n",
        e["cpu_0_viewers"]["cpu_percent_of_one_core"],
        a["cpu_0_viewers"]["cpu_percent_of_one_core"],
        e["first_frame_ms"]["median"],
        e["first_frame_ms"]["p95"],
        a["first_frame_ms"]["median"],
        a["first_frame_ms"]["p95"],
        p["first_frame_ratio_median"],
        e["first_frame_definition"].as_str().unwrap_or(""),
        a["first_frame_definition"].as_str().unwrap_or("")
    );
    md
}

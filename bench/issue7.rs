//! Issue 7 benchmarks, one phase per run (results in bench/results/issue7_<phase>.json; `report` turns them
//! into bench/results/issue7.md). Run through bench/all.sh.
//!
//!   edgecam-issue7 ttff    [--tries 20]        ready -> first decoded frame, idle keep-encoding vs stop
//!   edgecam-issue7 idle    [--seconds 10]      daemon CPU/RSS, 2 demo cameras, 0 viewers, each idle policy
//!   edgecam-issue7 leak    [--cycles 1000]     scripted ws join/leave cycles: threads, fds, RSS before/after
//!   edgecam-issue7 bitrate [--seconds 20]      Chromium getStats bytesReceived per camera (ball, smpte)
//!   edgecam-issue7 scaling [--seconds 10] [--grid 1x1,2x1,...]   cameras x viewers: CPU, RSS, threads, fps
//!   edgecam-issue7 peer    [--tries 10] [--seconds 10] [--python python3]   edgecam vs aiortc: sender CPU
//!                                              at 1, 2 and 4 viewers, first frame
//!   edgecam-issue7 report                      markdown from the JSON files (also issue7_latency.json,
//!                                              written by latency.rs: glass to glass through the daemon)
//!
//! Daemon numbers are the daemon process's own (/proc/PID/stat utime+stime, /proc/PID/status VmRSS and
//! Threads, /proc/PID/fd). Chromium runs on the same 2 cores and is not counted. The 1-minute load average
//! is recorded with every measurement because builds and tests of other engineers share the machine.

use edgecam_testkit as common;
mod harness;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use common::chromium::{Browser, Page};
use common::daemon::Daemon;
use common::viewer::{open_viewer, wait_decoding};
use common::{api_camera, wait_streaming, wait_until, wait_viewers, Signalling, LIVENESS};
use harness::{
    load1, loadavg, machine, measure, proc_json, proc_read, ready_to_first_frame_ms, results_dir, round1, summary,
    wait_ws_lists, Options,
};

/// Open fds of `pid` by kind (socket, pipe, anon_inode:[eventfd], /dev/..., file).
fn fd_kinds(pid: u32) -> Value {
    let mut m = std::collections::BTreeMap::<String, u64>::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let t = std::fs::read_link(e.path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let k = if let Some(i) = t.find(":[") {
            t[..i].to_string()
        } else if t.starts_with("anon_inode:") || t.starts_with("/dev/") {
            t.clone()
        } else {
            "file".into()
        };
        *m.entry(k).or_default() += 1;
    }
    json!(m)
}

/// Threads of `pid` by name (/proc/PID/task/*/comm, digits folded to '#'): which elements own them.
fn thread_names(pid: u32) -> Value {
    let mut m = std::collections::BTreeMap::<String, u64>::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let n: String = n
            .trim()
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        *m.entry(n).or_default() += 1;
    }
    json!(m)
}

fn config(idle: &str, extra: &str) -> String {
    format!("discovery: false\nidle: {idle}\n{extra}")
}

// ------------------------------------------------------------------------------------------- ttff

async fn ttff_policy(browser: &Browser, idle: &str, tries: usize) -> Result<Value> {
    let daemon = Daemon::start(&config(idle, ""), &["--demo", "1"])?;
    let pid = daemon.pid().unwrap();
    if idle == "keep-encoding" {
        wait_streaming(daemon.addr, "demo1").await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let page = open_viewer(browser, &daemon, "?autoconnect=0").await?;
    wait_ws_lists(&page, "demo1").await?;
    let before = proc_read(pid)?;
    let mut ms = Vec::new();
    let mut loads = Vec::new();
    for i in 0..tries {
        // For idle: stop, the camera must really be stopped before each try.
        let want = if idle == "stop" { "idle" } else { "streaming" };
        wait_until(&format!("demo1 {want}, 0 viewers"), LIVENESS, || async {
            let c = api_camera(daemon.addr, "demo1").await?;
            if c["state"] != want || c["viewers"].as_u64() != Some(0) {
                bail!("{c}");
            }
            Ok(())
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = ready_to_first_frame_ms(&page, "demo1", true).await?;
        let t = match v.as_f64() {
            Some(t) if t >= 0.0 => t,
            _ => bail!("try {i}: no first frame ({v})"),
        };
        eprintln!("ttff {idle} try {}: {t:.0} ms (load {})", i + 1, loadavg());
        ms.push(t);
        loads.push(load1());
    }
    page.close().await?;
    wait_viewers(daemon.addr, "demo1", 0).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = proc_read(pid)?;
    let mut s = summary(ms);
    s["idle"] = json!(idle);
    s["load1_mean"] = json!(round1(loads.iter().sum::<f64>() / loads.len() as f64));
    // These tries are also real (Chromium, full DTLS) join/leave cycles: a small leak check.
    s["daemon_before"] = proc_json(&before);
    s["daemon_after_settle_3s"] = proc_json(&after);
    Ok(s)
}

async fn ttff(tries: usize) -> Result<Value> {
    let browser = Browser::launch().await?;
    let keep = ttff_policy(&browser, "keep-encoding", tries).await?;
    let stop = ttff_policy(&browser, "stop", tries).await?;
    Ok(json!({"tries": tries, "camera": "demo1 (ball, 640x480@30, defaults)", "keep_encoding": keep, "stop": stop}))
}

// ------------------------------------------------------------------------------------------- idle

async fn idle(seconds: u64) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for policy in ["keep-encoding", "stop"] {
        let daemon = Daemon::start(&config(policy, ""), &["--demo", "2"])?;
        let pid = daemon.pid().unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let cams = common::api_cameras(daemon.addr).await?;
        let mut m = measure(pid, seconds).await?;
        m["cameras"] = json!(cams
            .iter()
            .map(|c| json!({"id": c["id"], "state": c["state"], "encoded_frames": c["encoded_frames"]}))
            .collect::<Vec<_>>());
        eprintln!("idle {policy}: {m}");
        out.insert(policy.into(), m);
    }
    Ok(Value::Object(out))
}

// ------------------------------------------------------------------------------------------- leak

async fn one_cycle(sig: &mut Signalling, cam: &str) -> Result<()> {
    sig.send(&json!({"type": "ready", "camera": cam})).await?;
    loop {
        let m = sig.recv(LIVENESS).await?;
        match m["type"].as_str() {
            Some("offer") => break,
            Some("cameras") | Some("candidate") => continue,
            _ => bail!("unexpected {m}"),
        }
    }
    sig.send(&json!({"type": "stop", "camera": cam})).await?;
    Ok(())
}

async fn leak(cycles: usize, settle: u64, idle: &str) -> Result<Value> {
    let daemon = Daemon::start(&config(idle, ""), &["--demo", "1"])?;
    let pid = daemon.pid().unwrap();
    if idle == "keep-encoding" {
        wait_streaming(daemon.addr, "demo1").await?;
    }
    // Warm-up: the first viewer branches allocate one-time things (plugin loading, DTLS cert, pools).
    let mut sig = Signalling::connect(daemon.addr).await?;
    for _ in 0..5 {
        one_cycle(&mut sig, "demo1").await?;
    }
    drop(sig);
    wait_viewers(daemon.addr, "demo1", 0).await?;
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let before = proc_read(pid)?;
    let fd_kinds_before = fd_kinds(pid);
    let thread_names_before = thread_names(pid);
    let load_before = loadavg();
    let start = Instant::now();
    let mut checkpoints = Vec::new();
    // A fresh websocket every 50 cycles (a browser reconnecting), ready -> offer -> stop on each.
    let mut done = 0;
    let mut after_first = Value::Null;
    while done < cycles {
        let mut sig = Signalling::connect(daemon.addr).await?;
        for _ in 0..50.min(cycles - done) {
            one_cycle(&mut sig, "demo1").await?;
            done += 1;
        }
        drop(sig);
        if done % 200 == 0 || done == cycles {
            let p = proc_read(pid)?;
            let mut c = proc_json(&p);
            c["cycles"] = json!(done);
            c["elapsed_s"] = json!(round1(start.elapsed().as_secs_f64()));
            eprintln!("leak: {c}");
            checkpoints.push(c);
        }
        if done == 100 && cycles > 100 {
            // A settled point after the first 100 cycles: separates one-time growth from per-cycle growth.
            wait_viewers(daemon.addr, "demo1", 0).await?;
            tokio::time::sleep(Duration::from_secs(settle)).await;
            let p = proc_read(pid)?;
            after_first = proc_json(&p);
            after_first["fd_kinds"] = fd_kinds(pid);
            eprintln!("leak: settled after 100: {after_first}");
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    wait_viewers(daemon.addr, "demo1", 0).await?;
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let after = proc_read(pid)?;
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let after2 = proc_read(pid)?;
    let cam = api_camera(daemon.addr, "demo1").await?;
    Ok(json!({
        "cycles": cycles,
        "idle": idle,
        "kind": "scripted websocket: ready -> offer -> stop (no answer, no ICE/DTLS); new websocket every 50 cycles",
        "seconds": round1(elapsed),
        "cycles_per_s": round1(cycles as f64 / elapsed),
        "settle_s": settle,
        "before": proc_json(&before),
        "after": proc_json(&after),
        "after_2x_settle": proc_json(&after2),
        "after_100_settled": after_first,
        "fd_kinds_before": fd_kinds_before,
        "fd_kinds_after": fd_kinds(pid),
        "thread_names_before": thread_names_before,
        "thread_names_after": thread_names(pid),
        "threads_delta": after.threads as i64 - before.threads as i64,
        "fds_delta": after.fds as i64 - before.fds as i64,
        "rss_delta_mib": round1((after.rss_kib as f64 - before.rss_kib as f64) / 1024.0),
        "rss_delta_mib_2x_settle": round1((after2.rss_kib as f64 - before.rss_kib as f64) / 1024.0),
        "checkpoints": checkpoints,
        "camera_after": cam,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }))
}

// ------------------------------------------------------------------------------------------- getStats

/// Per camera on the page: framesDecoded, bytesReceived, frame size, and a timestamp.
const STATS_JS: &str = r#"
async (ids) => {
  const out = {};
  for (const id of ids) {
    const cam = window.edgecam.cameras.get(id);
    const r = { frames: 0, bytes: 0, width: null, height: null, lost: 0, t: performance.now() };
    if (cam && cam.pc) {
      (await cam.pc.getStats()).forEach(s => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          r.frames += s.framesDecoded || 0; r.bytes += s.bytesReceived || 0; r.lost += s.packetsLost || 0;
          r.width = s.frameWidth; r.height = s.frameHeight;
        }
      });
    }
    out[id] = r;
  }
  return out;
}"#;

async fn stats(page: &Page, ids: &[String]) -> Result<Value> {
    page.eval(&format!("({STATS_JS})({})", json!(ids))).await
}

/// Per camera: fps and kbit/s between two stats reads.
fn rates(a: &Value, b: &Value, ids: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    for id in ids {
        let (x, y) = (&a[id], &b[id]);
        let dt = (y["t"].as_f64().unwrap_or(0.0) - x["t"].as_f64().unwrap_or(0.0)) / 1000.0;
        let df = y["frames"].as_f64().unwrap_or(0.0) - x["frames"].as_f64().unwrap_or(0.0);
        let db = y["bytes"].as_f64().unwrap_or(0.0) - x["bytes"].as_f64().unwrap_or(0.0);
        out.insert(
            id.clone(),
            json!({"fps": round1(df / dt), "kbps": round1(db * 8.0 / 1000.0 / dt), "seconds": round1(dt),
                   "width": y["width"], "height": y["height"], "packets_lost": y["lost"]}),
        );
    }
    Value::Object(out)
}

async fn bitrate(seconds: u64) -> Result<Value> {
    let daemon = Daemon::start(&config("keep-encoding", ""), &["--demo", "2"])?;
    let ids: Vec<String> = vec!["demo1".into(), "demo2".into()];
    let browser = Browser::launch().await?;
    let page = open_viewer(&browser, &daemon, "?cameras=demo1,demo2").await?;
    wait_decoding(&page, &["demo1", "demo2"], None).await?;
    tokio::time::sleep(Duration::from_secs(3)).await; // past the first keyframe burst
    let load_before = loadavg();
    let a = stats(&page, &ids).await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let b = stats(&page, &ids).await?;
    let mut r = rates(&a, &b, &ids);
    r["demo1"]["pattern"] = json!("ball");
    r["demo2"]["pattern"] = json!("smpte");
    page.close().await?;
    Ok(
        json!({"settings": "defaults (640x480@30, bitrate 1000 kbit/s configured)", "seconds": seconds,
              "per_camera": r, "loadavg_before": load_before, "loadavg_after": loadavg()}),
    )
}

// ------------------------------------------------------------------------------------------- scaling

async fn scaling_point(browser: &Browser, cams: usize, viewers: usize, small: bool, seconds: u64) -> Result<Value> {
    let extra = if small {
        "defaults: {width: 320, height: 240}\n"
    } else {
        ""
    };
    let daemon = Daemon::start(&config("keep-encoding", extra), &["--demo", &cams.to_string()])?;
    let pid = daemon.pid().unwrap();
    let ids: Vec<String> = (1..=cams).map(|i| format!("demo{i}")).collect();
    let idr: Vec<&str> = ids.iter().map(String::as_str).collect();
    for id in &ids {
        wait_streaming(daemon.addr, id).await?;
    }
    let mut pages = Vec::new();
    for _ in 0..viewers {
        pages.push(open_viewer(browser, &daemon, "").await?);
    }
    for p in &pages {
        wait_decoding(p, &idr, None).await?;
    }
    for id in &ids {
        wait_viewers(daemon.addr, id, viewers as u64).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut a = Vec::new();
    for p in &pages {
        a.push(stats(p, &ids).await?);
    }
    let frames_a: Vec<u64> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(
                api_camera(daemon.addr, id).await?["encoded_frames"]
                    .as_u64()
                    .unwrap_or(0),
            );
        }
        v
    };
    let t0 = Instant::now();
    let mut m = measure(pid, seconds).await?;
    let dt = t0.elapsed().as_secs_f64();
    let mut enc_fps = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let f = api_camera(daemon.addr, id).await?["encoded_frames"]
            .as_u64()
            .unwrap_or(0);
        enc_fps.push(round1((f - frames_a[i]) as f64 / dt));
    }
    let mut fps = Vec::new();
    let mut kbps = Vec::new();
    for (i, p) in pages.iter().enumerate() {
        let b = stats(p, &ids).await?;
        let r = rates(&a[i], &b, &ids);
        for id in &ids {
            fps.push(r[id]["fps"].as_f64().unwrap_or(0.0));
            kbps.push(r[id]["kbps"].as_f64().unwrap_or(0.0));
        }
    }
    for p in pages {
        p.close().await?;
    }
    let min = fps.iter().cloned().fold(f64::INFINITY, f64::min);
    let mean = fps.iter().sum::<f64>() / fps.len() as f64;
    m["cameras"] = json!(cams);
    m["viewers"] = json!(viewers);
    m["size"] = json!(if small { "320x240" } else { "640x480" });
    m["encoded_fps_per_camera"] = json!(enc_fps);
    m["delivered_fps_per_viewer_camera"] = json!(fps);
    m["delivered_fps_min"] = json!(round1(min));
    m["delivered_fps_mean"] = json!(round1(mean));
    m["kbps_mean"] = json!(round1(kbps.iter().sum::<f64>() / kbps.len() as f64));
    m["keeps_30fps"] = json!(min >= 28.5);
    eprintln!("scaling {cams}x{viewers} {}: {m}", m["size"]);
    Ok(m)
}

async fn scaling(seconds: u64, grid: &str) -> Result<Value> {
    let browser = Browser::launch().await?;
    let mut points = Vec::new();
    for g in grid.split(',') {
        let small = g.ends_with('s');
        let g = g.trim_end_matches('s');
        let (c, v) = g.split_once('x').context("grid entries are CxV, CxVs for 320x240")?;
        let (c, v): (usize, usize) = (c.parse()?, v.parse()?);
        match scaling_point(&browser, c, v, small, seconds).await {
            Ok(m) => points.push(m),
            Err(e) => {
                eprintln!("scaling {c}x{v}: FAILED {e:#}");
                points.push(
                    json!({"cameras": c, "viewers": v, "size": if small {"320x240"} else {"640x480"},
                                   "error": format!("{e:#}"), "loadavg_after": loadavg()}),
                );
            }
        }
        // Save after every point: the grid may be cut short by the deadline.
        save("scaling", &json!({"points": points}), false)?;
    }
    Ok(json!({"points": points}))
}

// ------------------------------------------------------------------------------------------- peer (aiortc)

/// The aiortc side of a page: a fresh RTCPeerConnection per offer; returns the answer once gathered.
const PEER_SETUP_JS: &str = r#"
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

const PEER_FIRST_FRAME_JS: &str = r#"
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

struct Aiortc {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Aiortc {
    fn start(python: &str, script: &str) -> Result<Aiortc> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {python} {script}"))?;
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

    fn send(&mut self, v: &Value) -> Result<()> {
        use std::io::Write;
        writeln!(self.stdin, "{v}")?;
        self.stdin.flush()?;
        Ok(())
    }

    async fn recv(&self, ty: &str) -> Result<Value> {
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

/// Ratio to 0.001.
fn ratio(a: f64, b: f64) -> f64 {
    (a / b * 1000.0).round() / 1000.0
}

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

async fn peer(tries: usize, seconds: u64, python: &str) -> Result<Value> {
    let browser = Browser::launch().await?;
    // edgecam: one demo camera (ball, 640x480@30, x264 1000 kbit/s), kept encoding.
    let daemon = Daemon::start(&config("keep-encoding", ""), &["--demo", "1"])?;
    let pid = daemon.pid().unwrap();
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
    let expr = format!("({STATS_JS})([\"demo1\"])");
    for n in PEER_VIEWERS {
        while pages.len() < n {
            let p = open_viewer(&browser, &daemon, "").await?;
            wait_decoding(&p, &["demo1"], None).await?;
            pages.push(p);
        }
        wait_viewers(daemon.addr, "demo1", n as u64).await?;
        let point = peer_point(pid, &pages, &expr, "demo1", seconds).await?;
        eprintln!("peer: edgecam, {n} viewers: {point}");
        e_points.push(point);
    }
    for p in pages {
        p.close().await?;
    }
    drop(daemon);

    // aiortc: the same, one tab per peer connection (its `window.__pc`), peer id = tab index.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peer/aiortc_peer.py");
    let mut ai = Aiortc::start(python, &script.display().to_string())?;
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
        eprintln!("peer: aiortc first frame {t:.0} ms");
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
        eprintln!("peer: aiortc, {n} viewers: {point}");
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
        "aiortc": {"version": "aiortc (pip, see bench/all.sh)", "cpu_0_viewers": ai_idle, "first_frame_ms": as_,
                   "first_frame_definition": "driver asks for an offer -> framesDecoded > 0 (offer/answer with full candidates, relayed over DevTools)"},
        "by_viewers": by_viewers,
        "first_frame_ratio_median": ratio(es["median"].as_f64().unwrap_or(0.0), as_["median"].as_f64().unwrap_or(1.0)),
    }))
}

// ------------------------------------------------------------------------------------------- report

fn save(name: &str, v: &Value, log: bool) -> Result<()> {
    let path = harness::write_result(&results_dir(), &format!("issue7_{name}"), v)?;
    if log {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn load(name: &str) -> Option<Value> {
    let s = std::fs::read_to_string(results_dir().join(format!("issue7_{name}.json"))).ok()?;
    serde_json::from_str(&s).ok()
}

fn report() -> Result<String> {
    let m = machine();
    let mut md = format!(
        "# Issue 7 benchmarks\n\nMachine: {} cores, {}, {}, {}, kernel {}. Every number below carries \
         the load average it was measured under; the headless Chromium viewers run on the same cores.\n\
         Daemon: release build, `--demo N`, x264 profile, loopback ICE; viewer = headless Chromium tab.\n\n",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["gstreamer"].as_str().unwrap_or("?"),
        m["chromium"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?")
    );
    if let Some(t) = load("ttff") {
        md += "## 1. Time to first frame (`ready` sent -> first decoded frame, Chromium getStats polled every 5 ms)\n\n\
               | idle policy | tries | median ms | p95 ms | min | max | load1 mean | target |\n|---|---|---|---|---|---|---|---|\n";
        for k in ["keep_encoding", "stop"] {
            let r = &t[k];
            md += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r["idle"].as_str().unwrap_or(k),
                r["n"],
                r["median"],
                r["p95"],
                r["min"],
                r["max"],
                r["load1_mean"],
                if k == "keep_encoding" { "<= 300 ms" } else { "-" }
            );
        }
        md += "\nThe same tries are real Chromium join/leave cycles (full ICE/DTLS); daemon before -> after (3 s settle):\n\n\
               | idle policy | threads | fds | RSS MiB |\n|---|---|---|---|\n";
        for k in ["keep_encoding", "stop"] {
            let r = &t[k];
            let (a, b) = (&r["daemon_before"], &r["daemon_after_settle_3s"]);
            md += &format!(
                "| {} | {} -> {} | {} -> {} | {} -> {} |\n",
                r["idle"].as_str().unwrap_or(k),
                a["threads"],
                b["threads"],
                a["fds"],
                b["fds"],
                a["rss_mib"],
                b["rss_mib"]
            );
        }
        md += "\n";
    }
    if let Some(i) = load("idle") {
        md += "## 1b. Idle cost: 2 demo cameras (640x480@30), 0 viewers\n\n\
               | idle policy | CPU % of one core | RSS MiB mean / max | threads | fds | camera states | load avg before / after |\n|---|---|---|---|---|---|---|\n";
        for k in ["keep-encoding", "stop"] {
            let r = &i[k];
            let states: Vec<String> = r["cameras"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{}={}",
                        c["id"].as_str().unwrap_or("?"),
                        c["state"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            md += &format!(
                "| {k} | {} | {} / {} | {} | {} | {} | {} / {} |\n",
                r["cpu_percent_of_one_core"],
                r["rss_mib_mean"],
                r["rss_mib_max"],
                r["threads"],
                r["fds"],
                states.join(" "),
                r["loadavg_before"].as_str().unwrap_or("?"),
                r["loadavg_after"].as_str().unwrap_or("?")
            );
        }
        md += "\n";
    }
    for l in ["leak", "leak_idle_stop"].iter().filter_map(|n| load(n)) {
        md += &format!(
            "## 2. Leak cycles (idle: {})\n\n{} cycles, {} ({} s, {} cycles/s); settle {} s; load avg {} -> {}.\n\n\
             | | threads | fds | RSS MiB |\n|---|---|---|---|\n| before | {} | {} | {} |\n| after settle | {} | {} | {} |\n| after 2x settle | {} | {} | {} |\n\n\
             Deltas: threads {}, fds {}, RSS {} MiB ({} MiB after 2x settle). Target: threads and fds back to baseline, RSS growth <= 2 MB.\n\n\
             Checkpoints (cycles: threads / fds / RSS MiB): {}\n\n",
            l["idle"].as_str().unwrap_or("keep-encoding"), l["cycles"], l["kind"].as_str().unwrap_or(""), l["seconds"], l["cycles_per_s"], l["settle_s"],
            l["loadavg_before"].as_str().unwrap_or("?"), l["loadavg_after"].as_str().unwrap_or("?"),
            l["before"]["threads"], l["before"]["fds"], l["before"]["rss_mib"],
            l["after"]["threads"], l["after"]["fds"], l["after"]["rss_mib"],
            l["after_2x_settle"]["threads"], l["after_2x_settle"]["fds"], l["after_2x_settle"]["rss_mib"],
            l["threads_delta"], l["fds_delta"], l["rss_delta_mib"], l["rss_delta_mib_2x_settle"],
            l["checkpoints"].as_array().into_iter().flatten()
                .map(|c| format!("{}: {} / {} / {}", c["cycles"], c["threads"], c["fds"], c["rss_mib"]))
                .collect::<Vec<_>>().join("; ")
        );
        let a = &l["after_100_settled"];
        if !a.is_null() {
            md += &format!("Settled after the first 100 cycles: threads {}, fds {}, RSS {} MiB; so cycles 100..{} changed threads by {}, fds by {}, RSS by {} MiB.\n\nfd kinds before: `{}`; after: `{}`\n\n",
                a["threads"], a["fds"], a["rss_mib"], l["cycles"],
                l["after"]["threads"].as_i64().unwrap_or(0) - a["threads"].as_i64().unwrap_or(0),
                l["after"]["fds"].as_i64().unwrap_or(0) - a["fds"].as_i64().unwrap_or(0),
                round1(l["after"]["rss_mib"].as_f64().unwrap_or(0.0) - a["rss_mib"].as_f64().unwrap_or(0.0)),
                l["fd_kinds_before"], l["fd_kinds_after"]);
            if !l["thread_names_after"].is_null() {
                md += &format!(
                    "Threads by name before: `{}`; after: `{}`\n\n",
                    l["thread_names_before"], l["thread_names_after"]
                );
            }
        }
    }
    if let Some(b) = load("bitrate") {
        md += &format!(
            "## 3. Bitrate received at default settings (Chromium getStats bytesReceived over {} s)\n\n\
                        | camera | pattern | kbit/s | fps | size | packets lost |\n|---|---|---|---|---|---|\n",
            b["seconds"]
        );
        for id in ["demo1", "demo2"] {
            let r = &b["per_camera"][id];
            md += &format!(
                "| {id} | {} | {} | {} | {}x{} | {} |\n",
                r["pattern"].as_str().unwrap_or("?"),
                r["kbps"],
                r["fps"],
                r["width"],
                r["height"],
                r["packets_lost"]
            );
        }
        md += &format!(
            "\nPromised: about 1000 kbit/s per 640x480@30 camera. Load avg {} -> {}.\n\n",
            b["loadavg_before"].as_str().unwrap_or("?"),
            b["loadavg_after"].as_str().unwrap_or("?")
        );
    }
    if let Some(s) = load("scaling") {
        md += "## 4. Scaling (idle keep-encoding; viewer = one Chromium tab showing every camera)\n\n\
               | cameras | viewers | size | CPU % of one core | RSS MiB mean | threads | encoded fps/camera | delivered fps min / mean | kbit/s mean | 30 fps kept | load avg before / after |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
        for p in s["points"].as_array().into_iter().flatten() {
            if let Some(e) = p["error"].as_str() {
                md += &format!(
                    "| {} | {} | {} | failed: {} | | | | | | | - / {} |\n",
                    p["cameras"],
                    p["viewers"],
                    p["size"].as_str().unwrap_or("?"),
                    e.lines().next().unwrap_or(""),
                    p["loadavg_after"].as_str().unwrap_or("?")
                );
                continue;
            }
            let enc: Vec<String> = p["encoded_fps_per_camera"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| x.to_string())
                .collect();
            md += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} / {} |\n",
                p["cameras"],
                p["viewers"],
                p["size"].as_str().unwrap_or("?"),
                p["cpu_percent_of_one_core"],
                p["rss_mib_mean"],
                p["threads"],
                enc.join(" "),
                p["delivered_fps_min"],
                p["delivered_fps_mean"],
                p["kbps_mean"],
                if p["keeps_30fps"] == true { "yes" } else { "NO" },
                p["loadavg_before"].as_str().unwrap_or("?"),
                p["loadavg_after"].as_str().unwrap_or("?")
            );
        }
        md += "\n";
    }

    if let Some(l) = load("latency") {
        let row = |what: &str, k: &str, target: &str| {
            let s = &l[k];
            format!(
                "| {what} | {} | {} | {} | {} | {} | {} | {target} |\n",
                s["n"], s["median"], s["p95"], s["max"], s["min"], s["mean"]
            )
        };
        let c = &l["chromium"];
        md += &format!("## 5. Glass-to-glass latency, 640x480@30, through the daemon (bench/latency.rs)\n\n\
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
        // Earlier runs kept as issue7_latency_run<N>.json: how much the load moves these numbers.
        let runs: Vec<String> = (1..=9)
            .filter_map(|n| load(&format!("latency_run{n}")))
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
    }
    if let Some(p) = load("peer") {
        let (e, a) = (&p["edgecam"], &p["aiortc"]);
        let rows = p["by_viewers"].as_array().cloned().unwrap_or_default();
        md += &format!("## 6. Side by side with aiortc ({})\n\n\
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
    }
    if let Ok(extra) = std::fs::read_to_string(results_dir().join("issue7_notes.md")) {
        md += &extra;
    }
    Ok(md)
}

// ------------------------------------------------------------------------------------------- main

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    const USAGE: &str = "edgecam-issue7 ttff|idle|leak|bitrate|scaling|peer|report [--option value]...";
    let mut args = std::env::args().skip(1);
    let phase = args.next().unwrap_or_default();
    let known = ["tries", "seconds", "cycles", "settle", "idle", "grid", "python"];
    let opt = Options::parse(args, &known, USAGE)?;
    let num = |k: &str, d: u64| opt.get(k, d);
    let result = match phase.as_str() {
        "ttff" => ttff(num("tries", 20)? as usize).await?,
        "idle" => idle(num("seconds", 10)?).await?,
        "leak" => {
            let idle = opt.text("idle", "keep-encoding");
            let r = leak(num("cycles", 1000)? as usize, num("settle", 5)?, &idle).await?;
            let name = if idle == "stop" { "leak_idle_stop" } else { "leak" };
            save(name, &r, true)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            return Ok(());
        }
        "bitrate" => bitrate(num("seconds", 20)?).await?,
        "scaling" => {
            let grid = opt.text("grid", "1x1,1x2,1x4,2x1,2x2,2x4,4x1,4x2,4x4,8x1,8x2,8x4,8x4s");
            scaling(num("seconds", 10)?, &grid).await?
        }
        "peer" => {
            let py = opt.text("python", "python3");
            peer(num("tries", 10)? as usize, num("seconds", 10)?, &py).await?
        }
        "report" => {
            let md = report()?;
            std::fs::write(results_dir().join("issue7.md"), &md)?;
            println!("{md}");
            return Ok(());
        }
        _ => bail!("usage: {USAGE}"),
    };
    save(&phase, &result, true)?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

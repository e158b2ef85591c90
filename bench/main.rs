//! edgecam benchmark: what the daemon costs with two demo cameras (640x480@30 each) at 0, 1 and 3 viewers,
//! and how long a viewer waits from `ready` to its first decoded frame.
//!
//! - CPU and memory are the daemon process's own, from /proc/PID/stat (utime + stime over the window) and
//!   /proc/PID/status (VmRSS, Threads, sampled each second). A viewer is one headless Chromium tab of the
//!   viewer page, watching both cameras (two peer connections). Chromium runs on the same machine and
//!   competes for the same cores; its own cost is not counted.
//! - Ready to first frame: a fresh tab with `?autoconnect=0` calls `edgecam.connect('demo1')`; the time
//!   runs from the page's `ready` message leaving on the websocket (`ws.send` is wrapped) to getStats
//!   reporting `framesDecoded > 0` (polled every 5 ms), with no other viewers connected.
//!
//! Every phase first checks that its viewers are really decoding, and again after the window, so the
//! numbers are for working streams. Run through bench/run.sh.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use common::chromium::{Browser, Page};
use common::daemon::Daemon;
use common::viewer::{open_viewer, sample, wait_decoding, wait_rising};
use common::{wait_streaming, wait_until, wait_viewers, LIVENESS};

const CAMERAS: [&str; 2] = ["demo1", "demo2"];

struct Args {
    seconds: u64,
    tries: usize,
    out: std::path::PathBuf,
}

fn args() -> Result<Args> {
    let mut args = Args {
        seconds: 10,
        tries: 7,
        out: "bench/results".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--seconds" => args.seconds = value()?.parse()?,
            "--tries" => args.tries = value()?.parse()?,
            "--out" => args.out = value()?.into(),
            _ => bail!("usage: edgecam-bench [--seconds N] [--tries N] [--out DIR]"),
        }
    }
    Ok(args)
}

/// One read of the daemon's /proc entries.
struct ProcSample {
    at: Instant,
    cpu_ticks: u64,
    rss_kib: u64,
    threads: u64,
}

fn proc_sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15 (proc(5)).
    let rest: Vec<&str> = stat[stat.rfind(')').context("bad stat")? + 2..]
        .split_whitespace()
        .collect();
    let cpu_ticks = rest[11].parse::<u64>()? + rest[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(ProcSample {
        at: Instant::now(),
        cpu_ticks,
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:")?,
    })
}

/// CPU (% of one core) and memory of `pid` over `seconds`, sampled each second.
async fn measure(pid: u32, seconds: u64) -> Result<Value> {
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut samples = vec![proc_sample(pid)?];
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(proc_sample(pid)?);
    }
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    let elapsed = last.at.duration_since(first.at).as_secs_f64();
    let cpu = (last.cpu_ticks - first.cpu_ticks) as f64 / ticks_per_s / elapsed * 100.0;
    let rss: Vec<f64> = samples.iter().map(|s| s.rss_kib as f64 / 1024.0).collect();
    Ok(json!({
        "seconds": round1(elapsed),
        "cpu_percent_of_one_core": round1(cpu),
        "rss_mib_mean": round1(rss.iter().sum::<f64>() / rss.len() as f64),
        "rss_mib_max": round1(rss.iter().cloned().fold(0.0, f64::max)),
        "threads": last.threads,
    }))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Every tab decodes both cameras (framesDecoded rising).
async fn all_decoding(pages: &[Page]) -> Result<()> {
    for page in pages {
        let base = wait_decoding(page, &CAMERAS, None).await?;
        wait_rising(page, &base).await?;
    }
    Ok(())
}

async fn still_decoding(pages: &[Page]) -> Result<()> {
    for page in pages {
        let base = sample(page, &CAMERAS).await?;
        wait_rising(page, &base).await?;
    }
    Ok(())
}

/// Milliseconds from the page's `ready` for `id` to its first decoded frame; null if it never came.
const READY_TO_FRAME_JS: &str = r#"
async (id) => {
  const ec = window.edgecam, ws = ec.ws;
  let tReady = null;
  const send = ws.send;
  ws.send = function (data) {
    try {
      const m = JSON.parse(data);
      if (m.type === 'ready' && m.camera === id && tReady === null) tReady = performance.now();
    } catch (e) {}
    return send.call(this, data);
  };
  try {
    ec.connect(id);
    const deadline = performance.now() + 30000;
    while (performance.now() < deadline) {
      const cam = ec.cameras.get(id);
      if (cam && cam.pc) {
        let frames = 0;
        (await cam.pc.getStats()).forEach(s => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
        });
        if (frames > 0) return tReady === null ? -1 : performance.now() - tReady;
      }
      await new Promise(r => setTimeout(r, 5));
    }
    return null;
  } finally {
    delete ws.send;
  }
}"#;

async fn ready_to_first_frame(browser: &Browser, daemon: &Daemon) -> Result<f64> {
    let page = open_viewer(browser, daemon, "?autoconnect=0").await?;
    wait_until("page websocket open with demo1 listed", LIVENESS, || async {
        let ok = page
            .eval("window.edgecam.ws && window.edgecam.ws.readyState === 1 && window.edgecam.cameras.has('demo1')")
            .await?;
        if ok != Value::Bool(true) {
            bail!("not yet");
        }
        Ok(())
    })
    .await?;
    let ms = page
        .eval(&format!("({READY_TO_FRAME_JS})('demo1')"))
        .await?;
    page.close().await?;
    wait_viewers(daemon.addr, "demo1", 0).await?;
    match ms.as_f64() {
        Some(ms) if ms >= 0.0 => Ok(ms),
        Some(_) => bail!("the page decoded demo1 without sending `ready` through edgecam.ws"),
        None => bail!("no decoded frame within 30 s"),
    }
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "kernel": command_line("uname", &["-r"]),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        "chromium": command_line("/usr/bin/chromium", &["--version"]),
        "gstreamer": command_line("gst-inspect-1.0", &["--version"]),
    })
}

fn markdown(report: &Value) -> String {
    let m = &report["machine"];
    let mut md = format!(
        "Daemon with `--demo 2` (2 cameras, 640x480@30, encoder {}), {} build; one viewer = one Chromium tab \
         showing both cameras. Machine: {} cores, {}; load average at start {}.\n\n\
         | viewers | peer connections | CPU, % of one core | RSS, MiB (mean / max) | threads |\n|---|---|---|---|---|\n",
        report["encoder"].as_str().unwrap_or("?"),
        report["daemon_build"].as_str().unwrap_or("?"),
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["loadavg_at_start"].as_str().unwrap_or("?"),
    );
    for p in report["phases"].as_array().into_iter().flatten() {
        md += &format!(
            "| {} | {} | {} | {} / {} | {} |\n",
            p["viewers"],
            p["peer_connections"],
            p["cpu_percent_of_one_core"],
            p["rss_mib_mean"],
            p["rss_mib_max"],
            p["threads"]
        );
    }
    let r = &report["ready_to_first_frame_ms"];
    md += &format!(
        "\nTime from `ready` to the first decoded frame in Chromium: median {} ms (min {}, max {}, {} tries).\n",
        r["median"], r["min"], r["max"], r["tries"]
    );
    md
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = args()?;
    let machine = machine();
    let daemon_bin = std::env::var("EDGECAM_BIN").context("set EDGECAM_BIN (bench/run.sh does)")?;
    let daemon_build = if daemon_bin.contains("/release/") {
        "release"
    } else {
        "debug"
    };
    eprintln!(
        "bench: {daemon_bin}, {} s per phase, {} latency tries",
        args.seconds, args.tries
    );

    let daemon = Daemon::demo(2)?;
    let pid = daemon.pid().context("daemon not running")?;
    for id in CAMERAS {
        wait_streaming(daemon.addr, id).await?;
    }
    let encoder = common::api_camera(daemon.addr, "demo1").await?["encoder"].clone();
    tokio::time::sleep(Duration::from_secs(3)).await; // past start-up work

    let mut phases = Vec::new();
    let mut record = |viewers: usize, mut m: Value| {
        m["viewers"] = json!(viewers);
        m["peer_connections"] = json!(viewers * CAMERAS.len());
        eprintln!("bench: {m}");
        phases.push(m);
    };
    record(0, measure(pid, args.seconds).await?);

    let browser = Browser::launch().await?;
    let mut pages = Vec::new();
    for target in [1usize, 3] {
        while pages.len() < target {
            pages.push(open_viewer(&browser, &daemon, "").await?);
        }
        all_decoding(&pages).await?;
        for id in CAMERAS {
            wait_viewers(daemon.addr, id, target as u64).await?;
        }
        let m = measure(pid, args.seconds).await?;
        still_decoding(&pages).await?;
        record(target, m);
    }
    for page in pages.drain(..) {
        page.close().await?;
    }
    for id in CAMERAS {
        wait_viewers(daemon.addr, id, 0).await?;
    }

    let mut latencies = Vec::new();
    for i in 0..args.tries {
        let ms = ready_to_first_frame(&browser, &daemon).await?;
        eprintln!("bench: ready -> first frame, try {}: {ms:.0} ms", i + 1);
        latencies.push(ms);
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = latencies[latencies.len() / 2];

    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let report = json!({
        "unix_time": stamp,
        "machine": machine,
        "daemon_build": daemon_build,
        "encoder": encoder,
        "phases": phases,
        "ready_to_first_frame_ms": {
            "tries": latencies.len(),
            "median": median.round() as u64,
            "min": latencies[0].round() as u64,
            "max": latencies[latencies.len() - 1].round() as u64,
            "all": latencies.iter().map(|x| x.round() as u64).collect::<Vec<_>>(),
        },
    });
    std::fs::create_dir_all(&args.out)?;
    let json_path = args.out.join(format!("viewers-{stamp}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")?;
    std::fs::write(
        args.out.join("viewers.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    let md = markdown(&report);
    std::fs::write(args.out.join("viewers.md"), &md)?;
    eprintln!(
        "bench: wrote {} and viewers.json / viewers.md",
        json_path.display()
    );
    println!("{md}");
    Ok(())
}

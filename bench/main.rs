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

use edgecam_testkit as common;
mod harness;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use common::chromium::{Browser, Page};
use common::daemon::Daemon;
use common::viewer::{open_viewer, sample, wait_decoding, wait_rising};
use common::{wait_streaming, wait_viewers};
use harness::{machine, measure, ready_to_first_frame_ms, summary, wait_ws_lists, Options};

const CAMERAS: [&str; 2] = ["demo1", "demo2"];

struct Args {
    seconds: u64,
    tries: usize,
    out: std::path::PathBuf,
}

fn args() -> Result<Args> {
    let opt = Options::parse(
        std::env::args().skip(1),
        &["seconds", "tries", "out"],
        "edgecam-bench [--seconds N] [--tries N] [--out DIR]",
    )?;
    Ok(Args {
        seconds: opt.get("seconds", 10)?,
        tries: opt.get("tries", 7)?,
        out: opt.text("out", "bench/results").into(),
    })
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

async fn ready_to_first_frame(browser: &Browser, daemon: &Daemon) -> Result<f64> {
    let page = open_viewer(browser, daemon, "?autoconnect=0").await?;
    wait_ws_lists(&page, "demo1").await?;
    let ms = ready_to_first_frame_ms(&page, "demo1", false).await?;
    page.close().await?;
    wait_viewers(daemon.addr, "demo1", 0).await?;
    match ms.as_f64() {
        Some(ms) if ms >= 0.0 => Ok(ms),
        Some(_) => bail!("the page decoded demo1 without sending `ready` through edgecam.ws"),
        None => bail!("no decoded frame within 30 s"),
    }
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
    let mut ready_to_first_frame = summary(latencies);
    ready_to_first_frame["tries"] = json!(args.tries);

    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let report = json!({
        "unix_time": stamp,
        "machine": machine,
        "daemon_build": daemon_build,
        "encoder": encoder,
        "phases": phases,
        "ready_to_first_frame_ms": ready_to_first_frame,
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
    eprintln!("bench: wrote {} and viewers.json / viewers.md", json_path.display());
    println!("{md}");
    Ok(())
}

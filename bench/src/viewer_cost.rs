//! Viewer cost: what the daemon costs with two demo cameras (640x480@30 each) at 0, 1 and 3 viewers, where a
//! viewer is one headless Chromium tab of the viewer page watching both cameras (two peer connections).
//!
//! CPU and memory are the daemon process's own, from /proc/PID/stat (utime + stime over the window) and
//! /proc/PID/status (VmRSS, Threads, sampled each second). Every phase first checks that its viewers are
//! really decoding, and again after the window, so the numbers are for working streams.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use edgecam_testkit::chromium::{Browser, Page};
use edgecam_testkit::daemon::Daemon;
use edgecam_testkit::viewer::{open_viewer, sample, wait_decoding, wait_rising};
use edgecam_testkit::{api_camera, wait_streaming, wait_viewers};

use crate::daemon_proc::measure;
use crate::harness::{daemon_bin, Options};

pub const NAME: &str = "viewer_cost";
pub const OPTIONS: &[&str] = &["seconds"];

const CAMERAS: [&str; 2] = ["demo1", "demo2"];

/// Viewer counts after the 0-viewer phase; tabs are added between them.
const VIEWERS: [usize; 2] = [1, 3];

/// Past the daemon's start-up work before the first window.
const SETTLE: Duration = Duration::from_secs(3);

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

pub async fn run(opt: &Options) -> Result<Value> {
    let seconds = opt.get("seconds", 10)?;
    let daemon_build = if daemon_bin()?.contains("/release/") {
        "release"
    } else {
        "debug"
    };

    let daemon = Daemon::demo(CAMERAS.len() as u32)?;
    let pid = daemon.pid().context("daemon not running")?;
    for id in CAMERAS {
        wait_streaming(daemon.addr, id).await?;
    }
    let encoder = api_camera(daemon.addr, CAMERAS[0]).await?["encoder"].clone();
    tokio::time::sleep(SETTLE).await;

    let mut phases = Vec::new();
    let mut record = |viewers: usize, mut m: Value| {
        m["viewers"] = json!(viewers);
        m["peer_connections"] = json!(viewers * CAMERAS.len());
        eprintln!("viewer_cost: {m}");
        phases.push(m);
    };
    record(0, measure(pid, seconds).await?);

    let browser = Browser::launch().await?;
    let mut pages = Vec::new();
    for target in VIEWERS {
        while pages.len() < target {
            pages.push(open_viewer(&browser, &daemon, "").await?);
        }
        all_decoding(&pages).await?;
        for id in CAMERAS {
            wait_viewers(daemon.addr, id, target as u64).await?;
        }
        let m = measure(pid, seconds).await?;
        still_decoding(&pages).await?;
        record(target, m);
    }
    for page in pages {
        page.close().await?;
    }
    Ok(json!({"daemon_build": daemon_build, "encoder": encoder, "phases": phases}))
}

/// The report's section.
pub fn section(v: &Value) -> String {
    let m = &v["machine"];
    let mut md = format!(
        "## Viewer cost: 2 demo cameras, 0, 1 and 3 viewers\n\n\
         Daemon with `--demo 2` (2 cameras, 640x480@30, encoder {}), {} build; one viewer = one Chromium tab \
         showing both cameras. Load average at start {}.\n\n\
         | viewers | peer connections | CPU, % of one core | RSS, MiB (mean / max) | threads |\n|---|---|---|---|---|\n",
        v["encoder"].as_str().unwrap_or("?"),
        v["daemon_build"].as_str().unwrap_or("?"),
        m["loadavg_at_start"].as_str().unwrap_or("?"),
    );
    for p in v["phases"].as_array().into_iter().flatten() {
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
    md + "\n"
}

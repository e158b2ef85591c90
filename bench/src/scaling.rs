//! Scaling: where 30 fps stops. For each point of a grid of cameras x viewers (a viewer is one Chromium
//! tab showing every camera), the daemon's CPU, RSS and threads, each camera's encoded frame rate
//! (/api/cameras encoded_frames) and each viewer's delivered fps and kbit/s (getStats); `CxVs` points run
//! at 320x240 instead of 640x480. A point that fails is recorded with its error and the grid goes on.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use edgecam_testkit::chromium::Browser;
use edgecam_testkit::daemon::Daemon;
use edgecam_testkit::viewer::{open_viewer, wait_decoding};
use edgecam_testkit::{api_camera, wait_streaming, wait_viewers};

use crate::daemon_proc::measure;
use crate::harness::{demo_config, loadavg, round1, write_result, Options};
use crate::page_stats::{rates, stats};

pub const NAME: &str = "scaling";
pub const OPTIONS: &[&str] = &["seconds", "grid"];

/// The full grid: 1, 2, 4 and 8 cameras x 1, 2 and 4 viewers at 640x480, and the heaviest at 320x240.
const GRID: &str = "1x1,1x2,1x4,2x1,2x2,2x4,4x1,4x2,4x4,8x1,8x2,8x4,8x4s";

/// A delivered rate at or above this counts as keeping 30 fps (getStats over a 10 s window moves by a
/// frame or so either way).
const KEEPS_30FPS: f64 = 28.5;

/// Past the viewers' first keyframes before the window opens.
const SETTLE: Duration = Duration::from_secs(2);

async fn scaling_point(browser: &Browser, cams: usize, viewers: usize, small: bool, seconds: u64) -> Result<Value> {
    let extra = if small {
        "defaults: {width: 320, height: 240}\n"
    } else {
        ""
    };
    let daemon = Daemon::start(&demo_config("keep-encoding", extra), &["--demo", &cams.to_string()])?;
    let pid = daemon.pid().context("daemon not running")?;
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
    tokio::time::sleep(SETTLE).await;
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
    m["keeps_30fps"] = json!(min >= KEEPS_30FPS);
    eprintln!("scaling {cams}x{viewers} {}: {m}", m["size"]);
    Ok(m)
}

pub async fn run(opt: &Options, out: &Path) -> Result<Value> {
    let seconds = opt.get("seconds", 10)?;
    let grid = opt.text("grid", GRID);
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
        write_result(out, NAME, &json!({"points": points}))?;
    }
    let failed = points.iter().filter(|p| !p["error"].is_null()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} grid points failed (each is in {NAME}.json with its error)",
            points.len()
        );
    }
    Ok(json!({"points": points}))
}

/// The report's section.
pub fn section(s: &Value) -> String {
    let mut md = String::from(
        "## Scaling (idle keep-encoding; viewer = one Chromium tab showing every camera)\n\n\
         | cameras | viewers | size | CPU % of one core | RSS MiB mean | threads | encoded fps/camera | delivered fps min / mean | kbit/s mean | 30 fps kept | load avg before / after |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
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
    md
}

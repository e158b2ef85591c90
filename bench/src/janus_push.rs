//! Push cost: what the daemon pays for one camera (640x480@30) watched by one Chromium tab directly,
//! against the same camera pushed over WHIP to Janus (Debian's 1.1.2 with simple-whip-server,
//! testkit/src/janus.rs) and watched by 3 tabs through Janus's VideoRoom. With the push the daemon serves
//! one session however many watch, so the second should cost about what the first does.
//!
//! Runs in a private network namespace (Janus gathers no loopback candidates; testkit/src/netns.rs), as
//! root. CPU is the daemon process's own (/proc); Janus, Node and Chromium share the cores and are not
//! counted. Every phase checks its viewers decode before and after the window.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use edgecam_testkit::chromium::{Browser, Page};
use edgecam_testkit::daemon::Daemon;
use edgecam_testkit::janus::{wait_watching, Janus};
use edgecam_testkit::netns::{self, NetnsPair, ADDR_A};
use edgecam_testkit::viewer::{open_viewer, sample, wait_decoding, wait_rising};
use edgecam_testkit::{api_camera, wait_streaming};

use crate::daemon_proc::measure;
use crate::harness::{daemon_bin, Options};

pub const NAME: &str = "janus_push";
pub const OPTIONS: &[&str] = &["seconds", "viewers"];

const CAMERA: &str = "door";
const WIDTH: u64 = 640;
/// Frames a tab decodes before (and, counted again, after) a window: a second of video.
const FRAMES: u64 = 30;
/// Past the daemon's start-up work (trial encodes, the first keyframes) before a window.
const SETTLE: Duration = Duration::from_secs(3);

fn config(push: Option<&str>) -> String {
    let push = push
        .map(|url| format!(", push: {{whip: \"{url}\"}}"))
        .unwrap_or_default();
    format!("discovery: false\ncameras:\n  {CAMERA}: {{test_pattern: ball{push}}}\n")
}

pub async fn run(opt: &Options) -> Result<Value> {
    if let Some(reason) = netns::unavailable() {
        bail!("{NAME} needs network namespaces: {reason}");
    }
    let seconds: u64 = opt.get("seconds", 10)?;
    let viewers: usize = opt.get("viewers", 3)?;
    let daemon_build = if daemon_bin()?.contains("/release/") {
        "release"
    } else {
        "debug"
    };
    tokio::task::spawn_blocking(move || NetnsPair::create()?.block_on(move || phases(seconds, viewers)))
        .await?
        .map(|phases| json!({"daemon_build": daemon_build, "camera": "640x480@30 ball, x264", "phases": phases}))
}

async fn phases(seconds: u64, viewers: usize) -> Result<Vec<Value>> {
    let ice = ADDR_A.to_string();
    let browser = Browser::launch().await?;

    // One tab watching the daemon directly.
    let mut daemon = Daemon::start(&config(None), &["--ice-local-address", &ice])?;
    wait_streaming(daemon.addr, CAMERA).await?;
    let page = open_viewer(&browser, &daemon, &format!("?cameras={CAMERA}")).await?;
    let base = wait_decoding(&page, &[CAMERA], None).await?;
    wait_rising(&page, &base).await?;
    tokio::time::sleep(SETTLE).await;
    let mut direct = measure(daemon.pid().context("daemon not running")?, seconds).await?;
    let base = sample(&page, &[CAMERA]).await?;
    wait_rising(&page, &base).await?;
    direct["case"] = json!("1 viewer, direct");
    direct["daemon_viewers"] = api_camera(daemon.addr, CAMERA).await?["viewers"].clone();
    eprintln!("{NAME}: {direct}");
    page.close().await?;
    daemon.stop()?;

    // The same camera pushed to Janus, `viewers` tabs watching through it.
    let janus = Janus::start(ADDR_A.into()).await?;
    let whip = janus.create_endpoint(CAMERA, "").await?;
    let daemon = Daemon::start(&config(Some(&whip)), &["--ice-local-address", &ice])?;
    wait_streaming(daemon.addr, CAMERA).await?;
    let url = janus.viewer_page()?;
    let mut pages: Vec<Page> = Vec::new();
    for _ in 0..viewers {
        pages.push(browser.open(&url).await?);
    }
    for page in &pages {
        wait_watching(page, 1, FRAMES, WIDTH)
            .await
            .with_context(|| janus.logs())?;
    }
    tokio::time::sleep(SETTLE).await;
    let before: Vec<u64> = frames(&pages).await?;
    let mut pushed = measure(daemon.pid().context("daemon not running")?, seconds).await?;
    for (page, before) in pages.iter().zip(before) {
        wait_watching(page, 1, before + FRAMES, WIDTH).await?;
    }
    pushed["case"] = json!(format!("{viewers} viewers through Janus (WHIP push)"));
    pushed["daemon_viewers"] = api_camera(daemon.addr, CAMERA).await?["viewers"].clone();
    eprintln!("{NAME}: {pushed}");
    for page in pages {
        page.close().await?;
    }
    Ok(vec![direct, pushed])
}

async fn frames(pages: &[Page]) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for page in pages {
        out.push(page.eval("window.janusView()").await?["frames"].as_u64().unwrap_or(0));
    }
    Ok(out)
}

/// The report's section.
pub fn section(v: &Value) -> String {
    let m = &v["machine"];
    let mut md = format!(
        "## Push cost: one camera watched directly vs through Janus (WHIP push)\n\n\
         One camera ({}), {} build, in a private network namespace; Janus 1.1.2 (Debian 12) with \
         simple-whip-server; each viewer a Chromium tab. CPU is the daemon's own. Load average at start {}.\n\n\
         | case | the daemon's viewers | CPU, % of one core | RSS, MiB (mean / max) | threads |\n|---|---|---|---|---|\n",
        v["camera"].as_str().unwrap_or("?"),
        v["daemon_build"].as_str().unwrap_or("?"),
        m["loadavg_at_start"].as_str().unwrap_or("?"),
    );
    for p in v["phases"].as_array().into_iter().flatten() {
        md += &format!(
            "| {} | {} | {} | {} / {} | {} |\n",
            p["case"].as_str().unwrap_or("?"),
            p["daemon_viewers"],
            p["cpu_percent_of_one_core"],
            p["rss_mib_mean"],
            p["rss_mib_max"],
            p["threads"]
        );
    }
    md + "\n"
}

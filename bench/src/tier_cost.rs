//! Tier cost: what a camera's low tier (the second H.264 encoding for a weak viewer) costs the daemon.
//! One camera (SMPTE bars at 1 Mbit/s, as in shaped_comparison) and two Chromium viewers, one in the
//! daemon's namespace and one behind the shaped cable (testkit's `ShapedLink`): first both clean (one encode), then the
//! shaped one capped at 300 kbit/s until the camera runs two encodings (the API's `encodings`), each phase
//! measured over the same window. The difference is the low tier's cost: its scale and encode, minus
//! the fewer bits the capped viewer is sent.
//!
//! Daemon process only (/proc), release build; the viewers' decoding is checked in every window (getStats).
//! Needs root (network namespaces).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use edgecam_testkit::chromium::{Browser, Page};
use edgecam_testkit::daemon::Daemon;
use edgecam_testkit::link_stats::{link_stats_expr, num, reading, without_offer};
use edgecam_testkit::shaped_link::{self, ShapedLink};
use edgecam_testkit::{api_camera, wait_streaming, wait_until, wait_viewers, LIVENESS};

use crate::daemon_proc::measure;
use crate::harness::{daemon_bin, round1, Options};
use crate::remote_page::RemotePage;
use crate::shaped_comparison::{window_json, CAMERA, CONFIG};

pub const NAME: &str = "tier_cost";
pub const OPTIONS: &[&str] = &["seconds"];

/// The capped viewer's link: the "one on a 300 kbit/s link".
const CAPPED_KBIT: u32 = 300;
/// After a change (a join, a tier move) before a window: the new session's keyframe and estimate.
const SETTLE: Duration = Duration::from_secs(5);
/// How long the camera may take to start its low tier once a link is capped: the estimate has to fall
/// (seconds) and a viewer changes tier at most every 10 s (src/camera/bitrate.rs).
const TIER_WAIT: Duration = Duration::from_secs(90);

/// A viewer page, in this thread's namespace or another one.
enum Viewer {
    Here(Page),
    Clean(RemotePage),
}

impl Viewer {
    async fn read(&self) -> Result<Value> {
        let js = link_stats_expr(CAMERA);
        let v = match self {
            Viewer::Here(page) => page.eval(&js).await?,
            Viewer::Clean(page) => page.eval(&js).await?,
        };
        reading(CAMERA, v)
    }

    /// Waits until the viewer decodes, and then for `frames` more.
    async fn decoding(&self, what: &str, frames: f64) -> Result<()> {
        let base = wait_until(&format!("{what} decoding"), LIVENESS, || async {
            let v = self.read().await?;
            if v["status"] != "live" || num(&v, "framesDecoded").unwrap_or(0.0) < 1.0 {
                bail!("{}", without_offer(&v));
            }
            Ok(v)
        })
        .await?;
        let start = num(&base, "framesDecoded").unwrap_or(0.0);
        wait_until(&format!("{what} decoding {frames} frames more"), LIVENESS, || async {
            let v = self.read().await?;
            if num(&v, "framesDecoded").unwrap_or(0.0) < start + frames {
                bail!("{}", without_offer(&v));
            }
            Ok(())
        })
        .await
    }
}

async fn encodings(daemon: &Daemon) -> Result<serde_json::Map<String, Value>> {
    Ok(api_camera(daemon.addr, CAMERA).await?["encodings"]
        .as_object()
        .cloned()
        .unwrap_or_default())
}

/// The daemon's CPU and RSS over `seconds`, with each viewer's window and the camera's encodings and links.
async fn phase(daemon: &Daemon, viewers: &[(&str, &Viewer)], seconds: u64) -> Result<Value> {
    let pid = daemon.pid().context("daemon not running")?;
    let mut before = Vec::new();
    for (_, v) in viewers {
        before.push(v.read().await?);
    }
    let cpu = measure(pid, seconds).await?;
    let mut windows = serde_json::Map::new();
    for ((name, v), b) in viewers.iter().zip(&before) {
        windows.insert(name.to_string(), window_json(b, &v.read().await?));
    }
    let camera = api_camera(daemon.addr, CAMERA).await?;
    Ok(json!({"daemon": cpu, "viewers": windows, "encodings": camera["encodings"], "links": camera["links"]}))
}

async fn phases(link: Arc<ShapedLink>, daemon: Daemon, seconds: u64) -> Result<Value> {
    wait_streaming(daemon.addr, CAMERA).await?;
    let url = daemon.url(&format!("/?cameras={CAMERA}"));
    let browser = Browser::launch().await?;
    let shaped = Viewer::Here(browser.open(&url).await?);
    // The clean viewer sits in the daemon's own namespace (local delivery, never shaped). On the clean
    // second cable the daemon's UDP ICE socket on 10.78.0.1 neither answered nor reached the viewer at
    // 10.78.1.2 (plain UDP sockets between the two addresses do); ICE fell back to TCP and the session
    // never completed.
    let clean = Viewer::Clean(RemotePage::open(&|f| link.spawn_in_daemon(f), &url).await?);
    let viewers = [("clean", &clean), ("shaped", &shaped)];
    for (name, v) in viewers {
        v.decoding(name, 30.0).await.with_context(|| daemon.log_tail(40))?;
    }
    wait_viewers(daemon.addr, CAMERA, 2).await?;
    let one = encodings(&daemon).await?;
    if one.len() != 1 {
        bail!("two clean viewers, yet the camera runs {one:?}");
    }
    tokio::time::sleep(SETTLE).await;
    let one_encode = phase(&daemon, &viewers, seconds).await?;
    eprintln!("{NAME}: two clean viewers: {one_encode}");

    link.set_rate(Some(CAPPED_KBIT))?;
    let two = wait_until("a second encoding for the capped viewer", TIER_WAIT, || async {
        let now = encodings(&daemon).await?;
        if now.len() != 2 {
            bail!("{now:?}");
        }
        Ok(now)
    })
    .await
    .with_context(|| daemon.log_tail(40))?;
    eprintln!("{NAME}: encodings with the cap: {two:?}");
    shaped
        .decoding("the capped viewer on its tier", 30.0)
        .await
        .with_context(|| daemon.log_tail(40))?;
    tokio::time::sleep(SETTLE).await;
    let two_encodes = phase(&daemon, &viewers, seconds).await?;
    eprintln!("{NAME}: one clean, one at {CAPPED_KBIT} kbit/s: {two_encodes}");
    if encodings(&daemon).await?.len() != 2 {
        bail!("the low tier stopped during the window: {}", daemon.log_tail(40));
    }

    let of = |p: &Value, k: &str| p["daemon"][k].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "one_encode": one_encode,
        "two_encodes": two_encodes,
        "low_tier_cpu_percent_of_one_core": round1(of(&two_encodes, "cpu_percent_of_one_core") - of(&one_encode, "cpu_percent_of_one_core")),
        "low_tier_rss_mib": round1(of(&two_encodes, "rss_mib_mean") - of(&one_encode, "rss_mib_mean")),
    }))
}

pub async fn run(opt: &Options) -> Result<Value> {
    if let Some(reason) = shaped_link::unavailable() {
        bail!("{NAME} cannot run here: {reason}");
    }
    let seconds: u64 = opt.get("seconds", 20)?;
    let build = if daemon_bin()?.contains("/release/") {
        "release"
    } else {
        "debug"
    };
    let mut result = tokio::task::spawn_blocking(move || -> Result<Value> {
        let link = Arc::new(ShapedLink::create()?);
        let ip = link.daemon_ip();
        let daemon = link.run_in_daemon(move || Daemon::start_on(ip, CONFIG, &[]))?;
        let l = link.clone();
        link.run_in_viewer(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(phases(l, daemon, seconds))
        })
    })
    .await??;
    result["daemon_build"] = json!(build);
    result["setup"] = json!(format!(
        "one camera (test_pattern: smpte, bitrate: 1000, x264), two headless Chromium viewers (one in the daemon's namespace, one behind a veth cable); \
         first both clean, then one capped at {CAPPED_KBIT} kbit/s (tc tbf) until the camera runs its low tier; \
         daemon process CPU and RSS over {seconds} s each"
    ));
    Ok(result)
}

/// The report's section.
pub fn section(v: &Value) -> String {
    let mut md = format!(
        "## Tier cost: one camera, two viewers, one or two encodes\n\n{} ({} build).\n\n\
         | phase | encodings (kbit/s) | daemon CPU, % of one core | RSS MiB mean | threads | clean viewer fps / kbit/s | shaped viewer fps / kbit/s | load1 before |\n\
         |---|---|---|---|---|---|---|---|\n",
        v["setup"].as_str().unwrap_or(""),
        v["daemon_build"].as_str().unwrap_or("?")
    );
    for (name, key) in [
        ("two clean viewers", "one_encode"),
        ("one clean, one at 300 kbit/s", "two_encodes"),
    ] {
        let p = &v[key];
        let d = &p["daemon"];
        let w = |n: &str| format!("{} / {}", p["viewers"][n]["fps"], p["viewers"][n]["kbps"]);
        md += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
            p["encodings"],
            d["cpu_percent_of_one_core"],
            d["rss_mib_mean"],
            d["threads"],
            w("clean"),
            w("shaped"),
            d["loadavg_before"]
                .as_str()
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or("?")
        );
    }
    md + &format!(
        "\nThe low tier costs {} % of one core and {} MiB (the difference of the two rows).\n\n",
        v["low_tier_cpu_percent_of_one_core"], v["low_tier_rss_mib"]
    )
}

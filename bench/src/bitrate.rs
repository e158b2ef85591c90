//! Bitrate: what Chromium receives per camera at the default settings (640x480@30, 1000 kbit/s
//! configured), from getStats bytesReceived and framesDecoded over a window, for the two demo patterns:
//! demo1's mostly black moving ball and demo2's busy SMPTE bars.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use edgecam_testkit::chromium::Browser;
use edgecam_testkit::daemon::Daemon;
use edgecam_testkit::viewer::{open_viewer, wait_decoding};

use crate::harness::{demo_config, loadavg, Options};
use crate::page_stats::{rates, stats};

pub const NAME: &str = "bitrate";
pub const OPTIONS: &[&str] = &["seconds"];

/// Past the first keyframes, which are bigger than the stream's average.
const SETTLE: Duration = Duration::from_secs(3);

pub async fn run(opt: &Options) -> Result<Value> {
    let seconds = opt.get("seconds", 20)?;
    let daemon = Daemon::start(&demo_config("keep-encoding", ""), &["--demo", "2"])?;
    let ids: Vec<String> = vec!["demo1".into(), "demo2".into()];
    let browser = Browser::launch().await?;
    let page = open_viewer(&browser, &daemon, "?cameras=demo1,demo2").await?;
    wait_decoding(&page, &["demo1", "demo2"], None).await?;
    tokio::time::sleep(SETTLE).await;
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

/// The report's section.
pub fn section(b: &Value) -> String {
    let mut md = format!(
        "## Bitrate received at default settings (Chromium getStats bytesReceived over {} s)\n\n\
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
    md
}

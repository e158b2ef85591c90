//! Time to first frame: from the viewer page's `ready` for a camera leaving on the websocket to Chromium's
//! getStats reporting `framesDecoded > 0` on the new peer connection (polled every 5 ms), for one demo
//! camera (ball, 640x480@30, defaults) under each idle policy: `keep-encoding` (the camera is already
//! encoding) and `stop` (the viewer's arrival starts the pipeline). Each try is a real Chromium join and
//! leave (full ICE and DTLS), so the daemon's threads, fds and RSS before and after are recorded too.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use edgecam_testkit::chromium::Browser;
use edgecam_testkit::daemon::Daemon;
use edgecam_testkit::viewer::open_viewer;
use edgecam_testkit::{api_camera, wait_streaming, wait_until, wait_viewers, LIVENESS};

use crate::daemon_proc::{proc_json, proc_read};
use crate::harness::{demo_config, load1, loadavg, round1, summary, Options};
use crate::page_stats::{ready_to_first_frame_ms, wait_ws_lists};

pub const NAME: &str = "first_frame";
pub const OPTIONS: &[&str] = &["tries"];

/// Past the daemon's start-up work before the first try.
const START_SETTLE: Duration = Duration::from_secs(2);

/// Between tries, once the camera shows its idle state: the last try's peer connection is closing.
const BETWEEN_TRIES: Duration = Duration::from_millis(300);

/// After the last try, before the daemon's counts are read again (the result's `daemon_after_settle_3s`).
const END_SETTLE: Duration = Duration::from_secs(3);

async fn one_policy(browser: &Browser, idle: &str, tries: usize) -> Result<Value> {
    let daemon = Daemon::start(&demo_config(idle, ""), &["--demo", "1"])?;
    let pid = daemon.pid().context("daemon not running")?;
    if idle == "keep-encoding" {
        wait_streaming(daemon.addr, "demo1").await?;
    }
    tokio::time::sleep(START_SETTLE).await;
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
        tokio::time::sleep(BETWEEN_TRIES).await;
        let v = ready_to_first_frame_ms(&page, "demo1", true).await?;
        let t = match v.as_f64() {
            Some(t) if t >= 0.0 => t,
            _ => bail!("try {i}: no first frame ({v})"),
        };
        eprintln!("first_frame {idle} try {}: {t:.0} ms (load {})", i + 1, loadavg());
        ms.push(t);
        loads.push(load1());
    }
    page.close().await?;
    wait_viewers(daemon.addr, "demo1", 0).await?;
    tokio::time::sleep(END_SETTLE).await;
    let after = proc_read(pid)?;
    let mut s = summary(ms);
    s["idle"] = json!(idle);
    s["load1_mean"] = json!(round1(loads.iter().sum::<f64>() / loads.len() as f64));
    // These tries are also real (Chromium, full DTLS) join/leave cycles: a small leak check.
    s["daemon_before"] = proc_json(&before);
    s["daemon_after_settle_3s"] = proc_json(&after);
    Ok(s)
}

pub async fn run(opt: &Options) -> Result<Value> {
    let tries: usize = opt.get("tries", 20)?;
    let browser = Browser::launch().await?;
    let keep = one_policy(&browser, "keep-encoding", tries).await?;
    let stop = one_policy(&browser, "stop", tries).await?;
    Ok(json!({"tries": tries, "camera": "demo1 (ball, 640x480@30, defaults)", "keep_encoding": keep, "stop": stop}))
}

/// The report's section.
pub fn section(t: &Value) -> String {
    let mut md = String::from(
        "## Time to first frame (`ready` sent -> first decoded frame, Chromium getStats polled every 5 ms)\n\n\
         | idle policy | tries | median ms | p95 ms | min | max | load1 mean | target |\n|---|---|---|---|---|---|---|---|\n",
    );
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
    md
}

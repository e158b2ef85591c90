//! Idle cost: the daemon's CPU and memory with 2 demo cameras (640x480@30) and no viewer, under each idle
//! policy (`keep-encoding` keeps the pipelines running, `stop` stops them), with each camera's state and
//! frames encoded as /api/cameras shows them.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use edgecam_testkit::api_cameras;
use edgecam_testkit::daemon::Daemon;

use crate::daemon_proc::measure;
use crate::harness::{demo_config, Options};

pub const NAME: &str = "idle_cost";
pub const OPTIONS: &[&str] = &["seconds"];

/// Past the daemon's start-up work (trial encodes, the first pipelines) before the window opens.
const SETTLE: Duration = Duration::from_secs(4);

pub async fn run(opt: &Options) -> Result<Value> {
    let seconds = opt.get("seconds", 10)?;
    let mut out = serde_json::Map::new();
    for policy in ["keep-encoding", "stop"] {
        let daemon = Daemon::start(&demo_config(policy, ""), &["--demo", "2"])?;
        let pid = daemon.pid().context("daemon not running")?;
        tokio::time::sleep(SETTLE).await;
        let cams = api_cameras(daemon.addr).await?;
        let mut m = measure(pid, seconds).await?;
        m["cameras"] = json!(cams
            .iter()
            .map(|c| json!({"id": c["id"], "state": c["state"], "encoded_frames": c["encoded_frames"]}))
            .collect::<Vec<_>>());
        eprintln!("idle_cost {policy}: {m}");
        out.insert(policy.into(), m);
    }
    Ok(Value::Object(out))
}

/// The report's section.
pub fn section(i: &Value) -> String {
    let mut md = String::from(
        "## Idle cost: 2 demo cameras (640x480@30), 0 viewers\n\n\
         | idle policy | CPU % of one core | RSS MiB mean / max | threads | fds | camera states | load avg before / after |\n|---|---|---|---|---|---|---|\n",
    );
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
    md
}

//! edgecam-bench: one measurement per run, each in the source file of its name, writing
//! `<out>/<measurement>.json` (default bench/results); `report` turns every result in `<out>` into
//! `<out>/REPORT.md`. bench/run.sh runs them all (and bench/encoders.sh, the encoder measurement).
//!
//!   edgecam-bench latency         [--frames 300]      glass to glass through the daemon
//!   edgecam-bench first_frame     [--tries 20]        `ready` -> first decoded frame, idle keep-encoding and stop
//!   edgecam-bench idle_cost       [--seconds 10]      CPU/RSS, 2 demo cameras, 0 viewers, each idle policy
//!   edgecam-bench viewer_cost     [--seconds 10]      CPU/RSS, 2 demo cameras, 0, 1 and 3 viewer tabs
//!   edgecam-bench janus_push      [--seconds 10] [--viewers 3]   CPU/RSS, 1 viewer direct vs N through Janus (root)
//!   edgecam-bench leaks           [--cycles 1000] [--stop-cycles 300] [--settle 5]   join/leave cycles
//!   edgecam-bench bitrate         [--seconds 20]      kbit/s received per camera at the defaults
//!   edgecam-bench scaling         [--seconds 10] [--grid 1x1,2x1,...]   cameras x viewers: CPU, fps
//!   edgecam-bench peer_comparison [--tries 10] [--seconds 10] [--python python3]   against aiortc
//!   edgecam-bench full_load       [--viewers 32] [--sockets 128] [--seconds 10]   the daemon at its limits
//!   edgecam-bench shaped_comparison [--seconds 30] [--phase 20] [--python python3] [--senders ..] [--links ..]
//!                                                     shaped links: edgecam, aiortc, a Chromium sender (root)
//!   edgecam-bench tier_cost       [--seconds 20]      CPU/RSS of the low tier: 2 clean viewers vs 1 clean + 1 at 300 kbit/s (root)
//!   edgecam-bench report
//!
//! Every measurement also takes `--out DIR`. The daemon is EDGECAM_BIN (bench/run.sh: the release build).
//! Daemon numbers are the daemon process's own (/proc); Chromium runs on the same cores and is not counted.
//! The load average is recorded with every measurement: other work shares the machine.

mod bitrate;
mod daemon_proc;
mod first_frame;
mod full_load;
mod harness;
mod idle_cost;
mod janus_push;
mod latency;
mod leaks;
mod page_stats;
mod peer_comparison;
mod remote_page;
mod report;
mod scaling;
mod shaped_comparison;
mod tier_cost;
mod viewer_cost;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use harness::{daemon_bin, write_result, Options};

/// Where results go without `--out`.
const RESULTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results");

/// The report's file in the results directory.
const REPORT: &str = "REPORT.md";

/// Every measurement and the options it takes (`--out` besides).
const MEASUREMENTS: [(&str, &[&str]); 12] = [
    (latency::NAME, latency::OPTIONS),
    (first_frame::NAME, first_frame::OPTIONS),
    (idle_cost::NAME, idle_cost::OPTIONS),
    (viewer_cost::NAME, viewer_cost::OPTIONS),
    (janus_push::NAME, janus_push::OPTIONS),
    (leaks::NAME, leaks::OPTIONS),
    (bitrate::NAME, bitrate::OPTIONS),
    (scaling::NAME, scaling::OPTIONS),
    (peer_comparison::NAME, peer_comparison::OPTIONS),
    (full_load::NAME, full_load::OPTIONS),
    (shaped_comparison::NAME, shaped_comparison::OPTIONS),
    (tier_cost::NAME, tier_cost::OPTIONS),
];

fn usage() -> String {
    let names: Vec<&str> = MEASUREMENTS.iter().map(|(name, _)| *name).collect();
    format!(
        "edgecam-bench {}|report [--option value]... [--out DIR]",
        names.join("|")
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_default();
    let usage = usage();
    let known: Vec<&str> = match MEASUREMENTS.iter().find(|(n, _)| *n == name) {
        Some((_, options)) => options.iter().copied().chain(["out"]).collect(),
        None if name == "report" => vec!["out"],
        None => bail!("usage: {usage}"),
    };
    let opt = Options::parse(args, &known, &usage)?;
    let out = PathBuf::from(opt.text("out", RESULTS));

    if name == "report" {
        let md = report::report(&out)?;
        let path = out.join(REPORT);
        std::fs::write(&path, &md).with_context(|| format!("write {}", path.display()))?;
        println!("{md}");
        eprintln!("wrote {}", path.display());
        return Ok(());
    }
    daemon_bin()?;
    let result = match name.as_str() {
        latency::NAME => latency::run(&opt).await?,
        first_frame::NAME => first_frame::run(&opt).await?,
        idle_cost::NAME => idle_cost::run(&opt).await?,
        viewer_cost::NAME => viewer_cost::run(&opt).await?,
        janus_push::NAME => janus_push::run(&opt).await?,
        leaks::NAME => leaks::run(&opt).await?,
        bitrate::NAME => bitrate::run(&opt).await?,
        scaling::NAME => scaling::run(&opt, &out).await?,
        peer_comparison::NAME => peer_comparison::run(&opt).await?,
        full_load::NAME => full_load::run(&opt).await?,
        shaped_comparison::NAME => shaped_comparison::run(&opt).await?,
        tier_cost::NAME => tier_cost::run(&opt).await?,
        _ => unreachable!("{name} is in MEASUREMENTS"),
    };
    let path = write_result(&out, &name, &result)?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    eprintln!("wrote {}", path.display());
    Ok(())
}

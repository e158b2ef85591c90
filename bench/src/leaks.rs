//! Leaks: scripted websocket viewers joining and leaving one demo camera (ready -> offer -> stop, no answer,
//! so no ICE or DTLS; a new websocket every 50 cycles, as a browser reconnecting), then the daemon's
//! threads, fds (by kind), threads by name and RSS against the baseline after a settle. Once with
//! `idle: keep-encoding` (each cycle a viewer branch added and removed) and once with `idle: stop` (each
//! cycle also a pipeline start and stop).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use edgecam_testkit::daemon::Daemon;
use edgecam_testkit::{api_camera, wait_streaming, wait_viewers, Signalling, LIVENESS};

use crate::daemon_proc::{fd_kinds, proc_json, proc_read, thread_names};
use crate::harness::{demo_config, loadavg, round1, Options};

pub const NAME: &str = "leaks";
pub const OPTIONS: &[&str] = &["cycles", "stop-cycles", "settle"];

/// Cycles on one websocket before it is replaced by a new one.
const CYCLES_PER_WEBSOCKET: usize = 50;

/// Cycles before the first settled reading: separates one-time growth (pools, caches) from per-cycle growth.
const FIRST_CYCLES: usize = 100;

/// Cycles between progress readings.
const CHECKPOINT_EVERY: usize = 200;

pub async fn run(opt: &Options) -> Result<Value> {
    let settle = opt.get("settle", 5)?;
    let keep = leak(opt.get("cycles", 1000)?, settle, "keep-encoding").await?;
    let stop = leak(opt.get("stop-cycles", 300)?, settle, "stop").await?;
    Ok(json!({"keep_encoding": keep, "stop": stop}))
}

async fn one_cycle(sig: &mut Signalling, cam: &str) -> Result<()> {
    sig.send(&json!({"type": "ready", "camera": cam})).await?;
    loop {
        let m = sig.recv(LIVENESS).await?;
        match m["type"].as_str() {
            Some("offer") => break,
            Some("cameras") | Some("candidate") => continue,
            _ => bail!("unexpected {m}"),
        }
    }
    sig.send(&json!({"type": "stop", "camera": cam})).await?;
    Ok(())
}

async fn leak(cycles: usize, settle: u64, idle: &str) -> Result<Value> {
    let daemon = Daemon::start(&demo_config(idle, ""), &["--demo", "1"])?;
    let pid = daemon.pid().context("daemon not running")?;
    if idle == "keep-encoding" {
        wait_streaming(daemon.addr, "demo1").await?;
    }
    // Warm-up: the first viewer branches allocate one-time things (plugin loading, DTLS cert, pools).
    let mut sig = Signalling::connect(daemon.addr).await?;
    for _ in 0..5 {
        one_cycle(&mut sig, "demo1").await?;
    }
    drop(sig);
    wait_viewers(daemon.addr, "demo1", 0).await?;
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let before = proc_read(pid)?;
    let fd_kinds_before = fd_kinds(pid);
    let thread_names_before = thread_names(pid);
    let load_before = loadavg();
    let start = Instant::now();
    let mut checkpoints = Vec::new();
    // A fresh websocket every 50 cycles (a browser reconnecting), ready -> offer -> stop on each.
    let mut done = 0;
    let mut after_first = Value::Null;
    while done < cycles {
        let mut sig = Signalling::connect(daemon.addr).await?;
        for _ in 0..CYCLES_PER_WEBSOCKET.min(cycles - done) {
            one_cycle(&mut sig, "demo1").await?;
            done += 1;
        }
        drop(sig);
        if done % CHECKPOINT_EVERY == 0 || done == cycles {
            let p = proc_read(pid)?;
            let mut c = proc_json(&p);
            c["cycles"] = json!(done);
            c["elapsed_s"] = json!(round1(start.elapsed().as_secs_f64()));
            eprintln!("leaks {idle}: {c}");
            checkpoints.push(c);
        }
        if done == FIRST_CYCLES && cycles > FIRST_CYCLES {
            // A settled point after the first 100 cycles: separates one-time growth from per-cycle growth.
            wait_viewers(daemon.addr, "demo1", 0).await?;
            tokio::time::sleep(Duration::from_secs(settle)).await;
            let p = proc_read(pid)?;
            after_first = proc_json(&p);
            after_first["fd_kinds"] = fd_kinds(pid);
            eprintln!("leaks {idle}: settled after 100: {after_first}");
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    wait_viewers(daemon.addr, "demo1", 0).await?;
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let after = proc_read(pid)?;
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let after2 = proc_read(pid)?;
    let cam = api_camera(daemon.addr, "demo1").await?;
    Ok(json!({
        "cycles": cycles,
        "idle": idle,
        "kind": "scripted websocket: ready -> offer -> stop (no answer, no ICE/DTLS); new websocket every 50 cycles",
        "seconds": round1(elapsed),
        "cycles_per_s": round1(cycles as f64 / elapsed),
        "settle_s": settle,
        "before": proc_json(&before),
        "after": proc_json(&after),
        "after_2x_settle": proc_json(&after2),
        "after_100_settled": after_first,
        "fd_kinds_before": fd_kinds_before,
        "fd_kinds_after": fd_kinds(pid),
        "thread_names_before": thread_names_before,
        "thread_names_after": thread_names(pid),
        "threads_delta": after.threads as i64 - before.threads as i64,
        "fds_delta": after.fds as i64 - before.fds as i64,
        "rss_delta_mib": round1((after.rss_kib as f64 - before.rss_kib as f64) / 1024.0),
        "rss_delta_mib_2x_settle": round1((after2.rss_kib as f64 - before.rss_kib as f64) / 1024.0),
        "checkpoints": checkpoints,
        "camera_after": cam,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }))
}

/// The report's section.
pub fn section(v: &Value) -> String {
    let mut md = String::new();
    for l in [&v["keep_encoding"], &v["stop"]] {
        md += &format!(
            "## Leaks: viewer join/leave cycles (idle: {})\n\n{} cycles, {} ({} s, {} cycles/s); settle {} s; load avg {} -> {}.\n\n\
             | | threads | fds | RSS MiB |\n|---|---|---|---|\n| before | {} | {} | {} |\n| after settle | {} | {} | {} |\n| after 2x settle | {} | {} | {} |\n\n\
             Deltas: threads {}, fds {}, RSS {} MiB ({} MiB after 2x settle). Target: threads and fds back to baseline, RSS growth <= 2 MB.\n\n\
             Checkpoints (cycles: threads / fds / RSS MiB): {}\n\n",
            l["idle"].as_str().unwrap_or("keep-encoding"), l["cycles"], l["kind"].as_str().unwrap_or(""), l["seconds"], l["cycles_per_s"], l["settle_s"],
            l["loadavg_before"].as_str().unwrap_or("?"), l["loadavg_after"].as_str().unwrap_or("?"),
            l["before"]["threads"], l["before"]["fds"], l["before"]["rss_mib"],
            l["after"]["threads"], l["after"]["fds"], l["after"]["rss_mib"],
            l["after_2x_settle"]["threads"], l["after_2x_settle"]["fds"], l["after_2x_settle"]["rss_mib"],
            l["threads_delta"], l["fds_delta"], l["rss_delta_mib"], l["rss_delta_mib_2x_settle"],
            l["checkpoints"].as_array().into_iter().flatten()
                .map(|c| format!("{}: {} / {} / {}", c["cycles"], c["threads"], c["fds"], c["rss_mib"]))
                .collect::<Vec<_>>().join("; ")
        );
        let a = &l["after_100_settled"];
        if !a.is_null() {
            md += &format!("Settled after the first 100 cycles: threads {}, fds {}, RSS {} MiB; so cycles 100..{} changed threads by {}, fds by {}, RSS by {} MiB.\n\nfd kinds before: `{}`; after: `{}`\n\n",
                a["threads"], a["fds"], a["rss_mib"], l["cycles"],
                l["after"]["threads"].as_i64().unwrap_or(0) - a["threads"].as_i64().unwrap_or(0),
                l["after"]["fds"].as_i64().unwrap_or(0) - a["fds"].as_i64().unwrap_or(0),
                round1(l["after"]["rss_mib"].as_f64().unwrap_or(0.0) - a["rss_mib"].as_f64().unwrap_or(0.0)),
                l["fd_kinds_before"], l["fd_kinds_after"]);
            if !l["thread_names_after"].is_null() {
                md += &format!(
                    "Threads by name before: `{}`; after: `{}`\n\n",
                    l["thread_names_before"], l["thread_names_after"]
                );
            }
        }
    }
    md
}

//! Full load: what the daemon holds at its own limits, the numbers the systemd unit's LimitNOFILE,
//! TasksMax and MemoryMax are sized from (packaging/debian/edgecam.service). One demo camera with
//! `lifecycle::MAX_VIEWERS` (32) connected viewers, each a GStreamer webrtcbin in this process that
//! decodes (the camera at 320x240@15 so 32 decoders fit on 2 cores; what the daemon holds per viewer,
//! threads, fds and buffers, does not depend on the size), then websockets up to
//! `ws_limits::MAX_SOCKETS` (128) from several loopback addresses (16 are allowed per address); one
//! more must be refused. Threads, fds and RSS of the daemon at each step.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::future::try_join_all;
use futures_util::StreamExt;
use serde_json::{json, Value};

use edgecam_testkit::daemon::Daemon;
use edgecam_testkit::webrtc_client::OriginalSession;
use edgecam_testkit::{wait_streaming, wait_viewers, Signalling, LIVENESS};

use crate::daemon_proc::{fd_kinds, measure, thread_names};
use crate::harness::{demo_config, round1, Options};

pub const NAME: &str = "full_load";
pub const OPTIONS: &[&str] = &["viewers", "sockets", "seconds"];

/// The daemon's limits this measures at (src/camera/lifecycle.rs, src/http/ws_limits.rs).
const MAX_VIEWERS: usize = 32;
const MAX_SOCKETS: usize = 128;
/// Websockets per source address: one under the daemon's 16, so every address stays admitted.
const PER_ADDRESS: usize = 15;
/// Viewers connecting at once (the daemon negotiates at most 8 per camera at a time).
const BATCH: usize = 4;

/// The n-th loopback source address, 127.0.0.2 onwards, for `PER_ADDRESS` sockets each.
fn source(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n / PER_ADDRESS) as u8))
}

/// A websocket that answers pings (the daemon closes silent ones after 60 s) until dropped.
fn keep_open(mut sig: Signalling) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while let Some(Ok(_)) = sig.ws.next().await {} })
}

pub async fn run(opt: &Options) -> Result<Value> {
    let viewers = opt.get("viewers", MAX_VIEWERS)?;
    let sockets = opt.get("sockets", MAX_SOCKETS)?;
    let seconds = opt.get("seconds", 10)?;
    let config = demo_config("keep-encoding", "defaults: {width: 320, height: 240, fps: 15}\n");
    let daemon = Daemon::start(&config, &["--demo", "1"])?;
    let pid = daemon.pid().context("daemon not running")?;
    let addr = daemon.addr;
    wait_streaming(addr, "demo1").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = measure(pid, seconds).await?;

    // The viewers, a batch at a time; each keeps pumping its signalling (pings, late candidates).
    let mut pumps = Vec::new();
    for batch in (0..viewers).collect::<Vec<_>>().chunks(BATCH) {
        let mut sessions = Vec::new();
        for &n in batch {
            let mut s = OriginalSession::over(Signalling::connect_from(addr, source(n)).await?);
            s.ready("demo1").await?;
            sessions.push(s);
        }
        try_join_all(sessions.iter_mut().map(|s| {
            s.pump_until("decoding", LIVENESS * 2, |v| {
                v.values().all(|v| v.received().frames > 0)
            })
        }))
        .await?;
        for mut s in sessions {
            pumps.push(tokio::spawn(async move {
                let _ = s.pump_until("kept open", Duration::from_secs(3600), |_| false).await;
            }));
        }
    }
    wait_viewers(addr, "demo1", viewers as u64).await?;
    let with_viewers = measure(pid, seconds).await?;
    let fds_with_viewers = fd_kinds(pid);

    // Idle websockets up to the limit (a page open on a camera nobody connects).
    let mut idle_sockets = Vec::new();
    for n in viewers..sockets {
        let mut sig = Signalling::connect_from(addr, source(n)).await?;
        sig.expect("cameras", LIVENESS).await?;
        idle_sockets.push(keep_open(sig));
    }
    let full = measure(pid, seconds).await?;
    let refused = match Signalling::connect_from(addr, source(sockets)).await {
        Ok(_) => bail!("websocket {} was admitted; the limit is {MAX_SOCKETS}", sockets + 1),
        Err(e) => format!("{e:#}"),
    };
    if !refused.contains("503") {
        bail!("websocket {} refused, but not with 503: {refused}", sockets + 1);
    }
    let (threads, fds) = (full["threads"].as_u64(), full["fds"].as_u64());
    let per_viewer = |key: &str| {
        let (a, b) = (
            idle[key].as_f64().unwrap_or(0.0),
            with_viewers[key].as_f64().unwrap_or(0.0),
        );
        round1((b - a) / viewers.max(1) as f64)
    };
    let result = json!({
        "camera": "demo1 320x240@15, x264, keep-encoding",
        "viewers": viewers,
        "websockets": sockets,
        "websocket_after_the_limit": refused,
        "idle": idle,
        "with_viewers": with_viewers,
        "with_viewers_fd_kinds": fds_with_viewers,
        "full": full,
        "full_thread_names": thread_names(pid),
        "per_viewer": {"threads": per_viewer("threads"), "fds": per_viewer("fds"), "rss_mib": per_viewer("rss_mib_max")},
        "per_idle_websocket_fds": round1(
            (fds.unwrap_or(0) as f64 - with_viewers["fds"].as_f64().unwrap_or(0.0)) / (sockets - viewers).max(1) as f64
        ),
        "threads_full": threads,
    });
    for p in pumps.iter().chain(&idle_sockets) {
        p.abort();
    }
    Ok(result)
}

pub fn section(v: &Value) -> String {
    format!(
        "## Full load (what the systemd limits are sized from)\n\n{} viewers and {} websockets on one camera: \
         {} threads, {} fds, RSS {} MiB (idle: {} threads, {} fds, {} MiB); per viewer {} threads, {} fds, {} MiB. \
         Websocket {} refused: {}.\n\n",
        v["viewers"],
        v["websockets"],
        v["full"]["threads"],
        v["full"]["fds"],
        v["full"]["rss_mib_max"],
        v["idle"]["threads"],
        v["idle"]["fds"],
        v["idle"]["rss_mib_max"],
        v["per_viewer"]["threads"],
        v["per_viewer"]["fds"],
        v["per_viewer"]["rss_mib"],
        v["websockets"].as_u64().unwrap_or(0) + 1,
        v["websocket_after_the_limit"].as_str().unwrap_or("?"),
    )
}

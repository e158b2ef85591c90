//! The daemon's own cost, from /proc (read by the test kit's `process`): CPU, RSS, threads and fds.
//! Only the daemon process is counted; the Chromium viewers run on the same cores and are not.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

pub use edgecam_testkit::process::{fd_kinds, proc_read, thread_names, Proc};

use crate::harness::{loadavg, round1};

pub fn proc_json(p: &Proc) -> Value {
    json!({"rss_mib": round1(p.rss_kib as f64 / 1024.0), "rss_kib": p.rss_kib, "threads": p.threads, "fds": p.fds})
}

/// CPU used between two reads, in % of one core.
pub fn cpu_percent(a: &Proc, b: &Proc) -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let seconds = b.at.duration_since(a.at).as_secs_f64();
    (b.ticks - a.ticks) as f64 / ticks_per_s / seconds * 100.0
}

/// CPU (% of one core), RSS mean/max, threads and fds of `pid` over `seconds`, sampled each second.
pub async fn measure(pid: u32, seconds: u64) -> Result<Value> {
    let load_before = loadavg();
    let mut s = vec![proc_read(pid)?];
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.push(proc_read(pid)?);
    }
    let (a, b) = (s[0], s[s.len() - 1]);
    let rss: Vec<f64> = s.iter().map(|x| x.rss_kib as f64 / 1024.0).collect();
    Ok(json!({
        "seconds": round1(b.at.duration_since(a.at).as_secs_f64()),
        "cpu_percent_of_one_core": round1(cpu_percent(&a, &b)),
        "rss_mib_mean": round1(rss.iter().sum::<f64>() / rss.len() as f64),
        "rss_mib_max": round1(rss.iter().cloned().fold(0.0, f64::max)),
        "threads": b.threads,
        "fds": b.fds,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }))
}

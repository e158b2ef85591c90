//! The daemon's own cost, from /proc: CPU ticks, RSS, threads and fds, and what the threads and fds are.
//! Only the daemon process is counted; the Chromium viewers run on the same cores and are not.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::harness::{loadavg, round1};

/// One read of a process's /proc entries.
#[derive(Clone, Copy)]
pub struct Proc {
    pub at: Instant,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    pub rss_kib: u64,
    pub threads: u64,
    pub fds: u64,
}

pub fn proc_read(pid: u32) -> Result<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after "(comm)", which may contain spaces: utime and stime are fields 14 and 15 (proc(5)).
    let rest: Vec<&str> = stat[stat.rfind(')').context("bad stat")? + 2..]
        .split_whitespace()
        .collect();
    let ticks = rest[11].parse::<u64>()? + rest[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Proc {
        at: Instant::now(),
        ticks,
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:")?,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
    })
}

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

/// Open fds of `pid` by kind (socket, pipe, anon_inode:[eventfd], /dev/..., file).
pub fn fd_kinds(pid: u32) -> Value {
    let mut m = BTreeMap::<String, u64>::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let t = std::fs::read_link(e.path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let k = if let Some(i) = t.find(":[") {
            t[..i].to_string()
        } else if t.starts_with("anon_inode:") || t.starts_with("/dev/") {
            t.clone()
        } else {
            "file".into()
        };
        *m.entry(k).or_default() += 1;
    }
    json!(m)
}

/// Threads of `pid` by name (/proc/PID/task/*/comm, digits folded to '#'): which elements own them.
pub fn thread_names(pid: u32) -> Value {
    let mut m = BTreeMap::<String, u64>::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let n: String = n
            .trim()
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        *m.entry(n).or_default() += 1;
    }
    json!(m)
}

//! A process's resources from /proc: CPU ticks, RSS, threads and fds, and what the threads and fds
//! are. The benchmarks measure the daemon with it; the tests check it goes back to a baseline.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Value};

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

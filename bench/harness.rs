//! What every bench driver shares: `--name value` options, the daemon's own CPU/memory from /proc,
//! the machine and its load (recorded with every result: the 2 cores are shared with other work),
//! percentile summaries, writing a result as JSON, and timing a viewer tab from `ready` to its first
//! decoded frame.
#![allow(dead_code)] // each driver binary uses part of it

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::common::chromium::Page;
use crate::common::viewer::wait_js_true;

/// `--name value` pairs; a name the driver does not know is an error (a typo must not silently run
/// the default).
pub struct Options(HashMap<String, String>);

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>, known: &[&str], usage: &str) -> Result<Options> {
        let mut values = HashMap::new();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            match arg.strip_prefix("--") {
                Some(name) if known.contains(&name) => {
                    let value = it
                        .next()
                        .with_context(|| format!("{arg} needs a value\nusage: {usage}"))?;
                    values.insert(name.to_string(), value);
                }
                _ => bail!("unknown argument {arg}\nusage: {usage}"),
            }
        }
        Ok(Options(values))
    }

    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("--{name} {v}: {e}")),
        }
    }

    pub fn text(&self, name: &str, default: &str) -> String {
        self.0.get(name).cloned().unwrap_or_else(|| default.to_string())
    }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg shows them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn load1() -> f64 {
    loadavg()
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

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

/// First line of a command's output, or "" if it cannot run.
fn first_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "kernel": first_line("uname", &["-r"]),
        "loadavg_at_start": loadavg(),
        "chromium": first_line("/usr/bin/chromium", &["--version"]),
        "gstreamer": first_line("gst-inspect-1.0", &["--version"]),
    })
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// n, median, p95, min, max, mean and every value (sorted), to 0.1.
pub fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    json!({
        "n": v.len(),
        "median": round1(percentile(&v, 50.0)),
        "p95": round1(percentile(&v, 95.0)),
        "min": round1(*v.first().unwrap_or(&f64::NAN)),
        "max": round1(*v.last().unwrap_or(&f64::NAN)),
        "mean": round1(mean),
        "all": v.iter().map(|x| round1(*x)).collect::<Vec<_>>(),
    })
}

/// Where results go: $ISSUE7_OUT (bench/all.sh sets it; --quick points it elsewhere) or bench/results.
pub fn results_dir() -> PathBuf {
    std::env::var("ISSUE7_OUT")
        .unwrap_or_else(|_| "bench/results".into())
        .into()
}

/// Writes `value` plus the machine and the time as `dir/<name>.json`.
pub fn write_result(dir: &Path, name: &str, value: &Value) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut v = value.clone();
    v["machine"] = machine();
    v["unix_time"] = json!(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs());
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")?;
    Ok(path)
}

/// Connects `id` on a page opened with `?autoconnect=0` and returns ms from the page's `ready` for `id`
/// leaving on the websocket (`ws.send` is wrapped) to getStats `framesDecoded > 0` on a NEW peer connection
/// (polled every 5 ms); -1 if the frame came without that `ready`, null if none came within 30 s. With
/// `leave`, the page disconnects `id` afterwards.
const READY_TO_FRAME_JS: &str = r#"
async (id, leave) => {
  const ec = window.edgecam, ws = ec.ws;
  const old = ec.cameras.get(id) && ec.cameras.get(id).pc;
  let tReady = null;
  const send = ws.send;
  ws.send = function (data) {
    try {
      const m = JSON.parse(data);
      if (m.type === 'ready' && m.camera === id && tReady === null) tReady = performance.now();
    } catch (e) {}
    return send.call(this, data);
  };
  try {
    ec.connect(id);
    const deadline = performance.now() + 30000;
    while (performance.now() < deadline) {
      const cam = ec.cameras.get(id);
      if (cam && cam.pc && cam.pc !== old) {
        let frames = 0;
        (await cam.pc.getStats()).forEach(s => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
        });
        if (frames > 0) return tReady === null ? -1 : performance.now() - tReady;
      }
      await new Promise(r => setTimeout(r, 5));
    }
    return null;
  } finally {
    delete ws.send;
    if (leave) ec.disconnect(id);
  }
}"#;

/// Waits until the page's websocket is open and lists `id`: what `ready_to_first_frame_ms` needs first.
pub async fn wait_ws_lists(page: &Page, id: &str) -> Result<()> {
    wait_js_true(
        page,
        &format!("page websocket open with {id} listed"),
        &format!(
            "window.edgecam.ws && window.edgecam.ws.readyState === 1 && window.edgecam.cameras.has({})",
            json!(id)
        ),
    )
    .await
}

/// Ms from `ready` to the first decoded frame of `id` (see `READY_TO_FRAME_JS`): a number, -1, or null.
pub async fn ready_to_first_frame_ms(page: &Page, id: &str, leave: bool) -> Result<Value> {
    page.eval(&format!("({READY_TO_FRAME_JS})({}, {leave})", json!(id)))
        .await
}

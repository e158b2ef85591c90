//! What every measurement shares: `--name value` options, the machine and its load (recorded with every
//! result: the 2 cores are shared with other work), percentile summaries, and reading and writing
//! `<out>/<measurement>.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// `--name value` pairs; a name the measurement does not know is an error (a typo must not silently run
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

/// Ratio to 0.001.
pub fn ratio(a: f64, b: f64) -> f64 {
    (a / b * 1000.0).round() / 1000.0
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

/// `dir/<measurement>.json`.
pub fn result_path(dir: &Path, measurement: &str) -> PathBuf {
    dir.join(format!("{measurement}.json"))
}

/// Writes `value` plus the machine and the time as `dir/<measurement>.json`.
pub fn write_result(dir: &Path, measurement: &str, value: &Value) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut v = value.clone();
    v["machine"] = machine();
    v["unix_time"] = json!(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs());
    let path = result_path(dir, measurement);
    std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// `dir/<measurement>.json`, if it exists; a file that is there but unreadable is an error (a report
/// must not silently leave a measurement out).
pub fn read_result(dir: &Path, measurement: &str) -> Result<Option<Value>> {
    let path = result_path(dir, measurement);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(
            serde_json::from_str(&s).with_context(|| format!("parse {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// A daemon config with the demo cameras only (no udev discovery), idle policy `idle`, and `extra` YAML.
pub fn demo_config(idle: &str, extra: &str) -> String {
    format!("discovery: false\nidle: {idle}\n{extra}")
}

/// The daemon binary the measurements run (bench/run.sh sets EDGECAM_BIN to the release build).
pub fn daemon_bin() -> Result<String> {
    std::env::var("EDGECAM_BIN").context("set EDGECAM_BIN to the edgecam binary (bench/run.sh does)")
}

//! The daemon and a browser on two ends of a rate-capped cable: two network namespaces of the test's own
//! joined by a veth pair, with a `tc tbf` rate cap on the daemon side's egress (the media direction) that
//! the test changes while it runs.
//!
//! ```text
//!   netns <name>-srv:  lo, veth0 10.78.0.1/24, tbf on egress   <- the daemon (HTTP, signalling, media)
//!   netns <name>-view: lo, veth1 10.78.0.2/24                  <- the browser and the test's runtime
//! ```
//!
//! Two namespaces, not one: within one namespace packets to a local address go over lo whatever address
//! they carry, so no cap on veth0 would ever see them. `netns.rs` keeps everything in one namespace
//! (Firefox only needs a non-loopback address); this harness needs the cable in the path.
//!
//! A thread that joins a namespace with `setns` passes it to every thread and process it starts, so the
//! daemon is spawned from a thread in `srv` (`in_server`) and the test's runtime with Chromium runs in
//! `view` (`in_viewer`). Both namespaces go on drop; nothing touches the host's interfaces or routes.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// The daemon's end of the cable.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// The browser's end.
pub const VIEWER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);

const PREFIX: &str = "edgecam-cap-";

/// The token bucket's depth: two full-size packets, so the cap holds within a few milliseconds instead
/// of letting a burst of a whole frame through at the veth's speed.
const TBF_BURST: &str = "3000";
/// How long a packet may wait in the cap's queue before it is dropped: a plausible bottleneck buffer
/// (home routers hold ~50-200 ms), long enough for delay-based congestion control to see it grow.
const TBF_LATENCY: &str = "100ms";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct RateCappedLink {
    server: String,
    viewer: String,
}

/// Why the link cannot be made here (not root, no `ip` or `tc`), or None when it can.
pub fn unavailable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: `ip netns add` needs CAP_SYS_ADMIN".into());
    }
    for tool in ["ip", "tc"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("no `{tool}` command (iproute2)"));
        }
    }
    None
}

fn run(tool: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .with_context(|| format!("run {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}

/// Deletes namespaces an earlier run left behind when it was killed before its drop ran (only names with
/// this harness's prefix whose process is gone).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

impl RateCappedLink {
    /// Makes both namespaces and the cable, capped at `kbit` kbit/s from the daemon to the browser.
    pub fn create(kbit: u32) -> Result<RateCappedLink> {
        remove_stale();
        let base = format!("{PREFIX}{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let link = RateCappedLink {
            server: format!("{base}-srv"),
            viewer: format!("{base}-view"),
        };
        run("ip", &["netns", "add", &link.server])?;
        // From here on, drop deletes whatever was made.
        run("ip", &["netns", "add", &link.viewer])?;
        let (srv, view) = (link.server.as_str(), link.viewer.as_str());
        run(
            "ip",
            &[
                "-n", srv, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", view,
            ],
        )?;
        run(
            "ip",
            &["-n", srv, "addr", "add", &format!("{SERVER_ADDR}/24"), "dev", "veth0"],
        )?;
        run(
            "ip",
            &["-n", view, "addr", "add", &format!("{VIEWER_ADDR}/24"), "dev", "veth1"],
        )?;
        for (ns, dev) in [(srv, "lo"), (srv, "veth0"), (view, "lo"), (view, "veth1")] {
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
        }
        link.set_rate(kbit)?;
        Ok(link)
    }

    /// Changes the cap (takes effect at once; packets already queued stay queued).
    pub fn set_rate(&self, kbit: u32) -> Result<()> {
        let rate = format!("{kbit}kbit");
        run(
            "tc",
            &[
                "-n",
                &self.server,
                "qdisc",
                "replace",
                "dev",
                "veth0",
                "root",
                "tbf",
                "rate",
                &rate,
                "burst",
                TBF_BURST,
                "latency",
                TBF_LATENCY,
            ],
        )
    }

    pub fn server_ip(&self) -> IpAddr {
        SERVER_ADDR.into()
    }

    /// Runs `f` on a new thread in the daemon's namespace (start the daemon there).
    pub fn in_server<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        in_namespace(&self.server, SERVER_ADDR, f)
    }

    /// Runs `f` on a new thread in the browser's namespace (the test's runtime and Chromium).
    pub fn in_viewer<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        in_namespace(&self.viewer, VIEWER_ADDR, f)
    }
}

fn in_namespace<R: Send + 'static>(name: &str, own: Ipv4Addr, f: impl FnOnce() -> R + Send + 'static) -> R {
    let path = format!("/run/netns/{name}");
    let handle = std::thread::Builder::new()
        .name(format!("in-{name}"))
        .spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!("setns({path}): {}", std::io::Error::last_os_error());
            }
            drop(ns);
            // Proof that this thread is in the namespace: its end's address exists only there.
            std::net::UdpSocket::bind((own, 0)).unwrap_or_else(|e| panic!("bind {own} after setns into {path}: {e}"));
            f()
        })
        .expect("spawn namespace thread");
    match handle.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

impl Drop for RateCappedLink {
    fn drop(&mut self) {
        for ns in [&self.server, &self.viewer] {
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

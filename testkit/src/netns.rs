//! A private pair of network namespaces joined by a veth pair, for tests whose browser refuses to do
//! WebRTC over loopback alone (Firefox: see notes/gstreamer-webrtc.md, "Firefox on loopback alone failed
//! ICE; in a veth namespace it worked").
//!
//! Layout (both namespaces are created by the test and deleted on drop; nothing touches the host's
//! interfaces or routes, and no packet can leave for a real address):
//!
//! ```text
//!   netns <name>-a: lo up, veth0 10.77.0.1/24, default route via 10.77.0.2   <- daemon and browsers run here
//!   netns <name>-b: lo up, veth1 10.77.0.2/24                                <- only the other end of the cable
//! ```
//!
//! The default route matters to browsers choosing host candidates; it points into namespace b, which has no
//! route anywhere else, so a browser's background traffic to the internet dies there.
//!
//! `run_in` runs a closure on a new thread that has joined namespace a with `setns(CLONE_NEWNET)`.
//! Network namespaces are per thread, and every thread and process started from that thread inherits
//! it, so a tokio runtime built inside the closure, the daemon, Chromium and Firefox all live in namespace a
//! and the existing helpers (`Daemon::start` binding 127.0.0.1, the DevTools websocket) work unchanged.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// The address of veth0, in the namespace the test runs in: what the daemon gives ICE.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The far end of the cable (namespace b); nothing listens there.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

const PREFIX: &str = "edgecam-test-";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct NetnsPair {
    pub a: String,
    pub b: String,
}

/// Why namespaces cannot be made here (not root), or None when they can. Anything else that goes
/// wrong while creating them is a test failure, not a skip.
pub fn unavailable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: `ip netns add` needs CAP_SYS_ADMIN".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no `ip` command (iproute2)".into());
    }
    None
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}

/// Deletes namespaces this harness left behind in an earlier run whose process is gone (a test killed
/// before its drop ran). Only names with our prefix and a dead pid are touched.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

impl NetnsPair {
    pub fn create() -> Result<NetnsPair> {
        remove_stale();
        let base = format!("{PREFIX}{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let pair = NetnsPair {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        ip(&["netns", "add", &pair.a])?;
        // From here on, drop deletes whatever was made.
        ip(&["netns", "add", &pair.b])?;
        let (a, b) = (pair.a.as_str(), pair.b.as_str());
        // The veth is created inside a, its peer moved straight into b: it never exists on the host.
        ip(&[
            "-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", b,
        ])?;
        ip(&["-n", a, "addr", "add", &format!("{ADDR_A}/24"), "dev", "veth0"])?;
        ip(&["-n", b, "addr", "add", &format!("{ADDR_B}/24"), "dev", "veth1"])?;
        for (ns, dev) in [(a, "lo"), (a, "veth0"), (b, "lo"), (b, "veth1")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ip(&["-n", a, "route", "add", "default", "via", &ADDR_B.to_string()])?;
        Ok(pair)
    }

    /// Runs `f` on a new thread inside namespace a and returns its result (a panic in `f` is re-raised
    /// here, so test failures keep their message).
    pub fn run_in<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let path = format!("/run/netns/{}", self.a);
        let handle = std::thread::Builder::new()
            .name(format!("in-{}", self.a))
            .spawn(move || {
                let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    panic!("setns({path}): {}", std::io::Error::last_os_error());
                }
                drop(ns);
                // Proof that this thread really is in namespace a: veth0's address exists only there.
                std::net::UdpSocket::bind((ADDR_A, 0))
                    .unwrap_or_else(|e| panic!("bind {ADDR_A} after setns into {path}: {e}"));
                f()
            })
            .expect("spawn netns thread");
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl NetnsPair {
    /// Runs the future `make` returns to completion on a two-thread tokio runtime of its own inside
    /// namespace a (see `run_in`), so whatever it starts (a daemon, browsers, a media server) lives there.
    pub fn block_on<R, F>(&self, make: impl FnOnce() -> F + Send + 'static) -> R
    where
        R: Send + 'static,
        F: std::future::Future<Output = R>,
    {
        self.run_in(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(make())
        })
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

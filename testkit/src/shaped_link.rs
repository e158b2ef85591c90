//! A shaped network link between a daemon and its viewers: two network namespaces of the test's own
//! joined by a veth pair, with what the daemon sends rate-capped (`tc tbf` on its end of the cable) and/or
//! a random share of its UDP packets lost on the way (nftables `numgen random`), both changeable while the
//! test runs.
//! This kernel has no `sch_netem`; tbf and nftables are what there is (notes/network-and-standards.md).
//!
//! ```text
//!   netns <name>-d: lo, veth-d 10.78.0.1/24, default via 10.78.0.2   <- the daemon; tbf on veth-d egress
//!   netns <name>-v: lo, veth-v 10.78.0.2/24, default via 10.78.0.1   <- the browsers; drop on veth-v ingress
//! ```
//!
//! A clean viewer, for tests that compare a viewer on the shaped link with one on a good link of the same
//! camera, runs in the daemon's namespace (`spawn_in_daemon`): its traffic to 10.78.0.1 never leaves by
//! veth-d, so nothing shapes it. (A third namespace with a cable of its own could load the page but never
//! completed ICE with the daemon's single ICE address.)
//!
//! The random drop sits at the viewers' end of the cable, on packets arriving from the daemon: dropped on the
//! daemon's own output hook, each lost packet failed the daemon's `sendto` with EPERM, which no real network
//! does. (A tbf drop is silent to a UDP sender either way.)
//!
//! Only what the daemon sends is shaped (media, RTX, its RTCP); what viewers send back (NACK, PLI,
//! receiver reports) crosses unharmed, as on a typical downlink-limited path. The random drop matches UDP
//! only, so the page and its websocket (TCP) are not what a test measures; the rate cap applies to all.
//!
//! Namespaces are per thread and inherited by every thread and process started from there: `run_in_daemon`
//! and `run_in_viewer` run a closure on a new thread that has joined one with `setns(CLONE_NEWNET)`. A daemon
//! started inside `run_in_daemon` stays in that namespace after the closure returns (its process does), so a
//! test starts it there and drives everything else from a runtime built inside `run_in_viewer`.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// The daemon's end of the cable.
pub const DAEMON_ADDR: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// The viewers' end.
pub const VIEWER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const DAEMON_DEV: &str = "veth-d";
const VIEWER_DEV: &str = "veth-v";

/// Prefix of every namespace this harness makes; the pid after it lets a later run clean up after a
/// killed one.
const PREFIX: &str = "edgecam-shaped-";
/// The nftables table and chain holding the drop rule (in the viewers' namespace only).
const NFT_TABLE: &str = "edgecam_shape";
const NFT_CHAIN: &str = "from_daemon";

/// tbf's bucket: at least one full-size packet, and enough for a 30 fps frame burst at 2 Mbit/s
/// (~8 KB) to leave without waiting on the bucket; a deeper one would hide the cap for a second.
const TBF_BURST_BYTES: u32 = 16 * 1024;
/// What tbf may queue before it drops: a congested link has a queue, not a wall. 50 ms is a shallow,
/// home-router-like buffer: a sender over the cap sees delay first, then loss.
const TBF_LATENCY_MS: u32 = 50;

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct ShapedLink {
    daemon_ns: String,
    viewer_ns: String,
}

/// Why the link cannot be made here (not root, no tools), or None when it can. Anything that fails
/// while making it is a test failure, not a skip.
pub fn unavailable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: `ip netns add` needs CAP_SYS_ADMIN".into());
    }
    for (tool, package) in [("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("no `{tool}` command ({package}; scripts/install-deps.sh test)"));
        }
    }
    None
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("run {program}"))?;
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes())?;
    }
    drop(input);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args, None).map(drop)
}

/// Deletes namespaces an earlier run left behind when its process died before dropping them.
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
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// Runs `f` on a new thread inside namespace `ns`, checking first that `addr` exists there (proof the
/// setns took effect). A panic in `f` is re-raised in the caller.
fn run_in<R: Send + 'static>(ns: &str, addr: Ipv4Addr, f: impl FnOnce() -> R + Send + 'static) -> R {
    match spawn_in(ns, addr, f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// `run_in` without waiting: the thread's handle.
fn spawn_in<R: Send + 'static>(
    ns: &str,
    addr: Ipv4Addr,
    f: impl FnOnce() -> R + Send + 'static,
) -> std::thread::JoinHandle<R> {
    let path = format!("/run/netns/{ns}");
    std::thread::Builder::new()
        .name(format!("in-{ns}"))
        .spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!("setns({path}): {}", std::io::Error::last_os_error());
            }
            drop(file);
            std::net::UdpSocket::bind((addr, 0)).unwrap_or_else(|e| panic!("bind {addr} after setns into {path}: {e}"));
            f()
        })
        .expect("spawn netns thread")
}

impl ShapedLink {
    /// Both namespaces, the cable, addresses and routes, and an empty nftables chain ready for `set_loss`.
    /// No shaping yet.
    pub fn create() -> Result<ShapedLink> {
        remove_stale();
        let base = format!("{PREFIX}{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let link = ShapedLink {
            daemon_ns: format!("{base}-d"),
            viewer_ns: format!("{base}-v"),
        };
        ip(&["netns", "add", &link.daemon_ns])?;
        // From here on, drop deletes whatever was made.
        ip(&["netns", "add", &link.viewer_ns])?;
        let (d, v) = (link.daemon_ns.as_str(), link.viewer_ns.as_str());
        // Made inside d, the peer moved straight into v: the cable never exists on the host.
        ip(&[
            "-n", d, "link", "add", DAEMON_DEV, "type", "veth", "peer", "name", VIEWER_DEV, "netns", v,
        ])?;
        ip(&["-n", d, "addr", "add", &format!("{DAEMON_ADDR}/24"), "dev", DAEMON_DEV])?;
        ip(&["-n", v, "addr", "add", &format!("{VIEWER_ADDR}/24"), "dev", VIEWER_DEV])?;
        for (ns, dev) in [(d, "lo"), (d, DAEMON_DEV), (v, "lo"), (v, VIEWER_DEV)] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        // Browsers pick host candidates from the interface of the default route; each side's points at
        // the other, which forwards nothing (a new namespace has ip_forward off), so nothing leaves.
        ip(&["-n", d, "route", "add", "default", "via", &VIEWER_ADDR.to_string()])?;
        ip(&["-n", v, "route", "add", "default", "via", &DAEMON_ADDR.to_string()])?;
        link.nft(&format!(
            "table inet {NFT_TABLE} {{ chain {NFT_CHAIN} {{ type filter hook input priority 0; policy accept; }}\n}}\n"
        ))?;
        Ok(link)
    }

    pub fn daemon_ip(&self) -> IpAddr {
        DAEMON_ADDR.into()
    }

    /// Runs `f` in the daemon's namespace (see the module doc).
    pub fn run_in_daemon<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        run_in(&self.daemon_ns, DAEMON_ADDR, f)
    }

    /// Runs `f` in the viewers' namespace.
    pub fn run_in_viewer<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        run_in(&self.viewer_ns, VIEWER_ADDR, f)
    }

    /// Starts `f` on a thread in the viewers' namespace (behind the shaping).
    pub fn spawn_in_viewer<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::JoinHandle<R> {
        spawn_in(&self.viewer_ns, VIEWER_ADDR, f)
    }

    /// Starts `f` on a thread in the daemon's namespace: a viewer there is on a link never shaped (and a
    /// sender there, bench/, is shaped like the daemon).
    pub fn spawn_in_daemon<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::JoinHandle<R> {
        spawn_in(&self.daemon_ns, DAEMON_ADDR, f)
    }

    /// Caps what the daemon sends at `kbit` kbit/s (tbf), or removes the cap with None. Takes effect at
    /// once, also mid-stream.
    pub fn set_rate(&self, kbit: Option<u32>) -> Result<()> {
        let d = self.daemon_ns.as_str();
        match kbit {
            Some(kbit) => run(
                "tc",
                &[
                    "-n",
                    d,
                    "qdisc",
                    "replace",
                    "dev",
                    DAEMON_DEV,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{kbit}kbit"),
                    "burst",
                    &TBF_BURST_BYTES.to_string(),
                    "latency",
                    &format!("{TBF_LATENCY_MS}ms"),
                ],
                None,
            )
            .map(drop),
            None => {
                // Deleting a root qdisc that is already the default fails; only a tbf needs removing.
                let current = run("tc", &["-n", d, "qdisc", "show", "dev", DAEMON_DEV], None)?;
                if current.contains("tbf") {
                    run("tc", &["-n", d, "qdisc", "del", "dev", DAEMON_DEV, "root"], None)?;
                }
                Ok(())
            }
        }
    }

    /// Loses `percent` % of the UDP packets the daemon sends over the cable, at random (0 stops it).
    /// The previous rule is replaced, and with it its counter.
    pub fn set_loss(&self, percent: u32) -> Result<()> {
        if percent > 100 {
            bail!("loss of {percent} %");
        }
        let mut script = format!("flush chain inet {NFT_TABLE} {NFT_CHAIN}\n");
        if percent > 0 {
            script += &format!(
                "add rule inet {NFT_TABLE} {NFT_CHAIN} iifname \"{VIEWER_DEV}\" meta l4proto udp numgen random mod 100 < {percent} counter drop\n"
            );
        }
        self.nft(&script)
    }

    /// Packets dropped by the current loss rule since `set_loss` (0 without one): proof the rule bites.
    pub fn dropped_packets(&self) -> Result<u64> {
        let list = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.viewer_ns,
                "nft",
                "list",
                "chain",
                "inet",
                NFT_TABLE,
                NFT_CHAIN,
            ],
            None,
        )?;
        Ok(parse_counter(&list))
    }

    fn nft(&self, script: &str) -> Result<()> {
        run(
            "ip",
            &["netns", "exec", &self.viewer_ns, "nft", "-f", "-"],
            Some(script),
        )
        .map(drop)
    }
}

/// The packet count of the first `counter packets N bytes M` in an `nft list` output (0 if none).
fn parse_counter(list: &str) -> u64 {
    list.split_once("counter packets ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, qdisc and nftables tables with it.
        for ns in [&self.daemon_ns, &self.viewer_ns] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

/// The usual shape of a shaped-link test: the link (capped at `rate_kbit` from the start, if given), a
/// daemon with `config` in its namespace, and `scenario` on a runtime in the viewers' namespace, holding
/// the heavy lock. Without root or tools it prints why and returns (a skip).
pub fn run_scenario<F, Fut>(test: &str, config: &'static str, rate_kbit: Option<u32>, scenario: F)
where
    F: FnOnce(crate::daemon::Daemon, std::sync::Arc<ShapedLink>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<()>>,
{
    if let Some(reason) = unavailable() {
        eprintln!("SKIPPED {test}: {reason}");
        return;
    }
    let _heavy = crate::heavy_lock();
    let link = std::sync::Arc::new(ShapedLink::create().expect("create the shaped link"));
    link.set_rate(rate_kbit).expect("cap the link");
    let ip = link.daemon_ip();
    let daemon = link
        .run_in_daemon(move || crate::daemon::Daemon::start_on(ip, config, &[]))
        .expect("start the daemon in its namespace");
    let for_scenario = link.clone();
    link.run_in_viewer(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(scenario(daemon, for_scenario)).unwrap();
    });
}

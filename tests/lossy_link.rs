//! End-to-end, issue 12 item 1: a viewer on a lossy path keeps smooth video. The daemon runs in one network
//! namespace and the browser in another (common/shaped_link.rs); once the browser decodes, 3 % of the UDP
//! packets the daemon sends are dropped at random. Over 30 s Chromium (H.264) and Firefox (VP8) must each decode at least 29 fps with no
//! freeze (getStats `freezeCount`), which takes generic NACK with RTX retransmission: the offer must carry
//! both, the browser must send NACKs and receive retransmissions.
//!
//! The bounds are the acceptance criteria, i.e. behaviour (does the viewer see smooth video at this
//! loss), not a timing measurement; the same scenario writes its numbers as JSON when
//! `EDGECAM_LOSSY_LINK_RESULTS` names a file (bench/lossy_link.sh).
//!
//! Needs root (network namespaces, nftables); without it each test prints why and skips.
//! Run: `cargo test --test lossy_link`.

use edgecam_testkit as common;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use common::chromium::Browser;
use common::firefox::Firefox;
use common::link_stats::{num, without_offer, LinkViewer, Window};
use common::shaped_link::{self, ShapedLink};
use common::{wait_until, LIVENESS};

/// The loss rate: random, on every UDP packet the daemon sends.
const LOSS_PERCENT: u32 = 3;
/// The observation window.
const WINDOW: Duration = Duration::from_secs(30);
/// The bound: 30 fps sent, at least 29 decoded.
const MIN_FPS: f64 = 29.0;
/// Keyframe requests the viewer may send in the window. Each one costs every viewer of the camera a
/// keyframe; with NACK working a viewer repairs its losses by retransmission and asked for none in the
/// measured runs (a PLI a second was the symptom of a keyframe-request loop, see keyframe_gate.rs).
const MAX_PLIS: f64 = 5.0;
/// Why a window whose only fault is a freeze gets one more: NACK repairs a loss within a frame unless the
/// retransmission is lost too (3 % of ~140 repairs a window), and the browser's next NACK waits for its
/// RTT estimate. The freezes seen in CI (1 in a window, ~190 ms, every lost packet retransmitted, no PLI)
/// look like that: chance, about one window in several. A second window with a freeze is not chance.
const FREEZE_ODDS: &str = "a retransmission lost again can freeze a window by chance";

/// One camera, SMPTE bars with a running clock: x264 sends about 1 Mbit/s of it (bench/results/issue7.md),
/// ~100 packets a second, so 3 % loss hits several frames a second. (The demo ball is ~120 kbit/s.)
/// `auth: none`: the daemon listens on its namespace's veth address, which only this test's namespaces reach.
const CONFIG: &str = "discovery: false\nauth: none\ncameras:\n  lossy: {test_pattern: smpte}\n";
const CAMERA: &str = "lossy";

/// Frames decoded before the window opens: the join (first keyframe, jitter buffer settling) is not what
/// this test judges.
const WARM_UP_FRAMES: u64 = 60;

/// One result line for bench/lossy_link.sh.
fn window_json(w: &Window, browser: &str, codec: &str, dropped: u64) -> Value {
    json!({
        "browser": browser, "codec": codec, "loss_percent": LOSS_PERCENT, "seconds": w.seconds,
        "fps": w.fps, "freezes": w.freezes, "freeze_seconds": w.freeze_seconds,
        "nacks": w.nacks, "plis": w.plis, "retransmits_received": w.retransmits,
        "packets_lost": w.lost, "kbps": w.kbps, "packets_dropped_by_link": dropped,
    })
}

/// The offer has generic NACK (a line `a=rtcp-fb:<pt> nack` with nothing after it) for its video payload
/// and an RTX payload bound to it.
fn check_offer(offer: &str) -> Result<()> {
    let generic_nack = offer.lines().any(|l| {
        let l = l.trim_end();
        l.starts_with("a=rtcp-fb:") && l.ends_with(" nack")
    });
    let rtx = offer
        .lines()
        .any(|l| l.starts_with("a=rtpmap:") && l.contains(" rtx/90000"));
    let apt = offer.lines().any(|l| l.starts_with("a=fmtp:") && l.contains("apt="));
    if !(generic_nack && rtx && apt) {
        bail!("the offer lacks generic NACK ({generic_nack}), an rtx payload ({rtx}) or its apt= ({apt}):\n{offer}");
    }
    Ok(())
}

/// Waits until the viewer decodes `codec`, turns the loss on, lets it warm up, then judges one `WINDOW`.
/// A window with freezes as its only fault is followed by one more, which must be clean: see `FREEZE_ODDS`.
async fn watch_and_judge(viewer: &LinkViewer<'_>, name: &str, codec: &str, link: &ShapedLink) -> Result<()> {
    let first = wait_until(&format!("{name} decoding {codec}"), LIVENESS, || async {
        let v = viewer.read(CAMERA).await?;
        if v["status"] != "live" || v["codec"] != codec || num(&v, "framesDecoded").unwrap_or(0.0) < 1.0 {
            bail!("{}", without_offer(&v));
        }
        Ok(v)
    })
    .await?;
    check_offer(first["offer"].as_str().unwrap_or(""))?;
    // Loss starts once the viewer decodes: dropped connectivity checks could otherwise make ICE settle on
    // ICE-TCP, which the UDP drop rule does not touch (and which is not what this test is about).
    if first["protocol"] != "udp" {
        bail!("{name}'s media runs over {} instead of UDP", first["protocol"]);
    }
    link.set_loss(LOSS_PERCENT)?;
    let start_frames = num(&first, "framesDecoded").unwrap_or(0.0);
    wait_until(&format!("{name} past warm-up"), LIVENESS, || async {
        let v = viewer.read(CAMERA).await?;
        if num(&v, "framesDecoded").unwrap_or(0.0) < start_frames + WARM_UP_FRAMES as f64 {
            bail!("{}", without_offer(&v));
        }
        Ok(v)
    })
    .await?;
    let window = measure(viewer, name, codec, link).await?;
    let problems = problems(&window);
    if problems.freezes_only() {
        eprintln!(
            "{name}: {}; {FREEZE_ODDS}: judging one more window",
            problems.list.join(", ")
        );
        return problems_in(name, &measure(viewer, name, codec, link).await?);
    }
    problems_in(name, &window)
}

/// One `WINDOW` of the viewer's counters, with the link's drops in it.
async fn measure(viewer: &LinkViewer<'_>, name: &str, codec: &str, link: &ShapedLink) -> Result<Window> {
    let before = viewer.read(CAMERA).await?;
    let dropped_before = link.dropped_packets()?;
    let opened = Instant::now();
    while opened.elapsed() < WINDOW {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let v = viewer.read(CAMERA).await?;
        if v["state"] != "connected" {
            bail!(
                "{name}'s peer connection left `connected` mid-window: {}",
                without_offer(&v)
            );
        }
    }
    let after = viewer.read(CAMERA).await?;
    let dropped = link.dropped_packets()? - dropped_before;
    let window = Window::between(&before, &after)?;
    eprintln!(
        "{name} {codec}, {LOSS_PERCENT} % loss: {window:?}, link dropped {dropped} packets\n  before {}\n  after  {}",
        without_offer(&before),
        without_offer(&after)
    );
    record(window_json(&window, name, codec, dropped));
    if dropped == 0 {
        bail!("the link dropped nothing during the window: the loss rule is not biting");
    }
    Ok(window)
}

/// Appends one result line to the file named by `EDGECAM_LOSSY_LINK_RESULTS`, if set (bench/lossy_link.sh).
fn record(result: Value) {
    if let Some(path) = std::env::var_os("EDGECAM_LOSSY_LINK_RESULTS") {
        use std::io::Write;
        let line = format!("{result}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("could not record to {}: {e}", path.to_string_lossy());
        }
    }
}

/// What is wrong with one window: the bounds, and the mechanism that meets them (NACKs sent,
/// retransmissions received) where the browser reports it.
struct Problems {
    list: Vec<String>,
    freezes: bool,
}

impl Problems {
    fn freezes_only(&self) -> bool {
        self.freezes && self.list.len() == 1
    }
}

fn problems(w: &Window) -> Problems {
    let mut list = Vec::new();
    if w.fps < MIN_FPS {
        list.push(format!("{:.1} fps < {MIN_FPS}", w.fps));
    }
    let freezes = w.freezes.is_some_and(|f| f > 0.0);
    match w.freezes {
        Some(f) if f > 0.0 => list.push(format!("{f} freezes ({:?} s)", w.freeze_seconds)),
        Some(_) => {}
        None => list.push("no freezeCount in getStats".into()),
    }
    if w.plis.unwrap_or(0.0) > MAX_PLIS {
        list.push(format!("{:?} PLIs (keyframe requests) > {MAX_PLIS}", w.plis));
    }
    if w.nacks.unwrap_or(0.0) <= 0.0 {
        list.push(format!("no NACKs sent ({:?})", w.nacks));
    }
    if w.retransmits.is_some_and(|r| r <= 0.0) {
        list.push("no retransmissions received".into());
    }
    Problems { list, freezes }
}

/// The verdict on one window.
fn problems_in(name: &str, w: &Window) -> Result<()> {
    let problems = problems(w);
    if problems.list.is_empty() {
        return Ok(());
    }
    // Freezes follow load on a shared 2-core machine (Firefox froze at 0 % loss with a load of 5), so
    // the failure says what the load was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    bail!(
        "{name} at {LOSS_PERCENT} % loss: {} ({w:?}); load average {}",
        problems.list.join(", "),
        load.trim()
    )
}

#[test]
fn chromium_h264_stays_smooth_at_3_percent_loss() {
    shaped_link::run_scenario(
        "chromium_h264_stays_smooth_at_3_percent_loss",
        CONFIG,
        None,
        |daemon, link| async move {
            let browser = Browser::launch().await?;
            let page = browser.open(&daemon.url(&format!("/?cameras={CAMERA}"))).await?;
            watch_and_judge(&LinkViewer::Chromium(&page), "chromium", "H264", &link)
                .await
                .with_context(|| common::viewer::page_context(&page))
        },
    );
}

#[test]
fn firefox_vp8_stays_smooth_at_3_percent_loss() {
    shaped_link::run_scenario(
        "firefox_vp8_stays_smooth_at_3_percent_loss",
        CONFIG,
        None,
        |daemon, link| async move {
            let firefox = Firefox::launch().await?;
            firefox.open(&daemon.url(&format!("/?cameras={CAMERA}"))).await?;
            watch_and_judge(&LinkViewer::Firefox(&firefox), "firefox", "VP8", &link)
                .await
                .with_context(|| format!("firefox console:\n{}", firefox.console()))
        },
    );
}

/// The harness itself, with plain UDP sockets and no daemon: the drop rule drops about its share and counts
/// it, the rate cap holds back a burst far larger than its bucket, and both come off again. If this fails,
/// the browser tests' numbers say nothing about edgecam.
#[test]
fn harness_shaped_link_drops_and_caps() {
    use std::net::UdpSocket;
    if let Some(reason) = shaped_link::unavailable() {
        eprintln!("SKIPPED harness_shaped_link_drops_and_caps: {reason}");
        return;
    }
    const PACKETS: usize = 1000;
    const SIZE: usize = 1000;
    let link = ShapedLink::create().unwrap();
    // Sockets keep the namespace they were made in, whichever thread uses them later.
    let rx = link
        .run_in_viewer(|| UdpSocket::bind((shaped_link::VIEWER_ADDR, 0)))
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let to = rx.local_addr().unwrap();
    let tx = link
        .run_in_daemon(|| UdpSocket::bind((shaped_link::DAEMON_ADDR, 0)))
        .unwrap();
    // Received on a thread while sending, so the receiver's socket buffer never overflows (only the link may
    // lose packets); the count ends at 500 ms of silence.
    let rx = std::sync::Arc::new(rx);
    let send_and_count = |paced: bool| {
        let receiver = rx.clone();
        let counting = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut got = 0;
            while receiver.recv(&mut buf).is_ok() {
                got += 1;
            }
            got
        });
        for _ in 0..PACKETS {
            tx.send_to(&[7u8; SIZE], to).unwrap();
            if paced {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        counting.join().unwrap()
    };

    assert_eq!(send_and_count(true), PACKETS, "an unshaped link loses nothing");
    link.set_loss(50).unwrap();
    let got = send_and_count(true);
    let dropped = link.dropped_packets().unwrap() as usize;
    eprintln!("50 % loss: {got} of {PACKETS} arrived, the rule counted {dropped} drops");
    assert!((300..700).contains(&got), "{got} of {PACKETS} arrived at 50 % loss");
    assert_eq!(
        got + dropped,
        PACKETS,
        "every packet either arrived or was counted as dropped"
    );
    link.set_loss(0).unwrap();
    assert_eq!(send_and_count(true), PACKETS, "loss rule removed");

    // 1 MB at once into 300 kbit/s with a 16 KiB bucket and 50 ms of queue: most of it cannot pass.
    link.set_rate(Some(300)).unwrap();
    let got = send_and_count(false);
    eprintln!("300 kbit/s cap, unpaced burst: {got} of {PACKETS} arrived");
    assert!(got < PACKETS / 4, "{got} of {PACKETS} passed a 300 kbit/s cap at once");
    link.set_rate(None).unwrap();
    assert_eq!(send_and_count(true), PACKETS, "rate cap removed");
}

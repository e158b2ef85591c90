//! End-to-end, issue 12 items 2 and 3: one shared encode follows the links its viewers are on. The daemon
//! and headless Chromium run in network namespaces joined by a veth cable whose daemon end is rate-capped
//! with `tc tbf` (testkit/src/shaped_link.rs); a clean viewer runs beside the daemon, off the shaped cable.
//!
//! - a 250 kbit/s link from the start: a live picture within 5 s, then >= 15 fps with under 1 s of freezes in 30 s;
//! - 2 Mbit/s -> 300 kbit/s -> 2 Mbit/s in one session: live throughout, and the encode back at the camera's
//!   full bitrate within 10 s of the cap lifting;
//! - one viewer on 300 kbit/s and one clean: the clean one keeps >= 900 kbit/s at 30 fps, the capped one stays
//!   live at >= 15 fps (on the low tier); when it leaves, the camera is back to one encode.
//!
//! The bounds are the acceptance criteria: behaviour on a link users have, not a benchmark (the
//! numbers go to the test's output; bench/ has the side-by-side comparison).
//! Needs root (network namespaces); without it each test prints why and skips.
//! Run: `cargo test --test shaped_policy -- --include-ignored`. The first two are not met reliably yet
//! (README, Known issues) and are left out of `make test` until they are; the two-viewer test runs there.

use edgecam_testkit as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use common::chromium::{Browser, Page};
use common::daemon::Daemon;
use common::link_stats::{num, without_offer, LinkViewer, Window};
use common::shaped_link;
use common::{api_camera, wait_until, LIVENESS};

/// SMPTE bars with a running clock: x264 spends its whole 1 Mbit/s on it (bench/results/issue7.md), so
/// every cap below is a real squeeze. `auth: none`: only this test's namespaces reach the daemon.
const CONFIG: &str = "discovery: false\nauth: none\ncameras:\n  cap: {test_pattern: smpte, bitrate: 1000}\n";
const CAMERA: &str = "cap";
const FULL_KBPS: u64 = 1000;

/// The observation window.
const WINDOW: Duration = Duration::from_secs(30);
/// The bounds for a capped viewer.
const CAPPED_MIN_FPS: f64 = 15.0;
const CAPPED_MAX_FREEZE_SECONDS: f64 = 1.0;
const FIRST_PICTURE_BOUND: Duration = Duration::from_secs(5);
/// The bounds for the clean viewer beside a capped one.
const CLEAN_MIN_KBPS: f64 = 900.0;
const CLEAN_MIN_FPS: f64 = 29.0;
/// How soon the encode must be back at full rate once a cap lifts.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// "Live throughout" a change of capacity: no stretch this long without a decoded frame. The moment a
/// 1 Mbit/s stream meets a 300 kbit/s link, packets are lost until the estimate has followed (a second or
/// so) and the picture may stall for that long; longer is a dead picture.
const LIVE_GAP: Duration = Duration::from_secs(2);
/// How long each phase of the capacity change lasts.
const PHASE: Duration = Duration::from_secs(20);

async fn read(page: &Page) -> Result<Value> {
    LinkViewer::Chromium(page).read(CAMERA).await
}

/// Opens the page and waits for the first decoded frame; returns how long that took and the reading.
async fn first_picture(browser: &Browser, base: &str) -> Result<(Page, Duration, Value)> {
    let opened = Instant::now();
    let page = browser.open(&format!("{base}/?cameras={CAMERA}")).await?;
    let first = wait_until("the first decoded frame", LIVENESS, || async {
        let v = read(&page).await?;
        if num(&v, "framesDecoded").unwrap_or(0.0) < 1.0 {
            bail!("{}", without_offer(&v));
        }
        Ok(v)
    })
    .await
    .with_context(|| common::viewer::page_context(&page))?;
    Ok((page, opened.elapsed(), first))
}

/// One `WINDOW` of the viewer's counters; the peer connection must stay connected throughout.
async fn window(page: &Page, what: &str) -> Result<Window> {
    let before = read(page).await?;
    let opened = Instant::now();
    while opened.elapsed() < WINDOW {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let v = read(page).await?;
        if v["state"] != "connected" {
            bail!("{what}: the peer connection left `connected`: {}", without_offer(&v));
        }
    }
    let after = read(page).await?;
    let w = Window::between(&before, &after)?;
    eprintln!("{what}: {w:?}");
    Ok(w)
}

/// The camera's encodings in the API ("h264", "h264-low", ...) with the bitrate each was last told.
async fn encodings(daemon: &Daemon) -> Result<serde_json::Map<String, Value>> {
    let camera = api_camera(daemon.addr, CAMERA).await?;
    Ok(camera["encodings"].as_object().cloned().unwrap_or_default())
}

fn judge_capped(what: &str, w: &Window) -> Result<()> {
    let freeze_seconds = w.freeze_seconds.context("no totalFreezesDuration in getStats")?;
    if w.fps < CAPPED_MIN_FPS || freeze_seconds >= CAPPED_MAX_FREEZE_SECONDS {
        bail!(
            "{what}: {:.1} fps (>= {CAPPED_MIN_FPS}), {freeze_seconds:.2} s frozen (< {CAPPED_MAX_FREEZE_SECONDS}): {w:?}",
            w.fps
        );
    }
    Ok(())
}

#[test]
#[ignore = "issue 12, not met reliably yet (README, Known issues); run with --include-ignored"]
fn a_250_kbit_link_gets_a_live_picture_within_5_s_and_stays_smooth() {
    shaped_link::run_scenario(
        "a_250_kbit_link_gets_a_live_picture_within_5_s_and_stays_smooth",
        CONFIG,
        Some(250),
        |daemon, _link| async move {
            let browser = Browser::launch().await?;
            let (page, took, _) = first_picture(&browser, &daemon.url("")).await?;
            eprintln!("first picture on 250 kbit/s after {took:?}");
            let w = window(&page, "250 kbit/s").await;
            eprintln!("encodings: {:?}", encodings(&daemon).await?);
            if took > FIRST_PICTURE_BOUND {
                bail!("the first picture took {took:?} (bound {FIRST_PICTURE_BOUND:?})");
            }
            judge_capped("250 kbit/s", &w?).with_context(|| daemon.log_tail(60))
        },
    );
}

/// Polls every 250 ms for `span`, failing if no frame was decoded for `LIVE_GAP`.
async fn stay_live(page: &Page, what: &str, span: Duration) -> Result<()> {
    let start = Instant::now();
    let mut frames = num(&read(page).await?, "framesDecoded").unwrap_or(0.0);
    let mut last_new_frame = Instant::now();
    while start.elapsed() < span {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let v = read(page).await?;
        let now = num(&v, "framesDecoded").unwrap_or(0.0);
        if now > frames {
            frames = now;
            last_new_frame = Instant::now();
        } else if last_new_frame.elapsed() >= LIVE_GAP {
            bail!(
                "{what}: no frame decoded for {LIVE_GAP:?}, {:.1} s into the phase: {}",
                start.elapsed().as_secs_f64(),
                without_offer(&v)
            );
        }
    }
    Ok(())
}

#[test]
#[ignore = "issue 12, not met yet: ~2 s stall at the drop, ~20 s back up (README, Known issues); run with --include-ignored"]
fn the_encode_follows_a_link_down_to_300_kbit_and_back_up() {
    shaped_link::run_scenario(
        "the_encode_follows_a_link_down_to_300_kbit_and_back_up",
        CONFIG,
        Some(2000),
        |daemon, link| async move {
            let browser = Browser::launch().await?;
            let (page, _, _) = first_picture(&browser, &daemon.url("")).await?;
            let result = async {
                stay_live(&page, "2 Mbit/s", PHASE).await?;
                link.set_rate(Some(300))?;
                stay_live(&page, "300 kbit/s", PHASE).await?;
                let squeezed = encodings(&daemon).await?;
                eprintln!("encodings at 300 kbit/s: {squeezed:?}");
                if squeezed["h264"].as_u64().unwrap_or(0) >= FULL_KBPS {
                    bail!("the encode did not follow the link down: {squeezed:?}");
                }
                link.set_rate(Some(2000))?;
                let lifted = Instant::now();
                let mut seen = Vec::new();
                loop {
                    let now = encodings(&daemon).await?;
                    let kbps = now["h264"].as_u64().unwrap_or(0);
                    seen.push(kbps);
                    if kbps >= FULL_KBPS {
                        eprintln!("back at {kbps} kbit/s after {:?}", lifted.elapsed());
                        break;
                    }
                    if lifted.elapsed() > RECOVERY_BOUND {
                        bail!("not back at {FULL_KBPS} kbit/s {RECOVERY_BOUND:?} after the cap lifted: {seen:?}");
                    }
                    stay_live(&page, "2 Mbit/s again", Duration::from_millis(500)).await?;
                }
                Ok(())
            }
            .await;
            result.with_context(|| daemon.log_tail(80))
        },
    );
}

/// Waits at `barrier` for the other viewer's thread; an error (not a hang) if it never comes, say
/// because its browser failed.
async fn meet(barrier: &tokio::sync::Barrier, what: &str) -> Result<()> {
    tokio::time::timeout(LIVENESS + WINDOW, barrier.wait())
        .await
        .map(drop)
        .map_err(|_| anyhow::anyhow!("waited in vain for {what}"))
}

#[test]
fn a_capped_viewer_moves_to_the_low_tier_and_the_clean_one_keeps_full_quality() {
    shaped_link::run_scenario(
        "a_capped_viewer_moves_to_the_low_tier_and_the_clean_one_keeps_full_quality",
        CONFIG,
        Some(300),
        |daemon, link| async move {
            // The clean viewer runs on its own thread and runtime in the daemon's namespace, off the shaped
            // cable (its browser's DevTools socket lives there); the barriers line the two windows up.
            let both_live = Arc::new(tokio::sync::Barrier::new(2));
            let capped_left = Arc::new(tokio::sync::Barrier::new(2));
            let clean_url = format!("http://{}", daemon.addr);
            let (live, left) = (both_live.clone(), capped_left.clone());
            let clean = link.spawn_in_daemon(move || -> Result<Window> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let browser = Browser::launch().await?;
                    let (page, _, _) = first_picture(&browser, &clean_url).await?;
                    meet(&live, "the capped viewer's first picture").await?;
                    let w = window(&page, "clean viewer beside a 300 kbit/s one").await;
                    meet(&left, "the capped viewer leaving").await?;
                    w
                })
            });

            let browser = Browser::launch().await?;
            let (page, _, _) = first_picture(&browser, &daemon.url("")).await?;
            if let Err(e) = meet(&both_live, "the clean viewer's first picture").await {
                // Its thread gave up before the barrier's bound: its error says why.
                let clean = clean.join().expect("clean viewer thread");
                return Err(e.context(format!("the clean viewer: {:?}", clean.err())));
            }
            let capped = window(&page, "viewer on 300 kbit/s beside a clean one").await;
            let during = encodings(&daemon).await?;
            eprintln!("encodings with both: {during:?}");
            page.close().await?;
            meet(&capped_left, "the clean viewer's window").await?;
            let clean = clean.join().expect("clean viewer thread")?;

            let capped = capped?;
            let mut problems = Vec::new();
            if clean.fps < CLEAN_MIN_FPS || clean.kbps.unwrap_or(0.0) < CLEAN_MIN_KBPS {
                problems.push(format!(
                    "the clean viewer got {:.1} fps, {:?} kbit/s (>= {CLEAN_MIN_FPS}, >= {CLEAN_MIN_KBPS})",
                    clean.fps, clean.kbps
                ));
            }
            if capped.fps < CAPPED_MIN_FPS {
                problems.push(format!(
                    "the capped viewer got {:.1} fps (>= {CAPPED_MIN_FPS})",
                    capped.fps
                ));
            }
            if during.len() != 2 {
                problems.push(format!("not two encodings while both watched: {during:?}"));
            }
            if !problems.is_empty() {
                bail!("{}\n{}", problems.join("; "), daemon.log_tail(60));
            }
            wait_until("one encoding once the capped viewer left", LIVENESS, || async {
                let now = encodings(&daemon).await?;
                if now.len() != 1 {
                    bail!("{now:?}");
                }
                Ok(())
            })
            .await
        },
    );
}

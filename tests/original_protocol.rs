//! End-to-end: a client speaking exactly the original dual-camera signalling protocol (`ready` ->
//! `offer` -> `answer` -> candidates), with GStreamer's webrtcbin as the receiving peer, gets video from
//! a daemon configured with the original's camera ids (camera1, camera2; synthetic test patterns here).
//! Also: both cameras on one websocket, reconnecting without restarting the daemon, the original viewer
//! URL, and join/leave cycles leaving no threads or file descriptors behind.
//!
//! Run: `cargo test --test original_protocol` (needs gstreamer1.0-plugins-bad for webrtcbin and openh264dec,
//! gstreamer1.0-nice).

use edgecam_testkit as common;

use anyhow::{bail, Result};

use common::daemon::Daemon;
use common::webrtc_client::OriginalSession;
use common::{heavy_lock, http_get, wait_streaming, wait_viewers, LIVENESS};

/// The original's CAMERAS dict, as synthetic cameras.
const CONFIG: &str = "\
discovery: false
cameras:
  camera1:
    test_pattern: smpte
  camera2:
    test_pattern: ball
";

/// Enough decoded frames that it is a stream, not a lucky keyframe.
const FRAMES: u64 = 30;

fn frames(session: &OriginalSession, camera: &str) -> u64 {
    session.viewers[camera].received().frames
}

/// The viewer for `camera` decodes `FRAMES` frames, then keeps decoding.
async fn decodes(session: &mut OriginalSession, camera: &str) -> Result<()> {
    session
        .pump_until(&format!("{FRAMES} frames of {camera}"), LIVENESS, |v| {
            v[camera].received().frames >= FRAMES
        })
        .await?;
    let before = frames(session, camera);
    session
        .pump_until(&format!("{camera} still decoding"), LIVENESS, |v| {
            v[camera].received().frames > before
        })
        .await?;
    eprintln!("{}", session.viewers[camera].describe());
    Ok(())
}

/// The original guarantees: H.264 at 640x480.
fn check_format(session: &OriginalSession, camera: &str) -> Result<()> {
    let r = session.viewers[camera].received();
    if r.encoding.as_deref() != Some("H264") || (r.width, r.height) != (640, 480) {
        bail!("{camera}: expected H264 640x480, got {r:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_client_gets_video_from_camera1() {
    let _heavy = heavy_lock();
    let daemon = Daemon::start(CONFIG, &[]).unwrap();
    async {
        wait_streaming(daemon.addr, "camera1").await?;
        let mut session = OriginalSession::connect(daemon.addr).await?;
        session.ready("camera1").await?;
        decodes(&mut session, "camera1").await?;
        check_format(&session, "camera1")?;
        wait_viewers(daemon.addr, "camera1", 1).await?;
        wait_viewers(daemon.addr, "camera2", 0).await?;
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

/// The original viewer's "Connect Both Cameras" (both on one websocket), then "reconnecting without
/// restarting the sender": a new websocket and `ready` again after the first went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_client_both_cameras_then_reconnect() {
    let _heavy = heavy_lock();
    let daemon = Daemon::start(CONFIG, &[]).unwrap();
    async {
        wait_streaming(daemon.addr, "camera1").await?;
        wait_streaming(daemon.addr, "camera2").await?;
        let mut session = OriginalSession::connect(daemon.addr).await?;
        session.ready("camera1").await?;
        session.ready("camera2").await?;
        session
            .pump_until(&format!("{FRAMES} frames of both cameras"), LIVENESS, |v| {
                v["camera1"].received().frames >= FRAMES && v["camera2"].received().frames >= FRAMES
            })
            .await?;
        let (c1, c2) = (frames(&session, "camera1"), frames(&session, "camera2"));
        session
            .pump_until("both cameras still decoding", LIVENESS, |v| {
                v["camera1"].received().frames > c1 && v["camera2"].received().frames > c2
            })
            .await?;
        eprintln!("{}", session.describe());
        check_format(&session, "camera1")?;
        check_format(&session, "camera2")?;
        wait_viewers(daemon.addr, "camera1", 1).await?;
        wait_viewers(daemon.addr, "camera2", 1).await?;

        // The browser tab goes away.
        drop(session);
        wait_viewers(daemon.addr, "camera1", 0).await?;
        wait_viewers(daemon.addr, "camera2", 0).await?;

        let mut session = OriginalSession::connect(daemon.addr).await?;
        session.ready("camera1").await?;
        decodes(&mut session, "camera1").await?;
        wait_viewers(daemon.addr, "camera1", 1).await?;
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

/// The original viewer lived at /dual_camera_viewer.html; bookmarks to it keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_viewer_url_serves_the_page() {
    let daemon = Daemon::start(CONFIG, &[]).unwrap();
    async {
        for path in ["/", "/dual_camera_viewer.html"] {
            let (status, body) = http_get(daemon.addr, path).await?;
            if status != 200 || !body.to_ascii_lowercase().contains("<html") {
                bail!(
                    "GET {path}: HTTP {status}, body starts {:?}",
                    &body[..body.len().min(200)]
                );
            }
        }
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

/// Threads and open files of a process, from /proc.
fn threads_and_fds(pid: u32) -> Result<(usize, usize)> {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((threads, fds))
}

/// Viewers joining and leaving leave nothing behind: every webrtcbin adds about 8 threads and a few
/// sockets, so a branch that is not torn down shows up as growth proportional to the number of cycles.
/// The baseline is taken after one warm-up cycle (GStreamer and libnice start some shared threads lazily).
/// The slack absorbs pool threads that come and go (GLib thread pools keep idle threads a while: measured
/// here, 17 to 24 threads between cycles, back to 21 every time over 14 cycles) and stays below one leaked
/// thread or socket per cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_cycles_leak_no_threads_or_fds() {
    const CYCLES: usize = 10;
    const SLACK: usize = 8;
    let _heavy = heavy_lock();
    let daemon = Daemon::start(CONFIG, &[]).unwrap();
    let pid = daemon.pid().unwrap();
    async {
        wait_streaming(daemon.addr, "camera1").await?;
        let mut baseline = None;
        for cycle in 0..=CYCLES {
            let mut session = OriginalSession::connect(daemon.addr).await?;
            session.ready("camera1").await?;
            session
                .pump_until("camera1 decoding", LIVENESS, |v| v["camera1"].received().frames >= 5)
                .await?;
            drop(session);
            wait_viewers(daemon.addr, "camera1", 0).await?;
            eprintln!("cycle {cycle}: threads, fds {:?}", threads_and_fds(pid)?);
            if cycle == 0 {
                // Let the first teardown finish before counting.
                baseline = Some(
                    common::wait_until("counts to settle after the warm-up cycle", LIVENESS, || async {
                        let a = threads_and_fds(pid)?;
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        let b = threads_and_fds(pid)?;
                        if a != b {
                            bail!("still changing: {a:?} -> {b:?}");
                        }
                        Ok(b)
                    })
                    .await?,
                );
            }
        }
        let (threads0, fds0) = baseline.unwrap();
        let after = common::wait_until("threads and fds back to the baseline", LIVENESS, || async {
            let (threads, fds) = threads_and_fds(pid)?;
            if threads > threads0 + SLACK || fds > fds0 + SLACK {
                bail!("after {CYCLES} join/leave cycles: threads {threads0} -> {threads}, fds {fds0} -> {fds}");
            }
            Ok((threads, fds))
        })
        .await?;
        eprintln!(
            "threads, fds: after warm-up {:?}, after {CYCLES} more cycles {after:?}",
            (threads0, fds0)
        );
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

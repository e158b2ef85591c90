//! End-to-end: a client speaking exactly the original dual-camera signalling protocol (`ready` ->
//! `offer` -> `answer` -> candidates), with GStreamer's webrtcbin as the receiving peer, gets video from
//! a daemon configured with the original's camera ids (camera1, camera2; synthetic test patterns here).
//!
//! Run: `cargo test --test original_protocol` (needs gstreamer1.0-plugins-bad for webrtcbin and openh264dec,
//! gstreamer1.0-nice).

mod common;

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
                bail!("GET {path}: HTTP {status}, body starts {:?}", &body[..body.len().min(200)]);
            }
        }
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

//! End-to-end: peers whose DTLS handshake ends in a fatal alert cannot hurt a camera. Each hostile peer
//! completes ICE with a real webrtcbin, but its answer claims the passive DTLS role while it acts as a
//! client too: both ends send ClientHello, and the handshake dies with an "unexpected message" alert.
//! 100 of those, a few at a time, while headless Chromium decodes the same camera: every hostile
//! session is answered with an `error`, the page keeps decoding, and the camera stays on its first
//! encoder with no fallback (before the fix, two such sessions moved it x264 -> openh264 -> failed).
//!
//! Run: `cargo test --test hostile_dtls` (needs /usr/bin/chromium).

use edgecam_testkit as common;

use std::time::Duration;

use anyhow::Result;
use futures_util::future::try_join_all;

use common::chromium::Browser;
use common::daemon::Daemon;
use common::viewer::{open_viewer, wait_decoding, wait_rising};
use common::webrtc_client::OriginalSession;
use common::{api_camera, heavy_lock, wait_viewers};

/// The count: enough sessions that any per-session leak or miscount would show.
const HOSTILE_SESSIONS: usize = 100;
/// Sessions at once: each is a webrtcbin in this process, and the machine has two cores.
const AT_ONCE: usize = 4;

fn claim_passive(sdp: &str) -> String {
    sdp.replace("a=setup:active", "a=setup:passive")
}

async fn hostile_session(addr: std::net::SocketAddr) -> Result<String> {
    let mut session = OriginalSession::connect(addr).await?;
    session.rewrite_answer = Some(claim_passive);
    session.ready("demo1").await?;
    let error = session.pump_until_daemon_error(Duration::from_secs(60)).await?;
    // Hang up properly: the daemon holds at most 16 websockets per address (http/ws_limits.rs).
    let _ = session.sig.ws.close(None).await;
    Ok(error["message"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtls_alerts_end_only_their_own_session() {
    let _heavy = heavy_lock();
    let daemon = Daemon::demo(1).unwrap();
    let browser = Browser::launch().await.unwrap();
    let page = open_viewer(&browser, &daemon, "?cameras=demo1").await.unwrap();
    let base = wait_decoding(&page, &["demo1"], None).await.unwrap();
    let before = api_camera(daemon.addr, "demo1").await.unwrap();
    let first_encoder = before["encoder"].clone();

    let mut messages = Vec::new();
    for _ in 0..HOSTILE_SESSIONS / AT_ONCE {
        let round = try_join_all((0..AT_ONCE).map(|_| hostile_session(daemon.addr)))
            .await
            .unwrap();
        messages.extend(round);
    }
    assert_eq!(
        messages.len(),
        HOSTILE_SESSIONS,
        "every hostile session got an error reply"
    );
    assert!(
        messages
            .iter()
            .all(|m| m.contains("DTLS") || m.contains("dtls") || m.contains("ICE")),
        "each error names what broke: {messages:?}"
    );

    let after = api_camera(daemon.addr, "demo1").await.unwrap();
    assert_eq!(after["state"], "streaming", "{after}");
    assert_eq!(after["encoder"], first_encoder, "still on its first encoder: {after}");
    let detail = after["detail"].as_str().unwrap_or_default();
    assert!(!detail.contains("fell back"), "no fallback: {after}");
    assert!(
        !daemon.log().contains("encoder failed"),
        "no hostile session was read as an encoder failure"
    );
    wait_viewers(daemon.addr, "demo1", 1).await.unwrap();
    // Rising past what it had decoded before the first hostile session: the page kept its video.
    wait_rising(&page, &base).await.unwrap();
}

//! End-to-end, issue 14 item 2: a camera pushed over WHIP to a real media server, Janus 1.1.2 from
//! Debian 12 behind its WHIP front simple-whip-server (testkit/src/janus.rs), watched by three headless
//! Chromium tabs through Janus's VideoRoom while the daemon serves one session; Janus restarted under
//! it, the push finds the server gone by itself and reconnects, and the tabs get video again; the
//! daemon stopping DELETEs its session.
//!
//! Network: Janus gathers no loopback candidates, so everything runs in a private network namespace
//! joined to a second one by a veth cable (testkit/src/netns.rs), ICE on the veth address. Needs root
//! for `ip netns add`; without it the test prints why and skips.
//!
//! Run: `flock /tmp/edgecam-e2e.lock cargo test --test whip_push`.

use edgecam_testkit as common;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use common::chromium::Browser;
use common::daemon::Daemon;
use common::janus::{wait_watching, Janus};
use common::netns::{self, NetnsPair, ADDR_A};
use common::viewer::{page_context, wait_js_true};
use common::{api_camera, heavy_lock, wait_until, LIVENESS};

/// Frames one Janus subscription must decode to count as watching: a second of video.
const FRAMES: u64 = 30;
/// The demo camera's width: what each tab must decode.
const WIDTH: u64 = 640;
const VIEWERS: usize = 3;
const TOKEN: &str = "push-secret";

#[test]
fn a_camera_pushed_to_janus_reaches_three_browsers_and_survives_a_janus_restart() {
    if let Some(reason) = netns::unavailable() {
        eprintln!("SKIPPED a_camera_pushed_to_janus_reaches_three_browsers_and_survives_a_janus_restart: {reason}");
        return;
    }
    let _heavy = heavy_lock();
    let ns = NetnsPair::create().expect("create the test's network namespaces");
    ns.block_on(scenario).unwrap();
}

async fn scenario() -> Result<()> {
    let mut janus = Janus::start(ADDR_A.into()).await?;
    let whip = janus.create_endpoint("door", TOKEN).await?;
    let config = format!(
        "discovery: false\ncameras:\n  door:\n    test_pattern: ball\n    push: {{whip: \"{whip}\", token: {TOKEN}}}\n"
    );
    let mut daemon = Daemon::start(&config, &["--ice-local-address", &ADDR_A.to_string()])?;
    let context = |daemon: &Daemon, janus: &Janus| format!("{}\n{}", daemon.log_tail(60), janus.logs());

    let push = wait_push(&daemon, "connected", |_| true)
        .await
        .with_context(|| context(&daemon, &janus))?;
    assert!(push.get("last_error").is_none(), "first session is clean: {push}");

    let chromium = Browser::launch().await?;
    let url = janus.viewer_page()?;
    let mut pages = Vec::new();
    for _ in 0..VIEWERS {
        pages.push(chromium.open(&url).await?);
    }
    for (n, page) in pages.iter().enumerate() {
        wait_watching(page, 1, FRAMES, WIDTH)
            .await
            .with_context(|| format!("tab {n}:\n{}\n{}", page_context(page), context(&daemon, &janus)))?;
    }
    // Three browsers watch, the device serves one session: the push.
    let camera = api_camera(daemon.addr, "door").await?;
    assert_eq!(camera["viewers"], 1, "only the push is the daemon's viewer: {camera}");

    janus.restart_janus()?;
    // Nothing tells the daemon the server went away (no ICE or DTLS error from a killed peer): its
    // RTCP stops, the push ends the session and posts a new offer once the WHIP server has Janus back.
    let push = wait_push(&daemon, "connected", |p| {
        p["last_error"].as_str().is_some_and(|e| e.contains("no RTCP"))
    })
    .await
    .with_context(|| context(&daemon, &janus))?;
    eprintln!("push after the restart: {push}");
    for (n, page) in pages.iter().enumerate() {
        wait_watching(page, 2, FRAMES, WIDTH).await.with_context(|| {
            format!(
                "tab {n} after the restart:\n{}\n{}",
                page_context(page),
                context(&daemon, &janus)
            )
        })?;
    }
    assert!(janus.endpoint_enabled("door").await?, "the WHIP session is up");
    // The camera's card says so, with why the previous session ended.
    let card = chromium.open(&daemon.url("/")).await?;
    wait_js_true(
        &card,
        "the card showing the push",
        "(t => t.includes('Push to media server: connected') && t.includes('no RTCP'))\
         ((document.querySelector('.push:not([hidden])') || {}).textContent || '')",
    )
    .await
    .with_context(|| page_context(&card))?;

    daemon.stop()?;
    assert!(
        !janus.endpoint_enabled("door").await?,
        "the daemon DELETEs its WHIP session when it stops:\n{}",
        context(&daemon, &janus)
    );
    Ok(())
}

/// Waits until the camera's push is in `state` and `also` holds for it; returns its `push` object.
async fn wait_push(daemon: &Daemon, state: &str, also: impl Fn(&Value) -> bool) -> Result<Value> {
    wait_until(&format!("push {state}"), LIVENESS, || async {
        let camera = api_camera(daemon.addr, "door").await?;
        let push = &camera["push"];
        if push["state"] != state || !also(push) {
            bail!("{push}");
        }
        Ok(push.clone())
    })
    .await
}

//! End-to-end, issue 5: an encoder that fails at run time, while a browser is watching.
//!
//! The camera's first-choice encoder passes the start-up trial (10 frames) and then fails: the fixture
//! tests/fixtures/encoders/failing/x264-fails-after-60.yaml (`x264enc ! identity error-after=N`, priority
//! 1000 so it is chosen first), copied into a temporary profile dir under another name with a larger N,
//! so that the failure comes while a headless Chromium is already decoding. Expected: /api/cameras shows
//! demo1 on the failing profile, then on x264 with `detail` "fell back from <failing>: ...", the viewer is
//! kept (re-offered on the new pipeline; the page handles that offer by itself), and the page's
//! `edgecam.stats('demo1')` (which follows whatever peer connection the page now uses) shows H.264 frames
//! decoded and rising after the switch.
//!
//! Run: `cargo test --test encoder_fallback` (needs /usr/bin/chromium).

use edgecam_testkit as common;

use std::time::Duration;

use anyhow::{bail, Context, Result};

use common::chromium::{Browser, Page};
use common::daemon::{Daemon, NO_DISCOVERY};
use common::viewer::{open_viewer, page_context, page_view, wait_decoding, wait_frames_more, wait_rising};
use common::{api_camera, heavy_lock, wait_streaming, wait_until, wait_viewers, LIVENESS};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/encoders/failing/x264-fails-after-60.yaml"
);

/// Buffers the failing encoder lets through before its error: 20 s at 30 fps, counted from the pipeline's
/// start (the daemon keeps encoding with no viewers). Chromium is launched before the daemon and usually
/// decodes within a few seconds; if the failure still comes first, the test says so rather than passing.
const ERROR_AFTER: u32 = 600;

/// Frames that must be decoded on one peer connection after the switch. The old pipeline is gone by the
/// time /api/cameras names the new encoder, so at most the few frames in the browser's jitter buffer can
/// be old ones; two seconds of video cannot be.
const FRAMES_AFTER_SWITCH: u64 = 60;

/// The failing profile under a name of its own, with `error-after` raised.
fn failing_profile(dir: &std::path::Path) -> Result<String> {
    let name = format!("x264-fails-after-{ERROR_AFTER}");
    let yaml = std::fs::read_to_string(FIXTURE).context(FIXTURE)?;
    if !yaml.contains("name: x264-fails-after-60\n") || !yaml.contains("error-after=60 ") {
        bail!("fixture {FIXTURE} changed shape; update this test:\n{yaml}");
    }
    let yaml = yaml
        .replace("name: x264-fails-after-60\n", &format!("name: {name}\n"))
        .replace("error-after=60 ", &format!("error-after={ERROR_AFTER} "));
    std::fs::write(dir.join(format!("{name}.yaml")), yaml)?;
    Ok(name)
}

/// For failure messages: the peer connection's states, its transport and every inbound-rtp it has.
const DIAG_JS: &str = r#"
(async () => {
  const cam = window.edgecam && window.edgecam.cameras.get('demo1');
  const pc = cam && cam.pc;
  if (!pc) return { status: cam ? cam.status : null, pc: null };
  const out = { status: cam.status, message: cam.message, tag: pc.__edgecamTestTag, connectionState: pc.connectionState,
                iceConnectionState: pc.iceConnectionState, signalingState: pc.signalingState, stats: [] };
  (await pc.getStats()).forEach(s => {
    if (['inbound-rtp', 'transport', 'codec'].includes(s.type) || (s.type === 'candidate-pair' && s.nominated))
      out.stats.push(s);
  });
  const fp = (sdp) => (sdp || '').split('\r\n').filter(l => /^a=(fingerprint|ice-ufrag|mid|ssrc:\d+ cname)/.test(l));
  out.remote = fp(pc.remoteDescription && pc.remoteDescription.sdp);
  return out;
})()"#;

async fn diagnose(page: &Page) -> String {
    match page.eval(DIAG_JS).await {
        Ok(v) => format!("page state: {v:#}\n{}", page_context(page)),
        Err(e) => format!("page state unreadable: {e:#}\n{}", page_context(page)),
    }
}

// The heavy lock is held for the whole test on purpose (one browser + daemon at a time on 2 cores).
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoder_failing_at_run_time_falls_back_while_a_browser_watches() {
    let _heavy = heavy_lock();
    let profiles = tempfile::tempdir().unwrap();
    let failing = failing_profile(profiles.path()).unwrap();
    // The browser first: its start-up is the slow part, and the failing encoder's clock starts with the daemon.
    let browser = Browser::launch().await.unwrap();
    let daemon = Daemon::start(
        NO_DISCOVERY,
        &["--demo", "1", "--profile-dir", profiles.path().to_str().unwrap()],
    )
    .unwrap();

    async {
        // 1. The failing profile is the camera's first choice.
        wait_streaming(daemon.addr, "demo1").await?;
        let cam = api_camera(daemon.addr, "demo1").await?;
        if cam["encoder"] != failing.as_str() {
            bail!("demo1 should start on {failing} (priority 1000, passes the trial): {cam}");
        }

        // 2. A viewer decodes from it.
        let page = open_viewer(&browser, &daemon, "?cameras=demo1").await?;
        let base = wait_decoding(&page, &["demo1"], None).await?;
        let before = wait_rising(&page, &base).await?;
        let old_pc = before["demo1"].pc.clone();
        let seen = page_view(&page, "demo1").await?;
        if seen.codec.as_deref() != Some("H264") {
            bail!(
                "before the failure, the page decodes {:?}, not H264 ({seen:?})",
                seen.codec
            );
        }
        let cam = api_camera(daemon.addr, "demo1").await?;
        if cam["encoder"] != failing.as_str() {
            bail!(
                "the encoder failed before the viewer was decoding, so this run did not test a fallback under a \
                 watching browser (raise ERROR_AFTER): {cam}"
            );
        }
        let remote_before = page.eval(&format!("({DIAG_JS}).then(d => d.remote)")).await?;
        eprintln!("decoding from {failing}: {seen:?}; remote description {remote_before}");
        if daemon.log().contains("encoder failed") {
            bail!(
                "an encoder failure was logged before error-after={ERROR_AFTER} buffers:\n{}",
                daemon.log_tail(40)
            );
        }

        // 3. It fails; the camera goes on with x264 and says why.
        let cam = wait_until(
            "demo1 on x264 after the failure, in /api/cameras",
            // The failure comes ERROR_AFTER frames after the pipeline started, then the rebuild.
            Duration::from_secs(u64::from(ERROR_AFTER) / 30) + LIVENESS,
            || async {
                let cam = api_camera(daemon.addr, "demo1").await?;
                let detail = cam["detail"].as_str().unwrap_or("");
                if cam["encoder"] != "x264"
                    || cam["state"] != "streaming"
                    || !detail.starts_with(&format!("fell back from {failing}"))
                {
                    bail!("{cam}");
                }
                Ok(cam)
            },
        )
        .await?;
        eprintln!("after the failure: {cam}");
        let log = daemon.log();
        if !log
            .lines()
            .any(|l| l.contains("encoder failed; falling back") && l.contains(failing.as_str()))
        {
            bail!("no 'encoder failed; falling back' line naming {failing} in the daemon log");
        }

        // 4. The same page, without any help from the test, decodes H.264 from the new pipeline.
        // The baseline is the first read on a peer connection that is live and decoding; if the page
        // replaces its pc after that (a second offer), counting restarts on the new one.
        let rising = wait_frames_more(
            &format!("framesDecoded +{FRAMES_AFTER_SWITCH} (H264) on one peer connection after the switch"),
            None,
            FRAMES_AFTER_SWITCH,
            "H264",
            || page_view(&page, "demo1"),
        )
        .await;
        let (after, rising) = match rising {
            Ok(r) => r,
            Err(e) => return Err(e.context(diagnose(&page).await)),
        };
        eprintln!(
            "after the switch: framesDecoded {} -> {} ({:?}, {} peer connection than before)",
            after.frames,
            rising.frames,
            rising.codec,
            if rising.pc == old_pc { "same" } else { "a new" }
        );
        // The viewer was carried over, not dropped and re-added as a second one.
        wait_viewers(daemon.addr, "demo1", 1).await?;
        let cam = api_camera(daemon.addr, "demo1").await?;
        if cam["encoder"] != "x264" {
            bail!("demo1 left x264 again: {cam}");
        }
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

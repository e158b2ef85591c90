//! End-to-end, issue 5: a browser without H.264 gets VP8, from the same camera, at the same time as a
//! browser with H.264 gets H.264; the extra VP8 encode exists only while such a viewer watches.
//!
//! Browsers: Debian's firefox-esr (no H.264 for WebRTC offline: it would download Cisco's OpenH264; the
//! test's profile also turns OpenH264 and hardware H.264 off, see testkit/src/firefox.rs, and the test checks the
//! page's `RTCRtpReceiver.getCapabilities('video')` lists VP8 and no H264) driven over WebDriver BiDi, and
//! Debian's headless Chromium (H.264) driven over DevTools.
//!
//! Network: Firefox fails ICE on loopback alone (notes/gstreamer-webrtc.md), so the test makes a private pair
//! of network namespaces joined by a veth cable (testkit/src/netns.rs: 10.77.0.1 <-> 10.77.0.2, both ends in
//! namespaces of the test's own) and runs the daemon and both browsers in the first one. Pages load from
//! the daemon on 127.0.0.1 there; ICE uses only the veth address (`--ice-local-address 10.77.0.1`), which
//! both browsers reach. Needs root for `ip netns add`; without it the test prints why and skips.
//!
//! Run: `cargo test --test vp8_browsers`.

use edgecam_testkit as common;

use anyhow::{bail, Context, Result};

use common::browser_process::last_lines;
use common::chromium::{Browser, Page};
use common::daemon::{Daemon, NO_DISCOVERY};
use common::firefox::Firefox;
use common::netns::{self, NetnsPair, ADDR_A};
use common::viewer::{open_viewer, page_context, page_view_js, wait_decoding, wait_frames_more, wait_rising, PageView};
use common::{heavy_lock, wait_until, wait_viewers, LIVENESS};

/// Frames decoded on one peer connection that count as "decoding": a second of video, far more than a
/// stray keyframe or what sits in a jitter buffer.
const FRAMES: u64 = 30;

const VP8_STARTED: &str = "starting a VP8 encode for browsers without H.264";
const ENCODING_STOPPED: &str = "last viewer of this encoding left; stopping it";

/// Either browser's page, read the same way.
enum View<'a> {
    Chromium(&'a Page),
    Firefox(&'a Firefox),
}

impl View<'_> {
    async fn read(&self) -> Result<PageView> {
        let js = page_view_js("demo1");
        PageView::parse(
            "demo1",
            match self {
                View::Chromium(page) => page.eval(&js).await?,
                View::Firefox(ff) => ff.eval(&js).await?,
            },
        )
    }

    fn name(&self) -> &'static str {
        match self {
            View::Chromium(_) => "chromium",
            View::Firefox(_) => "firefox",
        }
    }

    fn context(&self) -> String {
        match self {
            View::Chromium(page) => page_context(page),
            View::Firefox(ff) => format!(
                "firefox page console (last 40 lines):\n{}",
                last_lines(&ff.console(), 40)
            ),
        }
    }

    /// Waits until the page is live on a peer connection and decodes `codec`, then until that same
    /// peer connection has decoded `FRAMES` more: returns (first read, last read).
    async fn wait_codec_rising(&self, codec: &str) -> Result<(PageView, PageView)> {
        let base = wait_until(
            &format!("{} decoding demo1 as {codec}", self.name()),
            LIVENESS,
            || async {
                let s = self.read().await?;
                if !s.live() || s.codec.as_deref() != Some(codec) {
                    bail!("{s:?}");
                }
                Ok(s)
            },
        )
        .await
        .with_context(|| self.context())?;
        self.wait_more(&base, codec).await.map(|last| (base, last))
    }

    /// Waits until the peer connection of `base` has decoded `FRAMES` more frames, still as `codec`.
    async fn wait_more(&self, base: &PageView, codec: &str) -> Result<PageView> {
        let (_, s) = wait_frames_more(
            &format!("{} framesDecoded +{FRAMES} as {codec}", self.name()),
            Some(base),
            FRAMES,
            codec,
            || self.read(),
        )
        .await
        .with_context(|| self.context())?;
        eprintln!(
            "{}: demo1 {codec} framesDecoded {} -> {} ({}px wide)",
            self.name(),
            base.frames,
            s.frames,
            s.width
        );
        Ok(s)
    }
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn firefox_gets_vp8_while_chromium_gets_h264_and_vp8_stops_after() {
    if let Some(reason) = netns::unavailable() {
        eprintln!("SKIPPED firefox_gets_vp8_while_chromium_gets_h264_and_vp8_stops_after: {reason}");
        return;
    }
    let _heavy = heavy_lock();
    let ns = NetnsPair::create().expect("create the test's network namespaces");
    ns.run_in(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(scenario()).unwrap();
    });
}

async fn scenario() -> Result<()> {
    let daemon = Daemon::start(
        NO_DISCOVERY,
        &["--demo", "1", "--ice-local-address", &ADDR_A.to_string()],
    )?;
    let chromium = Browser::launch().await?;
    let url = daemon.url("/?cameras=demo1");

    // 1. Chromium alone: H.264, and no VP8 encode started for it.
    let page = open_viewer(&chromium, &daemon, "?cameras=demo1").await?;
    let base = wait_decoding(&page, &["demo1"], None).await?;
    wait_rising(&page, &base).await?;
    let chrome = View::Chromium(&page);
    let (_, chrome_alone) = chrome.wait_codec_rising("H264").await?;
    wait_viewers(daemon.addr, "demo1", 1).await?;
    if count(&daemon.log(), VP8_STARTED) != 0 {
        bail!(
            "a VP8 encode was started for Chromium, which lists H264:\n{}",
            daemon.log_tail(40)
        );
    }

    // 2. Firefox joins: it must not list H264, and gets VP8 from an extra encode of the same camera.
    let mut firefox = Firefox::launch().await?;
    firefox.open(&url).await?;
    let codecs = wait_until("firefox page's receive codecs", LIVENESS, || async {
        let v = firefox
            .eval("RTCRtpReceiver.getCapabilities('video').codecs.map(c => c.mimeType.split('/')[1])")
            .await?;
        match v.as_array() {
            Some(list) if !list.is_empty() => Ok(list
                .iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect::<Vec<_>>()),
            _ => bail!("getCapabilities gave {v}"),
        }
    })
    .await?;
    eprintln!("firefox receive codecs: {codecs:?}");
    if codecs.iter().any(|c| c.eq_ignore_ascii_case("H264")) {
        bail!("firefox lists H264 ({codecs:?}): this run would not test a browser without H.264 (check the prefs in testkit/src/firefox.rs)");
    }
    if !codecs.iter().any(|c| c.eq_ignore_ascii_case("VP8")) {
        bail!("firefox lists no VP8 ({codecs:?})");
    }
    let fox = View::Firefox(&firefox);
    let (fox_first, _) = fox.wait_codec_rising("VP8").await?;
    wait_viewers(daemon.addr, "demo1", 2).await?;
    let log = daemon.log();
    // Started once more than stopped: one VP8 encode running (a Firefox retry may have started and
    // stopped one before; that is fine, two at once or none is not).
    let (started, stopped) = (count(&log, VP8_STARTED), count(&log, ENCODING_STOPPED));
    if started == 0 || started != stopped + 1 {
        bail!(
            "with Firefox watching, '{VP8_STARTED}' {started} times and '{ENCODING_STOPPED}' {stopped} times:\n{}",
            daemon.log_tail(40)
        );
    }
    if !log
        .lines()
        .any(|l| l.contains("viewer joined") && l.to_ascii_lowercase().contains("codec=vp8"))
    {
        bail!(
            "no 'viewer joined codec=vp8' line in the daemon log:\n{}",
            daemon.log_tail(40)
        );
    }

    // 3. Both at once: each has decoded FRAMES more since a common moment, each in its own codec, on the
    // peer connections seen before (Chromium's H.264 viewer was not disturbed by the VP8 encode's arrival).
    let chrome_now = chrome.read().await?;
    let fox_now = fox.read().await?;
    if chrome_now.pc != chrome_alone.pc {
        bail!("Chromium's peer connection was replaced when Firefox joined: {chrome_alone:?} -> {chrome_now:?}");
    }
    if fox_now.pc != fox_first.pc {
        bail!("Firefox's peer connection was replaced: {fox_first:?} -> {fox_now:?}");
    }
    chrome.wait_more(&chrome_now, "H264").await?;
    fox.wait_more(&fox_now, "VP8").await?;

    // 4. Firefox quits: the daemon drops that viewer and the VP8 encode with it; Chromium goes on.
    if count(&daemon.log(), ENCODING_STOPPED) != stopped {
        bail!(
            "an encoding was stopped while both viewers watched:\n{}",
            daemon.log_tail(40)
        );
    }
    firefox.close().await?;
    wait_viewers(daemon.addr, "demo1", 1).await?;
    wait_until("the daemon stopping the VP8 encode", LIVENESS, || async {
        let log = daemon.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(ENCODING_STOPPED)).collect();
        if lines.len() != stopped + 1 {
            bail!(
                "{} '{ENCODING_STOPPED}' lines, {} before Firefox quit",
                lines.len(),
                stopped
            );
        }
        if !lines.last().unwrap().to_ascii_lowercase().contains("codec=vp8") {
            bail!("the encoding stopped is not VP8: {:?}", lines.last());
        }
        Ok(())
    })
    .await
    .with_context(|| daemon.log_tail(40))?;
    if count(&daemon.log(), VP8_STARTED) != started {
        bail!(
            "a VP8 encode was started again after Firefox quit:\n{}",
            daemon.log_tail(40)
        );
    }
    let chrome_after = chrome.read().await?;
    if chrome_after.pc != chrome_alone.pc {
        bail!("Chromium's peer connection was replaced when Firefox left: {chrome_alone:?} -> {chrome_after:?}");
    }
    chrome.wait_more(&chrome_after, "H264").await?;

    // 5. The camera is still a healthy H.264 camera.
    let cam = common::api_camera(daemon.addr, "demo1").await?;
    if cam["state"] != "streaming" || cam["viewers"] != 1 {
        bail!("demo1 after Firefox left: {cam}");
    }
    Ok(())
}

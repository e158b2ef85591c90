//! End-to-end: the daemon with demo cameras, and Debian's headless Chromium opening the viewer page.
//! Video counts as received when the page's RTCPeerConnection reports inbound-rtp `framesDecoded` rising
//! between two reads (see testkit/src/viewer.rs).
//!
//! Run: `cargo test --test browser` (needs /usr/bin/chromium; each test starts its own daemon and browser,
//! and the heavy ones take a shared lock so they run one at a time on a small machine).

use edgecam_testkit as common;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use common::chromium::Browser;
use common::daemon::Daemon;
use common::viewer::{open_viewer, sample, wait_decoding, wait_rising};
use common::{heavy_lock, wait_until, wait_viewers, LIVENESS};

/// The harness itself against a static page, with no daemon: DevTools round trip, promises, exceptions,
/// console capture. If this fails, the other tests' failures say nothing about edgecam.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_chromium_devtools_roundtrip() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const BODY: &str =
            "<!doctype html><title>t</title><script>console.log('hello from page'); window.answer = 42;</script>";
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                BODY.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });

    let browser = Browser::launch().await?;
    let page = browser.open(&format!("http://{addr}/")).await?;
    assert_eq!(page.eval("1 + 1").await?, json!(2));
    let answer = wait_until("the page's script to run", LIVENESS, || async {
        match page
            .eval("new Promise(r => setTimeout(() => r(window.answer), 10))")
            .await?
        {
            Value::Null => bail!("window.answer not set yet"),
            v => Ok(v),
        }
    })
    .await?;
    assert_eq!(answer, json!(42));
    let err = page.eval("(() => { throw new Error('boom') })()").await.unwrap_err();
    assert!(format!("{err}").contains("boom"), "{err}");
    wait_until("console capture", LIVENESS, || async {
        if !page.console().contains("hello from page") {
            bail!("console so far: {:?}", page.console());
        }
        Ok(())
    })
    .await?;
    page.close().await?;
    Ok(())
}

/// (a) --demo 2, one page: both cameras decode at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_demo_cameras_decode_at_once() {
    let _heavy = heavy_lock();
    let daemon = Daemon::demo(2).unwrap();
    let browser = Browser::launch().await.unwrap();
    async {
        let page = open_viewer(&browser, &daemon, "").await?;
        let ids = ["demo1", "demo2"];
        let base = wait_decoding(&page, &ids, None).await?;
        wait_rising(&page, &base).await?;
        for id in ids {
            wait_viewers(daemon.addr, id, 1).await?;
        }
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

/// (b) Three pages on demo1 all decode; closing one leaves the other two decoding and the daemon's
/// viewer count goes back to 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_viewers_then_one_leaves() {
    let _heavy = heavy_lock();
    let daemon = Daemon::demo(1).unwrap();
    let browser = Browser::launch().await.unwrap();
    async {
        let ids = ["demo1"];
        let mut pages = Vec::new();
        for _ in 0..3 {
            pages.push(open_viewer(&browser, &daemon, "?cameras=demo1").await?);
        }
        for page in &pages {
            let base = wait_decoding(page, &ids, None).await?;
            wait_rising(page, &base).await?;
        }
        wait_viewers(daemon.addr, "demo1", 3).await?;

        pages.remove(1).close().await?;
        wait_viewers(daemon.addr, "demo1", 2).await?;
        // Baselines taken after the daemon has removed the viewer: the remaining two keep decoding
        // past the teardown of the third one's branch.
        let mut bases = Vec::new();
        for page in &pages {
            bases.push(sample(page, &ids).await?);
        }
        for (page, base) in pages.iter().zip(&bases) {
            wait_rising(page, base).await?;
        }
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

/// (c) The daemon restarts under an open page: the page reconnects by itself and decodes again on a
/// new peer connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_recovers_after_daemon_restart() {
    let _heavy = heavy_lock();
    let mut daemon = Daemon::demo(1).unwrap();
    let browser = Browser::launch().await.unwrap();
    let ids = ["demo1"];
    let page = open_viewer(&browser, &daemon, "?cameras=demo1").await.unwrap();
    let before = async {
        let base = wait_decoding(&page, &ids, None).await?;
        wait_rising(&page, &base).await
    }
    .await
    .unwrap();
    let old_pc = before["demo1"].pc.clone().unwrap();

    daemon.restart().unwrap();

    async {
        let base = wait_decoding(&page, &ids, Some(&old_pc)).await?;
        wait_rising(&page, &base).await?;
        wait_viewers(daemon.addr, "demo1", 1).await?;
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

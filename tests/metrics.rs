//! `/metrics` from a running daemon, read by a Prometheus text parser this project did not write
//! (`prometheus-parse`): a streaming demo camera whose frame count rises between two scrapes, one
//! viewer speaking the original protocol (GStreamer's webrtcbin) counted under its transport with
//! its link, the process's own numbers; and the access control in front of it.
//!
//! Run: `cargo test --test metrics`.

use edgecam_testkit as common;

use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context, Result};
use prometheus_parse::{Scrape, Value};

use common::daemon::{hash_password, Daemon};
use common::webrtc_client::OriginalSession;
use common::{basic_auth, heavy_lock, http_request, wait_streaming, LIVENESS};

/// Decoded frames that make it a stream rather than a lucky keyframe.
const FRAMES: u64 = 30;

async fn scrape(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<Scrape> {
    let reply = http_request(addr, "/metrics", headers).await?;
    if reply.status != 200 {
        bail!("GET /metrics: HTTP {}: {}", reply.status, reply.text());
    }
    let content_type = reply.header("content-type").unwrap_or_default();
    if !content_type.starts_with("application/openmetrics-text") {
        bail!("GET /metrics: content type {content_type:?}");
    }
    let lines = reply.text().lines().map(|l| Ok(l.to_string())).collect::<Vec<_>>();
    Scrape::parse(lines.into_iter()).context("prometheus-parse could not read /metrics")
}

/// The value of the one sample of `metric` whose labels include all of `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let matching: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .collect();
    match matching.as_slice() {
        [v] => Ok(*v),
        other => Err(anyhow!(
            "{metric}{labels:?}: {} samples ({other:?}) in {:?}",
            other.len(),
            scrape.samples.iter().map(|s| &s.metric).collect::<Vec<_>>()
        )),
    }
}

fn count(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> usize {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_streaming_camera_and_its_viewer() {
    let _heavy = heavy_lock();
    let daemon = Daemon::demo(1).unwrap();
    let addr = daemon.addr;
    async {
        wait_streaming(addr, "demo1").await?;
        let first = scrape(addr, &[]).await?;
        let cam = [("camera", "demo1")];
        assert_eq!(
            value(&first, "edgecam_camera_state", &[cam[0], ("state", "streaming")])?,
            1.0
        );
        assert_eq!(
            value(&first, "edgecam_camera_state", &[cam[0], ("state", "offline")])?,
            0.0
        );
        assert_eq!(value(&first, "edgecam_camera_info", &[cam[0], ("kind", "test")])?, 1.0);
        for transport in ["page", "whep", "original"] {
            assert_eq!(
                value(&first, "edgecam_camera_viewers", &[cam[0], ("transport", transport)])?,
                0.0
            );
        }
        let frames_before = value(&first, "edgecam_camera_encoded_frames_total", &cam)?;

        let mut session = OriginalSession::connect(addr).await?;
        session.ready("demo1").await?;
        session
            .pump_until(&format!("{FRAMES} frames decoded"), LIVENESS, |v| {
                v["demo1"].received().frames >= FRAMES
            })
            .await?;
        // The viewer's link shows once its first stats are in (about a second after it connected).
        let deadline = std::time::Instant::now() + LIVENESS;
        let second = loop {
            let decoded = session.viewers["demo1"].received().frames;
            session
                .pump_until("the viewer still decoding", LIVENESS, |v| {
                    v["demo1"].received().frames > decoded
                })
                .await?;
            let s = scrape(addr, &[]).await?;
            let sent = value(&s, "edgecam_viewer_sent_bits_per_second", &cam).unwrap_or(0.0);
            if count(&s, "edgecam_viewer_info", &[cam[0], ("transport", "original")]) == 1 && sent > 0.0 {
                break s;
            }
            if std::time::Instant::now() > deadline {
                bail!("no link for the viewer in /metrics: {:?}", s.samples);
            }
        };
        assert_eq!(
            value(&second, "edgecam_camera_viewers", &[cam[0], ("transport", "original")])?,
            1.0
        );
        assert_eq!(
            value(&second, "edgecam_camera_viewers", &[cam[0], ("transport", "page")])?,
            0.0
        );
        assert_eq!(value(&second, "edgecam_viewer_info", &[cam[0], ("tier", "main")])?, 1.0);
        let frames_after = value(&second, "edgecam_camera_encoded_frames_total", &cam)?;
        assert!(frames_after > frames_before, "frames {frames_before} -> {frames_after}");
        assert!(value(&second, "edgecam_camera_encoded_bytes_total", &cam)? > 0.0);
        assert!(value(&second, "edgecam_camera_fps", &cam)? > 0.0);
        assert!(value(&second, "edgecam_camera_bitrate_bits_per_second", &cam)? > 0.0);
        assert_eq!(value(&second, "edgecam_camera_encoder_fallbacks_total", &cam)?, 0.0);
        assert_eq!(value(&second, "edgecam_camera_source_failures_total", &cam)?, 0.0);
        assert!(value(&second, "edgecam_websockets", &[])? >= 1.0);
        assert!(value(&second, "process_threads", &[])? > 1.0);
        assert!(value(&second, "process_open_fds", &[])? > 3.0);
        assert!(value(&second, "process_resident_memory_bytes", &[])? > 1e6);
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

/// Whoever may read the API may read /metrics, and sees only the cameras it may watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_api_permission_and_list_only_watched_cameras() {
    let config = format!(
        "discovery: false\nidle: stop\nauth:\n  users:\n    alice: {{hash: '{}'}}\n  tokens:\n    nvr: {{hash: '{}', api: true, watch: [demo2]}}\n",
        hash_password("alice's password").unwrap(),
        hash_password("token-secret").unwrap(),
    );
    let daemon = Daemon::start(&config, &["--demo", "2"]).unwrap();
    let addr = daemon.addr;
    async {
        let anonymous = http_request(addr, "/metrics", &[]).await?;
        assert_eq!(anonymous.status, 401);
        assert!(!anonymous.text().contains("edgecam_"), "{}", anonymous.text());
        let alice = basic_auth("alice", "alice's password");
        assert_eq!(
            http_request(addr, "/metrics", &[("Authorization", &alice)])
                .await?
                .status,
            403
        );
        let s = scrape(addr, &[("Authorization", "Bearer nvr:token-secret")]).await?;
        assert_eq!(
            value(&s, "edgecam_camera_state", &[("camera", "demo2"), ("state", "idle")])?,
            1.0
        );
        assert_eq!(
            count(&s, "edgecam_camera_state", &[("camera", "demo1")]),
            0,
            "demo1 is not nvr's"
        );
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

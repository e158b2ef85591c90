//! `GET /api/cameras/{id}/snapshot` against a running daemon: the body decodes (with the `image`
//! crate, not GStreamer) as a JPEG of the camera's own size; the branch that makes them is there while
//! snapshots are asked for and gone after a quiet while (the camera's metrics and log say so); a
//! burst of requests is cut by the per-camera limit; an unknown camera is 404; under access control
//! the watch permission decides, and a camera parked by `idle: stop` starts for a snapshot.
//!
//! Run: `cargo test --test snapshot`.

use edgecam_testkit as common;

use std::net::SocketAddr;

use anyhow::{bail, Result};

use common::daemon::{hash_password, Daemon};
use common::{basic_auth, heavy_lock, http_call, http_request, wait_streaming, wait_until, LIVENESS};

/// Not the default 640x480, so the size is shown to come from the camera.
const CONFIG: &str = "\
discovery: false
cameras:
  yard:
    test_pattern: smpte
    width: 320
    height: 240
";

/// GET the snapshot with these headers; a 200 must be a JPEG, and its size is returned.
async fn snapshot(addr: SocketAddr, camera: &str, headers: &[(&str, &str)]) -> Result<Result<(u32, u32), u16>> {
    let reply = http_request(addr, &format!("/api/cameras/{camera}/snapshot"), headers).await?;
    if reply.status != 200 {
        return Ok(Err(reply.status));
    }
    if reply.header("content-type") != Some("image/jpeg") {
        bail!("content type {:?}", reply.header("content-type"));
    }
    let picture = image::load_from_memory_with_format(&reply.body, image::ImageFormat::Jpeg)?;
    Ok(Ok((picture.width(), picture.height())))
}

/// The camera's `edgecam_camera_snapshot_active` sample, as /metrics gives it.
async fn snapshot_active(addr: SocketAddr, camera: &str) -> Result<bool> {
    let text = http_request(addr, "/metrics", &[]).await?.text();
    let line = format!("edgecam_camera_snapshot_active{{camera=\"{camera}\"}} ");
    match text.lines().find_map(|l| l.strip_prefix(line.as_str())) {
        Some(v) => Ok(v.trim().parse::<f64>()? == 1.0),
        None => bail!("no {line} in /metrics"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_a_jpeg_of_the_camera_and_its_branch_goes_when_nobody_asks() {
    let _heavy = heavy_lock();
    let daemon = Daemon::start(CONFIG, &[]).unwrap();
    let addr = daemon.addr;
    async {
        wait_streaming(addr, "yard").await?;
        assert!(!snapshot_active(addr, "yard").await?, "no branch before anyone asks");
        assert_eq!(snapshot(addr, "yard", &[]).await?, Ok((320, 240)));
        assert!(snapshot_active(addr, "yard").await?);
        assert_eq!(snapshot(addr, "yard", &[]).await?, Ok((320, 240)), "a second picture");
        assert_eq!(snapshot(addr, "nowhere", &[]).await?, Err(404));

        // Many at once: the per-camera limit answers some with 429, and the rest get pictures.
        let burst = (0..30).map(|_| snapshot(addr, "yard", &[]));
        let results = futures_util::future::join_all(burst).await;
        let statuses: Vec<Result<(u32, u32), u16>> = results.into_iter().collect::<Result<_>>()?;
        assert!(statuses.contains(&Err(429)), "{statuses:?}");
        assert!(statuses.contains(&Ok((320, 240))), "{statuses:?}");
        assert!(
            statuses.iter().all(|s| matches!(s, Ok((320, 240)) | Err(429))),
            "{statuses:?}"
        );

        wait_until("the snapshot branch detached", LIVENESS, || async {
            if snapshot_active(addr, "yard").await? {
                bail!("still attached");
            }
            Ok(())
        })
        .await?;
        if !daemon.log().contains("snapshot branch detached") {
            bail!("the log does not say the branch was detached");
        }
        wait_streaming(addr, "yard").await?;
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

/// bob may watch demo2 only; demo2 is parked (`idle: stop`) until his snapshot starts it. The same
/// permission holds for WHEP, the other HTTP way to a camera's pictures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_whep_need_the_watch_permission_and_a_snapshot_wakes_an_idle_camera() {
    let _heavy = heavy_lock();
    let config = format!(
        "discovery: false\nidle: stop\nauth:\n  users:\n    bob: {{hash: '{}', watch: [demo2]}}\n",
        hash_password("bob's password").unwrap()
    );
    let daemon = Daemon::start(&config, &["--demo", "2"]).unwrap();
    let addr = daemon.addr;
    async {
        let bob = basic_auth("bob", "bob's password");
        let bob = [("Authorization", bob.as_str())];
        assert_eq!(snapshot(addr, "demo2", &[]).await?, Err(401));
        assert_eq!(snapshot(addr, "demo1", &bob).await?, Err(403));
        assert_eq!(
            snapshot(addr, "nowhere", &bob).await?,
            Err(403),
            "bob cannot tell which cameras exist"
        );
        assert_eq!(snapshot(addr, "demo2", &bob).await?, Ok((640, 480)));
        let offer = [bob[0], ("Content-Type", "application/sdp")];
        let whep = http_call(addr, "POST", "/whep/demo1", &offer, b"v=0\r\n").await?;
        assert_eq!(whep.status, 403, "{}", whep.text());
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

//! A viewer that stays open, run in the VM beside the daemon (tests/vm/hotplug.sh): it asks for one
//! camera and answers every offer the way the viewer page does, so a camera that is unplugged and comes
//! back reaches it again without it asking. Like the page, it asks again after an `error` (under TCG
//! emulation the first negotiation can miss the daemon's 10 s limit). It keeps `<session> <frames
//! decoded>` in a status file for the shell checks: video flows, stops with the device, and flows
//! again in a new session.
//!
//!   vm-viewer ADDR CAMERA STATUS_FILE      (runs until killed)

use std::time::Duration;

use anyhow::{bail, Context, Result};

use edgecam_testkit::webrtc_client::OriginalSession;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, camera, status] = args.as_slice() else {
        bail!("usage: vm-viewer ADDR CAMERA STATUS_FILE");
    };
    let addr = addr.parse().with_context(|| format!("address {addr}"))?;
    let mut session = OriginalSession::connect(addr).await?;
    loop {
        session.ready(camera).await?;
        let day = Duration::from_secs(24 * 3600);
        let ended = session
            .pump_until("the test to end", day, |viewers| {
                if let Some(viewer) = viewers.get(camera.as_str()) {
                    let line = format!("{} {}\n", viewer.session, viewer.received().frames);
                    let _ = std::fs::write(status, line);
                }
                false
            })
            .await;
        if let Err(e) = ended {
            eprintln!("{e:#}; asking again in 2 s");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

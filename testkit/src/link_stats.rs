//! What a browser's peer connection says about one camera's video link (getStats), read the same way in
//! Chromium and Firefox, and the difference of two readings as a window: fps, freezes, NACKs, PLIs,
//! retransmissions, loss and received bitrate. Shared by the shaped-link tests and benchmarks.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::chromium::Page;
use crate::firefox::Firefox;

/// Per camera: the inbound video stream's counters and the offer the page answered (its remote
/// description). Works in Chromium and Firefox (either may lack a counter: null).
const LINK_STATS_JS: &str = r#"
(async (id) => {
  const cam = window.edgecam && window.edgecam.cameras && window.edgecam.cameras.get(id);
  const pc = cam && cam.pc;
  if (!pc) return null;
  let rtp = null, codec = null;
  const report = await pc.getStats();
  report.forEach(s => { if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'video') rtp = s; });
  if (rtp && rtp.codecId) codec = report.get(rtp.codecId);
  // The transport in use: a UDP loss rule does not touch media over ICE-TCP.
  let protocol = null;
  report.forEach(s => {
    if (s.type === 'candidate-pair' && s.state === 'succeeded' && (s.selected || s.nominated)) {
      const local = report.get(s.localCandidateId);
      if (local) protocol = local.protocol;
    }
  });
  const n = (v) => (typeof v === 'number' ? v : null);
  return {
    status: cam.status, state: pc.connectionState, protocol, offer: pc.remoteDescription ? pc.remoteDescription.sdp : null,
    t: rtp ? rtp.timestamp : null, codec: codec && codec.mimeType ? codec.mimeType.split('/')[1] : null,
    framesDecoded: rtp ? n(rtp.framesDecoded) : null, freezeCount: rtp ? n(rtp.freezeCount) : null,
    totalFreezesDuration: rtp ? n(rtp.totalFreezesDuration) : null, nackCount: rtp ? n(rtp.nackCount) : null,
    pliCount: rtp ? n(rtp.pliCount) : null, firCount: rtp ? n(rtp.firCount) : null,
    packetsLost: rtp ? n(rtp.packetsLost) : null, packetsReceived: rtp ? n(rtp.packetsReceived) : null,
    retransmittedPacketsReceived: rtp ? n(rtp.retransmittedPacketsReceived) : null,
    keyFramesDecoded: rtp ? n(rtp.keyFramesDecoded) : null, bytesReceived: rtp ? n(rtp.bytesReceived) : null,
    frameWidth: rtp ? n(rtp.frameWidth) : null, frameHeight: rtp ? n(rtp.frameHeight) : null,
  };
})"#;

/// A page showing edgecam's cameras, in either browser.
pub enum LinkViewer<'a> {
    Chromium(&'a Page),
    Firefox(&'a Firefox),
}

/// The expression that reads `camera`'s counters on a page, for a caller that evaluates it itself and
/// passes the result to `reading`.
pub fn link_stats_expr(camera: &str) -> String {
    format!("{LINK_STATS_JS}({})", json!(camera))
}

/// What `link_stats_expr` gave: the counters, or an error until the page has a peer connection.
pub fn reading(camera: &str, v: Value) -> Result<Value> {
    if v.is_null() {
        bail!("{camera} has no peer connection on the page yet");
    }
    Ok(v)
}

impl LinkViewer<'_> {
    /// The current counters of `camera`'s video (an error until the page has a peer connection for it).
    pub async fn read(&self, camera: &str) -> Result<Value> {
        let js = link_stats_expr(camera);
        let v = match self {
            LinkViewer::Chromium(page) => page.eval(&js).await?,
            LinkViewer::Firefox(ff) => ff.eval(&js).await?,
        };
        reading(camera, v)
    }
}

/// A counter of a reading (None where the browser lacks it).
pub fn num(v: &Value, key: &str) -> Option<f64> {
    v[key].as_f64()
}

/// A reading without the offer's SDP, for messages.
pub fn without_offer(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("offer");
    }
    v
}

/// What a window showed, the `after - before` of each counter.
#[derive(Debug, Clone)]
pub struct Window {
    pub seconds: f64,
    pub fps: f64,
    pub freezes: Option<f64>,
    pub freeze_seconds: Option<f64>,
    pub nacks: Option<f64>,
    pub plis: Option<f64>,
    pub retransmits: Option<f64>,
    pub lost: Option<f64>,
    /// Payload bit rate received, RTX and FEC included: what the link carried.
    pub kbps: Option<f64>,
}

impl Window {
    pub fn between(before: &Value, after: &Value) -> Result<Window> {
        let delta = |key: &str| Some(num(after, key)? - num(before, key)?);
        let seconds = delta("t").context("no timestamp")? / 1000.0;
        Ok(Window {
            seconds,
            fps: delta("framesDecoded").context("no framesDecoded")? / seconds,
            freezes: delta("freezeCount"),
            freeze_seconds: delta("totalFreezesDuration"),
            nacks: delta("nackCount"),
            plis: delta("pliCount"),
            retransmits: delta("retransmittedPacketsReceived"),
            lost: delta("packetsLost"),
            kbps: delta("bytesReceived").map(|b| b * 8.0 / 1000.0 / seconds),
        })
    }
}

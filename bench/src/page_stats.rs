//! What the viewer page in headless Chromium reports: the time from `ready` to a camera's first decoded
//! frame, and per camera the frames decoded and bytes received (getStats), turned into fps and kbit/s.

use anyhow::Result;
use serde_json::{json, Value};

use edgecam_testkit::chromium::Page;
use edgecam_testkit::viewer::wait_js_true;

use crate::harness::round1;

/// Connects `id` on a page opened with `?autoconnect=0` and returns ms from the page's `ready` for `id`
/// leaving on the websocket (`ws.send` is wrapped) to getStats `framesDecoded > 0` on a NEW peer connection
/// (polled every 5 ms); -1 if the frame came without that `ready`, null if none came within 30 s. With
/// `leave`, the page disconnects `id` afterwards.
const READY_TO_FRAME_JS: &str = r#"
async (id, leave) => {
  const ec = window.edgecam, ws = ec.ws;
  const old = ec.cameras.get(id) && ec.cameras.get(id).pc;
  let tReady = null;
  const send = ws.send;
  ws.send = function (data) {
    try {
      const m = JSON.parse(data);
      if (m.type === 'ready' && m.camera === id && tReady === null) tReady = performance.now();
    } catch (e) {}
    return send.call(this, data);
  };
  try {
    ec.connect(id);
    const deadline = performance.now() + 30000;
    while (performance.now() < deadline) {
      const cam = ec.cameras.get(id);
      if (cam && cam.pc && cam.pc !== old) {
        let frames = 0;
        (await cam.pc.getStats()).forEach(s => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
        });
        if (frames > 0) return tReady === null ? -1 : performance.now() - tReady;
      }
      await new Promise(r => setTimeout(r, 5));
    }
    return null;
  } finally {
    delete ws.send;
    if (leave) ec.disconnect(id);
  }
}"#;

/// Waits until the page's websocket is open and lists `id`: what `ready_to_first_frame_ms` needs first.
pub async fn wait_ws_lists(page: &Page, id: &str) -> Result<()> {
    wait_js_true(
        page,
        &format!("page websocket open with {id} listed"),
        &format!(
            "window.edgecam.ws && window.edgecam.ws.readyState === 1 && window.edgecam.cameras.has({})",
            json!(id)
        ),
    )
    .await
}

/// Ms from `ready` to the first decoded frame of `id` (see `READY_TO_FRAME_JS`): a number, -1, or null.
pub async fn ready_to_first_frame_ms(page: &Page, id: &str, leave: bool) -> Result<Value> {
    page.eval(&format!("({READY_TO_FRAME_JS})({}, {leave})", json!(id)))
        .await
}

/// Per camera on the page: framesDecoded, bytesReceived, frame size, and a timestamp.
const STATS_JS: &str = r#"
async (ids) => {
  const out = {};
  for (const id of ids) {
    const cam = window.edgecam.cameras.get(id);
    const r = { frames: 0, bytes: 0, width: null, height: null, lost: 0, t: performance.now() };
    if (cam && cam.pc) {
      (await cam.pc.getStats()).forEach(s => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          r.frames += s.framesDecoded || 0; r.bytes += s.bytesReceived || 0; r.lost += s.packetsLost || 0;
          r.width = s.frameWidth; r.height = s.frameHeight;
        }
      });
    }
    out[id] = r;
  }
  return out;
}"#;

/// The expression `stats` evaluates, for a caller that reads several pages alike.
pub fn stats_expr(ids: &[String]) -> String {
    format!("({STATS_JS})({})", json!(ids))
}

pub async fn stats(page: &Page, ids: &[String]) -> Result<Value> {
    page.eval(&stats_expr(ids)).await
}

/// Per camera: fps and kbit/s between two stats reads.
pub fn rates(a: &Value, b: &Value, ids: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    for id in ids {
        let (x, y) = (&a[id], &b[id]);
        let dt = (y["t"].as_f64().unwrap_or(0.0) - x["t"].as_f64().unwrap_or(0.0)) / 1000.0;
        let df = y["frames"].as_f64().unwrap_or(0.0) - x["frames"].as_f64().unwrap_or(0.0);
        let db = y["bytes"].as_f64().unwrap_or(0.0) - x["bytes"].as_f64().unwrap_or(0.0);
        out.insert(
            id.clone(),
            json!({"fps": round1(df / dt), "kbps": round1(db * 8.0 / 1000.0 / dt), "seconds": round1(dt),
                   "width": y["width"], "height": y["height"], "packets_lost": y["lost"]}),
        );
    }
    Value::Object(out)
}

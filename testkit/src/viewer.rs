//! The viewer page as the tests see it: its `window.edgecam` test hook and, per camera, the peer
//! connection's getStats (inbound-rtp `framesDecoded`), read directly from the pc so the tests do not
//! depend on the page's own stats code; and, where a test is about what the page itself reports
//! (`window.edgecam.stats`, with the codec), `PageView`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::browser_process::last_lines;
use crate::chromium::{Browser, Page};
use crate::daemon::Daemon;
use crate::{wait_until, LIVENESS};

/// Per camera: the page's status for it and, if it has a peer connection, that pc's identity (a tag this
/// script sets on the object, so a replaced pc is recognised), its connection state and getStats numbers.
const CAMERA_STATS_JS: &str = r#"
async (ids) => {
  const out = {};
  for (const id of ids) {
    const cam = window.edgecam && window.edgecam.cameras && window.edgecam.cameras.get(id);
    if (!cam) { out[id] = null; continue; }
    const r = { status: cam.status, pc: null, state: null, frames: null, width: null, height: null };
    const pc = cam.pc;
    if (pc) {
      if (!pc.__edgecamTestTag) pc.__edgecamTestTag = Math.random().toString(36).slice(2);
      r.pc = pc.__edgecamTestTag;
      r.state = pc.connectionState;
      (await pc.getStats()).forEach(s => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          r.frames = (r.frames || 0) + (s.framesDecoded || 0);
          r.width = s.frameWidth; r.height = s.frameHeight;
        }
      });
    }
    out[id] = r;
  }
  return out;
}"#;

/// One read of a camera on a page.
#[derive(Clone, Debug)]
pub struct Sample {
    pub status: String,
    pub pc: Option<String>,
    pub frames: u64,
}

pub async fn sample(page: &Page, ids: &[&str]) -> Result<HashMap<String, Sample>> {
    let value = page.eval(&format!("({CAMERA_STATS_JS})({})", json!(ids))).await?;
    let mut out = HashMap::new();
    for id in ids {
        let cam = &value[*id];
        if cam.is_null() {
            bail!("window.edgecam.cameras has no {id} (page state: {value})");
        }
        out.insert(
            id.to_string(),
            Sample {
                status: cam["status"].as_str().unwrap_or("?").to_string(),
                pc: cam["pc"].as_str().map(String::from),
                frames: cam["frames"].as_u64().unwrap_or(0),
            },
        );
    }
    Ok(out)
}

/// Waits until the page decodes every camera in `ids` (status `live`, framesDecoded > 0) and returns
/// that read, the baseline for `wait_rising`. `not_pc` skips a peer connection the caller saw before
/// (after a daemon restart only a new pc counts).
pub async fn wait_decoding(page: &Page, ids: &[&str], not_pc: Option<&str>) -> Result<HashMap<String, Sample>> {
    wait_until(&format!("{ids:?} decoding"), LIVENESS, || async {
        let s = sample(page, ids).await?;
        for id in ids {
            let cam = &s[*id];
            if cam.pc.is_none() || cam.pc.as_deref() == not_pc || cam.frames == 0 || cam.status != "live" {
                bail!("{id}: {cam:?} (not_pc {not_pc:?})");
            }
        }
        Ok(s)
    })
    .await
    .with_context(|| page_context(page))
}

/// Waits until, in a single read, every camera's framesDecoded is above `base` on the same peer connection:
/// all of them decoding at the same time, none stalled.
pub async fn wait_rising(page: &Page, base: &HashMap<String, Sample>) -> Result<HashMap<String, Sample>> {
    let ids: Vec<&str> = base.keys().map(String::as_str).collect();
    wait_until(&format!("framesDecoded rising on {ids:?}"), LIVENESS, || async {
        let s = sample(page, &ids).await?;
        for (id, before) in base {
            let now = &s[id];
            if now.pc != before.pc {
                bail!("{id}: peer connection replaced ({before:?} -> {now:?})");
            }
            if now.frames <= before.frames {
                bail!("{id}: framesDecoded not rising ({before:?} -> {now:?})");
            }
        }
        for (id, before) in base {
            eprintln!(
                "{}: {id} framesDecoded {} -> {} ({})",
                page.url(),
                before.frames,
                s[id].frames,
                s[id].status
            );
        }
        Ok(s)
    })
    .await
    .with_context(|| page_context(page))
}

pub fn page_context(page: &Page) -> String {
    format!(
        "on page {}; its console (last 40 lines):\n{}",
        page.url(),
        last_lines(&page.console(), 40)
    )
}

/// Waits until the JavaScript expression `expr` evaluates to `true` on the page.
pub async fn wait_js_true(page: &Page, what: &str, expr: &str) -> Result<()> {
    wait_until(what, LIVENESS, || async {
        let value = page.eval(expr).await?;
        if value != Value::Bool(true) {
            bail!("{expr} gave {value}");
        }
        Ok(())
    })
    .await
}

pub async fn open_viewer(browser: &Browser, daemon: &Daemon, query: &str) -> Result<Page> {
    let page = browser.open(&daemon.url(&format!("/{query}"))).await?;
    wait_js_true(
        &page,
        "window.edgecam test hook",
        "typeof window.edgecam === 'object' && window.edgecam.cameras instanceof Map",
    )
    .await
    .with_context(|| page_context(&page))?;
    Ok(page)
}

/// The page's own view of one camera: a tag for its current peer connection (the property
/// `CAMERA_STATS_JS` sets), its status, and `window.edgecam.stats(id)`. Any browser can evaluate it.
pub fn page_view_js(id: &str) -> String {
    format!(
        r#"(async (id) => {{
  const cam = window.edgecam && window.edgecam.cameras && window.edgecam.cameras.get(id);
  if (!cam) return null;
  const pc = cam.pc;
  if (pc && !pc.__edgecamTestTag) pc.__edgecamTestTag = Math.random().toString(36).slice(2);
  return {{ status: cam.status, pc: pc ? pc.__edgecamTestTag : null, state: pc ? pc.connectionState : null,
           stats: await window.edgecam.stats(id) }};
}})({})"#,
        json!(id)
    )
}

/// One read of `page_view_js`.
#[derive(Debug, Clone, PartialEq)]
pub struct PageView {
    pub pc: Option<String>,
    pub status: String,
    pub frames: u64,
    pub codec: Option<String>,
    pub width: u64,
}

impl PageView {
    /// What `page_view_js(id)` returned.
    pub fn parse(id: &str, v: Value) -> Result<PageView> {
        if v.is_null() {
            bail!("window.edgecam.cameras has no {id} (yet)");
        }
        Ok(PageView {
            pc: v["pc"].as_str().map(String::from),
            status: v["status"].as_str().unwrap_or("?").to_string(),
            frames: v["stats"]["framesDecoded"].as_u64().unwrap_or(0),
            codec: v["stats"]["codec"].as_str().map(String::from),
            width: v["stats"]["frameWidth"].as_u64().unwrap_or(0),
        })
    }

    /// Live on a peer connection that has decoded frames.
    pub fn live(&self) -> bool {
        self.pc.is_some() && self.status == "live" && self.frames > 0
    }
}

/// `PageView` of `id` on a Chromium tab.
pub async fn page_view(page: &Page, id: &str) -> Result<PageView> {
    PageView::parse(id, page.eval(&page_view_js(id)).await?)
}

/// Waits until one peer connection has decoded `more` frames past a baseline, the last read decoding
/// `codec`; returns (baseline, last read). `read` reads the page.
///
/// With `base`, that is the baseline and the frames must come on its peer connection (a replaced one keeps
/// the wait failing). Without, the baseline is the first read that is `live`, and counting restarts on a
/// peer connection that replaces it.
pub async fn wait_frames_more<F, Fut>(
    what: &str,
    base: Option<&PageView>,
    more: u64,
    codec: &str,
    mut read: F,
) -> Result<(PageView, PageView)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<PageView>>,
{
    let fixed = base.is_some();
    let baseline = Mutex::new(base.cloned());
    wait_until(what, LIVENESS, || {
        let next = read();
        let baseline = &baseline;
        async move {
            let s = next.await?;
            let mut baseline = baseline.lock().unwrap();
            match baseline.clone() {
                Some(b) if b.pc == s.pc => {
                    if s.frames < b.frames + more || s.codec.as_deref() != Some(codec) {
                        bail!("{b:?} -> {s:?}");
                    }
                    Ok((b, s))
                }
                Some(b) if fixed => bail!("peer connection replaced: {b:?} -> {s:?}"),
                _ => {
                    *baseline = if s.live() { Some(s.clone()) } else { None };
                    bail!("baseline {s:?}");
                }
            }
        }
    })
    .await
}

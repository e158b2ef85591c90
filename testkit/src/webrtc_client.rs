//! A scripted viewer speaking the original dual-camera signalling protocol, with GStreamer's webrtcbin as
//! the receiving peer: `ready` -> the daemon's `offer` -> our recvonly `answer` -> candidates both ways.
//! Received RTP goes through decodebin (rtph264depay, h264parse, openh264dec on Debian, which has no
//! avdec_h264 without gstreamer1.0-libav) to a fakesink; a buffer probe on the decoded pad counts frames.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use gst::prelude::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::Signalling;

/// What a viewer has received so far.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// Decoded video frames.
    pub frames: u64,
    pub width: i32,
    pub height: i32,
    /// `encoding-name` of the RTP stream webrtcbin handed us (H264, VP8...).
    pub encoding: Option<String>,
}

/// Messages the viewers want sent (answers, candidates), or an error from a GStreamer callback.
type Outgoing = Result<Value, String>;

pub struct GstViewer {
    pub camera: String,
    /// Counts up across every receiver this process made: a new one per offer.
    pub session: u32,
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    received: Arc<Mutex<Received>>,
    offered: AtomicBool,
}

static SESSIONS: AtomicU32 = AtomicU32::new(0);

impl GstViewer {
    fn new(camera: &str, out: mpsc::UnboundedSender<Outgoing>) -> Result<GstViewer> {
        gst::init()?;
        if gst::ElementFactory::find("openh264dec").is_none() && gst::ElementFactory::find("avdec_h264").is_none() {
            bail!("no H.264 decoder: install gstreamer1.0-plugins-bad (openh264dec) or gstreamer1.0-libav");
        }
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin").build()?;
        // The daemon's offer bundles everything; match it (see notes/gstreamer-webrtc.md).
        webrtc.set_property_from_str("bundle-policy", "max-bundle");
        pipeline.add(&webrtc)?;

        // libnice gathers no loopback candidates unless told to; this also restricts gathering to it.
        let agent = webrtc.property::<gst::glib::Object>("ice-agent");
        if !agent.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]) {
            bail!("ice-agent refused add-local-ip-address 127.0.0.1");
        }

        let camera_owned = camera.to_string();
        let out_c = out.clone();
        webrtc.connect("on-ice-candidate", false, move |values| {
            let mline = values[1].get::<u32>().unwrap_or(0);
            let candidate = values[2].get::<String>().unwrap_or_default();
            let _ = out_c.send(Ok(json!({
                "type": "candidate",
                "camera": camera_owned,
                "candidate": candidate,
                "sdpMLineIndex": mline,
            })));
            None
        });

        let received = Arc::new(Mutex::new(Received::default()));
        let pipeline_weak = pipeline.downgrade();
        let rec = received.clone();
        let out_p = out.clone();
        webrtc.connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let Some(pipeline) = pipeline_weak.upgrade() else {
                return;
            };
            if let Some(caps) = pad.current_caps() {
                rec.lock().unwrap().encoding = caps.structure(0).and_then(|s| s.get::<String>("encoding-name").ok());
            }
            if let Err(e) = link_decoder(&pipeline, pad, rec.clone()) {
                let _ = out_p.send(Err(format!("linking a decoder: {e:#}")));
            }
        });

        pipeline.set_state(gst::State::Playing)?;
        Ok(GstViewer {
            camera: camera.to_string(),
            session: SESSIONS.fetch_add(1, Ordering::Relaxed) + 1,
            pipeline,
            webrtc,
            received,
            offered: AtomicBool::new(false),
        })
    }

    /// Sets the daemon's offer and answers it; the answer comes out on the outgoing channel.
    fn handle_offer(&self, sdp: &str, out: mpsc::UnboundedSender<Outgoing>) -> Result<()> {
        self.offered.store(true, Ordering::Relaxed);
        let sdp = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
            .map_err(|_| anyhow!("daemon's offer is not SDP: {sdp}"))?;
        let offer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, sdp);
        let webrtc = self.webrtc.clone();
        let camera = self.camera.clone();
        let on_remote_set = gst::Promise::with_change_func(move |reply| {
            if let Err(e) = promise_ok(reply) {
                let _ = out.send(Err(format!("set-remote-description(offer): {e}")));
                return;
            }
            let webrtc_a = webrtc.clone();
            let on_answer = gst::Promise::with_change_func(move |reply| {
                let answer = match promise_ok(reply).and_then(|s| {
                    s.and_then(|s| s.get::<gst_webrtc::WebRTCSessionDescription>("answer").ok())
                        .ok_or_else(|| "no answer in reply".to_string())
                }) {
                    Ok(answer) => answer,
                    Err(e) => {
                        let _ = out.send(Err(format!("create-answer: {e}")));
                        return;
                    }
                };
                webrtc_a.emit_by_name::<()>("set-local-description", &[&answer, &None::<gst::Promise>]);
                let sdp = answer.sdp().as_text().unwrap_or_default();
                let _ = out.send(Ok(json!({ "type": "answer", "camera": camera, "sdp": sdp })));
            });
            webrtc.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &on_answer]);
        });
        self.webrtc
            .emit_by_name::<()>("set-remote-description", &[&offer, &on_remote_set]);
        Ok(())
    }

    fn add_candidate(&self, mline: u32, candidate: &str) {
        self.webrtc
            .emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate]);
    }

    pub fn received(&self) -> Received {
        self.received.lock().unwrap().clone()
    }

    /// Connection states, for messages when something does not arrive.
    pub fn describe(&self) -> String {
        let ice = self
            .webrtc
            .property::<gst_webrtc::WebRTCICEConnectionState>("ice-connection-state");
        let conn = self
            .webrtc
            .property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state");
        format!(
            "{}: {:?}, ice {ice:?}, connection {conn:?}",
            self.camera,
            self.received()
        )
    }

    /// Errors posted on the pipeline's bus since the last call.
    fn bus_errors(&self) -> Vec<String> {
        let bus = self.pipeline.bus().unwrap();
        let mut errors = Vec::new();
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                errors.push(format!("{}: {} ({:?})", self.camera, e.error(), e.debug()));
            }
        }
        errors
    }
}

impl Drop for GstViewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn promise_ok(
    reply: Result<Option<&gst::StructureRef>, gst::PromiseError>,
) -> Result<Option<&gst::StructureRef>, String> {
    match reply {
        Err(e) => Err(format!("{e:?}")),
        Ok(Some(s)) if s.has_field("error") => Err(format!("{s}")),
        Ok(s) => Ok(s),
    }
}

/// webrtcbin src pad (RTP) -> decodebin -> fakesink, counting decoded frames on decodebin's raw pad.
fn link_decoder(pipeline: &gst::Pipeline, pad: &gst::Pad, received: Arc<Mutex<Received>>) -> Result<()> {
    let decodebin = gst::ElementFactory::make("decodebin").build()?;
    let pipeline_weak = pipeline.downgrade();
    decodebin.connect_pad_added(move |_, dpad| {
        let Some(pipeline) = pipeline_weak.upgrade() else {
            return;
        };
        let Ok(sink) = gst::ElementFactory::make("fakesink").property("sync", false).build() else {
            return;
        };
        if pipeline.add(&sink).is_err() {
            return;
        }
        let _ = sink.sync_state_with_parent();
        let _ = dpad.link(&sink.static_pad("sink").unwrap());
        let rec = received.clone();
        dpad.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
            let mut rec = rec.lock().unwrap();
            rec.frames += 1;
            if rec.width == 0 {
                if let Some(s) = pad.current_caps().as_ref().and_then(|c| c.structure(0)) {
                    rec.width = s.get("width").unwrap_or(0);
                    rec.height = s.get("height").unwrap_or(0);
                }
            }
            gst::PadProbeReturn::Ok
        });
    });
    pipeline.add(&decodebin)?;
    decodebin.sync_state_with_parent()?;
    pad.link(&decodebin.static_pad("sink").unwrap())?;
    Ok(())
}

/// One websocket carrying any number of cameras, as the original viewer did.
pub struct OriginalSession {
    pub sig: Signalling,
    pub viewers: HashMap<String, GstViewer>,
    out_tx: mpsc::UnboundedSender<Outgoing>,
    out_rx: mpsc::UnboundedReceiver<Outgoing>,
    /// Every message the daemon sent, for failure reports.
    pub transcript: Vec<Value>,
    /// Applied to every answer before it is sent: a hostile peer lies in its SDP.
    pub rewrite_answer: Option<fn(&str) -> String>,
}

impl OriginalSession {
    pub async fn connect(addr: std::net::SocketAddr) -> Result<OriginalSession> {
        Ok(Self::over(Signalling::connect(addr).await?))
    }

    /// A session on a websocket already open (`Signalling::connect_from`).
    pub fn over(sig: Signalling) -> OriginalSession {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        OriginalSession {
            sig,
            viewers: HashMap::new(),
            out_tx,
            out_rx,
            transcript: Vec::new(),
            rewrite_answer: None,
        }
    }

    /// `{"type":"ready","camera":...}` exactly as the original viewer sent it, with a fresh receiver.
    pub async fn ready(&mut self, camera: &str) -> Result<()> {
        self.viewers
            .insert(camera.to_string(), GstViewer::new(camera, self.out_tx.clone())?);
        self.sig.send(&json!({ "type": "ready", "camera": camera })).await
    }

    /// Runs the signalling (offers in, answers and candidates out) until `done` holds for the viewers.
    /// A daemon `error`, a GStreamer error or the timeout fails it.
    pub async fn pump_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&HashMap<String, GstViewer>) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                msg = self.sig.ws.next() => {
                    let msg = msg.ok_or_else(|| anyhow!("daemon closed the websocket"))?.context("websocket")?;
                    match msg {
                        Message::Text(text) => self.on_daemon_message(&text)?,
                        Message::Close(frame) => bail!("daemon closed the websocket: {frame:?}"),
                        _ => {}
                    }
                }
                out = self.out_rx.recv() => {
                    match out.expect("the session holds a sender") {
                        Ok(msg) => self.send_out(msg).await?,
                        Err(e) => bail!("receiving peer: {e}"),
                    }
                }
                _ = tick.tick() => {
                    for viewer in self.viewers.values() {
                        if let Some(e) = viewer.bus_errors().into_iter().next() {
                            bail!("receiving pipeline error: {e}");
                        }
                    }
                    if done(&self.viewers) {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        bail!("timed out after {timeout:?} waiting for {what}: {}", self.describe());
                    }
                }
            }
        }
    }

    async fn send_out(&mut self, mut msg: Value) -> Result<()> {
        if let (Some(rewrite), Some(sdp)) = (self.rewrite_answer, msg["sdp"].as_str()) {
            msg["sdp"] = json!(rewrite(sdp));
        }
        self.sig.send(&msg).await
    }

    /// Runs the signalling until the daemon sends an `error`, and returns it. Errors of our own
    /// receiving pipeline do not end it: a peer that breaks its session on purpose has them.
    pub async fn pump_until_daemon_error(&mut self, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                msg = self.sig.ws.next() => {
                    let msg = msg.ok_or_else(|| anyhow!("daemon closed the websocket"))?.context("websocket")?;
                    if let Message::Text(text) = msg {
                        let value: Value = serde_json::from_str(&text)?;
                        if value["type"] == "error" {
                            return Ok(value);
                        }
                        self.on_daemon_message(&text)?;
                    }
                }
                out = self.out_rx.recv() => {
                    if let Ok(msg) = out.expect("the session holds a sender") {
                        self.send_out(msg).await?;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    bail!("no error from the daemon within {timeout:?}: {}", self.describe())
                }
            }
        }
    }

    fn on_daemon_message(&mut self, text: &str) -> Result<()> {
        let msg: Value = serde_json::from_str(text).with_context(|| format!("daemon sent non-JSON: {text}"))?;
        self.transcript.push(msg.clone());
        let camera = msg["camera"].as_str().unwrap_or_default();
        match msg["type"].as_str() {
            Some("offer") => {
                // Like the viewer page: a further offer (the camera came back) gets a new receiver.
                if self
                    .viewers
                    .get(camera)
                    .is_some_and(|v| v.offered.load(Ordering::Relaxed))
                {
                    let fresh = GstViewer::new(camera, self.out_tx.clone())?;
                    self.viewers.insert(camera.to_string(), fresh);
                }
                let viewer = self
                    .viewers
                    .get(camera)
                    .ok_or_else(|| anyhow!("offer for a camera we did not ask for: {msg}"))?;
                let sdp = msg["sdp"].as_str().ok_or_else(|| anyhow!("offer without sdp: {msg}"))?;
                viewer.handle_offer(sdp, self.out_tx.clone())?;
            }
            Some("candidate") => {
                let viewer = self
                    .viewers
                    .get(camera)
                    .ok_or_else(|| anyhow!("candidate for a camera we did not ask for: {msg}"))?;
                let candidate = msg["candidate"]
                    .as_str()
                    .ok_or_else(|| anyhow!("bad candidate: {msg}"))?;
                // The original sent no sdpMLineIndex; everything is bundled on line 0.
                let mline = msg["sdpMLineIndex"].as_u64().unwrap_or(0) as u32;
                viewer.add_candidate(mline, candidate);
            }
            Some("error") => bail!("daemon replied with an error: {msg}"),
            // The camera list is the new protocol's addition; the original viewer never saw it.
            Some("cameras") => {}
            _ => bail!("unexpected message from the daemon: {msg}"),
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let mut cams: Vec<_> = self.viewers.values().map(|v| v.describe()).collect();
        cams.sort();
        cams.join("; ")
    }
}

//! One viewer = one branch off a camera's tee: `queue leaky=downstream ! webrtcbin`. The leaky queue
//! is what keeps a slow or dead viewer from stalling the tee, and with it every other viewer.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gst::glib;
use gst::prelude::*;
use gst_webrtc::WebRTCSDPType;

use super::{tee_branch, MediaError};
use crate::config::IceServer;

/// What a viewer branch reports from GStreamer's threads. The camera actor turns these into
/// signalling messages and state changes.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewerEvent {
    Offer(String),
    Candidate {
        mline: u32,
        candidate: String,
    },
    Connected,
    /// ICE failed, the remote description was refused, or an offer could not be made.
    Failed(String),
}

pub type EventSink = Arc<dyn Fn(ViewerEvent) + Send + Sync>;

/// ICE settings every viewer branch gets.
#[derive(Debug, Clone, Default)]
pub struct IceSettings {
    pub servers: Vec<IceServer>,
    pub local_addresses: Vec<IpAddr>,
}

/// Queue depth per viewer: ~100 RTP packets is a few frames at 1 Mbps. Deeper only adds latency for a
/// viewer that is already behind; leaking old packets lets it catch up after a keyframe.
const VIEWER_QUEUE_BUFFERS: u32 = 100;

pub struct ViewerBranch {
    queue: gst::Element,
    webrtc: gst::Element,
    tee_pad: gst::Pad,
    tee: gst::Element,
}

impl ViewerBranch {
    /// Adds the branch to the bin holding `tee` (the pipeline, or an extra encoding's bin). webrtcbin
    /// fires `on-negotiation-needed` once the branch is linked; the offer arrives as `ViewerEvent::Offer`.
    pub fn attach(tee: &gst::Element, ice: &IceSettings, events: EventSink) -> Result<Self, MediaError> {
        let bin = tee
            .parent()
            .and_then(|p| p.downcast::<gst::Bin>().ok())
            .ok_or_else(|| MediaError::Build("tee is not in a bin".into()))?;
        let queue = gst::ElementFactory::make("queue")
            .property_from_str("leaky", "downstream")
            .property("max-size-buffers", VIEWER_QUEUE_BUFFERS)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64)
            .build()
            .map_err(|e| MediaError::Build(format!("queue: {e}")))?;
        let webrtc = gst::ElementFactory::make("webrtcbin")
            // Browsers are told max-bundle; without it the offer lacks a BUNDLE group and they refuse it.
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .map_err(|e| MediaError::Build(format!("webrtcbin (gstreamer1.0-plugins-bad, gstreamer1.0-nice): {e}")))?;
        configure_ice(&webrtc, ice);
        connect_signals(&webrtc, events);

        bin.add_many([&queue, &webrtc])
            .map_err(|e| MediaError::Build(format!("adding viewer branch: {e}")))?;
        let fail = |what: &str| {
            let _ = bin.remove_many([&queue, &webrtc]);
            MediaError::Build(what.to_string())
        };
        queue.link(&webrtc).map_err(|_| fail("linking queue to webrtcbin"))?;
        if let Some(transceiver) = webrtc
            .static_pad("sink_0")
            .and_then(|p| p.property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver"))
        {
            transceiver.set_property("direction", gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
            // Generic NACK with RTX: webrtcbin offers `nack` and an rtx payload and keeps a history of sent
            // packets for this viewer alone (rtprtxsend), so a lost packet is resent to the viewer that lost
            // it instead of every viewer paying a keyframe. Without it, 3 % loss froze Chromium for 26 of
            // 30 s (1.9 fps; tests/lossy_link.rs).
            // No FEC for everyone: ULP-RED at 20 % (`fec-type`, `fec-percentage`) took the occasional short
            // freeze at 3 % loss away (0 in 6 windows against 5 in 20 without, all under load; see
            // bench/results/lossy_link.md) but costs every viewer ~25 % more bits, lossless ones too. It
            // belongs to viewers whose reports show loss, which is not built yet.
            transceiver.set_property("do-nack", true);
        }
        queue
            .sync_state_with_parent()
            .map_err(|_| fail("starting viewer queue"))?;
        webrtc
            .sync_state_with_parent()
            .map_err(|_| fail("starting webrtcbin"))?;
        let queue_sink = queue.static_pad("sink").ok_or_else(|| fail("queue has no sink pad"))?;
        let tee_pad = tee_branch::link(tee, &queue_sink).ok_or_else(|| fail("linking tee to viewer queue"))?;
        Ok(Self {
            queue,
            webrtc,
            tee_pad,
            tee: tee.clone(),
        })
    }

    pub fn set_answer(&self, sdp: &str, events: EventSink) -> Result<(), MediaError> {
        // After a pipeline rebuild (fallback, replug) the page may still answer the previous offer;
        // that answer belongs to no live session and the answer to the new offer will follow.
        let state = self
            .webrtc
            .property::<gst_webrtc::WebRTCSignalingState>("signaling-state");
        if state != gst_webrtc::WebRTCSignalingState::HaveLocalOffer {
            return Err(MediaError::StaleAnswer);
        }
        // GStreamer's SDP parser accepts nearly anything; an SDP body starts with its version line.
        if !sdp.trim_start().starts_with("v=0") {
            return Err(MediaError::Sdp("answer is not valid SDP (no v=0 line)".into()));
        }
        let message = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
            .map_err(|_| MediaError::Sdp("answer is not valid SDP".into()))?;
        // A browser that cannot take the offered codec answers with port 0; renegotiating would loop
        // (Chrome rejecting High profile made webrtcbin re-offer hundreds of times a second).
        if let Some(media) = message.medias().next() {
            if media.port() == 0 {
                return Err(MediaError::Sdp(
                    "the browser rejected the video (no codec in common: it may lack H.264)".into(),
                ));
            }
        }
        let answer = gst_webrtc::WebRTCSessionDescription::new(WebRTCSDPType::Answer, message);
        let promise = gst::Promise::with_change_func(move |reply| {
            if let Ok(Some(reply)) = reply {
                if let Ok(err) = reply.get::<glib::Error>("error") {
                    events(ViewerEvent::Failed(format!("answer refused: {err}")));
                }
            }
        });
        self.webrtc
            .emit_by_name::<()>("set-remote-description", &[&answer, &Some(promise)]);
        Ok(())
    }

    pub fn add_candidate(&self, mline: u32, candidate: &str) {
        // An empty candidate is the browser's end-of-candidates marker; libnice wants nothing for it.
        if !candidate.is_empty() {
            self.webrtc
                .emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate]);
        }
    }

    /// Takes the branch off its tee and frees it (see `tee_branch::detach`).
    pub fn detach(self) {
        tee_branch::detach(&self.tee, self.tee_pad, vec![self.webrtc, self.queue]);
    }
}

fn configure_ice(webrtc: &gst::Element, ice: &IceSettings) {
    for server in &ice.servers {
        for url in &server.urls {
            if let Some(rest) = url.strip_prefix("stun:") {
                webrtc.set_property("stun-server", format!("stun://{rest}"));
            } else if let Some(uri) = turn_uri(url, server) {
                webrtc.emit_by_name::<bool>("add-turn-server", &[&uri]);
            }
        }
    }
    if !ice.local_addresses.is_empty() {
        let agent = webrtc.property::<glib::Object>("ice-agent");
        for addr in &ice.local_addresses {
            agent.emit_by_name::<bool>("add-local-ip-address", &[&addr.to_string()]);
        }
    }
}

/// Browser-style `turn:host:port` plus credentials -> GStreamer's `turn://user:pass@host:port`.
fn turn_uri(url: &str, server: &IceServer) -> Option<String> {
    let (scheme, rest) = url
        .strip_prefix("turns:")
        .map(|r| ("turns", r))
        .or_else(|| url.strip_prefix("turn:").map(|r| ("turn", r)))?;
    let user = server.username.as_deref().unwrap_or_default();
    let pass = server.credential.as_deref().unwrap_or_default();
    Some(format!("{scheme}://{user}:{pass}@{rest}"))
}

fn connect_signals(webrtc: &gst::Element, events: EventSink) {
    // Offer exactly once per viewer: a second negotiation-needed means something changed that the
    // browser cannot follow without a new offer/answer round, and re-offering is how loops start.
    let offered = Arc::new(AtomicBool::new(false));
    let on_offer = events.clone();
    webrtc.connect("on-negotiation-needed", false, move |values| {
        let Ok(webrtc) = values[0].get::<gst::Element>() else {
            return None;
        };
        if offered.swap(true, Ordering::SeqCst) {
            tracing::debug!("ignoring renegotiation request");
            return None;
        }
        let weak = webrtc.downgrade();
        let events = on_offer.clone();
        let promise = gst::Promise::with_change_func(move |reply| {
            let offer = match reply {
                Ok(Some(reply)) => reply.get::<gst_webrtc::WebRTCSessionDescription>("offer").ok(),
                _ => None,
            };
            match (offer, weak.upgrade()) {
                (Some(offer), Some(webrtc)) => {
                    // The offer goes out once it is the local description: an answer arriving before
                    // that would meet a `stable` webrtcbin and be dropped as stale.
                    let sdp = offer.sdp().to_string();
                    let events = events.clone();
                    let applied = gst::Promise::with_change_func(move |reply| match reply {
                        Ok(Some(reply)) if reply.has_field("error") => {
                            events(ViewerEvent::Failed("webrtcbin refused its own offer".into()))
                        }
                        Ok(_) => events(ViewerEvent::Offer(sdp)),
                        Err(_) => {}
                    });
                    webrtc.emit_by_name::<()>("set-local-description", &[&offer, &Some(applied)]);
                }
                (None, _) => events(ViewerEvent::Failed("webrtcbin could not create an offer".into())),
                (_, None) => {}
            }
        });
        webrtc.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
        None
    });

    let on_candidate = events.clone();
    webrtc.connect("on-ice-candidate", false, move |values| {
        let mline = values[1].get::<u32>().ok()?;
        let candidate = values[2].get::<String>().ok()?;
        on_candidate(ViewerEvent::Candidate { mline, candidate });
        None
    });

    // Connected means ICE and DTLS both are: media sent before the DTLS handshake ends is dropped, so a
    // keyframe asked for on ICE alone could be lost and the browser would wait for the next one.
    let on_ice = events.clone();
    webrtc.connect_notify(Some("ice-connection-state"), move |webrtc, _| {
        use gst_webrtc::WebRTCICEConnectionState as S;
        if webrtc.property::<S>("ice-connection-state") == S::Failed {
            on_ice(ViewerEvent::Failed("ICE failed".into()));
        }
    });
    webrtc.connect_notify(Some("connection-state"), move |webrtc, _| {
        use gst_webrtc::WebRTCPeerConnectionState as S;
        match webrtc.property::<S>("connection-state") {
            S::Connected => events(ViewerEvent::Connected),
            S::Failed => events(ViewerEvent::Failed("connection failed (DTLS)".into())),
            _ => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls_carry_credentials() {
        let server = IceServer {
            urls: vec![],
            username: Some("u".into()),
            credential: Some("p".into()),
        };
        assert_eq!(
            turn_uri("turn:turn.example.org:3478", &server).as_deref(),
            Some("turn://u:p@turn.example.org:3478")
        );
        assert_eq!(
            turn_uri("turns:t.example.org:5349", &server).as_deref(),
            Some("turns://u:p@t.example.org:5349")
        );
        assert_eq!(turn_uri("stun:s.example.org", &server), None);
    }
}

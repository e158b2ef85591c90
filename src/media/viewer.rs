//! One viewer = one branch off a camera's RTP tee: `queue leaky=downstream ! webrtcbin`. The leaky
//! queue keeps a slow viewer from stalling the tee; the branch's firewalled sink keeps a broken one
//! (a DTLS alert, ICE failure) from stopping it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gst::glib;
use gst::prelude::*;
use gst_webrtc::WebRTCSDPType;

use super::branch::{self, Attached, Detaching};
use super::congestion::Estimator;
use super::viewer_stats::{StatsPoller, ViewerStats};
use super::MediaError;
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
    /// Once a second: the viewer's bandwidth estimate, loss, round-trip time and bytes sent.
    Stats(ViewerStats),
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

/// A WebRTC viewer: one branch on an encoding's RTP tee, `queue leaky=downstream ! webrtcbin`, in its
/// own bin. The daemon makes the offer (the page and the original protocol both expect one).
pub struct ViewerBranch {
    webrtc: gst::Element,
    attached: Attached,
    /// Reads the viewer's link once a second until the branch goes.
    _stats: StatsPoller,
}

impl ViewerBranch {
    /// Builds the branch numbered `branch` and links it to `rtp_tee`. webrtcbin fires
    /// `on-negotiation-needed` once the branch is linked; the offer arrives as `ViewerEvent::Offer`.
    pub fn attach(
        rtp_tee: &gst::Element,
        branch: u64,
        ice: &IceSettings,
        events: EventSink,
    ) -> Result<Self, MediaError> {
        let bin = gst::Bin::with_name(&branch::bin_name(branch));
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
        let estimator = Estimator::install(&webrtc);
        let stats = StatsPoller::start(&webrtc, estimator, events.clone());
        connect_signals(&webrtc, events);
        keep_off_the_router(&webrtc);

        bin.add_many([&queue, &webrtc])
            .map_err(|e| MediaError::Build(format!("adding viewer branch: {e}")))?;
        queue
            .link(&webrtc)
            .map_err(|_| MediaError::Build("linking queue to webrtcbin".into()))?;
        if let Some(transceiver) = webrtc
            .static_pad("sink_0")
            .and_then(|p| p.property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver"))
        {
            transceiver.set_property("direction", gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
        }
        let queue_sink = queue
            .static_pad("sink")
            .ok_or_else(|| MediaError::Build("queue has no sink pad".into()))?;
        branch::firewalled_sink(&bin, &queue_sink)?;
        let attached = Attached::link(rtp_tee, bin)?;
        Ok(Self {
            webrtc,
            attached,
            _stats: stats,
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

    /// Takes the branch off its tee and frees it (see `Attached::detach`).
    pub fn detach(self) -> Detaching {
        self.attached.detach()
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

/// libnice asks the router for UPnP port mappings on every session by default (gssdp/gupnp objects per
/// viewer in heaptrack, and SSDP traffic on the LAN): a camera daemon has no business reconfiguring the
/// owner's router. webrtcbin 1.22 does not expose its NiceAgent, but its nicesrc elements carry it, and
/// they are added before candidates are gathered (set-local-description).
fn keep_off_the_router(webrtc: &gst::Element) {
    webrtc.connect("deep-element-added", false, |values| {
        let element = values[2].get::<gst::Element>().ok()?;
        if element.factory().is_some_and(|f| f.name() == "nicesrc") {
            let agent = element.property::<glib::Object>("agent");
            if agent.has_property("upnp", Some(bool::static_type())) {
                agent.set_property("upnp", false);
            }
        }
        None
    });
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
    use std::time::Duration;

    #[test]
    fn a_viewer_session_never_uses_upnp() {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(
            "videotestsrc is-live=true ! x264enc tune=zerolatency speed-preset=ultrafast ! rtph264pay pt=96 ! \
             tee name=t allow-not-linked=true",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let events: EventSink = Arc::new(move |event| {
            let _ = tx.send(event);
        });
        let ice = IceSettings {
            servers: vec![],
            local_addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        let branch = ViewerBranch::attach(&pipeline.by_name("t").unwrap(), 1, &ice, events).unwrap();
        // Once the offer exists, candidates are being gathered: the agent is set up for good.
        let offer = loop {
            match rx.recv_timeout(Duration::from_secs(30)).expect("an offer") {
                ViewerEvent::Offer(sdp) => break sdp,
                _ => continue,
            }
        };
        assert!(offer.contains("H264/90000"));
        let bin = pipeline
            .by_name(&branch::bin_name(1))
            .unwrap()
            .downcast::<gst::Bin>()
            .unwrap();
        let nicesrcs: Vec<gst::Element> = bin
            .iterate_recurse()
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.factory().is_some_and(|f| f.name() == "nicesrc"))
            .collect();
        assert!(!nicesrcs.is_empty(), "webrtcbin has an ICE transport");
        for nicesrc in nicesrcs {
            let agent = nicesrc.property::<glib::Object>("agent");
            assert!(!agent.property::<bool>("upnp"), "UPnP is off on {}", nicesrc.name());
        }
        drop(branch);
        pipeline.set_state(gst::State::Null).unwrap();
    }

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

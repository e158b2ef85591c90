//! One viewer = one branch off a camera's RTP tee: `queue leaky=downstream ! webrtcbin`. The leaky
//! queue keeps a slow viewer from stalling the tee; the branch's firewalled sink keeps a broken one
//! (a DTLS alert, ICE failure) from stopping it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst_webrtc::WebRTCSDPType;

use super::branch::{self, Attached, Detaching};
use super::congestion::Estimator;
use super::offer::{self, ClientOffer};
use super::viewer_stats::{StatsPoller, ViewerStats};
use super::MediaError;
use crate::config::IceServer;
use crate::encoders::Codec;

/// What a viewer branch reports from GStreamer's threads. The camera actor turns these into
/// signalling messages and state changes.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewerEvent {
    Offer(String),
    /// The answer to the client's offer, with the candidates gathered so far (all of them unless
    /// gathering outlasted `ANSWER_GATHER_LIMIT`).
    Answer(String),
    Candidate {
        mline: u32,
        candidate: String,
    },
    Connected,
    /// ICE failed, the remote description was refused, or an offer could not be made.
    Failed(String),
    /// The client's offer could not be answered (webrtcbin refused it, or answered without video).
    OfferRefused(String),
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

/// How long an answer waits for ICE gathering before it goes out with the candidates found so far. A
/// WHEP answer is the client's only source of the daemon's candidates; host candidates take
/// milliseconds, a STUN server that does not reply would hold the answer for libnice's whole retry
/// schedule (~40 s).
pub const ANSWER_GATHER_LIMIT: Duration = Duration::from_secs(3);

/// A WebRTC viewer: one branch on an encoding's RTP tee, `queue leaky=downstream ! webrtcbin`, in its
/// own bin. The daemon makes the offer (the page and the original protocol both expect one).
pub struct ViewerBranch {
    webrtc: gst::Element,
    attached: Attached,
    /// Reads the viewer's link once a second until the branch goes.
    stats: StatsPoller,
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
        let (bin, queue, webrtc, stats) = build(branch, ice, &events)?;
        connect_offer(&webrtc, events);
        queue
            .link(&webrtc)
            .map_err(|_| MediaError::Build("linking queue to webrtcbin".into()))?;
        if let Some(transceiver) = webrtc
            .static_pad("sink_0")
            .and_then(|p| p.property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver"))
        {
            transceiver.set_property("direction", gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
            // Generic NACK with RTX: webrtcbin offers `nack` and an rtx payload and keeps a history of sent
            // packets for this viewer alone (rtprtxsend), so a lost packet is resent to the viewer that lost
            // it instead of every viewer paying a keyframe. Without it, 3 % loss froze Chromium for 26 of
            // 30 s (1.9 fps; tests/lossy_link.rs).
            transceiver.set_property("do-nack", true);
            // ULP-FEC in RED is offered, with no redundancy until the viewer's reports show loss
            // (`set_fec`; camera/fec.rs says when). The percentage can change during the session.
            transceiver.set_property("fec-type", gst_webrtc::WebRTCFECType::UlpRed);
            transceiver.set_property("fec-percentage", 0u32);
        }
        Self::link(rtp_tee, (bin, queue, webrtc, stats), |_| {})
    }

    /// Builds the branch numbered `branch` for a client that made the offer (WHEP), links it to
    /// `rtp_tee` (an encoding of `codec`) and answers: `ViewerEvent::Answer`, or `OfferRefused`.
    /// webrtcbin 1.22 answers `inactive` for a branch linked before the remote offer arrives, so the
    /// order matters: the offer exists when the branch is made, the transceiver is made sendonly with
    /// the client's payload type as its codec preference, and only then is the offer set. Media the
    /// camera has none of (whepsrc offers audio too) get no transceiver and are answered inactive.
    pub fn answer(
        rtp_tee: &gst::Element,
        branch: u64,
        ice: &IceSettings,
        events: EventSink,
        offer: &ClientOffer,
        codec: Codec,
    ) -> Result<Self, MediaError> {
        let stream_profile = rtp_tee
            .static_pad("sink")
            .and_then(|p| p.current_caps())
            .and_then(|c| c.structure(0).and_then(|s| s.get::<String>("profile-level-id").ok()));
        let chosen = offer.payload_for(codec, stream_profile.as_deref())?;
        let (bin, queue, webrtc, stats) = build(branch, ice, &events)?;
        let sink = webrtc
            .request_pad_simple("sink_%u")
            .ok_or_else(|| MediaError::Build("webrtcbin gave no sink pad".into()))?;
        let transceiver = sink
            .property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver")
            .ok_or_else(|| MediaError::Build("webrtcbin's sink pad has no transceiver".into()))?;
        transceiver.set_property("direction", gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
        transceiver.set_property("codec-preferences", &chosen.caps);
        queue
            .static_pad("src")
            .ok_or_else(|| MediaError::Build("queue has no src pad".into()))?
            .link(&sink)
            .map_err(|e| MediaError::Build(format!("linking queue to webrtcbin: {e:?}")))?;
        let rewrite = move |entry: &gst::Pad| rewrite_payload_type(entry, chosen.pt, chosen.profile_level_id);
        let this = Self::link(rtp_tee, (bin, queue, webrtc, stats), rewrite)?;
        this.answer_offer(offer, events);
        Ok(this)
    }

    /// Gives the bin its firewalled sink, lets `prepare` hook on it before any caps arrive, and links
    /// the bin to the tee.
    fn link(rtp_tee: &gst::Element, parts: Parts, prepare: impl FnOnce(&gst::Pad)) -> Result<Self, MediaError> {
        let (bin, queue, webrtc, stats) = parts;
        let queue_sink = queue
            .static_pad("sink")
            .ok_or_else(|| MediaError::Build("queue has no sink pad".into()))?;
        branch::firewalled_sink(&bin, &queue_sink)?;
        if let Some(entry) = bin.static_pad("sink") {
            prepare(&entry);
        }
        let attached = Attached::link(rtp_tee, bin)?;
        Ok(Self {
            webrtc,
            attached,
            stats,
        })
    }

    /// set-remote-description(offer) -> create-answer -> set-local-description(answer) -> gathering
    /// done (or `ANSWER_GATHER_LIMIT`) -> `ViewerEvent::Answer` with the local description's candidates.
    fn answer_offer(&self, offer: &ClientOffer, events: EventSink) {
        let remote = gst_webrtc::WebRTCSessionDescription::new(WebRTCSDPType::Offer, offer.message().clone());
        let weak = self.webrtc.downgrade();
        let promise = gst::Promise::with_change_func(move |reply| {
            if let Err(e) = promise_error(reply) {
                return events(ViewerEvent::OfferRefused(format!("offer refused: {e}")));
            }
            let Some(webrtc) = weak.upgrade() else { return };
            let weak = webrtc.downgrade();
            let on_answer = gst::Promise::with_change_func(move |reply| {
                let answer = match promise_error(reply) {
                    Ok(Some(reply)) => reply.get::<gst_webrtc::WebRTCSessionDescription>("answer").ok(),
                    _ => None,
                };
                let (Some(answer), Some(webrtc)) = (answer, weak.upgrade()) else {
                    return events(ViewerEvent::OfferRefused("webrtcbin could not answer the offer".into()));
                };
                if let Err(why) = sends_video(answer.sdp()) {
                    return events(ViewerEvent::OfferRefused(why));
                }
                let events = events.clone();
                let weak = webrtc.downgrade();
                let applied =
                    gst::Promise::with_change_func(move |reply| match (promise_error(reply), weak.upgrade()) {
                        (Ok(_), Some(webrtc)) => send_answer_once_gathered(&webrtc, events),
                        (Err(e), _) => events(ViewerEvent::OfferRefused(format!("webrtcbin refused its answer: {e}"))),
                        _ => {}
                    });
                webrtc.emit_by_name::<()>("set-local-description", &[&answer, &Some(applied)]);
            });
            webrtc.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &on_answer]);
        });
        self.webrtc
            .emit_by_name::<()>("set-remote-description", &[&remote, &Some(promise)]);
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
        let message = offer::parse_answer(sdp)?;
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

    /// Sets the FEC redundancy sent to this viewer, where its session has FEC (sessions the daemon
    /// offered; a client's offer decides for itself).
    pub fn set_fec(&self, percent: u32) {
        let transceiver = self
            .webrtc
            .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&0i32]);
        if let Some(t) = transceiver
            .filter(|t| t.property::<gst_webrtc::WebRTCFECType>("fec-type") == gst_webrtc::WebRTCFECType::UlpRed)
        {
            t.set_property("fec-percentage", percent);
        }
    }

    /// Lifts the viewer's bandwidth estimate: a probe for room on its link.
    pub fn set_estimate(&self, kbps: u32) {
        self.stats.estimator().set_bitrate_bps(kbps.saturating_mul(1000));
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

/// How far back a viewer's retransmission history reaches. A packet older than this is past any
/// browser's playout deadline on a link worth repairing; on a congested link, retransmitting a whole
/// second of video the link already failed to carry kept its queue full for 5 s before the first picture
/// (tests/shaped_policy.rs at 250 kbit/s; rtprtxsend's default is 100 packets, any age).
const RTX_HISTORY_MS: u32 = 500;

/// Settings for elements webrtcbin makes inside itself, as they are added:
/// - libnice asks the router for UPnP port mappings on every session by default (gssdp/gupnp objects per
///   viewer in heaptrack, and SSDP traffic on the LAN): a camera daemon has no business reconfiguring
///   the owner's router. webrtcbin 1.22 does not expose its NiceAgent, but its nicesrc elements carry it,
///   and they are added before candidates are gathered (set-local-description).
/// - the retransmission history is bounded by age (`RTX_HISTORY_MS`).
fn configure_inner_elements(webrtc: &gst::Element) {
    webrtc.connect("deep-element-added", false, |values| {
        let element = values[2].get::<gst::Element>().ok()?;
        match element.factory()?.name().as_str() {
            "nicesrc" => {
                let agent = element.property::<glib::Object>("agent");
                if agent.has_property("upnp", Some(bool::static_type())) {
                    agent.set_property("upnp", false);
                }
            }
            "rtprtxsend" => element.set_property("max-size-time", RTX_HISTORY_MS),
            _ => {}
        }
        None
    });
}

/// A branch's bin with its leaky queue and webrtcbin, ICE configured and its events connected, not yet
/// linked to each other.
/// A branch's parts before they are linked: its bin, the queue at its entry, its webrtcbin, and the
/// poller reading its link's numbers (which lives as long as the branch).
type Parts = (gst::Bin, gst::Element, gst::Element, StatsPoller);

fn build(branch: u64, ice: &IceSettings, events: &EventSink) -> Result<Parts, MediaError> {
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
    connect_signals(&webrtc, events.clone());
    configure_inner_elements(&webrtc);
    bin.add_many([&queue, &webrtc])
        .map_err(|e| MediaError::Build(format!("adding viewer branch: {e}")))?;
    Ok((bin, queue, webrtc, stats))
}

/// The daemon offers: on webrtcbin's `on-negotiation-needed`, create the offer, set it, send it.
fn connect_offer(webrtc: &gst::Element, events: EventSink) {
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
}

/// Candidates and connection states, whoever offers.
fn connect_signals(webrtc: &gst::Element, events: EventSink) {
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

/// A promise's reply, or the error webrtcbin put in it.
fn promise_error(
    reply: Result<Option<&gst::StructureRef>, gst::PromiseError>,
) -> Result<Option<&gst::StructureRef>, String> {
    match reply {
        Ok(Some(s)) if s.has_field("error") => Err(s
            .get::<glib::Error>("error")
            .map(|e| e.to_string())
            .unwrap_or_else(|_| "unknown error".into())),
        Ok(s) => Ok(s),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// An answer must send the video: webrtcbin answers `inactive` (or rejects the m-line) when no
/// transceiver matched, and a client would then wait for media that never comes.
fn sends_video(answer: &gst_sdp::SDPMessageRef) -> Result<(), String> {
    let sends = answer.medias().any(|m| {
        m.media() == Some("video")
            && m.port() != 0
            && (m.attribute_val("sendonly").is_some() || m.attribute_val("sendrecv").is_some())
    });
    if sends {
        Ok(())
    } else {
        Err("the answer would send no video (webrtcbin found no transceiver for the offer's video)".into())
    }
}

/// Emits the local description as `ViewerEvent::Answer` once ICE gathering completes, or after
/// `ANSWER_GATHER_LIMIT` with what was gathered by then, whichever comes first (exactly once).
fn send_answer_once_gathered(webrtc: &gst::Element, events: EventSink) {
    let once: Arc<Mutex<Option<EventSink>>> = Arc::new(Mutex::new(Some(events)));
    let send = {
        let once = once.clone();
        move |webrtc: &gst::Element| {
            let Some(events) = once.lock().ok().and_then(|mut e| e.take()) else {
                return;
            };
            match webrtc
                .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
                .and_then(|d| d.sdp().as_text().ok())
            {
                Some(sdp) => events(ViewerEvent::Answer(sdp)),
                None => events(ViewerEvent::OfferRefused("webrtcbin has no local description".into())),
            }
        }
    };
    let on_done = send.clone();
    webrtc.connect_notify(Some("ice-gathering-state"), move |webrtc, _| {
        if webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
            == gst_webrtc::WebRTCICEGatheringState::Complete
        {
            on_done(webrtc);
        }
    });
    if webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
        == gst_webrtc::WebRTCICEGatheringState::Complete
    {
        return send(webrtc);
    }
    let clock = gst::SystemClock::obtain();
    let deadline = clock.time().unwrap_or(gst::ClockTime::ZERO)
        + gst::ClockTime::from_nseconds(ANSWER_GATHER_LIMIT.as_nanos() as u64);
    let weak = webrtc.downgrade();
    let _ = clock.new_single_shot_id(deadline).wait_async(move |_, _, _| {
        if let Some(webrtc) = weak.upgrade() {
            send(&webrtc);
        }
    });
}

/// The camera's payloader stamps `PAYLOAD_TYPE` on every packet and into its caps; a client that
/// offered another type gets its own on this branch. At the branch's entry (`pad`, its sink), so the
/// caps are already the client's when the pad checks them:
/// - the caps event gets the client's payload type (and H.264 profile, as the transceiver's codec
///   preference has it: caps outside the preference are refused);
/// - each packet's payload type byte is rewritten (RFC 3550 5.1: the low 7 bits of the second byte);
///   packets are shared with the other branches, so a rewritten one is a copy;
/// - caps queries from upstream are answered here, as accepting anything: the branch's webrtcbin would
///   answer with the client's payload type, and the tee intersects every branch's answer, so one
///   client's preference would fail the shared payloader's negotiation and stop the camera for all.
///   Caps the webrtcbin then refuses fail this branch only (an error inside it, see `events`).
fn rewrite_payload_type(pad: &gst::Pad, pt: u32, profile_level_id: Option<String>) {
    let pt = (pt & 0x7f) as u8;
    let set_pt = move |buffer: &mut gst::Buffer| {
        let already = buffer
            .map_readable()
            .ok()
            .is_some_and(|m| m.len() < 2 || m[1] & 0x7f == pt);
        if !already {
            if let Ok(mut map) = buffer.make_mut().map_writable() {
                map[1] = (map[1] & 0x80) | pt;
            }
        }
    };
    let probes = gst::PadProbeType::BUFFER
        | gst::PadProbeType::BUFFER_LIST
        | gst::PadProbeType::EVENT_DOWNSTREAM
        | gst::PadProbeType::QUERY_DOWNSTREAM;
    pad.add_probe(probes, move |_, info| {
        match &mut info.data {
            Some(gst::PadProbeData::Buffer(buffer)) => set_pt(buffer),
            Some(gst::PadProbeData::BufferList(list)) => {
                list.make_mut().foreach_mut(|mut buffer, _| {
                    set_pt(&mut buffer);
                    std::ops::ControlFlow::Continue(Some(buffer))
                });
            }
            Some(gst::PadProbeData::Event(event)) => {
                if let gst::EventView::Caps(c) = event.view() {
                    let mut caps = c.caps_owned();
                    if let Some(s) = caps.make_mut().structure_mut(0) {
                        s.set("payload", pt as i32);
                        if let Some(p) = &profile_level_id {
                            s.set("profile-level-id", p.as_str());
                        }
                    }
                    *event = gst::event::Caps::builder(&caps).seqnum(event.seqnum()).build();
                }
            }
            Some(gst::PadProbeData::Query(query)) => match query.view_mut() {
                gst::QueryViewMut::AcceptCaps(q) => {
                    q.set_result(true);
                    return gst::PadProbeReturn::Handled;
                }
                gst::QueryViewMut::Caps(q) => {
                    let caps = q.filter_owned().unwrap_or_else(gst::Caps::new_any);
                    q.set_result(&caps);
                    return gst::PadProbeReturn::Handled;
                }
                _ => {}
            },
            _ => {}
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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

#[cfg(test)]
#[path = "viewer_answer_tests.rs"]
mod answer_tests;

//! Once a second, what one viewer's link is doing: the congestion controller's estimate, and from
//! webrtcbin's `get-stats` the loss and round-trip time the browser's receiver reports give, and the bytes
//! sent. Reported as `ViewerEvent::Stats` for the camera's bitrate policy and the API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gst::prelude::*;
use gst_webrtc::WebRTCStatsType;

use super::congestion::Estimator;
use super::viewer::{EventSink, ViewerEvent};

/// How often a viewer's numbers are read: RTCP receiver reports come about once a second, and so does
/// anything a bitrate policy should react to (GCC moves by ~8 % a second when it raises).
const STATS_INTERVAL: gst::ClockTime = gst::ClockTime::from_seconds(1);

/// One reading of a viewer's link. A field is None until its source has something (the first receiver
/// report, the first feedback).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewerStats {
    /// Google Congestion Control's estimate of what the path to this viewer carries.
    pub estimate_bps: Option<u32>,
    /// Share of packets lost in the last receiver-report interval (0.0-1.0).
    pub fraction_lost: Option<f64>,
    pub round_trip_ms: Option<f64>,
    /// RTP bytes sent to this viewer since it joined.
    pub bytes_sent: Option<u64>,
    /// RTCP packets received from the peer so far: a peer that stops sending them is gone, whatever
    /// ICE and DTLS say (neither notices a peer that vanished).
    pub rtcp_received: u64,
}

/// Reads the numbers for one viewer every `STATS_INTERVAL` until dropped.
pub struct StatsPoller {
    tick: gst::PeriodicClockId,
    estimator: Estimator,
}

impl StatsPoller {
    pub fn start(webrtc: &gst::Element, estimator: Estimator, events: EventSink) -> Self {
        let rtcp_received = count_rtcp(webrtc);
        let clock = gst::SystemClock::obtain();
        let first = clock.time().unwrap_or(gst::ClockTime::ZERO) + STATS_INTERVAL;
        let tick = clock.new_periodic_id(first, STATS_INTERVAL);
        let webrtc = webrtc.downgrade();
        let reading = estimator.clone();
        // Runs on the system clock's thread; get-stats only queues work on webrtcbin's own thread, and the
        // reply comes back there, so this thread never waits for webrtcbin.
        let scheduled = tick.wait_async(move |_, _, _| {
            let Some(webrtc) = webrtc.upgrade() else {
                return;
            };
            let events = events.clone();
            let estimator = reading.clone();
            let rtcp_received = rtcp_received.clone();
            let promise = gst::Promise::with_change_func(move |reply| {
                let mut stats = match reply {
                    Ok(Some(reply)) => parse(reply),
                    _ => ViewerStats::default(),
                };
                stats.estimate_bps = estimator.bitrate_bps();
                stats.rtcp_received = rtcp_received.load(Ordering::Relaxed);
                events(ViewerEvent::Stats(stats));
            });
            webrtc.emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
        });
        if let Err(e) = scheduled {
            tracing::warn!(error = ?e, "viewer statistics not scheduled");
        }
        Self { tick, estimator }
    }

    /// The viewer's bandwidth estimator (to probe its link).
    pub fn estimator(&self) -> &Estimator {
        &self.estimator
    }
}

/// Counts the RTCP packets webrtcbin's RTP bin receives from the peer (its `on-ssrc-active` fires for
/// each receiver or sender report from a remote source).
fn count_rtcp(webrtc: &gst::Element) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let rtpbin = webrtc.downcast_ref::<gst::Bin>().and_then(|bin| {
        bin.iterate_elements()
            .into_iter()
            .filter_map(Result::ok)
            .find(|e| e.factory().is_some_and(|f| f.name() == "rtpbin"))
    });
    match rtpbin {
        Some(rtpbin) => {
            let counter = count.clone();
            rtpbin.connect("on-ssrc-active", false, move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
                None
            });
        }
        None => tracing::warn!("webrtcbin has no rtpbin: the peer's RTCP is not counted"),
    }
    count
}

impl Drop for StatsPoller {
    fn drop(&mut self) {
        self.tick.unschedule();
    }
}

/// Picks the viewer's numbers out of a `get-stats` reply: one field per statistics object, each a
/// structure with a `type`. A viewer branch sends one video stream, so the first of each type is it.
fn parse(reply: &gst::StructureRef) -> ViewerStats {
    let mut stats = ViewerStats::default();
    for (_, value) in reply.iter() {
        let Ok(entry) = value.get::<gst::Structure>() else {
            continue;
        };
        match entry.get::<WebRTCStatsType>("type") {
            Ok(WebRTCStatsType::RemoteInboundRtp) => {
                stats.fraction_lost = stats.fraction_lost.or(entry.get::<f64>("fraction-lost").ok());
                stats.round_trip_ms = stats
                    .round_trip_ms
                    .or(entry.get::<f64>("round-trip-time").ok().map(|s| s * 1000.0));
            }
            Ok(WebRTCStatsType::OutboundRtp) => {
                stats.bytes_sent = stats.bytes_sent.or(entry.get::<u64>("bytes-sent").ok());
            }
            _ => {}
        }
    }
    stats
}

/// For tests: a `get-stats` entry as webrtcbin writes it.
#[cfg(test)]
fn entry(kind: WebRTCStatsType, fields: &[(&str, gst::glib::SendValue)]) -> gst::Structure {
    let mut s = gst::Structure::builder("application/x-webrtc-stats")
        .field("type", kind)
        .build();
    for (name, value) in fields {
        s.set_value(*name, value.clone());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_loss_rtt_and_bytes_from_their_entries() {
        gst::init().unwrap();
        let reply = gst::Structure::builder("application/x-webrtc-stats")
            .field(
                "remote-inbound-rtp_1234",
                entry(
                    WebRTCStatsType::RemoteInboundRtp,
                    &[
                        ("fraction-lost", 0.25f64.to_send_value()),
                        ("round-trip-time", 0.040f64.to_send_value()),
                    ],
                ),
            )
            .field(
                "outbound-rtp_1234",
                entry(
                    WebRTCStatsType::OutboundRtp,
                    &[("bytes-sent", 123_456u64.to_send_value())],
                ),
            )
            .field("codec-stats-96", entry(WebRTCStatsType::Codec, &[]))
            .field("not-a-structure", "text")
            .build();
        let stats = parse(&reply);
        assert_eq!(stats.fraction_lost, Some(0.25));
        assert_eq!(stats.round_trip_ms, Some(40.0));
        assert_eq!(stats.bytes_sent, Some(123_456));
        assert_eq!(stats.estimate_bps, None);
    }

    #[test]
    fn a_reply_without_reports_has_no_numbers() {
        gst::init().unwrap();
        let reply = gst::Structure::builder("application/x-webrtc-stats")
            .field("peer-connection-stats", entry(WebRTCStatsType::PeerConnection, &[]))
            .build();
        assert_eq!(parse(&reply), ViewerStats::default());
    }
}

//! A bandwidth estimate per viewer: Google Congestion Control (`rtpgccbwe`, from gst-plugins-rs, linked
//! into the binary) over the browser's transport-wide congestion control feedback.
//!
//! Two pieces make the feedback flow: the payloader stamps a TWCC header extension on every packet (so the
//! offer carries the `extmap` line and Chromium answers with transport-cc RTCP), and each viewer's
//! webrtcbin gets an `rtpgccbwe` in front of its RTP session through `request-aux-sender`. There it
//! paces that viewer's packets at the estimate (a leaky bucket of at most 30 ms) and updates
//! `estimated-bitrate` from each feedback report. Sent packets are never held longer than that bucket, so
//! the viewer's own leaky queue stays the one place where a viewer that cannot keep up loses packets.

use std::sync::{Arc, Mutex};

use gst::glib;
use gst::prelude::*;
use gst_rtp::prelude::*;

use super::MediaError;

/// The RTP header extension id of the TWCC sequence number. Any of 1-14 works for one-byte extensions;
/// the payloader carries no other extension.
const TWCC_EXTENSION_ID: u32 = 1;

/// The estimate never goes below the lowest camera bitrate the config accepts (50 kbit/s): below that no
/// encoder setting could follow it.
pub const MIN_ESTIMATE_BPS: u32 = 50_000;
/// Where each viewer's estimate starts: the default camera bitrate (1 Mbit/s). The pacer sends at the
/// estimate; starting lower would queue (up to its 30 ms) and burst a default camera's stream for the
/// seconds GCC needs to ramp up.
pub const START_ESTIMATE_BPS: u32 = 1_000_000;
/// Above any stream the profiles make (1080p30 H.264 is a few Mbit/s); with one shared encode the
/// estimate cannot climb far past what is really sent anyway (no padding probes).
pub const MAX_ESTIMATE_BPS: u32 = 20_000_000;

/// Adds the transport-wide sequence number extension to a payloader. Each viewer's RTP session writes its
/// own numbers into it (webrtcbin copies the buffer per session), so one extension serves every viewer.
pub fn add_twcc_extension(payloader: &gst::Element) -> Result<(), MediaError> {
    let extension = gst::ElementFactory::make("rtphdrexttwcc")
        .build()
        .map_err(|e| MediaError::Build(format!("rtphdrexttwcc (gstreamer1.0-plugins-good): {e}")))?
        .downcast::<gst_rtp::RTPHeaderExtension>()
        .map_err(|_| MediaError::Build("rtphdrexttwcc is not an RTP header extension".into()))?;
    extension.set_id(TWCC_EXTENSION_ID);
    payloader.emit_by_name::<()>("add-extension", &[&extension]);
    Ok(())
}

/// The estimator of one viewer, once webrtcbin has asked for it (when its transport is made).
#[derive(Clone, Default)]
pub struct Estimator(Arc<Mutex<Option<glib::WeakRef<gst::Element>>>>);

impl Estimator {
    /// Puts an `rtpgccbwe` into `webrtc`'s send path. webrtcbin asks once per transport; with max-bundle
    /// a viewer has one.
    pub fn install(webrtc: &gst::Element) -> Self {
        let estimator = Estimator::default();
        let slot = estimator.0.clone();
        webrtc.connect("request-aux-sender", false, move |_| {
            let bwe = match gst::ElementFactory::make("rtpgccbwe")
                .property("min-bitrate", MIN_ESTIMATE_BPS)
                .property("max-bitrate", MAX_ESTIMATE_BPS)
                // Set before the element starts, `estimated-bitrate` is where the estimate begins.
                .property("estimated-bitrate", START_ESTIMATE_BPS)
                .build()
            {
                Ok(bwe) => bwe,
                Err(e) => {
                    tracing::warn!(error = %e, "no rtpgccbwe: this viewer gets no bandwidth estimate");
                    // A typed NULL: glib-rs refuses an untyped None for a signal that returns an element.
                    return Some(None::<gst::Element>.to_value());
                }
            };
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(bwe.downgrade());
            Some(bwe.to_value())
        });
        estimator
    }

    /// Moves the estimate to `bps` (GCC goes on from there, both its delay and its loss controller);
    /// nothing before webrtcbin made the estimator.
    pub fn set_bitrate_bps(&self, bps: u32) {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bwe) = slot.as_ref().and_then(|w| w.upgrade()) {
            bwe.set_property("estimated-bitrate", bps.clamp(MIN_ESTIMATE_BPS, MAX_ESTIMATE_BPS));
        }
    }

    /// The current estimate in bit/s, or None before webrtcbin made the estimator (or if it could not).
    pub fn bitrate_bps(&self) -> Option<u32> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bwe = slot.as_ref()?.upgrade()?;
        Some(bwe.property::<u32>("estimated-bitrate"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::encoders::Codec;
    use crate::media::{
        CameraPipeline, EncoderPlan, EncodingKey, IceSettings, SourceSpec, Tap, ViewerBranch, ViewerEvent,
    };

    /// A real camera pipeline and viewer branch: the offer webrtcbin makes announces the extension, which
    /// is what makes a browser send transport-cc feedback at all.
    #[test]
    fn the_viewer_offer_announces_transport_wide_cc_and_statistics_stop_with_the_branch() {
        crate::media::init().unwrap();
        let source = SourceSpec::test_camera(crate::config::TestPattern::Colors, "twcc", 320, 240);
        let plan = EncoderPlan {
            profile: "x264".into(),
            fragment: "x264enc tune=zerolatency speed-preset=ultrafast ! video/x-h264,profile=constrained-baseline"
                .into(),
            raw_input: Some("I420".into()),
            codec: Codec::H264,
            bitrate: None,
            size: None,
        };
        let pipeline = CameraPipeline::build(&source, &plan).unwrap();
        pipeline.play().unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let events: crate::media::EventSink = Arc::new(move |event| {
            let _ = tx.lock().unwrap().send(event);
        });
        let branch = ViewerBranch::attach(
            pipeline.tee(EncodingKey::MAIN, Tap::Rtp).unwrap(),
            1,
            &IceSettings::default(),
            events,
        )
        .unwrap();
        let next = |what: &str, wanted: fn(&ViewerEvent) -> bool| loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(event) if wanted(&event) => return event,
                Ok(_) => continue,
                Err(e) => panic!("no {what}: {e}"),
            }
        };
        let ViewerEvent::Offer(offer) = next("offer", |e| matches!(e, ViewerEvent::Offer(_))) else {
            unreachable!()
        };
        // Statistics flow from the start (nothing to report yet: no browser answered) ...
        next("statistics", |e| matches!(e, ViewerEvent::Stats(_)));
        branch.detach();
        // ... and stop with the branch: nothing more after the one that may have been in flight.
        std::thread::sleep(Duration::from_secs(3));
        let late = rx.try_iter().filter(|e| matches!(e, ViewerEvent::Stats(_))).count();
        assert!(late <= 1, "{late} statistics events after the branch was detached");
        pipeline.shut_down();
        assert!(
            offer.contains("a=extmap:1 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"),
            "{offer}"
        );
        assert!(offer.contains("transport-cc"), "{offer}");
    }
}

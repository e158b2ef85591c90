//! Keyframe requests of one shared encoder, coalesced. Every viewer's PLI or FIR becomes an upstream
//! force-key-unit event (webrtcbin's RTP session makes it) that passes the tee to the one encoder all viewers
//! share; unthrottled, one lossy viewer asking a few times a second would make every viewer receive a
//! keyframe (several times a P-frame's size) that often, which on a thin link is more loss for all.
//!
//! The gate lets at most one request through per `interval` and answers the rest itself. Nothing is
//! re-sent later: a browser still waiting for a keyframe asks again (Chromium and Firefox repeat their PLI),
//! and its next request after the interval passes. A trailing re-send was tried and made Chromium answer
//! every re-sent keyframe with a new PLI, a keyframe a second for ever on a clean link (issue 12 notes).
//! `Throttle` is that decision as plain data; `install` puts it on a pad as an upstream event probe.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

/// Janus's streaming plugin forwards at most one PLI a second to its source: a flood costs the other
/// viewers one keyframe a second at most, and a viewer that lost one waits about that long.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// At most one request per `interval`: the decision, without GStreamer.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last_forwarded: Option<Instant>,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_forwarded: None,
        }
    }

    /// Whether a request arriving at `now` goes to the encoder.
    pub fn forward(&mut self, now: Instant) -> bool {
        match self.last_forwarded {
            Some(last) if now.duration_since(last) < self.interval => false,
            _ => {
                self.last_forwarded = Some(now);
                true
            }
        }
    }
}

/// A gate put on a pad: the throttle it decides with, to restart its interval from outside.
#[derive(Clone)]
pub struct Gate(Arc<Mutex<Throttle>>);

impl Gate {
    /// A keyframe was asked for past the gate (a new viewer's): the interval starts again from now, so the
    /// PLIs that follow a join do not make a second keyframe right after it.
    pub fn restart(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).last_forwarded = Some(Instant::now());
    }
}

/// Puts a gate on `pad` (the payloader's src pad: every viewer's PLI/FIR passes there on its way to the
/// encoder). Other upstream events pass untouched.
pub fn install(pad: &gst::Pad, interval: Duration) -> Gate {
    let gate = Gate(Arc::new(Mutex::new(Throttle::new(interval))));
    let throttle = gate.0.clone();
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        if !info.event().is_some_and(|e| gst_video::ForceKeyUnitEvent::is(e)) {
            return gst::PadProbeReturn::Ok;
        }
        if throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forward(Instant::now())
        {
            gst::PadProbeReturn::Ok
        } else {
            tracing::trace!("keyframe request held back: one went to the encoder less than {interval:?} ago");
            // `Handled` (the probe consumed the event), not `Drop`: on GStreamer 1.22 with gstreamer-rs 0.23,
            // dropping an upstream event here unrefs it twice (a CRITICAL per request).
            gst::PadProbeReturn::Handled
        }
    });
    gate
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn one_request_per_interval_reaches_the_encoder() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Throttle::new(Duration::from_millis(1000));
        assert!(t.forward(ms(0)));
        assert!((1..100).all(|n| !t.forward(ms(n * 10))));
        // Counted from the last one forwarded, not from the last one held back.
        assert!(t.forward(ms(1000)));
        assert!(!t.forward(ms(1999)));
        assert!(t.forward(ms(3500)));
    }

    #[test]
    fn a_keyframe_asked_for_past_the_gate_restarts_its_interval() {
        let gate = Gate(Arc::new(Mutex::new(Throttle::new(Duration::from_secs(1)))));
        gate.restart();
        let mut throttle = gate.0.lock().unwrap();
        assert!(
            !throttle.forward(Instant::now()),
            "a PLI right after a join's keyframe is answered by it"
        );
        assert!(throttle.forward(Instant::now() + Duration::from_secs(1)));
    }

    /// A real encoder behind a real payloader: a burst of key-unit requests from downstream (as webrtcbin
    /// sends for PLIs) reaches x264enc as a few requests, and x264enc makes about that many keyframes.
    #[test]
    fn a_burst_of_requests_reaches_the_encoder_as_few() {
        gst::init().unwrap();
        let interval = Duration::from_millis(300);
        let pipeline = gst::parse::launch(
            "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 \
             ! x264enc name=enc tune=zerolatency speed-preset=ultrafast key-int-max=100000 \
             ! h264parse ! rtph264pay name=pay ! fakesink name=sink",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let by_name = |n| pipeline.by_name(n).unwrap();
        install(&by_name("pay").static_pad("src").unwrap(), interval);

        let requests = Arc::new(AtomicU32::new(0));
        let keyframes = Arc::new(AtomicU32::new(0));
        let enc_src = by_name("enc").static_pad("src").unwrap();
        let r = requests.clone();
        enc_src.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            if info.event().is_some_and(|e| gst_video::ForceKeyUnitEvent::is(e)) {
                r.fetch_add(1, Ordering::SeqCst);
            }
            gst::PadProbeReturn::Ok
        });
        let k = keyframes.clone();
        enc_src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if info
                .buffer()
                .is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT))
            {
                k.fetch_add(1, Ordering::SeqCst);
            }
            gst::PadProbeReturn::Ok
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while keyframes.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(keyframes.load(Ordering::SeqCst), 1, "the stream's first keyframe");

        const BURST: u32 = 100;
        let sink = by_name("sink").static_pad("sink").unwrap();
        let started = Instant::now();
        for _ in 0..BURST {
            let event = gst_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            sink.push_event(event);
            std::thread::sleep(Duration::from_millis(10));
        }
        let burst = started.elapsed();
        // The last keyframe asked for is out (generous for a loaded machine).
        std::thread::sleep(Duration::from_secs(2));
        let reached = requests.load(Ordering::SeqCst);
        let made = keyframes.load(Ordering::SeqCst) - 1;
        pipeline.set_state(gst::State::Null).unwrap();

        // One per interval the burst spanned, plus the first and the deferred last: far fewer than BURST,
        // and more than one (the requests inside the interval were deferred, not dropped).
        eprintln!("{BURST} requests over {burst:?}: {reached} reached x264enc, {made} keyframes made");
        let bound = (burst.as_millis() / interval.as_millis()) as u32 + 2;
        assert!(
            (2..=bound).contains(&reached),
            "{reached} of {BURST} requests reached the encoder over {burst:?} (bound {bound})"
        );
        assert!(
            (1..=reached).contains(&made),
            "{made} keyframes for {reached} requests reaching the encoder"
        );
    }
}

//! Keyframe requests of one shared encoder, coalesced. Every viewer's PLI or FIR becomes an upstream
//! force-key-unit event (webrtcbin's RTP session makes it) that passes the tee to the one encoder all viewers
//! share; unthrottled, one lossy viewer asking a few times a second would make every viewer receive a
//! keyframe (several times a P-frame's size) that often, which on a thin link is more loss for all.
//!
//! The gate lets at most one request through per `interval`. A request inside the interval is not dropped
//! but deferred: one request goes out when the interval ends, however many came in, so the viewer that
//! asked (a new one, or one that cannot recover) still gets its keyframe, at most `interval` late.
//! `Throttle` is that decision as plain data; `install` puts it on a pad as an upstream event probe.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

/// Janus's streaming plugin forwards at most one PLI a second to its source; a viewer that lost a
/// keyframe waits up to this long, and a flood costs the other viewers one keyframe a second at most.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// What to do with one keyframe request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through now.
    Forward,
    /// Hold it back, and send one request at this moment (call `Throttle::released` then).
    DeferUntil(Instant),
    /// One is already deferred; this one is covered by it.
    Coalesce,
}

/// At most one request per `interval`, none lost: the decision, without GStreamer.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last_forwarded: Option<Instant>,
    deferred: bool,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_forwarded: None,
            deferred: false,
        }
    }

    pub fn request(&mut self, now: Instant) -> Verdict {
        if self.deferred {
            return Verdict::Coalesce;
        }
        match self.last_forwarded {
            Some(last) if now.duration_since(last) < self.interval => {
                self.deferred = true;
                Verdict::DeferUntil(last + self.interval)
            }
            _ => {
                self.last_forwarded = Some(now);
                Verdict::Forward
            }
        }
    }

    /// The deferred request went out at `now`.
    pub fn released(&mut self, now: Instant) {
        self.deferred = false;
        self.last_forwarded = Some(now);
    }
}

struct Gate {
    throttle: Throttle,
    /// The event the gate itself sends when a deferral ends: it passes its own probe.
    releasing: Option<gst::Seqnum>,
}

/// Puts a gate on `pad` (the payloader's src pad: the daemon's own requests for a new viewer and every
/// viewer's PLI/FIR pass there on their way to the encoder). Other upstream events pass untouched.
pub fn install(pad: &gst::Pad, interval: Duration) {
    let gate = Arc::new(Mutex::new(Gate {
        throttle: Throttle::new(interval),
        releasing: None,
    }));
    let weak_pad = pad.downgrade();
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        let Some(event) = info.event() else {
            return gst::PadProbeReturn::Ok;
        };
        if !gst_video::ForceKeyUnitEvent::is(event) {
            return gst::PadProbeReturn::Ok;
        }
        // A held-back event is answered `Handled` (the probe consumed it), not `Drop`: on GStreamer 1.22 with
        // gstreamer-rs 0.23, dropping an upstream event here unrefs it twice (a CRITICAL per request).
        // Never call into GStreamer while holding the lock: the verdict first, then act on it.
        let verdict = {
            let mut gate = gate.lock().unwrap_or_else(|p| p.into_inner());
            if gate.releasing == Some(event.seqnum()) {
                gate.releasing = None;
                return gst::PadProbeReturn::Ok;
            }
            gate.throttle.request(Instant::now())
        };
        match verdict {
            Verdict::Forward => gst::PadProbeReturn::Ok,
            Verdict::Coalesce => {
                tracing::trace!("keyframe request coalesced");
                gst::PadProbeReturn::Handled
            }
            Verdict::DeferUntil(at) => {
                tracing::debug!(
                    "keyframe request deferred ({} ms)",
                    at.saturating_duration_since(Instant::now()).as_millis()
                );
                release_at(at, gate.clone(), weak_pad.clone());
                gst::PadProbeReturn::Handled
            }
        }
    });
}

/// Sends the deferred request at `at`, from a short-lived thread (at most one per interval exists): the
/// probe runs on a streaming thread that must not wait, and the daemon runs no GLib main loop for a timeout.
fn release_at(at: Instant, gate: Arc<Mutex<Gate>>, pad: gst::glib::WeakRef<gst::Pad>) {
    let spawned = std::thread::Builder::new().name("keyframe-gate".into()).spawn(move || {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        {
            let mut gate = gate.lock().unwrap_or_else(|p| p.into_inner());
            gate.releasing = Some(event.seqnum());
            gate.throttle.released(Instant::now());
        }
        // The pad is gone when the pipeline was torn down meanwhile; then nobody needs the keyframe.
        if let Some(pad) = pad.upgrade() {
            pad.send_event(event);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("no thread for a deferred keyframe request: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn first_request_passes_then_one_per_interval_is_deferred_and_the_rest_coalesce() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Throttle::new(Duration::from_millis(1000));
        assert_eq!(t.request(ms(0)), Verdict::Forward);
        assert_eq!(t.request(ms(10)), Verdict::DeferUntil(ms(1000)));
        for n in 20..30 {
            assert_eq!(t.request(ms(n * 10)), Verdict::Coalesce);
        }
        t.released(ms(1000));
        // Inside the next interval: deferred again, counted from the release.
        assert_eq!(t.request(ms(1500)), Verdict::DeferUntil(ms(2000)));
        t.released(ms(2000));
        // Quiet for longer than an interval: straight through.
        assert_eq!(t.request(ms(3500)), Verdict::Forward);
    }

    /// A real encoder behind a real payloader: a burst of key-unit requests from downstream (as webrtcbin
    /// sends for PLIs) reaches x264enc as a few requests, the last one after the burst (none is lost), and
    /// x264enc makes about that many keyframes.
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
        // Every deferral has ended (a loaded machine may run the release thread late: generous).
        std::thread::sleep(interval * 2 + Duration::from_secs(2));
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

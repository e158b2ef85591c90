//! Branches: whatever hangs off a camera's encoding without stopping it. A branch is a bin with one
//! sink pad, attached to one of an encoding's tees (`Tap`): the WebRTC viewer on the RTP tee, and
//! later a recorder on the encoded tee or a WHIP push on the RTP tee. Attaching and detaching work
//! on a playing pipeline; detaching reports when the branch is really gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use gst::prelude::*;
use tokio::sync::oneshot;

use super::MediaError;

/// Where on an encoding a branch takes its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tap {
    /// The encoded elementary stream, before the payloader (recording, snapshots of encoded frames).
    Encoded,
    /// RTP packets from the shared payloader (WebRTC viewers, pushes to a media server).
    Rtp,
}

/// The bin's name tells its branch apart on the bus (`events::classify`).
pub fn bin_name(branch: u64) -> String {
    format!("branch-{branch}")
}

/// The branch number of a bin named by `bin_name`.
pub fn branch_of(name: &str) -> Option<u64> {
    name.strip_prefix("branch-")?.parse().ok()
}

/// Makes `target` the branch bin's sink, behind a pad that never passes a flow error upstream: a
/// branch that breaks (a DTLS alert, a closed socket) must not stop the tee, and with it the encoder and
/// every other branch. Its failure reaches the camera on the bus instead.
pub fn firewalled_sink(bin: &gst::Bin, target: &gst::Pad) -> Result<(), MediaError> {
    let pad = gst::GhostPad::builder_with_target(target)
        .map_err(|e| MediaError::Build(format!("branch sink: {e}")))?
        .name("sink")
        .chain_function(|pad, parent, buffer| {
            let _ = gst::ProxyPad::chain_default(pad, parent, buffer);
            Ok(gst::FlowSuccess::Ok)
        })
        .chain_list_function(|pad, parent, list| {
            let _ = gst::ProxyPad::chain_list_default(pad, parent, list);
            Ok(gst::FlowSuccess::Ok)
        })
        .build();
    bin.add_pad(&pad)
        .map_err(|e| MediaError::Build(format!("branch sink: {e}")))
}

/// A branch linked to a tee.
pub struct Attached {
    bin: gst::Bin,
    tee: gst::Element,
    tee_pad: gst::Pad,
}

/// Resolves once a detached branch is unlinked, in NULL and out of its bin.
pub type Detaching = oneshot::Receiver<()>;

impl Attached {
    /// Adds `bin` next to `tee` (same parent: pads only link within one bin), starts it and links it
    /// to a new request pad of the tee. On failure nothing is left behind.
    pub fn link(tee: &gst::Element, bin: gst::Bin) -> Result<Self, MediaError> {
        let parent = tee
            .parent()
            .and_then(|p| p.downcast::<gst::Bin>().ok())
            .ok_or_else(|| MediaError::Build("tee is not in a bin".into()))?;
        parent
            .add(&bin)
            .map_err(|e| MediaError::Build(format!("adding branch: {e}")))?;
        let fail = |what: &str| {
            let _ = bin.set_state(gst::State::Null);
            let _ = parent.remove(&bin);
            MediaError::Build(what.to_string())
        };
        let sink = bin.static_pad("sink").ok_or_else(|| fail("branch has no sink pad"))?;
        bin.sync_state_with_parent().map_err(|_| fail("starting the branch"))?;
        let tee_pad = tee
            .request_pad_simple("src_%u")
            .ok_or_else(|| fail("no pad on the tee"))?;
        if tee_pad.link(&sink).is_err() {
            tee.release_request_pad(&tee_pad);
            return Err(fail("linking the branch to the tee"));
        }
        Ok(Self {
            bin,
            tee: tee.clone(),
            tee_pad,
        })
    }

    /// Unlinks the branch once no buffer is in flight on its pad (an IDLE probe), releases the pad,
    /// then sets the bin to NULL and removes it off the streaming thread. Its threads and sockets go
    /// with it. The receiver resolves when that is done, or fails if the pipeline went first (then the
    /// branch stopped with it).
    pub fn detach(self) -> Detaching {
        let (done_tx, done_rx) = oneshot::channel();
        let done_tx = Mutex::new(Some(done_tx));
        let Self { bin, tee, tee_pad } = self;
        let fired = AtomicBool::new(false);
        tee_pad.add_probe(gst::PadProbeType::IDLE, move |pad, _| {
            // IDLE probes can fire more than once before the removal takes effect.
            if fired.swap(true, Ordering::SeqCst) {
                return gst::PadProbeReturn::Remove;
            }
            if let Some(peer) = pad.peer() {
                let _ = pad.unlink(&peer);
            }
            tee.release_request_pad(pad);
            let bin = bin.clone();
            let done = done_tx.lock().ok().and_then(|mut d| d.take());
            // Changing state from a streaming thread can deadlock; call_async runs it on a GStreamer
            // helper thread instead.
            tee.call_async(move |_| {
                let _ = bin.set_state(gst::State::Null);
                if let Some(parent) = bin.parent().and_then(|p| p.downcast::<gst::Bin>().ok()) {
                    let _ = parent.remove(&bin);
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            });
            gst::PadProbeReturn::Remove
        });
        done_rx
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::Duration;

    fn counting_branch(name: &str) -> gst::Bin {
        let bin = gst::Bin::with_name(name);
        let queue = gst::ElementFactory::make("queue").build().unwrap();
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .build()
            .unwrap();
        bin.add_many([&queue, &sink]).unwrap();
        queue.link(&sink).unwrap();
        firewalled_sink(&bin, &queue.static_pad("sink").unwrap()).unwrap();
        bin
    }

    #[test]
    fn branch_numbers_round_trip_through_bin_names() {
        assert_eq!(branch_of(&bin_name(42)), Some(42));
        assert_eq!(branch_of("fanout"), None);
        assert_eq!(branch_of("branch-x"), None);
    }

    #[tokio::test]
    async fn a_branch_attaches_to_a_playing_tee_and_detaching_completes() {
        gst::init().unwrap();
        let pipeline = gst::parse::launch("videotestsrc is-live=true ! tee name=t allow-not-linked=true")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let tee = pipeline.by_name("t").unwrap();
        let attached = Attached::link(&tee, counting_branch(&bin_name(1))).unwrap();
        assert!(pipeline.by_name("branch-1").is_some());
        tokio::time::timeout(Duration::from_secs(20), attached.detach())
            .await
            .unwrap()
            .unwrap();
        assert!(pipeline.by_name("branch-1").is_none(), "removed from the pipeline");
        assert_eq!(tee.src_pads().len(), 0, "the tee's pad is released");
        pipeline.set_state(gst::State::Null).unwrap();
    }

    /// Links a branch named `name` to the pipeline's tee `t`, whose element errors after `after` buffers.
    pub(in crate::media) fn link_failing_branch(pipeline: &gst::Pipeline, name: &str, after: i32) {
        let broken = gst::Bin::with_name(name);
        let failing = gst::ElementFactory::make("identity")
            .property("error-after", after)
            .build()
            .unwrap();
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .build()
            .unwrap();
        broken.add_many([&failing, &sink]).unwrap();
        failing.link(&sink).unwrap();
        firewalled_sink(&broken, &failing.static_pad("sink").unwrap()).unwrap();
        pipeline.add(&broken).unwrap();
        let tee = pipeline.by_name("t").unwrap();
        tee.request_pad_simple("src_%u")
            .unwrap()
            .link(&broken.static_pad("sink").unwrap())
            .unwrap();
    }

    #[test]
    fn a_broken_branch_does_not_stop_the_tee() {
        gst::init().unwrap();
        let pipeline =
            gst::parse::launch("videotestsrc num-buffers=60 ! tee name=t ! queue ! fakesink name=healthy sync=false")
                .unwrap()
                .downcast::<gst::Pipeline>()
                .unwrap();
        // A branch whose element errors after 5 buffers (as a webrtcbin does on a DTLS alert).
        link_failing_branch(&pipeline, &bin_name(7), 5);
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let mut errors_from = Vec::new();
        let eos = loop {
            let message = bus
                .timed_pop(gst::ClockTime::from_seconds(30))
                .expect("EOS or an error within 30 s");
            match message.view() {
                gst::MessageView::Eos(_) => break true,
                gst::MessageView::Error(_) => errors_from.push(message.src().unwrap().path_string().to_string()),
                _ => {}
            }
        };
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(eos, "the healthy branch got every buffer to the end");
        assert!(
            !errors_from.is_empty() && errors_from.iter().all(|p| p.contains("branch-7")),
            "{errors_from:?}"
        );
    }
}

//! Taking a branch off a running tee without stopping the rest: shared by viewer branches and by
//! extra encodings (VP8 for browsers without H.264).

use std::sync::atomic::{AtomicBool, Ordering};

use gst::prelude::*;

/// Links `sink` to a new request pad of `tee`. On failure the pad is released again.
pub fn link(tee: &gst::Element, sink: &gst::Pad) -> Option<gst::Pad> {
    let tee_pad = tee.request_pad_simple("src_%u")?;
    if tee_pad.link(sink).is_ok() {
        Some(tee_pad)
    } else {
        tee.release_request_pad(&tee_pad);
        None
    }
}

/// Unlinks the branch behind `tee_pad` once no buffer is in flight on it (an IDLE probe), releases the
/// pad, then sets `elements` to NULL and removes them from their bin off the streaming thread. Nothing
/// of the branch is left behind: its threads and sockets go with it.
pub fn detach(tee: &gst::Element, tee_pad: gst::Pad, elements: Vec<gst::Element>) {
    let tee = tee.clone();
    let done = AtomicBool::new(false);
    tee_pad.add_probe(gst::PadProbeType::IDLE, move |pad, _| {
        // IDLE probes can fire more than once before the removal takes effect.
        if done.swap(true, Ordering::SeqCst) {
            return gst::PadProbeReturn::Remove;
        }
        if let Some(peer) = pad.peer() {
            let _ = pad.unlink(&peer);
        }
        tee.release_request_pad(pad);
        let elements = elements.clone();
        // Changing state from a streaming thread can deadlock; call_async runs it on a GStreamer
        // helper thread instead.
        tee.call_async(move |_| {
            for element in &elements {
                let _ = element.set_state(gst::State::Null);
                if let Some(bin) = element.parent().and_then(|p| p.downcast::<gst::Bin>().ok()) {
                    let _ = bin.remove(element);
                }
            }
        });
        gst::PadProbeReturn::Remove
    });
}

//! The JPEG snapshot branch: a bin on a camera's raw tee (decoded pictures, before any encoder) that
//! encodes at most `MAX_FPS` pictures a second to JPEG and keeps only the latest, for
//! `GET /api/cameras/{id}/snapshot`. It exists only while someone asks (the camera's lifecycle
//! attaches and detaches it), so a camera nobody takes snapshots of pays nothing for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gst::prelude::*;
use tokio::sync::watch;

use super::branch::{self, Attached, Detaching};
use super::stage::{self, Stage};
use super::MediaError;

/// Pictures a second the branch encodes at most: a still for a dashboard or a card needs no more,
/// and at 640x480 one JPEG costs about as much as a frame of the H.264 encode.
pub const MAX_FPS: u32 = 2;
/// jpegenc's quality (0-100): about 40 KiB for 640x480, sharp enough for a still.
const QUALITY: u32 = 85;

/// The bin's name: `events::classify` reports its failures apart from the encoder's.
pub const BIN_NAME: &str = "snapshot";

/// One encoded picture.
pub type Jpeg = Arc<Vec<u8>>;

/// Where a camera's latest JPEG is kept; `None` while no snapshot branch is delivering.
pub type SnapshotSlot = Arc<watch::Sender<Option<Jpeg>>>;

/// The chain from the raw tee to the JPEGs: a leaky queue so a slow JPEG encode drops pictures instead
/// of holding up the tee (and the camera's encoders); the rate cut before the encode, so only the kept
/// pictures are converted and encoded.
fn stages() -> Vec<Stage> {
    vec![
        Stage::element("queue")
            .prop("max-size-buffers", 1)
            .prop("max-size-bytes", 0)
            .prop("max-size-time", 0)
            .prop("leaky", "downstream"),
        Stage::element("videorate")
            .prop("drop-only", true)
            .prop("max-rate", MAX_FPS),
        Stage::element("videoconvert"),
        Stage::element("jpegenc").prop("quality", QUALITY),
        Stage::element("appsink")
            .named("jpeg")
            .prop("sync", false)
            .prop("max-buffers", 1)
            .prop("drop", true),
    ]
}

/// A snapshot branch on a raw tee, writing each JPEG into its camera's slot.
pub struct SnapshotBranch {
    attached: Attached,
    slot: SnapshotSlot,
    /// Cleared (under the slot's lock) when the branch goes, so a picture still in flight cannot
    /// land in the slot after it was emptied.
    live: Arc<AtomicBool>,
}

impl SnapshotBranch {
    pub fn attach(raw_tee: &gst::Element, slot: SnapshotSlot) -> Result<Self, MediaError> {
        let bin = gst::Bin::with_name(BIN_NAME);
        let elements = stage::build_chain(&bin, &stages())?;
        let input = elements[0]
            .static_pad("sink")
            .ok_or_else(|| MediaError::Build("snapshot queue has no sink pad".into()))?;
        branch::firewalled_sink(&bin, &input)?;
        let sink = bin
            .by_name("jpeg")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| MediaError::Build("snapshot appsink missing".into()))?;
        let live = Arc::new(AtomicBool::new(true));
        let (to, alive) = (slot.clone(), live.clone());
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let jpeg = sample
                        .buffer()
                        .and_then(|b| b.map_readable().ok())
                        .map(|m| Arc::new(m.as_slice().to_vec()));
                    if let Some(jpeg) = jpeg {
                        to.send_if_modified(|latest| {
                            let keep = alive.load(Ordering::SeqCst);
                            if keep {
                                *latest = Some(jpeg);
                            }
                            keep
                        });
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let attached = Attached::link(raw_tee, bin)?;
        Ok(Self { attached, slot, live })
    }

    /// Empties the slot and takes the branch off its tee.
    pub fn detach(self) -> Detaching {
        self.forget();
        self.attached.detach()
    }

    /// Empties the slot; the branch itself goes with its pipeline (which is being stopped).
    pub fn forget(&self) {
        self.slot.send_modify(|latest| {
            self.live.store(false, Ordering::SeqCst);
            *latest = None;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn jpegs_of_the_raw_pictures_arrive_and_stop_with_the_branch() {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(
            "videotestsrc is-live=true ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
             ! tee name=raw allow-not-linked=true",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let slot: SnapshotSlot = Arc::new(watch::Sender::new(None));
        let mut latest = slot.subscribe();
        let branch = SnapshotBranch::attach(&pipeline.by_name("raw").unwrap(), slot.clone()).unwrap();
        let jpeg = tokio::time::timeout(Duration::from_secs(20), latest.wait_for(|j| j.is_some()))
            .await
            .expect("a JPEG within 20 s")
            .unwrap()
            .clone()
            .unwrap();
        assert_eq!(&jpeg[..3], [0xff, 0xd8, 0xff], "starts like a JPEG (SOI marker)");
        assert_eq!(&jpeg[jpeg.len() - 2..], [0xff, 0xd9], "ends like one (EOI marker)");
        tokio::time::timeout(Duration::from_secs(20), branch.detach())
            .await
            .unwrap()
            .unwrap();
        assert!(slot.borrow().is_none(), "the slot is emptied");
        assert!(pipeline.by_name(BIN_NAME).is_none(), "the branch is gone");
        // Nothing lands after the detach, though the source keeps running.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(slot.borrow().is_none());
        pipeline.set_state(gst::State::Null).unwrap();
    }

    #[test]
    fn a_failure_inside_the_snapshot_bin_is_not_the_encoders() {
        gst::init().unwrap();
        let pipeline =
            gst::parse::launch("videotestsrc name=src num-buffers=60 ! tee name=t ! queue ! fakesink sync=false")
                .unwrap()
                .downcast::<gst::Pipeline>()
                .unwrap();
        // As a broken jpegenc would: an element of the snapshot bin errors after a few pictures.
        branch::tests::link_failing_branch(&pipeline, BIN_NAME, 3);
        pipeline.set_state(gst::State::Playing).unwrap();
        let message = pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(gst::ClockTime::from_seconds(20), &[gst::MessageType::Error])
            .expect("the identity errors");
        pipeline.set_state(gst::State::Null).unwrap();
        let event = super::super::events::classify(&pipeline.by_name("src").unwrap(), &message);
        assert!(
            matches!(event, Some(super::super::events::PipelineEvent::SnapshotFailed { .. })),
            "{event:?}"
        );
    }
}

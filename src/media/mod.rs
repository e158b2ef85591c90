//! All GStreamer lives here: camera pipelines, viewer branches, trial encodes. Nothing outside this
//! module names an element; the rest of the daemon speaks in cameras, encoder plans and viewer events.

mod bitrate;
mod branch;
pub mod camera_pipeline;
mod congestion;
mod events;
mod keyframe_gate;
mod luma_probe;
mod machine;
mod moving_ball;
pub mod offer;
pub mod snapshot;
mod source;
mod stage;
pub mod timecode;
mod trial;
pub mod viewer;
mod viewer_stats;

pub use branch::{Detaching, Tap};
pub use camera_pipeline::{CameraPipeline, EncoderPlan, EncodingKey, Tier};
pub use events::{FailureOrigin, PipelineEvent};
pub use machine::GstMachine;
pub use offer::ClientOffer;
pub use snapshot::{Jpeg, SnapshotBranch, SnapshotSlot};
pub use source::{Origin, SourceSpec};
pub use viewer::{EventSink, IceSettings, ViewerBranch, ViewerEvent};
pub use viewer_stats::ViewerStats;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("GStreamer init failed: {0}")]
    Init(String),
    #[error("building pipeline: {0}")]
    Build(String),
    #[error("pipeline state change: {0}")]
    State(String),
    #[error("{0}")]
    Sdp(String),
    /// The client's offer has nothing the camera can send (see `offer::ClientOffer::payload_for`).
    #[error("{0}")]
    Codec(String),
    #[error("answer to an earlier offer; ignored")]
    StaleAnswer,
    #[error("bitrate change: {0}")]
    Bitrate(#[from] bitrate::BitrateError),
}

/// Initialises GStreamer once and checks the elements every camera needs, so a missing plugin
/// package is reported at start with its name instead of as a failed camera later.
/// Call it before any thread starts: it sets an environment variable.
pub fn init() -> Result<(), MediaError> {
    // v4l2src in GStreamer 1.22 "orphans" its buffer pool when it stops; when the device was unplugged
    // mid-stream the orphaned pool is never freed and keeps the node open, so the driver can never go
    // (rmmod refused; a replugged camera's old node stays busy). Draining instead frees it, and the
    // cost (waiting for in-flight buffers at stop) does not matter: a camera's pipeline is only ever
    // stopped whole. Shown by the VM test's unbind-while-streaming check.
    if std::env::var_os("GST_V4L2_FORCE_DRAIN").is_none() {
        std::env::set_var("GST_V4L2_FORCE_DRAIN", "1");
    }
    gst::init().map_err(|e| MediaError::Init(e.to_string()))?;
    // rtpgccbwe, the per-viewer bandwidth estimator, is compiled in (see congestion.rs).
    gstrsrtp::plugin_register_static().map_err(|e| MediaError::Init(format!("registering rtpgccbwe: {e}")))?;
    let required = [
        ("webrtcbin", "gstreamer1.0-plugins-bad"),
        ("nicesrc", "gstreamer1.0-nice"),
        ("rtph264pay", "gstreamer1.0-plugins-good"),
        ("videoconvert", "gstreamer1.0-plugins-base"),
        ("tee", "libgstreamer1.0-0"),
        ("rtphdrexttwcc", "gstreamer1.0-plugins-good"),
    ];
    let missing: Vec<String> = required
        .iter()
        .filter(|(element, _)| gst::ElementFactory::find(element).is_none())
        .map(|(element, package)| format!("{element} ({package})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MediaError::Init(format!(
            "missing GStreamer elements: {}",
            missing.join(", ")
        )))
    }
}

/// Does now what the first viewer would otherwise wait for: loading the plugins a viewer branch pulls
/// in (libsrtp initialises NSS when its plugin loads) and generating the process's DTLS certificate,
/// which the first DTLS element creates. Together they added ~300 ms to the first viewer's offer.
/// Only the daemon wants this; `probe` and `profiles` never stream.
pub fn prepare_viewer_path() {
    for plugin in ["webrtc", "nice", "dtls", "srtp", "rtpmanager"] {
        if let Err(e) = gst::Plugin::load_by_name(plugin) {
            tracing::debug!(plugin, error = %e, "plugin not preloaded");
        }
    }
    let _ = gst::ElementFactory::make("dtlssrtpdec").build();
}

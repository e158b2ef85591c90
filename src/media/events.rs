//! What a camera pipeline's bus means for the camera: a failure of its source, of its encoding, or of
//! one branch. Deciding the origin here keeps `camera/` free of GStreamer messages, and is what keeps a
//! viewer's broken session (a DTLS alert, ICE giving up inside webrtcbin) from being read as an encoder
//! failure that would cut every viewer off and move the camera to its next encoder.

use gst::prelude::*;

use super::{branch, snapshot};

/// Where a failure came from, which decides what the camera does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOrigin {
    /// The device (unplugged, busy, gone silent): wait for it to come back.
    Source,
    /// Anything between the source and the branches, the encoder above all: try the next profile.
    Encoder,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PipelineEvent {
    Failed {
        origin: FailureOrigin,
        reason: String,
    },
    /// One branch broke; the rest of the pipeline is unaffected (see `branch::firewalled_sink`).
    BranchFailed {
        branch: u64,
        reason: String,
    },
    /// The snapshot branch broke (its sink is firewalled too): only snapshots are affected.
    SnapshotFailed {
        reason: String,
    },
}

/// Reads one bus message of a pipeline whose source element is `source`. None for messages that
/// concern nobody (state changes, QoS, ...); warnings are logged here.
pub fn classify(source: &gst::Element, message: &gst::Message) -> Option<PipelineEvent> {
    let error = match message.view() {
        gst::MessageView::Error(e) => e.error().to_string(),
        gst::MessageView::Eos(_) => {
            return Some(PipelineEvent::Failed {
                origin: FailureOrigin::Source,
                reason: "source ended".into(),
            })
        }
        gst::MessageView::Warning(w) => {
            tracing::warn!(warning = %w.error(), from = ?message.src().map(|s| s.path_string()), "pipeline warning");
            return None;
        }
        _ => return None,
    };
    let from = message.src();
    let mut object = from.cloned();
    while let Some(o) = object {
        if let Some(branch) = branch::branch_of(&o.name()) {
            // The viewer is told which part of its session broke, not the daemon's pipeline layout.
            let element = from.map(|s| s.name().to_string()).unwrap_or_default();
            return Some(PipelineEvent::BranchFailed {
                branch,
                reason: format!("{element}: {error}"),
            });
        }
        if o.name() == snapshot::BIN_NAME {
            return Some(PipelineEvent::SnapshotFailed {
                reason: with_path(from, &error),
            });
        }
        // v4l2src's buffer pool and other helpers post under the source, so ancestry counts.
        if &o == source.upcast_ref::<gst::Object>() {
            let reason = with_path(from, &error);
            return Some(PipelineEvent::Failed {
                origin: FailureOrigin::Source,
                reason,
            });
        }
        object = o.parent();
    }
    Some(PipelineEvent::Failed {
        origin: FailureOrigin::Encoder,
        reason: with_path(from, &error),
    })
}

/// The posting element's path first: the log and the card say where in the pipeline it broke.
fn with_path(from: Option<&gst::Object>, error: &str) -> String {
    format!(
        "{}: {error}",
        from.map(|s| s.path_string().to_string()).unwrap_or_default()
    )
}

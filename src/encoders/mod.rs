//! H.264/VP8 encoder profiles: YAML schema, loading, availability on this machine, choice and fallback.
//!
//! A profile (profiles/*.yaml) is plain data: what it needs, what it takes, a gst-launch fragment with
//! placeholders. The catalog loads the built-in profiles and the installed/override directories,
//! proves each one usable here once (requirements, then a trial encode) and answers "which encoders
//! may this camera use, best first". Everything it asks of the machine goes through [`Machine`]
//! (GStreamer's side is `media::GstMachine`), so nothing here touches GStreamer. The camera pipeline
//! itself is built by `media` from `Profile::render`.

mod builtin;
mod catalog;
mod host;
pub(crate) mod machine;
mod profile;
mod template;

pub use catalog::{Catalog, ProfileReport};
pub use machine::{Control, Machine, TrialError};
pub use profile::{BitrateControl, Profile};

use serde::{Deserialize, Serialize};

/// The codec a profile produces; the payloader and the SDP follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    H264,
    /// For browsers without H.264 (Firefox ESR on Debian without the Cisco plugin download).
    Vp8,
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::H264 => "h264",
            Self::Vp8 => "vp8",
        })
    }
}

/// What one camera's encoder is asked for; fills the fragment's placeholders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeSettings {
    pub bitrate_kbps: u32,
    pub fps: u32,
    /// Frames between keyframes.
    pub gop: u32,
    pub width: u32,
    pub height: u32,
}

impl Default for EncodeSettings {
    /// The original dual-camera system: 640x480@30 at about 1 Mbit/s, a keyframe every 2 s.
    fn default() -> Self {
        Self {
            bitrate_kbps: 1000,
            fps: 30,
            gop: 60,
            width: 640,
            height: 480,
        }
    }
}

//! What the pages and the API are told about a camera: the camera's own types, which the signalling
//! protocol and the JSON API serialise as they are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Transport;

/// What a page (and GET /api/cameras) knows about one camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraInfo {
    pub id: String,
    pub name: String,
    pub state: CameraState,
    /// Why the camera is in its state (the failure, or why this encoder was chosen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// "v4l2" or "test".
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
    pub bitrate_kbps: u32,
    pub viewers: usize,
    /// The bitrate each running encoding ("h264", "h264-low", "vp8") was last told, in kbit/s.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encodings: BTreeMap<String, u32>,
    /// Its device is gone, so `DELETE /api/cameras/{id}` may forget it (the card's Forget button).
    #[serde(default)]
    pub forgettable: bool,
    /// The push to a media server, for a camera with `push:` in its config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushInfo>,
}

/// A camera's push (WHIP) as the card and `GET /api/cameras` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushInfo {
    pub state: PushState,
    /// Why the last session ended (kept after a reconnect, for the record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// While retrying: when the next session is tried, in Unix seconds (a deadline rather than a
    /// countdown, so the camera's info does not change every second while it waits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushState {
    /// The camera has no stream to push yet (offline, starting, idle).
    Waiting,
    /// A session is being negotiated (offer posted, ICE and DTLS under way).
    Connecting,
    Connected,
    /// The last session failed; the next is tried at `next_retry_at`.
    Retrying,
}

/// One viewer's link as the daemon sees it: shown on that viewer's card and in `GET /api/cameras`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewerLink {
    pub conn: u64,
    pub transport: Transport,
    /// "main" or "low".
    pub tier: String,
    /// The congestion controller's estimate of what its path carries.
    pub estimate_kbps: Option<u32>,
    /// What was sent to it over the last second.
    pub sent_kbps: Option<u32>,
    pub loss_percent: Option<f64>,
    pub rtt_ms: Option<u32>,
    /// The FEC redundancy it gets now (0: none; camera/fec.rs).
    pub fec_percent: u32,
}

/// What a camera has done, for `/metrics` and the API; its actor refreshes it on every tick and change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CameraStats {
    /// Frames out of the main encoder since the daemon started (across pipeline rebuilds).
    pub encoded_frames: u64,
    /// Their bytes.
    pub encoded_bytes: u64,
    /// Frames per second out of the main encoder over the last tick (0 while it is stopped).
    pub fps: f64,
    /// Bits per second out of the main encoder over the last tick.
    pub bitrate_bps: u64,
    /// Moves to the next encoder profile (one failed to start or failed while running).
    pub encoder_fallbacks: u64,
    /// Times its source failed (could not start, errored, went silent).
    pub source_failures: u64,
    /// Viewers held, by what carries them.
    pub viewers: BTreeMap<Transport, usize>,
    /// Whether its snapshot branch is attached (someone asked for a JPEG lately).
    pub snapshot_active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    /// Pipeline being built or started.
    Starting,
    /// Encoding; viewers can join.
    Streaming,
    /// No viewers and the idle policy stopped the pipeline; a viewer starts it.
    Idle,
    /// The device is gone (unplugged); the card stays so its viewers see what happened.
    Offline,
    /// Every usable encoder failed, or the device cannot be opened.
    Failed,
}

impl CameraState {
    pub const ALL: [CameraState; 5] = [
        CameraState::Starting,
        CameraState::Streaming,
        CameraState::Idle,
        CameraState::Offline,
        CameraState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Streaming => "streaming",
            Self::Idle => "idle",
            Self::Offline => "offline",
            Self::Failed => "failed",
        }
    }
}

//! What the pages and the API are told about a camera: the camera's own types, which the signalling
//! protocol and the JSON API serialise as they are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
}

/// One viewer's link as the daemon sees it: shown on that viewer's card and in `GET /api/cameras`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewerLink {
    pub conn: u64,
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

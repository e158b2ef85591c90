//! What the pages and the API are told about a camera: the camera's own types, which the signalling
//! protocol and the JSON API serialise as they are.

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

//! The JSON API: camera states, the encoder report and what the page needs for its peer connections.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::AppState;
use crate::camera::CameraInfo;

#[derive(Serialize)]
pub(super) struct CameraStatus {
    #[serde(flatten)]
    info: CameraInfo,
    encoded_frames: u64,
}

pub(super) async fn cameras(State(state): State<AppState>) -> Json<Vec<CameraStatus>> {
    let list = state
        .registry
        .infos()
        .into_iter()
        .map(|info| {
            let encoded_frames = state.registry.handle(&info.id).map(|h| h.encoded_frames()).unwrap_or(0);
            CameraStatus { info, encoded_frames }
        })
        .collect();
    Json(list)
}

/// What the page needs to build its RTCPeerConnection.
pub(super) async fn page_config(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ice_servers": *state.ice_servers }))
}

pub(super) async fn profiles(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json((*state.profiles).clone())
}

//! Everything a browser talks to: the websocket (`/ws`), a small JSON API (`/api/...`) and the
//! viewer page itself.

pub mod protocol;
mod static_files;
mod ws;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::config::IceServer;
use crate::registry::Registry;
pub use static_files::WebFiles;

#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub ice_servers: Arc<Vec<IceServer>>,
    /// The encoder profile report, as shown by `edgecam profiles`.
    pub profiles: Arc<serde_json::Value>,
    pub web: WebFiles,
    next_conn: Arc<AtomicU64>,
}

impl AppState {
    pub fn new(registry: Registry, ice_servers: Vec<IceServer>, profiles: serde_json::Value, web: WebFiles) -> Self {
        Self {
            registry,
            ice_servers: Arc::new(ice_servers),
            profiles: Arc::new(profiles),
            web,
            next_conn: Arc::default(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api/cameras", get(cameras))
        .route("/api/config", get(page_config))
        .route("/api/profiles", get(profiles))
        .route("/", get(static_files::index))
        // The original system's viewer URL keeps working.
        .route("/dual_camera_viewer.html", get(static_files::index))
        .route("/:file", get(static_files::file))
        .with_state(state)
}

#[derive(Serialize)]
struct CameraStatus {
    #[serde(flatten)]
    info: protocol::CameraInfo,
    encoded_frames: u64,
}

async fn cameras(State(state): State<AppState>) -> Json<Vec<CameraStatus>> {
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
async fn page_config(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ice_servers": *state.ice_servers }))
}

async fn profiles(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json((*state.profiles).clone())
}

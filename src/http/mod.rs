//! The HTTP surface: one router for everything a browser or a script talks to: the signalling
//! websocket (`/ws`), WHEP (`/whep/...`), the JSON API (`/api/...`) and the viewer page.

mod api;
mod static_files;
mod whep;
mod ws;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::camera::Registry;
use crate::config::IceServer;
pub use static_files::WebFiles;
#[cfg(test)]
pub(crate) use ws::test_viewer;

#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub ice_servers: Arc<Vec<IceServer>>,
    /// The encoder profile report, as shown by `edgecam profiles`.
    pub profiles: Arc<serde_json::Value>,
    pub web: WebFiles,
    /// Viewer connection ids, shared by websockets and WHEP sessions: a camera tells viewers apart by them.
    next_conn: Arc<AtomicU64>,
    whep: whep::Sessions,
}

impl AppState {
    pub fn new(registry: Registry, ice_servers: Vec<IceServer>, profiles: serde_json::Value, web: WebFiles) -> Self {
        Self {
            registry,
            ice_servers: Arc::new(ice_servers),
            profiles: Arc::new(profiles),
            web,
            next_conn: Arc::default(),
            whep: whep::Sessions::default(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api/cameras", get(api::cameras))
        .route("/api/config", get(api::page_config))
        .route("/api/profiles", get(api::profiles))
        .route("/", get(static_files::index))
        // The original system's viewer URL keeps working.
        .route("/dual_camera_viewer.html", get(static_files::index))
        .route("/:file", get(static_files::file))
        .merge(whep::router())
        .with_state(state)
}

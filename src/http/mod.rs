//! The HTTP surface: one router for everything a browser or a script talks to: the signalling
//! websocket (`/ws`), WHEP (`/whep/...`), the JSON API (`/api/...`) and the viewer page.
//!
//! Every request passes, in order: `guard` (Host, and Origin on `/ws`; security headers), then
//! `auth` (401 without valid credentials when `auth:` is configured), then its route. `server` is the
//! accept loop with the header read timeout.

mod api;
pub mod auth;
mod guard;
mod metrics;
pub mod server;
mod snapshot;
mod static_files;
pub mod tls;
mod turn;
mod whep;
mod ws;
mod ws_limits;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::routing::{delete, get};
use axum::Router;

use crate::camera::Registry;
use crate::config::{Config, IceServer};
pub use static_files::WebFiles;
#[cfg(test)]
pub(crate) use ws::test_viewer;

#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub ice_servers: Arc<Vec<IceServer>>,
    turn_secret: Option<Arc<str>>,
    turn_ttl: std::time::Duration,
    /// The encoder profile report, as shown by `edgecam profiles`.
    pub profiles: Arc<serde_json::Value>,
    pub web: WebFiles,
    access: auth::Access,
    guard: guard::Guard,
    sockets: ws_limits::Sockets,
    /// Viewer connection ids, shared by websockets and WHEP sessions: a camera tells viewers apart by them.
    next_conn: Arc<AtomicU64>,
    whep: whep::Sessions,
    snapshot_rates: snapshot::SnapshotRates,
}

impl AppState {
    pub fn new(registry: Registry, config: &Config, profiles: serde_json::Value, web: WebFiles) -> Self {
        Self {
            registry,
            ice_servers: Arc::new(config.ice.servers.clone()),
            turn_secret: config.ice.turn_secret.as_deref().map(Arc::from),
            turn_ttl: std::time::Duration::from_secs(config.ice.turn_credential_ttl.0.into()),
            profiles: Arc::new(profiles),
            web,
            access: auth::Access::new(config.auth.as_ref()),
            guard: guard::Guard::new(config.server_names.clone(), config.allowed_origins.clone()),
            sockets: ws_limits::Sockets::default(),
            next_conn: Arc::default(),
            whep: whep::Sessions::default(),
            snapshot_rates: snapshot::SnapshotRates::default(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api/cameras", get(api::cameras))
        .route("/api/cameras/:id/snapshot", get(snapshot::snapshot))
        .route("/api/cameras/:id", delete(api::forget_camera))
        .route("/api/config", get(api::page_config))
        .route("/api/profiles", get(api::profiles))
        .route("/api/ticket", get(api::ticket))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(static_files::index))
        // The original system's viewer URL keeps working.
        .route("/dual_camera_viewer.html", get(static_files::index))
        .route("/:file", get(static_files::file))
        .merge(whep::router())
        // Layers run outside-in in reverse order of adding: guard first, then auth.
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::check))
        .with_state(state)
}

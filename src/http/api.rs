//! The JSON API: camera states, the encoder report and what the page needs for its peer connections.
//! `/api/cameras` and `/api/profiles` need the `api` permission; the page's own two (`config`,
//! `ticket`) need only a login.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;

use super::auth::Principal;
use super::turn;
use super::AppState;
use crate::camera::{CameraInfo, ViewerLink};

#[derive(Serialize)]
pub(super) struct CameraStatus {
    #[serde(flatten)]
    info: CameraInfo,
    encoded_frames: u64,
    /// Each viewer's link: tier, estimate, sent bitrate, loss, RTT.
    links: Vec<ViewerLink>,
}

pub(super) fn forbidden(principal: &Principal) -> Response {
    (
        StatusCode::FORBIDDEN,
        format!("{} may not read the API (api: true in the config)\n", principal.name),
    )
        .into_response()
}

pub(super) async fn cameras(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    if !principal.api {
        return forbidden(&principal);
    }
    let list: Vec<CameraStatus> = state
        .registry
        .infos()
        .into_iter()
        .filter(|info| principal.watch.allows(&info.id))
        .map(|info| {
            let handle = state.registry.handle(&info.id);
            let encoded_frames = handle.as_ref().map(|h| h.encoded_frames()).unwrap_or(0);
            let links = handle.map(|h| h.links()).unwrap_or_default();
            CameraStatus {
                info,
                encoded_frames,
                links,
            }
        })
        .collect();
    Json(list).into_response()
}

/// What the page needs to build its RTCPeerConnection (TURN credentials included, so only after login).
pub(super) async fn page_config(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Json<serde_json::Value> {
    let servers = turn::for_page(
        &state.ice_servers,
        state.turn_secret.as_deref(),
        state.turn_ttl,
        &principal.name,
        std::time::SystemTime::now(),
    );
    Json(serde_json::json!({ "ice_servers": servers }))
}

pub(super) async fn profiles(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    if !principal.api {
        return forbidden(&principal);
    }
    Json((*state.profiles).clone()).into_response()
}

/// A one-use ticket for opening `/ws` as this user.
pub(super) async fn ticket(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    match state.access.issue_ticket(&principal) {
        Some(ticket) => Json(serde_json::json!({ "ticket": ticket })).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many unused tickets; try again shortly\n",
        )
            .into_response(),
    }
}

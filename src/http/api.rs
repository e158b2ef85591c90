//! The JSON API: camera states, the encoder report and what the page needs for its peer connections.
//! `/api/cameras` and `/api/profiles` need the `api` permission, and so does forgetting a camera
//! (`DELETE /api/cameras/{id}`, for cameras the user may watch); the page's own two (`config`,
//! `ticket`) need only a login.

use std::time::Duration;

use axum::extract::{Path, State};
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

/// How long a forget waits for the camera's actor: it answers between two commands.
const FORGET_WAIT: Duration = Duration::from_secs(5);

/// Forgets a camera whose device is gone: 204, or 409 while it is plugged in. A camera the user may
/// not watch is as unknown to them as one that does not exist (404).
pub(super) async fn forget_camera(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    if !principal.api {
        return forbidden(&principal);
    }
    let handle = state.registry.handle(&id).filter(|_| principal.watch.allows(&id));
    let Some(handle) = handle else {
        return (StatusCode::NOT_FOUND, "no such camera\n").into_response();
    };
    match tokio::time::timeout(FORGET_WAIT, handle.forget()).await {
        Ok(Ok(())) => {
            tracing::info!(camera = %id, user = %principal.name, "camera forgotten");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, format!("{e}\n")).into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the camera did not answer; try again\n",
        )
            .into_response(),
    }
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

//! `GET /api/cameras/{id}/snapshot`: a JPEG of the camera's latest picture, for Home Assistant's
//! generic camera and anything else that wants a still. The camera attaches its snapshot branch on the
//! first request and drops it after a quiet while (`camera::lifecycle::SNAPSHOT_IDLE`); requests are
//! limited per camera. Whoever may watch the camera may take snapshots of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tokio::sync::oneshot;

use super::auth::Principal;
use super::ws_limits::TokenBucket;
use super::AppState;
use crate::camera::{CameraError, Command};

/// Requests per camera at once, then per second. The branch makes at most `media::snapshot::MAX_FPS`
/// pictures a second, so faster polling only gets the same picture again; a few dashboards and cards
/// polling one camera stay well inside this.
pub const SNAPSHOT_BURST: u32 = 10;
pub const SNAPSHOT_PER_SECOND: u32 = 5;
/// How long a request waits for its picture: the camera may have to start first (idle policy `stop`,
/// a few hundred ms), then the branch's first JPEG (one frame).
const PICTURE_WAIT: Duration = Duration::from_secs(10);

/// One bucket per camera id. Only ids of cameras that exist get one, so the map stays as small as the
/// set of cameras this daemon has seen.
#[derive(Clone, Default)]
pub struct SnapshotRates(Arc<Mutex<HashMap<String, TokenBucket>>>);

impl SnapshotRates {
    fn allow(&self, camera: &str) -> bool {
        let mut rates = self.0.lock().unwrap_or_else(|e| e.into_inner());
        rates
            .entry(camera.to_string())
            .or_insert_with(|| TokenBucket::new(SNAPSHOT_BURST, SNAPSHOT_PER_SECOND))
            .allow()
    }
}

fn refuse(status: StatusCode, reason: String) -> Response {
    (status, format!("{reason}\n")).into_response()
}

fn camera_error(error: CameraError) -> Response {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    refuse(status, error.to_string())
}

pub(super) async fn snapshot(
    State(state): State<AppState>,
    Path(camera): Path<String>,
    Extension(principal): Extension<Principal>,
) -> Response {
    // Before the lookup: a user who may not watch a camera does not learn whether it exists.
    if !principal.watch.allows(&camera) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("{} may not watch camera {camera:?}", principal.name),
        );
    }
    let Some(handle) = state.registry.handle(&camera) else {
        return camera_error(CameraError::Unknown(camera));
    };
    if !state.snapshot_rates.allow(&camera) {
        let mut response = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!("at most {SNAPSHOT_PER_SECOND} snapshots a second per camera; slow down"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    }
    let (reply, answer) = oneshot::channel();
    if !handle.try_send(Command::Snapshot { reply }) {
        return camera_error(CameraError::Busy);
    }
    let mut latest = match tokio::time::timeout(PICTURE_WAIT, answer).await {
        Ok(Ok(Ok(latest))) => latest,
        Ok(Ok(Err(error))) => return camera_error(error),
        Ok(Err(_)) | Err(_) => return camera_error(CameraError::NotStreaming),
    };
    let jpeg = match tokio::time::timeout(PICTURE_WAIT, latest.wait_for(Option::is_some)).await {
        Ok(Ok(jpeg)) => jpeg.clone(),
        _ => None,
    };
    let Some(jpeg) = jpeg else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no picture from the camera within {} s", PICTURE_WAIT.as_secs()),
        );
    };
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            // Every request is a new picture.
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg.as_ref().clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_camera_has_its_own_budget() {
        let rates = SnapshotRates::default();
        assert!((0..SNAPSHOT_BURST).all(|_| rates.allow("a")));
        assert!(!rates.allow("a"), "a burst, then refused");
        assert!(rates.allow("b"), "another camera is not held back");
    }
}

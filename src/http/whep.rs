//! WHEP (draft-ietf-wish-whep): any WebRTC player pulls a camera with one HTTP request. `POST
//! /whep/{camera}` with the client's SDP offer -> `201 Created`, the answer (with the daemon's
//! candidates), `Location` of the session resource, `ETag`, and the ICE servers as `Link` headers;
//! `PATCH` on the resource trickles the client's candidates (`application/trickle-ice-sdpfrag`);
//! `DELETE` ends the session. A session is a viewer like any other: the same lifecycle, limits,
//! keyframes; only its sink differs (`WhepSink`: the answer or the first error fill the pending
//! response). The routes are one `router()`, so whatever guards the rest of the HTTP surface (auth,
//! Origin, Host) can wrap them too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::auth::Principal;
use super::{ws_limits, AppState};
use crate::camera::{CameraError, CameraHandle, Command, ConnId, ToViewer, Transport, ViewerPort, ViewerSink};
use crate::config::IceServer;
use crate::media::ClientOffer;
use crate::signalling::candidate;

/// An SDP offer is a few KiB (Chrome's with audio and video: ~6 KiB); mediamtx caps them at 128 KiB.
const MAX_OFFER_BYTES: usize = 64 * 1024;
/// How long a POST waits for its answer: the camera may have to start first (idle policy `stop`, a few
/// hundred ms), then ICE gathering (`media::viewer::ANSWER_GATHER_LIMIT`). A camera that cannot
/// answer in this long is not going to; the client gets 503 and may retry.
const ANSWER_WAIT: Duration = Duration::from_secs(20);
/// Sessions held at once, over all cameras. Each is a viewer and the lifecycle caps those per camera
/// (`MAX_VIEWERS`); this bounds the table even if cameras come and go under it.
const MAX_SESSIONS: usize = 256;

const SDP: &str = "application/sdp";
const TRICKLE: &str = "application/trickle-ice-sdpfrag";

/// What a client's browser may send and read across origins. Which origins are allowed at all is the
/// business of the layers around `router()`.
const ALLOW_METHODS: &str = "POST, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "Content-Type, If-Match, Authorization";
const EXPOSE_HEADERS: &str = "Location, ETag, Link, Accept-Patch";

/// Live WHEP sessions by resource id.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Session>>>);

#[derive(Clone)]
struct Session {
    camera: String,
    conn: ConnId,
    etag: String,
    port: ViewerPort,
    offer: Arc<ClientOffer>,
    /// Candidates trickled so far, against `ws_limits::MAX_CANDIDATES_PER_VIEWER` as on `/ws`.
    candidates: Arc<AtomicU32>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // Held only to copy a session in or out, never across an await.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, camera: &str, id: &str) -> Option<Session> {
        self.lock().get(id).filter(|s| s.camera == camera).cloned()
    }

    fn remove(&self, id: &str) -> Option<Session> {
        self.lock().remove(id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The WHEP routes, for `http::router` to merge (and to wrap in the same layers).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/whep/:camera", post(offer).options(preflight))
        .route(
            "/whep/:camera/:session",
            axum::routing::patch(trickle).delete(end).options(preflight),
        )
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
}

/// A WHEP viewer's way back: the answer or the first error fill the pending POST; once the answer is
/// out, an error (ICE failed, the camera's stream stopped) ends the session; later candidates have
/// nowhere to go (the answer carried those gathered).
struct WhepSink {
    pending: Mutex<Option<oneshot::Sender<Result<String, CameraError>>>>,
    sessions: Sessions,
    id: String,
}

impl ViewerSink for WhepSink {
    fn deliver(&self, message: ToViewer) {
        let pending = self.pending.lock().ok().and_then(|mut p| p.take());
        match (message, pending) {
            (ToViewer::Answer(sdp), Some(reply)) => {
                let _ = reply.send(Ok(sdp));
            }
            (ToViewer::Error(error), Some(reply)) => {
                let _ = reply.send(Err(error));
            }
            (ToViewer::Error(error), None) => {
                info!(session = %self.id, %error, "WHEP session ended by the camera");
                self.sessions.remove(&self.id);
            }
            (message, pending) => {
                if let Some(reply) = pending {
                    *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply);
                }
                debug!(session = %self.id, ?message, "nothing to carry this to a WHEP client");
            }
        }
    }
}

/// Sends `Leave` if the POST ends without an answer: the client went away, or the wait ran out.
struct LeaveUnlessAnswered {
    camera: CameraHandle,
    conn: ConnId,
    sessions: Sessions,
    id: String,
    answered: bool,
}

impl Drop for LeaveUnlessAnswered {
    fn drop(&mut self) {
        if !self.answered {
            self.sessions.remove(&self.id);
            if !self.camera.try_send(Command::Leave { conn: self.conn }) {
                debug!(
                    conn = self.conn,
                    "camera gone or busy; its negotiation timeout frees the branch"
                );
            }
        }
    }
}

async fn offer(
    State(state): State<AppState>,
    Path(camera): Path<String>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // As on the websocket: `watch` decides, before anything says whether the camera exists.
    if !principal.watch.allows(&camera) {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!("{} may not watch camera {camera:?}", principal.name),
        );
    }
    if !has_content_type(&headers, SDP) {
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, &format!("send the offer as {SDP}"));
    }
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return refuse(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text");
    };
    let offer = match ClientOffer::parse(&sdp) {
        Ok(offer) => Arc::new(offer),
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let Some(handle) = state.registry.handle(&camera) else {
        return camera_error(CameraError::Unknown(camera));
    };
    if state.whep.len() >= MAX_SESSIONS {
        let error = CameraError::TooMany {
            what: "WHEP sessions",
            limit: MAX_SESSIONS,
        };
        return camera_error(error);
    }

    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
    let id = random_token();
    let (reply, answer) = oneshot::channel();
    let sink = WhepSink {
        pending: Mutex::new(Some(reply)),
        sessions: state.whep.clone(),
        id: id.clone(),
    };
    let port = ViewerPort::new(conn, Transport::Whep, Arc::new(sink));
    let session = Session {
        camera: camera.clone(),
        conn,
        etag: random_token(),
        port: port.clone(),
        offer: offer.clone(),
        candidates: Arc::default(),
    };
    state.whep.lock().insert(id.clone(), session.clone());
    let mut guard = LeaveUnlessAnswered {
        camera: handle.clone(),
        conn,
        sessions: state.whep.clone(),
        id: id.clone(),
        answered: false,
    };
    let join = Command::Join {
        viewer: port,
        codecs: Some(offer.video_codecs()),
        offer: Some(sdp),
    };
    if !handle.try_send(join) {
        return camera_error(CameraError::Busy);
    }
    let answer = match tokio::time::timeout(ANSWER_WAIT, answer).await {
        Ok(Ok(Ok(answer))) => answer,
        Ok(Ok(Err(error))) => return camera_error(error),
        Ok(Err(_)) => return camera_error(CameraError::NotStreaming), // the camera went away
        Err(_) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the camera did not answer within {} s", ANSWER_WAIT.as_secs()),
            )
        }
    };
    guard.answered = true;
    info!(%camera, conn, session = %id, "WHEP session answered");

    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(location) = HeaderValue::from_str(&format!("/whep/{camera}/{id}")) {
        h.insert(header::LOCATION, location);
    }
    if let Ok(etag) = HeaderValue::from_str(&quoted(&session.etag)) {
        h.insert(header::ETAG, etag);
    }
    h.insert("accept-patch", HeaderValue::from_static(TRICKLE));
    for link in ice_links(&state.ice_servers) {
        if let Ok(value) = HeaderValue::from_str(&link) {
            h.append(header::LINK, value);
        }
    }
    with_cors(response)
}

async fn trickle(
    State(state): State<AppState>,
    Path((camera, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(session) = state.whep.get(&camera, &id) else {
        return refuse(StatusCode::NOT_FOUND, "no such WHEP session");
    };
    if !has_content_type(&headers, TRICKLE) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("send candidates as {TRICKLE}"),
        );
    }
    if let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if wanted.trim() != "*" && wanted.trim() != quoted(&session.etag) {
            return refuse(StatusCode::PRECONDITION_FAILED, "ETag does not match this session");
        }
    }
    let Ok(fragment) = std::str::from_utf8(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "the fragment is not UTF-8 text");
    };
    let candidates = match read_fragment(fragment, &session.offer) {
        Ok(candidates) => candidates,
        Err(why) => return refuse(StatusCode::UNPROCESSABLE_ENTITY, &why),
    };
    let count = u32::try_from(candidates.len()).unwrap_or(u32::MAX);
    if session
        .candidates
        .fetch_add(count, Ordering::Relaxed)
        .saturating_add(count)
        > ws_limits::MAX_CANDIDATES_PER_VIEWER
    {
        warn!(%camera, session = %id, "refused candidates over the limit");
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "too many candidates for this session (limit {})",
                ws_limits::MAX_CANDIDATES_PER_VIEWER
            ),
        );
    }
    let Some(handle) = state.registry.handle(&camera) else {
        state.whep.remove(&id);
        return refuse(StatusCode::NOT_FOUND, "the camera is gone");
    };
    for (mline, candidate) in candidates {
        let command = Command::Candidate {
            viewer: session.port.clone(),
            mline,
            candidate,
        };
        if !handle.send(command).await {
            return camera_error(CameraError::NotStreaming);
        }
    }
    with_cors(StatusCode::NO_CONTENT.into_response())
}

async fn end(State(state): State<AppState>, Path((camera, id)): Path<(String, String)>) -> Response {
    if state.whep.get(&camera, &id).is_none() {
        return refuse(StatusCode::NOT_FOUND, "no such WHEP session");
    }
    let Some(session) = state.whep.remove(&id) else {
        return refuse(StatusCode::NOT_FOUND, "no such WHEP session");
    };
    if let Some(handle) = state.registry.handle(&camera) {
        handle.send(Command::Leave { conn: session.conn }).await;
    }
    info!(%camera, session = %id, "WHEP session deleted");
    with_cors(StatusCode::OK.into_response())
}

async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert("accept-post", HeaderValue::from_static(SDP));
    h.insert("accept-patch", HeaderValue::from_static(TRICKLE));
    with_cors(response)
}

/// The `(m-line, candidate)` pairs of an RFC 8840 fragment, in order; `a=end-of-candidates` is an
/// empty candidate. A fragment with another ICE username is an ICE restart, which a session does not do.
fn read_fragment(fragment: &str, offer: &ClientOffer) -> Result<Vec<(u32, String)>, String> {
    let ufrag = offer.ice_ufrag();
    let mut mid: Option<&str> = None;
    let mut out = Vec::new();
    for line in fragment.lines().map(str::trim) {
        if let Some(theirs) = line.strip_prefix("a=ice-ufrag:") {
            if ufrag.as_deref().is_some_and(|ours| ours != theirs) {
                return Err("ICE restarts are not supported: start a new session".into());
            }
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m);
        } else if let Some(candidate) = line.strip_prefix("a=") {
            if candidate.starts_with("candidate:") {
                if candidate.len() > ws_limits::MAX_CANDIDATE_BYTES {
                    return Err(format!(
                        "candidate too long ({} bytes, limit {})",
                        candidate.len(),
                        ws_limits::MAX_CANDIDATE_BYTES
                    ));
                }
                candidate::check(candidate)?;
                out.push((offer.candidate_mline(mid), candidate.to_string()));
            } else if candidate == "end-of-candidates" {
                out.push((offer.candidate_mline(mid), String::new()));
            }
        }
    }
    Ok(out)
}

/// One `Link` header value per ICE server URL (draft-ietf-wish-whep, RFC 9725 4.4).
fn ice_links(servers: &[IceServer]) -> Vec<String> {
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    servers
        .iter()
        .flat_map(|server| {
            server.urls.iter().map(move |url| {
                let mut link = format!("<{url}>; rel=\"ice-server\"");
                if let (Some(user), Some(credential)) = (&server.username, &server.credential) {
                    link.push_str(&format!(
                        "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                        escape(user),
                        escape(credential)
                    ));
                }
                link
            })
        })
        .collect()
}

fn has_content_type(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

fn camera_error(error: CameraError) -> Response {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    refuse(status, &error.to_string())
}

/// An error status with its reason as text: WHEP clients show the body.
fn refuse(status: StatusCode, reason: &str) -> Response {
    with_cors((status, format!("{reason}\n")).into_response())
}

fn with_cors(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    response
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// 128 random bits as hex: a session's resource URL is all that lets a client end it, so it must not
/// be guessable.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
        let n = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn a_fragment_gives_its_candidates_and_refuses_an_ice_restart() {
        gst::init().unwrap();
        let offer = ClientOffer::parse(OFFER).unwrap();
        let fragment = "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
                        a=candidate:1 1 UDP 2015363327 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n";
        assert_eq!(
            read_fragment(fragment, &offer).unwrap(),
            [
                (0, "candidate:1 1 UDP 2015363327 127.0.0.1 50000 typ host".to_string()),
                (0, String::new())
            ]
        );
        assert!(read_fragment(&fragment.replace("ufrag:abcd", "ufrag:new"), &offer).is_err());
    }

    #[test]
    fn ice_servers_become_link_headers_with_their_credentials() {
        let servers = [
            IceServer {
                urls: vec!["stun:stun.example.org:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:turn.example.org".into()],
                username: Some("u".into()),
                credential: Some("p\"q".into()),
            },
        ];
        assert_eq!(
            ice_links(&servers),
            [
                "<stun:stun.example.org:3478>; rel=\"ice-server\"",
                "<turn:turn.example.org>; rel=\"ice-server\"; username=\"u\"; credential=\"p\\\"q\"; credential-type=\"password\""
            ]
        );
    }

    #[test]
    fn tokens_are_long_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn a_fragment_with_a_malformed_candidate_is_refused_whole() {
        gst::init().unwrap();
        let offer = ClientOffer::parse(OFFER).unwrap();
        let fragment = "a=mid:0\r\na=candidate:1 1 UDP 1 127.0.0.1 50000 typ host\r\na=candidate:garbage\r\n";
        assert!(read_fragment(fragment, &offer).unwrap_err().contains("candidate has"));
        let long = format!("a=candidate:1 1 UDP 1 127.0.0.1 5 typ host {}\r\n", "x".repeat(600));
        assert!(read_fragment(&long, &offer).unwrap_err().contains("too long"));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::tests::OFFER;
    use super::*;
    use crate::fuzz::mutated;

    const FRAGMENT: &str = "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
        a=candidate:1 1 UDP 2015363327 127.0.0.1 50000 typ host\r\n\
        a=candidate:2 1 UDP 1677729535 203.0.113.7 61034 typ srflx raddr 0.0.0.0 rport 0\r\na=end-of-candidates\r\n";

    proptest! {
        /// A trickled fragment is refused with a reason (the 422 body) or gives candidates that
        /// each passed the candidate check, for an m-line the offer has.
        #[test]
        fn fuzz_whep_fragment(fragment in mutated(FRAGMENT)) {
            gst::init().unwrap();
            let offer = ClientOffer::parse(OFFER).unwrap();
            match read_fragment(&fragment, &offer) {
                Ok(candidates) => {
                    for (mline, c) in candidates {
                        prop_assert_eq!(mline, 0);
                        prop_assert!(candidate::check(&c).is_ok() && c.len() <= ws_limits::MAX_CANDIDATE_BYTES);
                    }
                }
                Err(why) => prop_assert!(!why.is_empty()),
            }
        }
    }
}

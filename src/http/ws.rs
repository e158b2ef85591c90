//! One websocket per page, carrying every camera (the `camera` field tells them apart). Reading,
//! writing and camera-list updates run concurrently; a bad message gets an `error` reply and the
//! connection stays up.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use super::auth::{ticket_from_query, Principal};
use super::ws_limits::{self, Refused, Slot, TokenBucket};
use super::AppState;
use crate::camera::{CameraError, Command, ConnId, ToViewer, Transport, ViewerPort, ViewerSink};
use crate::signalling::protocol::{ClientMessage, ServerMessage, MAX_MESSAGE_BYTES};

/// Messages queued towards one browser. A page gets an offer and a few dozen candidates per camera;
/// a connection that lets 256 pile up is not reading and loses messages rather than holding up cameras.
const OUTBOX_QUEUE: usize = 256;

/// How long a socket closed for a protocol violation stays open so the close frame reaches the client.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// A websocket connection's way back to its browser.
#[derive(Clone, Debug)]
struct Outbox {
    conn: ConnId,
    tx: mpsc::Sender<ServerMessage>,
}

impl Outbox {
    /// Never waits: a connection whose queue is full is too slow to follow and loses the message
    /// (its viewer then times out) rather than stalling a camera for everyone.
    fn send(&self, message: ServerMessage) {
        if self.tx.try_send(message).is_err() {
            tracing::warn!(conn = self.conn, "websocket queue full or closed; message dropped");
        }
    }

    /// This connection as a viewer of `camera`: camera messages become signalling messages tagged with it.
    fn viewer_of(&self, camera: &str, transport: Transport, links: bool) -> ViewerPort {
        ViewerPort::new(
            self.conn,
            transport,
            Arc::new(CameraChannel {
                camera: camera.to_string(),
                outbox: self.clone(),
                links,
            }),
        )
    }
}

/// One camera's messages on one websocket.
struct CameraChannel {
    camera: String,
    outbox: Outbox,
    /// The page asked for `link` messages (`ready` with `"links": true`).
    links: bool,
}

impl ViewerSink for CameraChannel {
    fn deliver(&self, message: ToViewer) {
        let camera = self.camera.clone();
        self.outbox.send(match message {
            ToViewer::Offer(sdp) => ServerMessage::Offer { camera, sdp },
            ToViewer::Candidate { mline, candidate } => ServerMessage::Candidate {
                camera,
                candidate,
                sdp_mline_index: mline,
            },
            ToViewer::Error(error) => ServerMessage::error(Some(&camera), error.to_string()),
            ToViewer::Link(_) if !self.links => return,
            ToViewer::Link(link) => ServerMessage::Link { camera, link },
            // A websocket viewer never offers (`Join` without an offer), so it is never answered.
            ToViewer::Answer(_) => return debug!(camera, "answer for a websocket viewer dropped"),
        });
    }
}

/// A viewer port that writes to `tx` as the websocket does, for tests of the camera actor.
#[cfg(test)]
pub(crate) fn test_viewer(camera: &str, conn: ConnId, tx: mpsc::Sender<ServerMessage>) -> ViewerPort {
    Outbox { conn, tx }.viewer_of(camera, Transport::Page, false)
}

/// The page authenticates with a ticket from `/api/ticket` (browsers cannot set headers on a
/// websocket); scripts may send their `Authorization` header instead, which `auth::require` checked.
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    principal: Option<Extension<Principal>>,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let principal = match principal {
        Some(Extension(p)) => p,
        None => match ticket_from_query(uri.query()).and_then(|t| state.access.redeem_ticket(t)) {
            Some(p) => p,
            None => {
                warn!(client = %client.ip(), "websocket with an unknown or expired ticket");
                return (
                    StatusCode::UNAUTHORIZED,
                    "unknown or expired ticket; get one from /api/ticket\n",
                )
                    .into_response();
            }
        },
    };
    let slot = match state.sockets.admit(client.ip()) {
        Ok(slot) => slot,
        Err(Refused::Full) => {
            warn!(client = %client.ip(), limit = ws_limits::MAX_SOCKETS, "websocket refused: the daemon's socket limit is reached");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many websockets open (limit {})\n", ws_limits::MAX_SOCKETS),
            )
                .into_response();
        }
        Err(Refused::TooManyFromClient) => {
            warn!(client = %client.ip(), limit = ws_limits::MAX_SOCKETS_PER_CLIENT, "websocket refused: too many from this address");
            return (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many websockets from your address (limit {})\n",
                    ws_limits::MAX_SOCKETS_PER_CLIENT
                ),
            )
                .into_response();
        }
    };
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
    let span = info_span!("ws", conn, client = %client.ip(), user = %principal.name);
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(socket, state, conn, principal, slot).instrument(span))
}

/// What one socket has done, for its limits.
struct Socket {
    principal: Principal,
    joined: HashSet<String>,
    /// Candidates sent per camera since its last `ready` (only cameras that exist get here).
    candidates: HashMap<String, u32>,
    ready_rate: TokenBucket,
}

async fn serve(socket: WebSocket, state: AppState, conn: ConnId, principal: Principal, _slot: Slot) {
    info!("page connected");
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<ServerMessage>(OUTBOX_QUEUE);
    let outbox = Outbox { conn, tx };
    let mut cameras = state.registry.subscribe();
    cameras.mark_changed();
    let mut me = Socket {
        principal,
        joined: HashSet::new(),
        candidates: HashMap::new(),
        ready_rate: TokenBucket::new(ws_limits::READY_BURST, ws_limits::READY_PER_SECOND),
    };
    let mut ping = tokio::time::interval(ws_limits::PING_INTERVAL);
    let mut heard = Instant::now();

    let close = loop {
        tokio::select! {
            incoming = stream.next() => {
                heard = Instant::now();
                match incoming {
                Some(Ok(Message::Text(text))) => handle_text(&state, &outbox, &mut me, &text),
                Some(Ok(Message::Binary(_))) => outbox.send(ServerMessage::error(None, "binary messages are not supported; send JSON text")),
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Ok(_)) => {} // ping/pong are answered by the library
                Some(Err(e)) => {
                    // Oversized messages end up here: tell the page why before hanging up.
                    debug!(error = %e, "websocket read failed");
                    break Some(CloseFrame { code: close_code::SIZE, reason: format!("message too big or malformed frame (limit {MAX_MESSAGE_BYTES} bytes)").into() });
                }
            }},
            Ok(()) = cameras.changed() => {
                let list = cameras.borrow_and_update().iter().filter(|c| me.principal.watch.allows(&c.id)).cloned().collect();
                outbox.send(ServerMessage::Cameras { cameras: list });
            }
            _ = ping.tick() => {
                if heard.elapsed() > ws_limits::IDLE_TIMEOUT {
                    info!("closing a websocket silent for {:?}", ws_limits::IDLE_TIMEOUT);
                    break Some(CloseFrame { code: close_code::AWAY, reason: "idle: no message or pong".into() });
                }
                if sink.send(Message::Ping(Vec::new())).await.is_err() {
                    break None;
                }
            }
            Some(message) = rx.recv() => {
                if sink.send(Message::Text(message.to_json())).await.is_err() {
                    break None;
                }
            }
        }
    };
    if let Some(frame) = close {
        let _ = sink.send(Message::Close(Some(frame))).await;
        // The rest of an oversized message is still unread: closing the socket now makes the kernel
        // reset the connection and discard the close frame before the client reads it.
        tokio::time::sleep(CLOSE_GRACE).await;
    }
    for camera in me.joined {
        if let Some(handle) = state.registry.handle(&camera) {
            handle.send(Command::Leave { conn }).await;
        }
    }
    info!("page disconnected");
}

/// A client that uses none of the page's extensions speaks the original protocol. Only the port of a
/// `ready` is kept by the camera, so other messages' transport does not matter.
fn transport_of(message: &ClientMessage) -> Transport {
    match message {
        ClientMessage::Ready {
            codecs: None,
            links: false,
            ..
        } => Transport::Original,
        _ => Transport::Page,
    }
}

fn handle_text(state: &AppState, outbox: &Outbox, me: &mut Socket, text: &str) {
    let message = match ClientMessage::parse(text) {
        Ok(m) => m,
        Err(e) => {
            outbox.send(ServerMessage::Error {
                camera: e.camera,
                message: e.message,
            });
            return;
        }
    };
    let camera = message.camera().to_string();
    if !me.principal.watch.allows(&camera) {
        warn!(camera = %camera, "refused a camera this user may not watch");
        outbox.send(ServerMessage::error(
            Some(&camera),
            format!("user {} may not watch camera {camera:?}", me.principal.name),
        ));
        return;
    }
    let links = matches!(message, ClientMessage::Ready { links: true, .. });
    let viewer = outbox.viewer_of(&camera, transport_of(&message), links);
    let Some(handle) = state.registry.handle(&camera) else {
        viewer.send(ToViewer::Error(CameraError::Unknown(camera)));
        return;
    };
    let command = match message {
        ClientMessage::Ready { codecs, .. } => {
            if !me.ready_rate.allow() {
                warn!(camera = %camera, "ready rate limit hit");
                outbox.send(ServerMessage::error(
                    Some(&camera),
                    format!(
                        "too many ready messages (at most {} at once, then {} a second); slow down",
                        ws_limits::READY_BURST,
                        ws_limits::READY_PER_SECOND
                    ),
                ));
                return;
            }
            me.joined.insert(camera.clone());
            me.candidates.insert(camera.clone(), 0);
            Command::Join {
                viewer: viewer.clone(),
                codecs,
                offer: None,
            }
        }
        ClientMessage::Answer { sdp, .. } => Command::Answer {
            viewer: viewer.clone(),
            sdp,
        },
        ClientMessage::Candidate {
            candidate,
            sdp_mline_index,
            ..
        } => {
            let sent = me.candidates.entry(camera.clone()).or_insert(0);
            if let Some(problem) = ws_limits::candidate_problem(*sent, &candidate, sdp_mline_index) {
                warn!(camera = %camera, "refused a candidate: {problem}");
                outbox.send(ServerMessage::error(Some(&camera), problem));
                return;
            }
            *sent += 1;
            Command::Candidate {
                viewer: viewer.clone(),
                mline: sdp_mline_index,
                candidate,
            }
        }
        ClientMessage::Stop { .. } => {
            me.joined.remove(&camera);
            Command::Leave { conn: outbox.conn }
        }
    };
    if !handle.try_send(command) {
        viewer.send(ToViewer::Error(CameraError::Busy));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_protocols_ready_is_told_from_the_pages() {
        let transport = |text: &str| transport_of(&ClientMessage::parse(text).unwrap());
        assert_eq!(transport(r#"{"type":"ready","camera":"camera1"}"#), Transport::Original);
        assert_eq!(
            transport(r#"{"type":"ready","camera":"c","links":true,"codecs":["H264"]}"#),
            Transport::Page
        );
        assert_eq!(
            transport(r#"{"type":"ready","camera":"c","codecs":["VP8"]}"#),
            Transport::Page
        );
        assert_eq!(
            transport(r#"{"type":"ready","camera":"c","links":true}"#),
            Transport::Page
        );
    }
}

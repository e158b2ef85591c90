//! One websocket per page, carrying every camera (the `camera` field tells them apart). Reading,
//! writing and camera-list updates run concurrently; a bad message gets an `error` reply and the
//! connection stays up.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, Instrument};

use super::AppState;
use crate::camera::{CameraError, Command, ConnId, ToViewer, ViewerPort, ViewerSink};
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
    fn viewer_of(&self, camera: &str) -> ViewerPort {
        ViewerPort::new(
            self.conn,
            Arc::new(CameraChannel {
                camera: camera.to_string(),
                outbox: self.clone(),
            }),
        )
    }
}

/// One camera's messages on one websocket.
struct CameraChannel {
    camera: String,
    outbox: Outbox,
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
            // A websocket viewer never offers (`Join` without an offer), so it is never answered.
            ToViewer::Answer(_) => return debug!(camera, "answer for a websocket viewer dropped"),
        });
    }
}

/// A viewer port that writes to `tx` as the websocket does, for tests of the camera actor.
#[cfg(test)]
pub(crate) fn test_viewer(camera: &str, conn: ConnId, tx: mpsc::Sender<ServerMessage>) -> ViewerPort {
    Outbox { conn, tx }.viewer_of(camera)
}

pub async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(socket, state, conn).instrument(info_span!("ws", conn)))
}

async fn serve(socket: WebSocket, state: AppState, conn: ConnId) {
    info!("page connected");
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<ServerMessage>(OUTBOX_QUEUE);
    let outbox = Outbox { conn, tx };
    let mut cameras = state.registry.subscribe();
    cameras.mark_changed();
    let mut joined: HashSet<String> = HashSet::new();

    let close = loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => handle_text(&state, &outbox, &mut joined, &text),
                Some(Ok(Message::Binary(_))) => outbox.send(ServerMessage::error(None, "binary messages are not supported; send JSON text")),
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Ok(_)) => {} // ping/pong are answered by the library
                Some(Err(e)) => {
                    // Oversized messages end up here: tell the page why before hanging up.
                    debug!(error = %e, "websocket read failed");
                    break Some(CloseFrame { code: close_code::SIZE, reason: format!("message too big or malformed frame (limit {MAX_MESSAGE_BYTES} bytes)").into() });
                }
            },
            Ok(()) = cameras.changed() => {
                let list = cameras.borrow_and_update().clone();
                outbox.send(ServerMessage::Cameras { cameras: list });
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
        // The rest of the oversized message is still unread: closing the socket now makes the kernel
        // reset the connection and discard the close frame before the client reads it.
        tokio::time::sleep(CLOSE_GRACE).await;
    }
    for camera in joined {
        if let Some(handle) = state.registry.handle(&camera) {
            handle.send(Command::Leave { conn }).await;
        }
    }
    info!("page disconnected");
}

fn handle_text(state: &AppState, outbox: &Outbox, joined: &mut HashSet<String>, text: &str) {
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
    let viewer = outbox.viewer_of(&camera);
    let Some(handle) = state.registry.handle(&camera) else {
        viewer.send(ToViewer::Error(CameraError::Unknown(camera)));
        return;
    };
    let command = match message {
        ClientMessage::Ready { codecs, .. } => {
            joined.insert(camera.clone());
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
        } => Command::Candidate {
            viewer: viewer.clone(),
            mline: sdp_mline_index,
            candidate,
        },
        ClientMessage::Stop { .. } => {
            joined.remove(&camera);
            Command::Leave { conn: outbox.conn }
        }
    };
    if !handle.try_send(command) {
        viewer.send(ToViewer::Error(CameraError::Busy));
    }
}

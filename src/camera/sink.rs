//! How a camera talks back to one viewer, whatever carries it: the websocket maps these to `offer`,
//! `candidate` and `error` messages; WHEP (`http::whep`) maps the answer or the first error to its
//! pending response.

use std::fmt;
use std::sync::Arc;

use super::CameraError;

/// Identifies one viewer connection (a websocket, an HTTP session); it has at most one session per camera.
pub type ConnId = u64;

/// What a camera tells a viewer.
#[derive(Debug, Clone, PartialEq)]
pub enum ToViewer {
    Offer(String),
    /// The answer to the viewer's own offer, with the daemon's candidates in it.
    Answer(String),
    Candidate {
        mline: u32,
        candidate: String,
    },
    Error(CameraError),
    /// How its link looks from here (about once a second).
    Link(super::ViewerLink),
}

/// A transport's way back to its viewer. `deliver` must never wait: a viewer too slow to follow loses
/// the message (and then times out) rather than stalling the camera for everyone.
pub trait ViewerSink: Send + Sync {
    fn deliver(&self, message: ToViewer);
}

/// One viewer as a camera sees it: who (for routing) and where its messages go.
#[derive(Clone)]
pub struct ViewerPort {
    pub conn: ConnId,
    sink: Arc<dyn ViewerSink>,
}

impl ViewerPort {
    pub fn new(conn: ConnId, sink: Arc<dyn ViewerSink>) -> Self {
        Self { conn, sink }
    }

    pub fn send(&self, message: ToViewer) {
        self.sink.deliver(message);
    }
}

impl fmt::Debug for ViewerPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewerPort").field("conn", &self.conn).finish()
    }
}

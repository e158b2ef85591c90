//! How a camera talks back to one viewer, whatever carries it: the websocket maps these to `offer`,
//! `candidate` and `error` messages; WHEP (`http::whep`) maps the answer or the first error to its
//! pending response.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

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

/// What carries a viewer's signalling, for the metrics and the API (the camera treats them all alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// edgecam's own page: `ready` on `/ws` with the page's extensions (`codecs`, `links`).
    Page,
    /// A `POST /whep/{camera}` session.
    Whep,
    /// The original dual-camera protocol on `/ws`: `ready` with none of the extensions.
    Original,
    /// The camera's own WHIP push to a media server (`push:`).
    Whip,
}

impl Transport {
    pub const ALL: [Transport; 4] = [Transport::Page, Transport::Whep, Transport::Original, Transport::Whip];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Whep => "whep",
            Self::Original => "original",
            Self::Whip => "whip",
        }
    }
}

/// One viewer as a camera sees it: who (for routing), what carries it and where its messages go.
#[derive(Clone)]
pub struct ViewerPort {
    pub conn: ConnId,
    pub transport: Transport,
    sink: Arc<dyn ViewerSink>,
}

impl ViewerPort {
    pub fn new(conn: ConnId, transport: Transport, sink: Arc<dyn ViewerSink>) -> Self {
        Self { conn, transport, sink }
    }

    pub fn send(&self, message: ToViewer) {
        self.sink.deliver(message);
    }
}

impl fmt::Debug for ViewerPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewerPort")
            .field("conn", &self.conn)
            .field("transport", &self.transport)
            .finish()
    }
}

//! A camera is an actor: one tokio task owning its pipeline and its viewers, driven by `Command`s.
//! Plug, unplug, viewer join/leave and encoder failure all arrive as messages in one place, so there
//! are no locks around the pipeline and no GStreamer calls under anybody's lock.

mod actor;
mod viewers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::IdlePolicy;
use crate::media::{EncoderPlan, IceSettings, SourceSpec};
use crate::registry::Registry;
use crate::signalling::protocol::ServerMessage;

/// Identifies one websocket connection; a connection has at most one viewer per camera.
pub type ConnId = u64;

/// Commands queued per camera. Browsers send a handful of messages per session; 64 leaves room for
/// bursts of candidates while bounding what a flooding client can pile up.
const COMMAND_QUEUE: usize = 64;

/// A websocket connection's way back to its browser.
#[derive(Clone, Debug)]
pub struct Outbox {
    pub conn: ConnId,
    tx: mpsc::Sender<ServerMessage>,
}

impl Outbox {
    pub fn new(conn: ConnId, tx: mpsc::Sender<ServerMessage>) -> Self {
        Self { conn, tx }
    }

    /// Never waits: a connection whose queue is full is too slow to follow and loses the message
    /// (its viewer then times out) rather than stalling the camera for everyone.
    pub fn send(&self, message: ServerMessage) {
        if self.tx.try_send(message).is_err() {
            tracing::warn!(conn = self.conn, "websocket queue full or closed; message dropped");
        }
    }
}

#[derive(Debug)]
pub enum Command {
    Join {
        outbox: Outbox,
        codecs: Option<Vec<String>>,
    },
    Answer {
        outbox: Outbox,
        sdp: String,
    },
    Candidate {
        outbox: Outbox,
        mline: u32,
        candidate: String,
    },
    Leave {
        conn: ConnId,
    },
    /// The device is (back) on this machine: start streaming it.
    Online(Box<Setup>),
    /// The device is gone: tear the pipeline down, keep the card.
    Offline,
    Shutdown,
}

/// Everything a camera needs to build its pipeline.
#[derive(Debug, Clone)]
pub struct Setup {
    pub source: SourceSpec,
    /// Encoder plans, best first: a failure at run time moves to the next.
    pub encoders: Vec<EncoderPlan>,
    /// Why the first encoder was chosen, for the log and the API.
    pub encoder_reason: String,
    /// VP8, encoded only while a viewer whose browser lacks H.264 watches (Firefox without OpenH264).
    pub vp8: Option<EncoderPlan>,
    pub bitrate_kbps: u32,
}

/// Settings shared by every camera.
#[derive(Debug, Clone)]
pub struct Shared {
    pub ice: IceSettings,
    pub idle: IdlePolicy,
    /// How long a viewer may take to connect before it is dropped (config `negotiation_timeout`).
    pub negotiation_timeout: Duration,
    pub registry: Registry,
}

/// How the rest of the daemon reaches a camera. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CameraHandle {
    pub id: String,
    tx: mpsc::Sender<Command>,
    encoded_frames: Arc<AtomicU64>,
}

impl CameraHandle {
    /// Sends without waiting; false if the camera's queue is full or the camera is gone.
    pub fn try_send(&self, command: Command) -> bool {
        self.tx.try_send(command).is_ok()
    }

    pub async fn send(&self, command: Command) -> bool {
        self.tx.send(command).await.is_ok()
    }

    /// A handle with no actor behind it, for tests of code that routes commands.
    #[cfg(test)]
    pub(crate) fn detached(id: &str) -> (Self, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let handle = Self {
            id: id.to_string(),
            tx,
            encoded_frames: Arc::default(),
        };
        (handle, rx)
    }

    /// Frames encoded since the daemon started (across pipeline rebuilds).
    pub fn encoded_frames(&self) -> u64 {
        self.encoded_frames.load(Ordering::Relaxed)
    }
}

/// Static facts about a camera, shown on its card.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub name: String,
    /// "v4l2" or "test".
    pub kind: &'static str,
    pub device: Option<String>,
}

/// Starts a camera actor. It registers itself in the registry and streams once it gets `Online`.
pub fn spawn(identity: Identity, shared: Shared) -> (CameraHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let handle = CameraHandle {
        id: identity.id.clone(),
        tx,
        encoded_frames: Arc::default(),
    };
    let task = actor::run(identity, shared, handle.clone(), rx);
    (handle, task)
}

#[cfg(test)]
mod tests;

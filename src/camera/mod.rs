//! A camera is an actor: one tokio task owning its pipeline and its viewers' branches, driven by
//! `Command`s. What it does about each command or pipeline report is decided by a plain state type
//! (`lifecycle`); the actor only runs the effects. Plug, unplug, viewer join/leave and encoder
//! failure all arrive as messages in one place, so there are no locks around the pipeline and no
//! GStreamer calls under anybody's lock. Viewers are reached through a transport-neutral sink
//! (`sink`), so the camera knows nothing of websockets or HTTP.

mod actor;
mod bitrate;
mod error;
mod fec;
mod lifecycle;
mod probe;
mod registry;
mod sink;
mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

pub use bitrate::{Limits, LinkReport};
pub use error::CameraError;
pub use lifecycle::{Policy, PushStatus};
pub use registry::{Registry, Remembered, MAX_REMEMBERED_OFFLINE};
pub use sink::{ConnId, ToViewer, Transport, ViewerPort, ViewerSink};
pub use status::{CameraInfo, CameraState, CameraStats, PushInfo, PushState, ViewerLink};

use crate::media::{EncoderPlan, IceSettings, Jpeg, SourceSpec};

/// The answer to `Command::Snapshot`: where the camera's latest JPEG will be (`None` until the
/// branch's first picture), or why there is none.
pub type SnapshotReply = oneshot::Sender<Result<tokio::sync::watch::Receiver<Option<Jpeg>>, CameraError>>;

/// Commands queued per camera. Browsers send a handful of messages per session; 64 leaves room for
/// bursts of candidates while bounding what a flooding client can pile up.
const COMMAND_QUEUE: usize = 64;

#[derive(Debug)]
pub enum Command {
    Join {
        viewer: ViewerPort,
        codecs: Option<Vec<String>>,
        /// The viewer's own SDP offer (WHEP): its branch answers it (`ToViewer::Answer`) instead of
        /// offering. `codecs` are then the offer's video codecs.
        offer: Option<String>,
    },
    Answer {
        viewer: ViewerPort,
        sdp: String,
    },
    Candidate {
        viewer: ViewerPort,
        mline: u32,
        candidate: String,
    },
    Leave {
        conn: ConnId,
    },
    /// Someone wants a JPEG of the latest picture (`GET /api/cameras/{id}/snapshot`).
    Snapshot {
        reply: SnapshotReply,
    },
    /// The viewer's transport failed its current session (a WHIP server refused the offer or could not
    /// be reached).
    TransportFailed {
        conn: ConnId,
        reason: String,
    },
    /// The device is (back) on this machine: start streaming it.
    Online(Box<Setup>),
    /// The device is gone: tear the pipeline down, keep the card.
    Offline,
    /// Forget a camera whose device is gone: it leaves the registry and the actor ends. Refused
    /// (`CameraError::NotGone`) while the device is there.
    Forget {
        done: oneshot::Sender<Result<(), CameraError>>,
    },
    /// Stop every branch and the pipeline; `done` is answered once they are in NULL (or gave up).
    Shutdown {
        done: oneshot::Sender<()>,
    },
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
    /// The smaller H.264 encoding for viewers on weak links, started while one watches.
    pub low_tier: Option<EncoderPlan>,
    /// Bitrate bounds of the adaptive policy (`bitrate`); the ceiling is the configured bitrate.
    pub limits: Limits,
    /// Encodings it may run at once (`max_encodings`).
    pub max_encodings: usize,
    /// Where the camera pushes its stream (a WHIP client, `push::whip`): a viewer the camera keeps
    /// joined itself and reconnects with backoff.
    pub push: Option<ViewerPort>,
}

/// Settings shared by every camera.
#[derive(Debug, Clone)]
pub struct Shared {
    pub ice: IceSettings,
    pub policy: Policy,
    pub registry: Registry,
}

/// How the rest of the daemon reaches a camera. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CameraHandle {
    pub id: String,
    tx: mpsc::Sender<Command>,
    stats: Arc<Mutex<CameraStats>>,
    /// Each viewer's link, refreshed once a second; for the API (pages get their own over their transport).
    links: Arc<Mutex<BTreeMap<ConnId, ViewerLink>>>,
}

impl CameraHandle {
    /// Sends without waiting; false if the camera's queue is full or the camera is gone.
    pub fn try_send(&self, command: Command) -> bool {
        self.tx.try_send(command).is_ok()
    }

    pub async fn send(&self, command: Command) -> bool {
        self.tx.send(command).await.is_ok()
    }

    /// Asks the camera to stop and waits until its pipeline and branches are down. A camera already
    /// gone counts as stopped.
    pub async fn shut_down(&self) {
        let (done, stopped) = oneshot::channel();
        if self.send(Command::Shutdown { done }).await {
            let _ = stopped.await;
        }
    }

    /// Forgets the camera if its device is gone (see `Command::Forget`).
    pub async fn forget(&self) -> Result<(), CameraError> {
        let (done, reply) = oneshot::channel();
        if !self.send(Command::Forget { done }).await {
            return Err(CameraError::Unknown(self.id.clone()));
        }
        reply
            .await
            .unwrap_or_else(|_| Err(CameraError::Unknown(self.id.clone())))
    }

    /// The actor behind it has ended (forgotten): a device with this id needs a new one.
    pub fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether both handles reach the same actor (an id may get a new one after it was forgotten).
    pub fn same_actor(&self, other: &CameraHandle) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// A handle with no actor behind it, for tests of code that routes commands.
    #[cfg(test)]
    pub(crate) fn detached(id: &str) -> (Self, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let handle = Self {
            id: id.to_string(),
            tx,
            stats: Arc::default(),
            links: Arc::default(),
        };
        (handle, rx)
    }

    /// Every viewer's link, as last reported.
    pub fn links(&self) -> Vec<ViewerLink> {
        self.links
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Frames encoded since the daemon started (across pipeline rebuilds).
    pub fn encoded_frames(&self) -> u64 {
        self.stats().encoded_frames
    }

    /// What the camera has done so far, as of its last tick.
    pub fn stats(&self) -> CameraStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
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
pub fn spawn(identity: Identity, shared: Shared) -> CameraHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let handle = CameraHandle {
        id: identity.id.clone(),
        tx,
        stats: Arc::default(),
        links: Arc::default(),
    };
    actor::spawn(identity, shared, handle.clone(), rx);
    handle
}

#[cfg(test)]
mod tests;

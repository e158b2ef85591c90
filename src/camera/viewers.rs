//! The viewers of one camera: who they are, where their messages go, and whether they finished
//! negotiating in time. Plain bookkeeping; the GStreamer branch is held, not driven, here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::Span;

use super::{ConnId, Outbox};
use crate::encoders::Codec;
use crate::media::ViewerBranch;

pub struct Viewer {
    pub outbox: Outbox,
    pub codec: Codec,
    /// None while the camera has no pipeline (offline, or rebuilding): the viewer waits for it.
    pub branch: Option<ViewerBranch>,
    /// Which branch `branch` is (the actor numbers them); events of older ones are stale.
    pub branch_id: u64,
    pub span: Span,
    /// When the current negotiation started; None once connected.
    pub negotiating_since: Option<Instant>,
}

#[derive(Default)]
pub struct Viewers {
    by_conn: HashMap<ConnId, Viewer>,
}

impl Viewers {
    pub fn len(&self) -> usize {
        self.by_conn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }

    pub fn insert(&mut self, viewer: Viewer) -> Option<Viewer> {
        self.by_conn.insert(viewer.outbox.conn, viewer)
    }

    pub fn get(&self, conn: ConnId) -> Option<&Viewer> {
        self.by_conn.get(&conn)
    }

    pub fn get_mut(&mut self, conn: ConnId) -> Option<&mut Viewer> {
        self.by_conn.get_mut(&conn)
    }

    pub fn remove(&mut self, conn: ConnId) -> Option<Viewer> {
        self.by_conn.remove(&conn)
    }

    pub fn watching(&self, codec: Codec) -> usize {
        self.by_conn.values().filter(|v| v.codec == codec).count()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Viewer> {
        self.by_conn.values_mut()
    }

    /// Viewers still negotiating `timeout` after they started.
    pub fn overdue(&self, now: Instant, timeout: Duration) -> Vec<ConnId> {
        self.by_conn
            .iter()
            .filter(|(_, v)| {
                v.branch.is_some() && v.negotiating_since.is_some_and(|t| now.duration_since(t) >= timeout)
            })
            .map(|(conn, _)| *conn)
            .collect()
    }
}

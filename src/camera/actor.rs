//! The shell around a camera's `Lifecycle`: it turns commands, viewer events, pipeline events and a
//! once-a-second tick into lifecycle inputs, and runs the effects that come out (GStreamer work through
//! `media`, messages to viewers through their sinks). Outcomes of effects (a pipeline that started or
//! did not, a branch that could not be added) go back in as inputs, so every decision stays in the
//! lifecycle.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument, Span};

use super::lifecycle::{BranchId, Effect, Health, Input, Lifecycle};
use super::{
    CameraError, CameraHandle, CameraInfo, CameraState, Command, ConnId, Identity, PushInfo, Shared, SnapshotReply,
    ToViewer, ViewerPort,
};
use super::{LinkReport, ViewerLink};

use crate::media::{
    camera_pipeline, snapshot, CameraPipeline, ClientOffer, Detaching, EncodingKey, EventSink, FailureOrigin,
    MediaError, PipelineEvent, SnapshotBranch, SnapshotSlot, Tap, Tier, ViewerBranch, ViewerEvent, ViewerStats,
};

/// How long a stopping camera waits for branches already being detached to finish before it stops
/// the pipeline under them (which takes them down too).
const DETACH_WAIT: Duration = Duration::from_secs(2);

pub(super) fn spawn(identity: Identity, shared: Shared, handle: CameraHandle, commands: mpsc::Receiver<Command>) {
    // A root span: the actor outlives whatever span it was started from (a supervisor's plug event).
    let span = info_span!(parent: None, "camera", id = %identity.id);
    let (events_tx, events) = mpsc::unbounded_channel();
    let info = CameraInfo {
        id: identity.id.clone(),
        name: identity.name.clone(),
        state: CameraState::Offline,
        detail: None,
        kind: identity.kind.to_string(),
        device: identity.device.clone(),
        mode: None,
        encoder: None,
        bitrate_kbps: 0,
        viewers: 0,
        encodings: Default::default(),
        push: None,
        forgettable: false,
    };
    shared.registry.insert(handle.clone(), info.clone());
    let actor = Actor {
        lifecycle: Lifecycle::new(shared.policy),
        shared,
        handle,
        info,
        pipeline: None,
        pipeline_events: None,
        viewers: HashMap::new(),
        branches: HashMap::new(),
        detaching: Vec::new(),
        events_tx,
        frames_base: 0,
        bytes_base: 0,
        last_sample: None,
        sent: HashMap::new(),
        snapshot_slot: Arc::new(tokio::sync::watch::Sender::new(None)),
        snapshot: None,
        snapshot_reply: None,
        push_span: info_span!(parent: &span, "push"),
    };
    tokio::spawn(actor.run(commands, events).instrument(span));
}

/// `mpsc::UnboundedSender` for webrtcbin callbacks: they fire on GStreamer threads that must not block,
/// and each viewer produces a bounded handful of them (one offer, its ICE candidates, a state change).
/// Each event names its viewer and branch, so the lifecycle can drop late events of a replaced branch.
type ViewerEvents = mpsc::UnboundedSender<(ConnId, BranchId, ViewerEvent)>;

/// A viewer as the shell knows it: where its messages go and its log span.
struct Viewer {
    port: ViewerPort,
    span: Span,
}

struct Actor {
    lifecycle: Lifecycle,
    shared: Shared,
    handle: CameraHandle,
    info: CameraInfo,
    pipeline: Option<CameraPipeline>,
    pipeline_events: Option<BoxStream<'static, PipelineEvent>>,
    viewers: HashMap<ConnId, Viewer>,
    branches: HashMap<ConnId, (BranchId, ViewerBranch)>,
    /// Branches (and extra encodings) on their way out, for an orderly shutdown.
    detaching: Vec<Detaching>,
    events_tx: ViewerEvents,
    /// Frames (and their bytes) encoded by pipelines already torn down, so the totals survive rebuilds.
    frames_base: u64,
    bytes_base: u64,
    /// Totals of frames and bytes at the previous tick, for the rates over the last one.
    last_sample: Option<(u64, u64, Instant)>,
    /// Bytes sent to each viewer at its last report, for its sent bitrate.
    sent: HashMap<ConnId, (u64, Instant)>,
    /// Where the snapshot branch puts the latest JPEG; requests get a receiver of it.
    snapshot_slot: SnapshotSlot,
    snapshot: Option<SnapshotBranch>,
    /// The request being stepped through the lifecycle, answered once it has decided.
    snapshot_reply: Option<SnapshotReply>,
    /// The log span of the camera's push (a viewer with no `Command::Join` of its own).
    push_span: Span,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::UnboundedReceiver<(ConnId, BranchId, ViewerEvent)>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let done = loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => break None,
                    Some(Command::Shutdown { done }) => break Some(done),
                    Some(Command::Forget { done }) => match self.lifecycle.forgettable(&self.info.id) {
                        Ok(()) => {
                            // Closed first, so the supervisor sees this actor gone and a device that
                            // returns gets a new one; then the card goes (only if it is still ours).
                            commands.close();
                            self.shared.registry.forget(&self.handle);
                            for viewer in self.viewers.values() {
                                viewer.port.send(ToViewer::Error(CameraError::Unknown(self.info.id.clone())));
                            }
                            info!("forgotten: its device is gone and its card removed");
                            let _ = done.send(Ok(()));
                            break None;
                        }
                        Err(e) => {
                            let _ = done.send(Err(e));
                        }
                    },
                    Some(command) => self.on_command(command).await,
                },
                Some((conn, branch, event)) = events.recv() => self.on_viewer_event(conn, branch, event).await,
                Some(event) = next_event(&mut self.pipeline_events) => self.on_pipeline_event(event).await,
                _ = tick.tick() => self.on_tick().await,
            }
        };
        self.shut_down().await;
        info!("camera removed");
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Join { viewer, codecs, offer } => {
                let conn = viewer.conn;
                let span = info_span!("viewer", conn);
                self.viewers.insert(conn, Viewer { port: viewer, span });
                self.step(Input::Join { conn, codecs, offer }).await;
                if let Some(viewer) = self.viewers.get(&conn) {
                    let encoding = self.lifecycle.encoding_of(conn);
                    let codec = encoding.map(|e| e.codec.to_string()).unwrap_or_default();
                    viewer.span.in_scope(|| info!(%codec, "viewer joined"));
                }
            }
            Command::Answer { viewer, sdp } => match self.branch(viewer.conn, "answer") {
                Ok((branch_id, branch)) => {
                    let events = self.event_sink(viewer.conn, branch_id);
                    match branch.set_answer(&sdp, events) {
                        Ok(()) => {}
                        Err(MediaError::StaleAnswer) => {
                            self.in_viewer_span(viewer.conn, || info!("ignoring an answer to an earlier offer"))
                        }
                        Err(e) => {
                            self.in_viewer_span(viewer.conn, || warn!(error = %e, "answer rejected"));
                            let error = CameraError::BadSdp(e.to_string());
                            if self.push_port().is_some_and(|p| p.conn == viewer.conn) {
                                // A page can answer again; a media server's one answer failed its session,
                                // which the push retries rather than waiting out the negotiation timeout.
                                let conn = viewer.conn;
                                self.step(Input::ViewerFailed {
                                    conn,
                                    branch: branch_id,
                                    error,
                                })
                                .await;
                            } else {
                                viewer.send(ToViewer::Error(error));
                            }
                        }
                    }
                }
                Err(error) => viewer.send(ToViewer::Error(error)),
            },
            Command::Candidate {
                viewer,
                mline,
                candidate,
            } => match self.branch(viewer.conn, "candidate") {
                Ok((_, branch)) => branch.add_candidate(mline, &candidate),
                Err(error) => viewer.send(ToViewer::Error(error)),
            },
            Command::Leave { conn } => {
                self.in_viewer_span(conn, || info!("viewer left"));
                self.step(Input::Leave { conn }).await;
            }
            Command::Snapshot { reply } => {
                self.snapshot_reply = Some(reply);
                self.step(Input::SnapshotWanted).await;
                // Not refused: the JPEG comes once the branch (and maybe the pipeline) is up.
                if let Some(reply) = self.snapshot_reply.take() {
                    let _ = reply.send(Ok(self.snapshot_slot.subscribe()));
                }
            }
            Command::TransportFailed { conn, reason } => {
                // The transport reports on its latest session; a branch made since is the one it meant
                // or a newer one that the failure ends too (the push then retries).
                if let Ok(branch) = self.lifecycle.branch_of(conn, "failure") {
                    self.in_viewer_span(conn, || warn!(%reason, "viewer's transport failed"));
                    let error = CameraError::ViewerFailed(reason);
                    self.step(Input::ViewerFailed { conn, branch, error }).await;
                }
            }
            Command::Online(setup) => {
                info!(source = ?setup.source, "camera online");
                self.step(Input::Online(setup)).await;
            }
            Command::Offline => {
                info!("device gone; pipeline torn down, viewers wait for it to return");
                self.step(Input::Offline).await;
            }
            Command::Shutdown { .. } | Command::Forget { .. } => unreachable!("handled by the loop"),
        }
    }

    /// The viewer's current branch, for its answer or candidate.
    fn branch(&self, conn: ConnId, what: &'static str) -> Result<(BranchId, &ViewerBranch), CameraError> {
        let id = self.lifecycle.branch_of(conn, what)?;
        match self.branches.get(&conn) {
            Some((branch_id, branch)) if *branch_id == id => Ok((id, branch)),
            _ => Err(CameraError::NotStreaming),
        }
    }

    async fn on_viewer_event(&mut self, conn: ConnId, branch: BranchId, event: ViewerEvent) {
        let current = self.lifecycle.branch_of(conn, "event").is_ok_and(|b| b == branch);
        match event {
            ViewerEvent::Offer(sdp) if current => self.to_viewer(conn, ToViewer::Offer(sdp), "offer sent"),
            ViewerEvent::Answer(sdp) if current => self.to_viewer(conn, ToViewer::Answer(sdp), "answer sent"),
            ViewerEvent::Candidate { mline, candidate } if current => {
                self.to_viewer(conn, ToViewer::Candidate { mline, candidate }, "")
            }
            ViewerEvent::Connected => self.step(Input::ViewerConnected { conn, branch }).await,
            ViewerEvent::Stats(stats) if current => self.on_link(conn, branch, &stats).await,
            ViewerEvent::Failed(reason) => {
                if current {
                    self.in_viewer_span(conn, || warn!(%reason, "viewer failed"));
                }
                let error = CameraError::ViewerFailed(reason);
                self.step(Input::ViewerFailed { conn, branch, error }).await;
            }
            ViewerEvent::OfferRefused(reason) => {
                if current {
                    self.in_viewer_span(conn, || warn!(%reason, "viewer's offer refused"));
                }
                let error = CameraError::Unanswerable(reason);
                self.step(Input::ViewerFailed { conn, branch, error }).await;
            }
            _ => debug!(conn, branch, "late event of a replaced branch dropped"),
        }
    }

    /// A viewer's link numbers: to the bitrate policy, to the viewer itself and to the API.
    async fn on_link(&mut self, conn: ConnId, branch: BranchId, stats: &ViewerStats) {
        self.in_viewer_span(conn, || {
            debug!(
                estimate_bps = stats.estimate_bps,
                fraction_lost = stats.fraction_lost,
                round_trip_ms = stats.round_trip_ms,
                bytes_sent = stats.bytes_sent,
                "viewer stats"
            )
        });
        let now = Instant::now();
        let sent_kbps = match (stats.bytes_sent, self.sent.get(&conn)) {
            (Some(bytes), Some((before, at))) if bytes >= *before && now > *at => {
                Some(((bytes - before) as f64 * 8.0 / 1000.0 / now.duration_since(*at).as_secs_f64()) as u32)
            }
            _ => None,
        };
        if let Some(bytes) = stats.bytes_sent {
            self.sent.insert(conn, (bytes, now));
        }
        if self.push_port().is_some_and(|p| p.conn == conn) {
            let rtcp_packets = stats.rtcp_received;
            self.step(Input::PushHeard { branch, rtcp_packets }).await;
        }
        if let Some(estimate_bps) = stats.estimate_bps {
            let report = LinkReport {
                estimate_kbps: estimate_bps / 1000,
                loss: stats.fraction_lost.unwrap_or(0.0),
                rtt_ms: stats.round_trip_ms.unwrap_or(0.0) as u32,
            };
            self.step(Input::LinkReport { conn, branch, report }).await;
        }
        if !self.lifecycle.connected(conn) {
            return; // numbers of a session still negotiating say nothing about its link yet
        }
        let tier = match self.lifecycle.link_of(conn) {
            Some((Tier::Low, _)) => "low",
            Some((Tier::Main, _)) => "main",
            None => return,
        };
        let Some(transport) = self.viewers.get(&conn).map(|v| v.port.transport) else {
            return;
        };
        let link = ViewerLink {
            conn,
            transport,
            tier: tier.into(),
            estimate_kbps: stats.estimate_bps.map(|b| b / 1000),
            sent_kbps,
            loss_percent: stats.fraction_lost.map(|f| (f * 1000.0).round() / 10.0),
            rtt_ms: stats.round_trip_ms.map(|r| r as u32),
            fec_percent: self.lifecycle.fec_percent(conn),
        };
        if let Ok(mut links) = self.handle.links.lock() {
            links.insert(conn, link.clone());
        }
        self.to_viewer(conn, ToViewer::Link(link), "");
    }

    async fn on_pipeline_event(&mut self, event: PipelineEvent) {
        match event {
            PipelineEvent::Failed {
                origin: FailureOrigin::Encoder,
                reason,
            } => {
                let profile = self
                    .lifecycle
                    .current_plan()
                    .map(|p| p.profile.clone())
                    .unwrap_or_default();
                warn!(%profile, %reason, "encoder failed; falling back");
                self.step(Input::Failed {
                    origin: FailureOrigin::Encoder,
                    reason,
                })
                .await;
            }
            PipelineEvent::Failed {
                origin: FailureOrigin::Source,
                reason,
            } => {
                self.step(Input::Failed {
                    origin: FailureOrigin::Source,
                    reason,
                })
                .await;
            }
            PipelineEvent::SnapshotFailed { reason } => {
                warn!(%reason, "snapshot branch failed; the stream is unaffected");
                if let Some(snapshot) = self.snapshot.take() {
                    self.detaching.push(snapshot.detach());
                }
                self.step(Input::SnapshotFailed).await;
            }
            PipelineEvent::BranchFailed { branch, reason } => {
                let Some(conn) = self
                    .branches
                    .iter()
                    .find(|(_, (id, _))| *id == branch)
                    .map(|(conn, _)| *conn)
                else {
                    return; // a branch already detached
                };
                self.in_viewer_span(
                    conn,
                    || warn!(%reason, "viewer's branch failed; ending that viewer only"),
                );
                let error = CameraError::ViewerFailed(reason);
                self.step(Input::ViewerFailed { conn, branch, error }).await;
            }
        }
    }

    async fn on_tick(&mut self) {
        let health = self.pipeline.as_ref().map(|p| {
            let counters = p.counters();
            Health {
                encoded_frames: counters.encoded_frames(),
                source_silence: counters.source_silence(),
            }
        });
        self.sample_encoder();
        self.detaching
            .retain_mut(|d| matches!(d.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Empty)));
        self.step(Input::Tick { health }).await;
    }

    /// Totals and rates of the main encoder for the metrics: frames and bytes since the daemon started,
    /// fps and bit rate over the last tick.
    fn sample_encoder(&mut self) {
        let now = Instant::now();
        let counters = self.pipeline.as_ref().map(|p| p.counters().clone());
        let frames = self.frames_base + counters.as_ref().map_or(0, |c| c.encoded_frames());
        let bytes = self.bytes_base + counters.as_ref().map_or(0, |c| c.encoded_bytes());
        let (fps, bitrate_bps) = match (self.last_sample, &counters) {
            (Some((f0, b0, at)), Some(_)) if now > at && frames >= f0 && bytes >= b0 => {
                let secs = now.duration_since(at).as_secs_f64();
                ((frames - f0) as f64 / secs, ((bytes - b0) as f64 * 8.0 / secs) as u64)
            }
            _ => (0.0, 0),
        };
        self.last_sample = counters.is_some().then_some((frames, bytes, now));
        if let Ok(mut stats) = self.handle.stats.lock() {
            stats.encoded_frames = frames;
            stats.encoded_bytes = bytes;
            stats.fps = fps;
            stats.bitrate_bps = bitrate_bps;
        }
    }

    /// Feeds one input to the lifecycle and runs what comes out, including the inputs that running
    /// effects produce, then publishes the camera's state.
    async fn step(&mut self, input: Input) {
        let was = self.lifecycle.state();
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            for effect in self.lifecycle.handle(Instant::now(), input) {
                if let Some(next) = self.apply(effect).await {
                    inputs.push_back(next);
                }
            }
        }
        // Viewers the lifecycle no longer has (refused, dropped, left) are forgotten here too.
        let lifecycle = &self.lifecycle;
        self.viewers.retain(|conn, _| lifecycle.encoding_of(*conn).is_some());
        self.sent.retain(|conn, _| lifecycle.encoding_of(*conn).is_some());
        if let Ok(mut links) = self.handle.links.lock() {
            links.retain(|conn, _| lifecycle.encoding_of(*conn).is_some());
        }
        let now = self.lifecycle.state();
        if now != was {
            self.log_state(&now);
        }
        self.publish();
    }

    async fn apply(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::StartPipeline { encoder } => self.start_pipeline(encoder),
            Effect::StopPipeline => {
                self.stop_pipeline().await;
                None
            }
            Effect::Attach {
                conn,
                branch,
                encoding,
                offer,
            } => self.attach(conn, branch, encoding, offer.as_deref()),
            Effect::Detach { conn } => {
                if let Some((_, branch)) = self.branches.remove(&conn) {
                    self.detaching.push(branch.detach());
                }
                None
            }
            Effect::StopEncoding(encoding) => {
                info!(codec = %encoding.codec, tier = ?encoding.tier, "last viewer of this encoding left; stopping it");
                // The lifecycle detaches the encoding's last branch just before: that branch lives in
                // the encoding's bin and must be off it first, or taking the encoding down races its
                // detach and the branch is never freed (its webrtcbin's threads stayed; tests/whep.rs).
                let pending = std::mem::take(&mut self.detaching);
                if tokio::time::timeout(DETACH_WAIT, futures_util::future::join_all(pending))
                    .await
                    .is_err()
                {
                    warn!(
                        "branches still detaching after {} s; stopping the encoding under them",
                        DETACH_WAIT.as_secs()
                    );
                }
                if let Some(detaching) = self.pipeline.as_mut().and_then(|p| p.remove_encoding(encoding)) {
                    self.detaching.push(detaching);
                }
                None
            }
            Effect::RequestKeyframe(encoding) => {
                if let Some(pipeline) = &self.pipeline {
                    pipeline.request_keyframe(encoding);
                }
                None
            }
            Effect::SetFec { conn, percent } => {
                if let Some((_, branch)) = self.branches.get(&conn) {
                    info!(conn = %conn, percent, "viewer FEC follows its link's loss");
                    branch.set_fec(percent);
                }
                None
            }
            Effect::ChangeTier {
                conn,
                to,
                capacity_kbps,
                best_kbps,
            } => {
                let why = match to {
                    Tier::Low => "its link is far below the best viewer's",
                    Tier::Main => "its link carries most of the best viewer's again",
                };
                self.in_viewer_span(
                    conn,
                    || info!(tier = ?to, capacity_kbps, best_kbps, why, "viewer changes tier"),
                );
                None
            }
            Effect::SetEstimate { conn, estimate_kbps } => {
                if let Some((_, branch)) = self.branches.get(&conn) {
                    self.in_viewer_span(conn, || info!(estimate_kbps, "probing the viewer's link for room"));
                    branch.set_estimate(estimate_kbps);
                }
                None
            }
            Effect::SetBitrate { encoding, kbps } => {
                info!(%encoding, kbps, "encoder bitrate follows the viewers' links");
                if let Some(Err(e)) = self.pipeline.as_ref().map(|p| p.set_bitrate(encoding, kbps)) {
                    warn!(%encoding, error = %e, "could not change the bitrate");
                }
                None
            }
            Effect::Notify { conn, error } => {
                self.to_viewer(conn, ToViewer::Error(error), "");
                None
            }
            Effect::AttachSnapshot => {
                let made = self.pipeline.as_ref()?.attach_snapshot(self.snapshot_slot.clone());
                match made {
                    Ok(branch) => {
                        info!(max_fps = snapshot::MAX_FPS, "snapshot branch attached");
                        self.snapshot = Some(branch);
                        None
                    }
                    Err(e) => {
                        warn!(error = %e, "could not attach the snapshot branch");
                        Some(Input::SnapshotFailed)
                    }
                }
            }
            Effect::DetachSnapshot => {
                if let Some(branch) = self.snapshot.take() {
                    info!("no snapshot asked for lately; snapshot branch detached");
                    self.detaching.push(branch.detach());
                }
                None
            }
            Effect::RefuseSnapshot(error) => {
                if let Some(reply) = self.snapshot_reply.take() {
                    let _ = reply.send(Err(error));
                }
                None
            }
        }
    }

    fn start_pipeline(&mut self, encoder: usize) -> Option<Input> {
        let setup = self.lifecycle.setup()?;
        let plan = setup.encoders.get(encoder)?;
        debug!(chain = ?camera_pipeline::describe(&setup.source, plan).ok(), "building the pipeline");
        let started = CameraPipeline::build(&setup.source, plan)
            .map_err(|e| (FailureOrigin::Encoder, e.to_string()))
            .and_then(|p| p.play().map(|()| p));
        match started {
            Ok(pipeline) => {
                self.pipeline_events = Some(pipeline.events().boxed());
                self.pipeline = Some(pipeline);
                self.info.encoder = Some(plan.profile.clone());
                self.info.mode = Some(setup.source.to_string());
                self.info.bitrate_kbps = setup.limits.ceiling_kbps;
                Some(Input::Started)
            }
            Err((origin, reason)) => {
                if origin == FailureOrigin::Encoder {
                    warn!(encoder = %plan.profile, error = %reason, "pipeline did not start; trying the next encoder");
                }
                Some(Input::StartFailed { origin, reason })
            }
        }
    }

    async fn stop_pipeline(&mut self) {
        self.pipeline_events = None;
        // Branches go with the pipeline; their viewers stay, waiting for the next one.
        self.branches.clear();
        if let Some(snapshot) = self.snapshot.take() {
            snapshot.forget();
        }
        let Some(pipeline) = self.pipeline.take() else { return };
        self.frames_base += pipeline.counters().encoded_frames();
        self.bytes_base += pipeline.counters().encoded_bytes();
        self.last_sample = None;
        // Reaching NULL can block (a driver releasing its buffers): not on the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || pipeline.shut_down()).await;
    }

    fn attach(&mut self, conn: ConnId, branch: BranchId, encoding: EncodingKey, offer: Option<&str>) -> Option<Input> {
        let events = self.event_sink(conn, branch);
        let setup = self.lifecycle.setup()?;
        let extra = match encoding {
            EncodingKey::VP8 => setup.vp8.clone(),
            EncodingKey::LOW => setup.low_tier.clone(),
            _ => None,
        };
        let span = self.span_of(conn);
        let pipeline = self.pipeline.as_mut()?;
        let _enter = span.enter();
        if pipeline.tee(encoding, Tap::Rtp).is_none() {
            let Some(plan) = extra else {
                return Some(Input::AttachFailed {
                    conn,
                    branch,
                    error: CameraError::NoEncoding(encoding.codec),
                });
            };
            match encoding {
                EncodingKey::VP8 => info!(encoder = %plan.profile, "starting a VP8 encode for browsers without H.264"),
                _ => info!(encoder = %plan.profile, %encoding, "starting the low tier for viewers on weak links"),
            }
            if let Err(e) = pipeline.add_encoding(encoding, &plan) {
                return Some(Input::AttachFailed {
                    conn,
                    branch,
                    error: CameraError::Branch(e.to_string()),
                });
            }
        }
        let tee = pipeline.tee(encoding, Tap::Rtp)?;
        let made = match offer {
            None => ViewerBranch::attach(tee, branch, &self.shared.ice, events),
            Some(sdp) => ClientOffer::parse(sdp)
                .and_then(|offer| ViewerBranch::answer(tee, branch, &self.shared.ice, events, &offer, encoding.codec)),
        };
        match made {
            Ok(viewer_branch) => {
                self.branches.insert(conn, (branch, viewer_branch));
                None
            }
            Err(e) => {
                warn!(error = %e, "could not add viewer");
                let error = match e {
                    MediaError::Sdp(why) => CameraError::BadSdp(why),
                    MediaError::Codec(why) => CameraError::Unanswerable(why),
                    other => CameraError::Branch(other.to_string()),
                };
                Some(Input::AttachFailed { conn, branch, error })
            }
        }
    }

    /// Orderly stop: branches already on their way out finish (bounded), then the pipeline goes to NULL
    /// with every branch still on it.
    async fn shut_down(&mut self) {
        let detaching = std::mem::take(&mut self.detaching);
        let waited = tokio::time::timeout(DETACH_WAIT, futures_util::future::join_all(detaching)).await;
        if waited.is_err() {
            warn!(
                "branches still detaching after {} s; stopping the pipeline under them",
                DETACH_WAIT.as_secs()
            );
        }
        self.stop_pipeline().await;
    }

    fn to_viewer(&self, conn: ConnId, message: ToViewer, log: &str) {
        if let Some(viewer) = self.viewers.get(&conn) {
            if !log.is_empty() {
                viewer.span.in_scope(|| info!("{log}"));
            }
            viewer.port.send(message);
        } else if let Some(push) = self.push_port().filter(|p| p.conn == conn) {
            if !log.is_empty() {
                self.push_span.in_scope(|| info!("{log}"));
            }
            push.send(message);
        }
    }

    fn in_viewer_span(&self, conn: ConnId, f: impl FnOnce()) {
        self.span_of(conn).in_scope(f)
    }

    /// A viewer's log span (the push's for the push); none for a viewer already gone.
    fn span_of(&self, conn: ConnId) -> Span {
        match self.viewers.get(&conn) {
            Some(viewer) => viewer.span.clone(),
            None if self.push_port().is_some_and(|p| p.conn == conn) => self.push_span.clone(),
            None => Span::none(),
        }
    }

    /// The camera's push, a viewer that joins by itself (no `Command::Join`, so not in `viewers`).
    fn push_port(&self) -> Option<&ViewerPort> {
        self.lifecycle.setup().and_then(|s| s.push.as_ref())
    }

    fn event_sink(&self, conn: ConnId, branch: BranchId) -> EventSink {
        let tx = self.events_tx.clone();
        Arc::new(move |event| {
            let _ = tx.send((conn, branch, event));
        })
    }

    fn log_state(&self, (state, detail): &(CameraState, Option<String>)) {
        let detail = detail.as_deref().unwrap_or("");
        match state {
            CameraState::Streaming => {
                info!(encoder = ?self.info.encoder, reason = detail, "pipeline playing")
            }
            CameraState::Offline if self.lifecycle.setup().is_some() => {
                warn!(reason = detail, "source failed; waiting for the device")
            }
            CameraState::Failed => warn!(reason = detail, "camera failed"),
            CameraState::Idle => info!("no viewers; stopped (idle policy: stop)"),
            _ => debug!(?state, detail, "camera state"),
        }
    }

    fn publish(&mut self) {
        let (state, detail) = self.lifecycle.state();
        self.info.state = state;
        self.info.detail = detail;
        self.info.viewers = self.lifecycle.viewers();
        self.info.forgettable = self.lifecycle.forgettable(&self.info.id).is_ok();
        self.info.encodings = self
            .lifecycle
            .rates()
            .iter()
            .map(|(k, kbps)| (k.to_string(), *kbps))
            .collect();
        let was_push = self.info.push.as_ref().map(|p| p.state);
        let status = self.lifecycle.push_status(Instant::now());
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.info.push = status.as_ref().map(|p| PushInfo {
            state: p.state,
            last_error: p.last_error.clone(),
            next_retry_at: p.retry_in.map(|d| (unix_now + d).as_secs_f64().round() as u64),
        });
        if let Some(push) = status.filter(|p| Some(p.state) != was_push) {
            let retry_in_s = push.retry_in.map(|d| d.as_secs_f64());
            self.push_span
                .in_scope(|| info!(state = ?push.state, last_error = ?push.last_error, ?retry_in_s, "push state"));
        }
        self.shared.registry.update(self.info.clone());
        let (encoder_fallbacks, source_failures) = self.lifecycle.failures();
        let mut viewers = std::collections::BTreeMap::new();
        for viewer in self.viewers.values() {
            *viewers.entry(viewer.port.transport).or_insert(0) += 1;
        }
        if let Ok(mut stats) = self.handle.stats.lock() {
            stats.encoder_fallbacks = encoder_fallbacks;
            stats.source_failures = source_failures;
            stats.viewers = viewers;
            stats.snapshot_active = self.snapshot.is_some();
        }
    }
}

async fn next_event(events: &mut Option<BoxStream<'static, PipelineEvent>>) -> Option<PipelineEvent> {
    match events {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

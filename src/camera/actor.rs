//! The camera actor's loop: commands from the supervisor and websockets, events from the viewers'
//! webrtcbins, messages from the pipeline's bus, and a once-a-second check of timeouts and liveness.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

use super::viewers::{Viewer, Viewers};
use super::{CameraHandle, Command, ConnId, Identity, Outbox, Setup, Shared};
use crate::config::IdlePolicy;
use crate::encoders::Codec;
use crate::media::{CameraPipeline, EventSink, FailureOrigin, MediaError, ViewerBranch, ViewerEvent};
use crate::signalling::protocol::{CameraInfo, CameraState, ServerMessage};

/// A source that delivers nothing for this long is treated as unplugged (some USB cameras stop
/// sending without any error when yanked or when their firmware hangs).
const SOURCE_SILENCE_LIMIT: Duration = Duration::from_secs(5);
/// After a source failure without a udev remove (device busy, driver hiccup), retry after this long,
/// doubling while the source keeps failing without a frame, up to `SOURCE_RETRY_MAX`: a camera that
/// enumerates but never streams should not flap between offline and starting every few seconds.
const SOURCE_RETRY: Duration = Duration::from_secs(3);
const SOURCE_RETRY_MAX: Duration = Duration::from_secs(60);

pub(super) fn run(
    identity: Identity,
    shared: Shared,
    handle: CameraHandle,
    commands: mpsc::Receiver<Command>,
) -> tokio::task::JoinHandle<()> {
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
    };
    shared.registry.insert(handle.clone(), info.clone());
    let actor = Actor {
        shared,
        handle,
        info,
        setup: None,
        encoder_index: 0,
        pipeline: None,
        bus: None,
        viewers: Viewers::default(),
        events_tx,
        retry_at: None,
        fallback_reason: None,
        frames_base: 0,
        source_failures: 0,
        branches_made: 0,
    };
    tokio::spawn(actor.run(commands, events).instrument(span))
}

/// `mpsc::UnboundedSender` for webrtcbin callbacks: they fire on GStreamer threads that must not block,
/// and each viewer produces a bounded handful of them (one offer, its ICE candidates, a state change).
/// Events of one viewer branch: the viewer's connection and which of its branches (a viewer gets a new
/// one each time the pipeline is rebuilt or it asks again), so late events of a replaced branch are dropped.
type ViewerEvents = mpsc::UnboundedSender<(ConnId, u64, ViewerEvent)>;

struct Actor {
    shared: Shared,
    handle: CameraHandle,
    info: CameraInfo,
    setup: Option<Setup>,
    encoder_index: usize,
    pipeline: Option<CameraPipeline>,
    bus: Option<gst::bus::BusStream>,
    viewers: Viewers,
    events_tx: ViewerEvents,
    retry_at: Option<Instant>,
    /// Why the current encoder is not the first choice, for the API.
    fallback_reason: Option<String>,
    /// Frames encoded by pipelines already torn down, so the total survives rebuilds.
    frames_base: u64,
    /// Source failures in a row with no frame encoded in between (sets the retry delay).
    source_failures: u32,
    /// Numbers viewer branches, so events can be matched to the branch a viewer has now.
    branches_made: u64,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::UnboundedReceiver<(ConnId, u64, ViewerEvent)>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.on_command(command).await,
                },
                Some((conn, branch, event)) = events.recv() => self.on_viewer_event(conn, branch, event),
                Some(message) = next_message(&mut self.bus) => self.on_bus(message).await,
                _ = tick.tick() => self.on_tick().await,
            }
        }
        self.stop_pipeline().await;
        info!("camera removed");
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Join { outbox, codecs } => self.join(outbox, codecs).await,
            Command::Answer { outbox, sdp } => self.answer(&outbox, &sdp),
            Command::Candidate {
                outbox,
                mline,
                candidate,
            } => match self.viewers.get(outbox.conn).and_then(|v| v.branch.as_ref()) {
                Some(branch) => branch.add_candidate(mline, &candidate),
                None => outbox.send(self.error("candidate for a viewer that does not exist: send ready first")),
            },
            Command::Leave { conn } => self.leave(conn, "left").await,
            Command::Online(setup) => {
                info!(source = ?setup.source, "camera online");
                self.setup = Some(*setup);
                self.encoder_index = 0;
                self.fallback_reason = None;
                self.retry_at = None;
                self.source_failures = 0;
                self.stop_pipeline().await;
                if self.shared.idle == IdlePolicy::KeepEncoding || !self.viewers.is_empty() {
                    self.start_pipeline().await;
                } else {
                    self.set_state(CameraState::Idle, None);
                }
            }
            Command::Offline => {
                info!("device gone; pipeline torn down, viewers wait for it to return");
                self.setup = None;
                self.retry_at = None;
                self.source_failures = 0;
                self.stop_pipeline().await;
                self.set_state(CameraState::Offline, Some("device unplugged".into()));
            }
            Command::Shutdown => unreachable!("handled by the loop"),
        }
    }

    async fn join(&mut self, outbox: Outbox, codecs: Option<Vec<String>>) {
        let codec = match self.pick_codec(codecs.as_deref()) {
            Ok(codec) => codec,
            Err(message) => {
                outbox.send(self.error(&message));
                return;
            }
        };
        let conn = outbox.conn;
        // A page that sends ready again (reload of one card, reconnect) replaces its old session.
        if let Some(old) = self.viewers.remove(conn) {
            self.detach(old);
        }
        let span = info_span!("viewer", conn);
        span.in_scope(|| info!(%codec, "viewer joined"));
        self.viewers.insert(Viewer {
            outbox,
            codec,
            branch: None,
            branch_id: 0,
            span,
            negotiating_since: None,
        });
        if self.pipeline.is_none() && self.setup.is_some() && self.retry_at.is_none() {
            // Idle policy "stop": the first viewer starts the camera (which attaches every viewer).
            self.start_pipeline().await;
        } else {
            self.attach(conn);
        }
        self.publish();
    }

    /// H.264 for every browser that takes it (the original protocol lists no codecs: H.264); VP8
    /// only for browsers that cannot receive H.264.
    fn pick_codec(&self, codecs: Option<&[String]>) -> Result<Codec, String> {
        let Some(codecs) = codecs else { return Ok(Codec::H264) };
        let can = |name: &str| codecs.iter().any(|c| c.eq_ignore_ascii_case(name));
        if can("H264") {
            Ok(Codec::H264)
        } else if can("VP8") && self.setup.as_ref().is_some_and(|s| s.vp8.is_some()) {
            Ok(Codec::Vp8)
        } else {
            Err(format!(
                "no codec in common: this camera sends H.264{}, the browser takes {}",
                if self.setup.as_ref().is_some_and(|s| s.vp8.is_some()) {
                    " or VP8"
                } else {
                    ""
                },
                codecs.join(", ")
            ))
        }
    }

    fn answer(&mut self, outbox: &Outbox, sdp: &str) {
        let Some(viewer) = self.viewers.get(outbox.conn) else {
            outbox.send(self.error("answer for a viewer that does not exist: send ready first"));
            return;
        };
        let events = self.event_sink(outbox.conn, viewer.branch_id);
        let Some(branch) = viewer.branch.as_ref() else {
            outbox.send(self.error("answer while the camera is not streaming"));
            return;
        };
        match branch.set_answer(sdp, events) {
            Ok(()) => {}
            Err(MediaError::StaleAnswer) => viewer.span.in_scope(|| info!("ignoring an answer to an earlier offer")),
            Err(e) => {
                viewer.span.in_scope(|| warn!(error = %e, "answer rejected"));
                outbox.send(self.error(&e.to_string()));
            }
        }
    }

    async fn leave(&mut self, conn: ConnId, why: &str) {
        if let Some(viewer) = self.viewers.remove(conn) {
            viewer.span.in_scope(|| info!(why, "viewer left"));
            if self.viewers.is_empty() && self.shared.idle == IdlePolicy::Stop && self.pipeline.is_some() {
                // The branch stops with the pipeline. Detaching it first would leave an unlink pending
                // on a pad that stops flowing, and the branch would never be freed.
                info!("no viewers left; stopping (idle policy: stop)");
                drop(viewer);
                self.stop_pipeline().await;
                self.set_state(CameraState::Idle, None);
            } else {
                self.detach(viewer);
                self.publish();
            }
        }
    }

    fn on_viewer_event(&mut self, conn: ConnId, branch: u64, event: ViewerEvent) {
        let error = match &event {
            ViewerEvent::Failed(reason) => Some(self.error(reason)),
            _ => None,
        };
        let Some(viewer) = self
            .viewers
            .get_mut(conn)
            .filter(|v| v.branch.is_some() && v.branch_id == branch)
        else {
            return; // a late callback from a branch already removed or replaced
        };
        let _enter = viewer.span.enter();
        match event {
            ViewerEvent::Offer(sdp) => {
                info!("offer sent");
                viewer.outbox.send(ServerMessage::Offer {
                    camera: self.info.id.clone(),
                    sdp,
                });
            }
            ViewerEvent::Candidate { mline, candidate } => viewer.outbox.send(ServerMessage::Candidate {
                camera: self.info.id.clone(),
                candidate,
                sdp_mline_index: mline,
            }),
            ViewerEvent::Connected => {
                if viewer.negotiating_since.take().is_some() {
                    info!("viewer connected");
                    if let Some(pipeline) = &self.pipeline {
                        pipeline.request_keyframe(viewer.codec);
                    }
                }
            }
            ViewerEvent::Failed(reason) => {
                warn!(%reason, "viewer failed");
                if let Some(error) = error {
                    viewer.outbox.send(error);
                }
                drop(_enter);
                if let Some(viewer) = self.viewers.remove(conn) {
                    self.detach(viewer);
                    self.publish();
                }
            }
        }
    }

    async fn on_bus(&mut self, message: gst::Message) {
        use gst::MessageView;
        let (origin, text) = match message.view() {
            MessageView::Error(_) => match self.pipeline.as_ref().and_then(|p| p.failure(&message)) {
                Some(failure) => failure,
                None => return,
            },
            MessageView::Eos(_) => (FailureOrigin::Source, "source ended".to_string()),
            MessageView::Warning(w) => {
                warn!(warning = %w.error(), "pipeline warning");
                return;
            }
            _ => return,
        };
        match origin {
            FailureOrigin::Source => self.source_failed(&text).await,
            FailureOrigin::Encoder => self.encoder_failed(&text).await,
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let timeout = self.shared.negotiation_timeout;
        for conn in self.viewers.overdue(now, timeout) {
            if let Some(viewer) = self.viewers.get(conn) {
                let why = format!("negotiation did not finish within {} s", timeout.as_secs());
                viewer.outbox.send(self.error(&why));
            }
            self.leave(conn, "negotiation timed out").await;
        }
        if let Some(pipeline) = &self.pipeline {
            let frames = pipeline.counters().encoded_frames();
            self.handle
                .encoded_frames
                .store(self.frames_base + frames, Ordering::Relaxed);
            if pipeline.counters().source_silence() > SOURCE_SILENCE_LIMIT {
                self.source_failed("source delivered no frames for 5 s").await;
            }
        }
        if self.retry_at.is_some_and(|t| now >= t) {
            self.retry_at = None;
            info!("retrying the source");
            self.start_pipeline().await;
        }
    }

    async fn source_failed(&mut self, reason: &str) {
        if self
            .pipeline
            .as_ref()
            .is_some_and(|p| p.counters().encoded_frames() > 0)
        {
            self.source_failures = 0;
        }
        self.stop_pipeline().await;
        if self.setup.is_none() {
            self.set_state(CameraState::Offline, Some(reason.to_string()));
            return;
        }
        let delay = (SOURCE_RETRY * 2u32.saturating_pow(self.source_failures)).min(SOURCE_RETRY_MAX);
        self.source_failures += 1;
        warn!(%reason, retry_in_s = delay.as_secs(), "source failed; waiting for the device");
        self.retry_at = Some(Instant::now() + delay);
        self.set_state(
            CameraState::Offline,
            Some(format!("{reason}; retrying in {} s", delay.as_secs())),
        );
    }

    async fn encoder_failed(&mut self, reason: &str) {
        let failed = self.current_plan().map(|p| p.profile.clone()).unwrap_or_default();
        warn!(profile = %failed, %reason, "encoder failed; falling back");
        self.stop_pipeline().await;
        self.encoder_index += 1;
        if self.current_plan().is_some() {
            self.fallback_reason = Some(format!("fell back from {failed}: {reason}"));
            self.start_pipeline().await;
        } else {
            self.set_state(
                CameraState::Failed,
                Some(format!("every usable encoder failed; last: {failed}: {reason}")),
            );
        }
    }

    fn current_plan(&self) -> Option<&crate::media::EncoderPlan> {
        self.setup.as_ref().and_then(|s| s.encoders.get(self.encoder_index))
    }

    /// Builds and starts the pipeline with the current encoder, falling through the list on build
    /// failures, then attaches every waiting viewer.
    async fn start_pipeline(&mut self) {
        let Some(setup) = self.setup.clone() else { return };
        self.set_state(CameraState::Starting, None);
        while let Some(plan) = setup.encoders.get(self.encoder_index) {
            match CameraPipeline::build(&setup.source, plan).and_then(|p| p.play().map(|_| p)) {
                Ok(pipeline) => {
                    let reason = match (self.encoder_index, &self.fallback_reason) {
                        (0, _) => setup.encoder_reason.clone(),
                        (_, Some(why)) => why.clone(),
                        (n, None) => format!("fallback #{n}: the encoders before it did not start"),
                    };
                    info!(encoder = %plan.profile, %reason, "pipeline playing");
                    self.bus = Some(pipeline.bus().stream());
                    self.pipeline = Some(pipeline);
                    self.info.encoder = Some(plan.profile.clone());
                    self.info.mode = Some(setup.source.to_string());
                    self.info.bitrate_kbps = setup.bitrate_kbps;
                    self.set_state(CameraState::Streaming, Some(reason));
                    let waiting: Vec<ConnId> = self.viewer_conns();
                    for conn in waiting {
                        self.attach(conn);
                    }
                    return;
                }
                Err(MediaError::Source(reason)) => {
                    self.source_failed(&format!("the device did not start: {reason}")).await;
                    return;
                }
                Err(e) => {
                    warn!(encoder = %plan.profile, error = %e, "pipeline did not start; trying the next encoder");
                    self.fallback_reason = Some(format!("fell back from {}: {e}", plan.profile));
                    self.encoder_index += 1;
                }
            }
        }
        self.set_state(
            CameraState::Failed,
            Some("no encoder could start for this camera".into()),
        );
    }

    async fn stop_pipeline(&mut self) {
        self.bus = None;
        let Some(pipeline) = self.pipeline.take() else { return };
        self.frames_base += pipeline.counters().encoded_frames();
        // Branches go with the pipeline; viewers stay, waiting for the next one.
        for viewer in self.viewers.iter_mut() {
            viewer.branch = None;
            viewer.negotiating_since = None;
        }
        // Reaching NULL can block (a driver releasing its buffers): not on the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || pipeline.shut_down()).await;
    }

    fn attach(&mut self, conn: ConnId) {
        self.branches_made += 1;
        let branch_id = self.branches_made;
        let events = self.event_sink(conn, branch_id);
        let vp8 = self.setup.as_ref().and_then(|s| s.vp8.clone());
        let (Some(pipeline), Some(viewer)) = (self.pipeline.as_mut(), self.viewers.get_mut(conn)) else {
            return;
        };
        let _enter = viewer.span.enter();
        let fanout = match (pipeline.fanout(viewer.codec).cloned(), viewer.codec, vp8) {
            (Some(fanout), _, _) => Ok(fanout),
            (None, Codec::Vp8, Some(plan)) => {
                info!(encoder = %plan.profile, "starting a VP8 encode for browsers without H.264");
                pipeline.add_encoding(&plan).cloned()
            }
            (None, codec, _) => Err(MediaError::Build(format!("this camera has no {codec} encoding"))),
        };
        match fanout.and_then(|tee| ViewerBranch::attach(&tee, &self.shared.ice, events)) {
            Ok(branch) => {
                viewer.branch = Some(branch);
                viewer.branch_id = branch_id;
                viewer.negotiating_since = Some(Instant::now());
            }
            Err(e) => {
                warn!(error = %e, "could not add viewer");
                let error = ServerMessage::error(Some(&self.info.id), e.to_string());
                viewer.outbox.send(error);
                drop(_enter);
                self.viewers.remove(conn);
            }
        }
    }

    /// Frees a viewer's branch, and the extra encoding it watched if nobody else does.
    fn detach(&mut self, viewer: Viewer) {
        if let Some(branch) = viewer.branch {
            branch.detach();
        }
        if let Some(pipeline) = self.pipeline.as_mut() {
            if viewer.codec != Codec::H264 && self.viewers.watching(viewer.codec) == 0 {
                info!(codec = %viewer.codec, "last viewer of this encoding left; stopping it");
                pipeline.remove_encoding(viewer.codec);
            }
        }
    }

    fn viewer_conns(&mut self) -> Vec<ConnId> {
        self.viewers.iter_mut().map(|v| v.outbox.conn).collect()
    }

    fn event_sink(&self, conn: ConnId, branch: u64) -> EventSink {
        let tx = self.events_tx.clone();
        Arc::new(move |event| {
            let _ = tx.send((conn, branch, event));
        })
    }

    fn error(&self, message: &str) -> ServerMessage {
        ServerMessage::error(Some(&self.info.id), message)
    }

    fn set_state(&mut self, state: CameraState, detail: Option<String>) {
        self.info.state = state;
        self.info.detail = detail;
        self.publish();
    }

    fn publish(&mut self) {
        self.info.viewers = self.viewers.len();
        self.shared.registry.update(self.info.clone());
    }
}

async fn next_message(bus: &mut Option<gst::bus::BusStream>) -> Option<gst::Message> {
    match bus {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

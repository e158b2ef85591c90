//! A camera's behaviour as a plain state type: inputs (device online/offline, viewers joining and
//! leaving, what the pipeline reported, a tick) in, effects (start/stop the pipeline, attach/detach a
//! viewer's branch, stop an extra encoding, ask for a keyframe, tell a viewer) out. No I/O, no
//! GStreamer, no clock: time comes in with each input, so whole sequences (plug, fallback, backoff,
//! idle stop, negotiation timeout, rejoin races) are tested in microseconds. The actor (`actor.rs`) is
//! the shell that runs the effects and feeds their outcomes back in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::bitrate::{self, LinkReport};
use super::fec::{self, Fec};
use super::probe::Probe;
use super::sink::ConnId;
use super::{CameraError, CameraState, PushState, Setup};
use crate::config::IdlePolicy;
use crate::encoders::Codec;
use crate::media::{EncoderPlan, EncodingKey, FailureOrigin, Tier};

/// A source that delivers nothing for this long is treated as unplugged (some USB cameras stop
/// sending without any error when yanked or when their firmware hangs).
pub const SOURCE_SILENCE_LIMIT: Duration = Duration::from_secs(5);
/// After a source failure without a udev remove (device busy, driver hiccup), retry after this long,
/// doubling while the source keeps failing without a frame, up to `SOURCE_RETRY_MAX`: a camera that
/// enumerates but never streams should not flap between offline and starting every few seconds.
pub const SOURCE_RETRY: Duration = Duration::from_secs(3);
pub const SOURCE_RETRY_MAX: Duration = Duration::from_secs(60);

/// Numbers a viewer's branches: a viewer gets a new one each time the pipeline is rebuilt or it asks
/// again, and events of a replaced branch must not touch the new one.
pub type BranchId = u64;

/// Viewers one camera serves itself. Each is a webrtcbin (about 8 threads, ~1 % of a core for DTLS/SRTP
/// and the send path, bench/results): 32 keep a Raspberry Pi 4 under half its cores, and more viewers
/// than that belong on a media server (WHIP push).
pub const MAX_VIEWERS: usize = 32;
/// Viewers still negotiating at once. A negotiation costs a webrtcbin, a DTLS certificate check and ICE
/// gathering up front; a client flooding `ready` messages gets refused here before it costs threads.
pub const MAX_NEGOTIATING: usize = 8;
/// A viewer stays in its tier at least this long: every move costs it a new session (~0.2 s of video).
pub const TIER_HOLD: Duration = Duration::from_secs(10);
/// After a failed push session (server down, refused, connection lost) the next is tried after this
/// long, doubling while sessions keep failing without connecting, up to `PUSH_RETRY_MAX`: a media
/// server that restarts is back within seconds, one that is gone for good costs a POST a minute.
pub const PUSH_RETRY: Duration = Duration::from_secs(1);
pub const PUSH_RETRY_MAX: Duration = Duration::from_secs(60);
/// A connected push that hears no RTCP from its server for this long has lost it: a media server
/// sends receiver reports (and congestion feedback) every second or more often, and one that was
/// killed or restarted sends nothing at all, not even an ICE or DTLS error.
pub const PUSH_SILENCE_LIMIT: Duration = Duration::from_secs(5);

/// A snapshot branch stays this long after the last request for a JPEG: longer than Home Assistant's
/// 10 s refresh of a camera card, so a dashboard keeps it attached rather than rebuilding it for every
/// picture, and short enough that a camera nobody looks at soon stops paying for JPEGs.
pub const SNAPSHOT_IDLE: Duration = Duration::from_secs(15);

/// Settings every camera shares.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub idle: IdlePolicy,
    /// How long a viewer may take to connect before it is dropped.
    pub negotiation_timeout: Duration,
    pub max_viewers: usize,
    pub max_negotiating: usize,
}

impl Policy {
    pub fn new(idle: IdlePolicy, negotiation_timeout: Duration) -> Self {
        Self {
            idle,
            negotiation_timeout,
            max_viewers: MAX_VIEWERS,
            max_negotiating: MAX_NEGOTIATING,
        }
    }
}

#[derive(Debug)]
pub enum Input {
    /// The device is (back) on this machine, with the plan to stream it.
    Online(Box<Setup>),
    /// The device is gone: tear the pipeline down, keep the card and its viewers.
    Offline,
    Join {
        conn: ConnId,
        codecs: Option<Vec<String>>,
        /// The viewer's own SDP offer: its branch answers instead of offering.
        offer: Option<String>,
    },
    Leave {
        conn: ConnId,
    },
    /// The pipeline asked for by `Effect::StartPipeline` is playing.
    Started,
    /// ... or did not start.
    StartFailed {
        origin: FailureOrigin,
        reason: String,
    },
    /// The running pipeline failed (a bus error, the source ending). Viewer-branch failures come as
    /// `ViewerFailed` instead: they never count against the camera.
    Failed {
        origin: FailureOrigin,
        reason: String,
    },
    /// A branch could not be added (`Effect::Attach` failed).
    AttachFailed {
        conn: ConnId,
        branch: BranchId,
        error: CameraError,
    },
    ViewerConnected {
        conn: ConnId,
        branch: BranchId,
    },
    /// The viewer's session broke (`CameraError::ViewerFailed`) or its offer could not be answered.
    ViewerFailed {
        conn: ConnId,
        branch: BranchId,
        error: CameraError,
    },
    /// A viewer's branch reports its link (about once a second).
    LinkReport {
        conn: ConnId,
        branch: BranchId,
        report: LinkReport,
    },
    /// Someone asked for a JPEG of the latest picture.
    SnapshotWanted,
    /// The snapshot branch could not be added, or broke.
    SnapshotFailed,
    /// The push's branch has heard this many RTCP packets from its server so far (once a second).
    PushHeard {
        branch: BranchId,
        rtcp_packets: u64,
    },
    /// Once a second, with what the running pipeline has done.
    Tick {
        health: Option<Health>,
    },
}

/// What a running pipeline reports on each tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    pub encoded_frames: u64,
    pub source_silence: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Build and play a pipeline with `Setup::encoders[encoder]`; answer with `Started` or `StartFailed`.
    StartPipeline {
        encoder: usize,
    },
    /// Stop the pipeline (every branch goes with it) and wait for it.
    StopPipeline,
    /// Add a branch for this viewer to encoding `encoding` (starting it if it is an extra one).
    Attach {
        conn: ConnId,
        branch: BranchId,
        encoding: EncodingKey,
        /// The viewer's offer, to answer; None: the branch offers.
        offer: Option<String>,
    },
    /// A viewer moves between tiers (a Detach and an Attach follow): for the log, with why.
    ChangeTier {
        conn: ConnId,
        to: Tier,
        capacity_kbps: u32,
        best_kbps: u32,
    },
    /// Take the viewer's branch off its tee and free it.
    Detach {
        conn: ConnId,
    },
    /// Nobody watches this extra encoding any more.
    StopEncoding(EncodingKey),
    RequestKeyframe(EncodingKey),
    /// Set the redundancy (`fec-percentage`) of a viewer's branch.
    SetFec {
        conn: ConnId,
        percent: u32,
    },
    /// Lift a viewer's bandwidth estimate: a probe of its link for room (camera/probe.rs).
    SetEstimate {
        conn: ConnId,
        estimate_kbps: u32,
    },
    /// Tell a running encoder its new bitrate.
    SetBitrate {
        encoding: EncodingKey,
        kbps: u32,
    },
    Notify {
        conn: ConnId,
        error: CameraError,
    },
    /// Hang the JPEG snapshot branch off the raw tee.
    AttachSnapshot,
    /// Nobody asked for a snapshot lately: take the branch off.
    DetachSnapshot,
    /// Tell whoever asked for a snapshot why there is none.
    RefuseSnapshot(CameraError),
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// No device: never plugged in (no reason to show), unplugged, or its source failed for good.
    Offline(Option<String>),
    /// Waiting for a viewer (idle policy `stop`).
    Idle,
    Starting,
    Streaming {
        reason: String,
    },
    /// The source failed; it is tried again at `at`.
    Retrying {
        at: Instant,
        reason: String,
    },
    /// No encoder is left.
    Failed(String),
}

#[derive(Debug)]
struct Viewer {
    /// Which encoding it watches: its codec and, for H.264, its tier.
    encoding: EncodingKey,
    /// Its link's latest report.
    report: Option<LinkReport>,
    /// FEC on its current branch (a new branch starts without).
    fec: Fec,
    /// Probing its current branch's link for room (a new branch has a new estimator).
    probe: Probe,
    /// When it last moved between tiers (a move costs it a new session, so they are spaced out).
    moved_at: Option<Instant>,
    /// The branch it has now; None while the camera has no pipeline (it waits for one).
    branch: Option<BranchId>,
    /// When the current negotiation started; None once connected.
    negotiating_since: Option<Instant>,
    /// The viewer's own offer (WHEP). Its one answer is tied to its first branch: it cannot follow a
    /// rebuilt pipeline, so it is dropped when that branch goes.
    offer: Option<String>,
}

/// The camera's push to a media server: a viewer the camera keeps joined by itself, whose failures
/// are retried with backoff instead of being told to anyone.
#[derive(Debug)]
struct Push {
    conn: ConnId,
    /// Sessions failed in a row without connecting (sets the retry delay).
    failures: u32,
    last_error: Option<String>,
    /// While waiting after a failure: when the next session is tried.
    retry_at: Option<Instant>,
    /// RTCP packets heard from the server at the last report, and when that count last grew.
    heard: (u64, Instant),
}

/// What the card and the API show about a push.
#[derive(Debug, Clone, PartialEq)]
pub struct PushStatus {
    pub state: PushState,
    pub last_error: Option<String>,
    /// While retrying: how long until the next session.
    pub retry_in: Option<Duration>,
}

pub struct Lifecycle {
    policy: Policy,
    push: Option<Push>,
    setup: Option<Setup>,
    phase: Phase,
    encoder_index: usize,
    /// Why the current encoder is not the first choice.
    fallback_reason: Option<String>,
    /// Source failures in a row with no frame encoded in between (sets the retry delay).
    source_failures: u32,
    /// Whether the running pipeline has encoded anything (a source that streamed resets the backoff).
    encoded_any: bool,
    /// Totals for the metrics: moves to the next encoder, and source failures of any kind.
    encoder_fallbacks: u64,
    source_failures_total: u64,
    viewers: BTreeMap<ConnId, Viewer>,
    branches_made: BranchId,
    /// The bitrate each running encoding was last told.
    rates: BTreeMap<EncodingKey, u32>,
    /// Whether the snapshot branch is on the running pipeline, and when a snapshot was last asked for.
    snapshot_attached: bool,
    snapshot_wanted_at: Option<Instant>,
}

impl Lifecycle {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            push: None,
            setup: None,
            phase: Phase::Offline(None),
            encoder_index: 0,
            fallback_reason: None,
            source_failures: 0,
            encoded_any: false,
            encoder_fallbacks: 0,
            source_failures_total: 0,
            viewers: BTreeMap::new(),
            branches_made: 0,
            rates: BTreeMap::new(),
            snapshot_attached: false,
            snapshot_wanted_at: None,
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Online(setup) => self.online(now, *setup, &mut out),
            Input::Offline => {
                self.setup = None;
                self.source_failures = 0;
                self.stop(&mut out);
                self.phase = Phase::Offline(Some("device unplugged".into()));
            }
            Input::Join { conn, codecs, offer } => self.join(now, conn, codecs.as_deref(), offer, &mut out),
            Input::Leave { conn } => self.leave(now, conn, &mut out),
            Input::Started => self.started(now, &mut out),
            Input::StartFailed {
                origin: FailureOrigin::Source,
                reason,
            } => self.source_failed(now, &format!("the device did not start: {reason}"), &mut out),
            Input::StartFailed {
                origin: FailureOrigin::Encoder,
                reason,
            } => {
                let profile = self.current_plan().map(|p| p.profile.clone()).unwrap_or_default();
                self.fallback_reason = Some(format!("fell back from {profile}: {reason}"));
                self.encoder_index += 1;
                self.encoder_fallbacks += 1;
                self.start_or_fail(&mut out, || "no encoder could start for this camera".into());
            }
            Input::Failed {
                origin: FailureOrigin::Source,
                reason,
            } => self.source_failed(now, &reason, &mut out),
            Input::Failed {
                origin: FailureOrigin::Encoder,
                reason,
            } => self.encoder_failed(&reason, &mut out),
            // A late report of a branch already replaced or removed concerns nobody any more.
            Input::AttachFailed { conn, branch, error } if self.is_current(conn, branch) => {
                // Nothing to detach: the branch never came to be.
                self.viewers.entry(conn).and_modify(|v| v.branch = None);
                self.drop_viewer(now, conn, error, &mut out)
            }
            Input::ViewerFailed { conn, branch, error } if self.is_current(conn, branch) => {
                self.drop_viewer(now, conn, error, &mut out)
            }
            Input::AttachFailed { .. } | Input::ViewerFailed { .. } => {}
            Input::ViewerConnected { conn, branch } => {
                if let Some(viewer) = self.viewers.get_mut(&conn).filter(|v| v.branch == Some(branch)) {
                    if viewer.negotiating_since.take().is_some() {
                        out.push(Effect::RequestKeyframe(viewer.encoding));
                    }
                    if let Some(push) = self.push.as_mut().filter(|p| p.conn == conn) {
                        push.failures = 0;
                        push.heard = (0, now);
                    }
                }
            }
            Input::PushHeard { branch, rtcp_packets } => {
                let current = self.push.as_ref().is_some_and(|p| self.is_current(p.conn, branch));
                if let Some(push) = self.push.as_mut().filter(|p| current && rtcp_packets > p.heard.0) {
                    push.heard = (rtcp_packets, now);
                }
            }
            Input::LinkReport {
                conn,
                branch,
                mut report,
            } => {
                let ceiling = self.setup.as_ref().map(|s| s.limits.ceiling_kbps);
                if let Some(viewer) = self.viewers.get_mut(&conn).filter(|v| v.branch == Some(branch)) {
                    let sending = self.rates.get(&viewer.encoding).copied().or(ceiling);
                    let room = sending.is_some_and(|kbps| fec::has_room(report.estimate_kbps, kbps));
                    if let Some(percent) = viewer.fec.on_report(now, report.loss, room) {
                        out.push(Effect::SetFec { conn, percent });
                    }
                    if let Some(wanted) = ceiling.map(bitrate::estimate_for) {
                        let share = viewer.probe.on_report(now, &report, wanted);
                        if let Some(estimate_kbps) = share.set_estimate {
                            out.push(Effect::SetEstimate { conn, estimate_kbps });
                        }
                        // The policy works from the share probing allows (a probe tests the link with real video).
                        report.estimate_kbps = share.allowed_kbps;
                    }
                    viewer.report = Some(report);
                    self.adapt(now, &mut out);
                }
            }
            Input::SnapshotWanted => self.snapshot_wanted(now, &mut out),
            // Asked for again, it is tried again; unasked, the camera goes idle as usual (`tick`).
            Input::SnapshotFailed => self.snapshot_attached = false,
            Input::Tick { health } => self.tick(now, health, &mut out),
        }
        out
    }

    fn snapshot_wanted(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if let Some(reason) = self.offline_reason() {
            return out.push(Effect::RefuseSnapshot(CameraError::Offline(reason)));
        }
        if self.current_plan().is_some_and(|p| p.raw_input.is_none()) {
            return out.push(Effect::RefuseSnapshot(CameraError::NoSnapshot(
                "this camera's H.264 is passed through undecoded: there are no pictures to take a JPEG of".into(),
            )));
        }
        self.snapshot_wanted_at = Some(now);
        match self.phase {
            // Idle policy "stop": the camera starts for it, and attaches the branch once playing.
            Phase::Idle => self.start_or_fail(out, || "no usable encoder for this camera".into()),
            Phase::Streaming { .. } if !self.snapshot_attached => {
                self.snapshot_attached = true;
                out.push(Effect::AttachSnapshot);
            }
            _ => {}
        }
    }

    fn snapshot_wanted_lately(&self, now: Instant) -> bool {
        self.snapshot_wanted_at
            .is_some_and(|at| now.duration_since(at) < SNAPSHOT_IDLE)
    }

    /// After `SNAPSHOT_IDLE` without a request the branch goes; a camera that runs only for snapshots
    /// (idle policy `stop`, no viewers) goes idle instead, and the branch with its pipeline.
    fn snapshot_idle(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self.snapshot_wanted_at.is_none() || self.snapshot_wanted_lately(now) {
            return;
        }
        self.snapshot_wanted_at = None;
        let running = matches!(self.phase, Phase::Streaming { .. } | Phase::Starting);
        if running && self.policy.idle == IdlePolicy::Stop && self.viewers.is_empty() {
            self.stop(out);
            self.phase = Phase::Idle;
        } else if self.snapshot_attached {
            self.snapshot_attached = false;
            out.push(Effect::DetachSnapshot);
        }
    }

    fn online(&mut self, now: Instant, setup: Setup, out: &mut Vec<Effect>) {
        let push = setup.push.as_ref().map(|p| p.conn);
        self.setup = Some(setup);
        self.encoder_index = 0;
        self.fallback_reason = None;
        self.source_failures = 0;
        self.stop(out);
        // The push joins like a viewer (and so keeps an `idle: stop` camera running) unless it is
        // waiting out a failure.
        match (push, &self.push) {
            (Some(conn), None) => {
                self.push = Some(Push {
                    conn,
                    failures: 0,
                    last_error: None,
                    retry_at: None,
                    heard: (0, now),
                });
                self.add_viewer(conn, Codec::H264, None);
            }
            (None, Some(push)) => {
                let conn = push.conn;
                self.push = None;
                self.remove_viewer(conn, out);
            }
            _ => {}
        }
        if self.policy.idle == IdlePolicy::KeepEncoding || !self.viewers.is_empty() {
            self.start_or_fail(out, || "no usable encoder for this camera".into());
        } else {
            self.phase = Phase::Idle;
        }
    }

    fn join(
        &mut self,
        now: Instant,
        conn: ConnId,
        codecs: Option<&[String]>,
        offer: Option<String>,
        out: &mut Vec<Effect>,
    ) {
        let codec = match self.pick_codec(codecs) {
            Ok(codec) => codec,
            Err(error) => return out.push(Effect::Notify { conn, error }),
        };
        // A viewer with its own offer holds a request open for its answer; it is told now that there is
        // no camera to answer it, rather than waiting for a device that may never return.
        if let Some(reason) = self.offline_reason().filter(|_| offer.is_some()) {
            return out.push(Effect::Notify {
                conn,
                error: CameraError::Offline(reason),
            });
        }
        // A page that sends ready again (reload of one card, reconnect) replaces its old session.
        if self.viewers.contains_key(&conn) {
            self.remove_viewer(conn, out);
        }
        if let Some(error) = self.over_limit() {
            return out.push(Effect::Notify { conn, error });
        }
        self.add_viewer(conn, codec, offer);
        self.serve(now, conn, out);
    }

    /// A new viewer, waiting for a branch.
    fn add_viewer(&mut self, conn: ConnId, codec: Codec, offer: Option<String>) {
        self.viewers.insert(
            conn,
            Viewer {
                encoding: EncodingKey {
                    codec,
                    tier: Tier::Main,
                },
                report: None,
                fec: Fec::default(),
                probe: Probe::default(),
                moved_at: None,
                branch: None,
                negotiating_since: None,
                offer,
            },
        );
    }

    /// Gives a new viewer its branch now if the camera streams, starts an idle camera for it, or lets it
    /// wait for the pipeline.
    fn serve(&mut self, now: Instant, conn: ConnId, out: &mut Vec<Effect>) {
        match self.phase {
            // Idle policy "stop": the first viewer starts the camera (which attaches every viewer).
            Phase::Idle => self.start_or_fail(out, || "no usable encoder for this camera".into()),
            Phase::Streaming { .. } => self.attach(now, conn, out),
            _ => {} // it waits for the pipeline
        }
    }

    /// Why nothing streams, when the camera is down (not merely idle or starting).
    fn offline_reason(&self) -> Option<String> {
        match &self.phase {
            Phase::Offline(why) => Some(why.clone().unwrap_or_else(|| "not plugged in".into())),
            Phase::Retrying { reason, .. } | Phase::Failed(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    fn over_limit(&self) -> Option<CameraError> {
        let negotiating = self.viewers.values().filter(|v| v.negotiating_since.is_some()).count();
        if self.viewers.len() >= self.policy.max_viewers {
            Some(CameraError::TooMany {
                what: "viewers",
                limit: self.policy.max_viewers,
            })
        } else if negotiating >= self.policy.max_negotiating {
            Some(CameraError::TooMany {
                what: "viewers still connecting",
                limit: self.policy.max_negotiating,
            })
        } else {
            None
        }
    }

    /// H.264 for every browser that takes it (the original protocol lists no codecs: H.264); VP8
    /// only for browsers that cannot receive H.264.
    fn pick_codec(&self, codecs: Option<&[String]>) -> Result<Codec, CameraError> {
        let Some(codecs) = codecs else { return Ok(Codec::H264) };
        let can = |name: &str| codecs.iter().any(|c| c.eq_ignore_ascii_case(name));
        let vp8 = self.setup.as_ref().is_some_and(|s| s.vp8.is_some());
        if can("H264") {
            Ok(Codec::H264)
        } else if can("VP8") && vp8 {
            Ok(Codec::Vp8)
        } else {
            Err(CameraError::NoCommonCodec {
                offered: if vp8 { "H.264 or VP8".into() } else { "H.264".into() },
                wanted: codecs.join(", "),
            })
        }
    }

    fn leave(&mut self, now: Instant, conn: ConnId, out: &mut Vec<Effect>) {
        if !self.viewers.contains_key(&conn) {
            return;
        }
        let running = matches!(self.phase, Phase::Streaming { .. } | Phase::Starting);
        let last = self.viewers.len() == 1 && !self.snapshot_wanted_lately(now);
        if last && self.policy.idle == IdlePolicy::Stop && running {
            // The branch stops with the pipeline. Detaching it first would leave an unlink pending on a
            // pad that stops flowing, and the branch would never be freed.
            self.viewers.remove(&conn);
            self.stop(out);
            self.phase = Phase::Idle;
        } else {
            self.remove_viewer(conn, out);
            // Those who stay may take more now (the last one gone: back to the configured bitrate).
            self.adapt(now, out);
        }
    }

    fn drop_viewer(&mut self, now: Instant, conn: ConnId, error: CameraError, out: &mut Vec<Effect>) {
        out.push(Effect::Notify {
            conn,
            error: error.clone(),
        });
        self.remove_viewer(conn, out);
        self.push_failed(now, conn, error);
    }

    /// A push session that failed (its viewer already removed) is tried again after a backoff.
    fn push_failed(&mut self, now: Instant, conn: ConnId, error: CameraError) {
        let Some(push) = self.push.as_mut().filter(|p| p.conn == conn) else {
            return;
        };
        let delay = (PUSH_RETRY * 2u32.saturating_pow(push.failures)).min(PUSH_RETRY_MAX);
        push.failures += 1;
        push.retry_at = Some(now + delay);
        push.last_error = Some(error.to_string());
    }

    /// Frees a viewer's branch, and the extra encoding it watched if nobody else does.
    fn remove_viewer(&mut self, conn: ConnId, out: &mut Vec<Effect>) {
        let Some(viewer) = self.viewers.remove(&conn) else {
            return;
        };
        if viewer.branch.is_some() {
            out.push(Effect::Detach { conn });
        }
        self.stop_unwatched(viewer.encoding, out);
    }

    /// Stops an extra encoding nobody watches any more.
    fn stop_unwatched(&mut self, encoding: EncodingKey, out: &mut Vec<Effect>) {
        let extra = encoding != EncodingKey::MAIN;
        if extra && self.is_streaming() && !self.viewers.values().any(|v| v.encoding == encoding) {
            self.rates.remove(&encoding);
            out.push(Effect::StopEncoding(encoding));
        }
    }

    fn is_streaming(&self) -> bool {
        matches!(self.phase, Phase::Streaming { .. })
    }

    fn is_current(&self, conn: ConnId, branch: BranchId) -> bool {
        self.viewers.get(&conn).is_some_and(|v| v.branch == Some(branch))
    }

    fn started(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let reason = match (self.encoder_index, &self.fallback_reason, &self.setup) {
            (0, _, Some(setup)) => setup.encoder_reason.clone(),
            (_, Some(why), _) => why.clone(),
            (n, None, _) => format!("fallback #{n}: the encoders before it did not start"),
        };
        self.phase = Phase::Streaming { reason };
        self.encoded_any = false;
        self.rates = self
            .setup
            .iter()
            .map(|s| (EncodingKey::MAIN, s.limits.ceiling_kbps))
            .collect();
        let waiting: Vec<ConnId> = self.viewers.keys().copied().collect();
        for conn in waiting {
            self.attach(now, conn, out);
        }
        if self.snapshot_wanted_lately(now) {
            self.snapshot_attached = true;
            out.push(Effect::AttachSnapshot);
        }
    }

    fn attach(&mut self, now: Instant, conn: ConnId, out: &mut Vec<Effect>) {
        if let (Some(viewer), Some(setup)) = (self.viewers.get(&conn), self.setup.as_ref()) {
            // An extra encoding starts with the rate its plan was rendered at.
            let start = if viewer.encoding.tier == Tier::Low {
                setup.limits.low_ceiling_kbps
            } else {
                setup.limits.ceiling_kbps
            };
            self.rates.entry(viewer.encoding).or_insert(start);
        }
        let Some(viewer) = self.viewers.get_mut(&conn) else {
            return;
        };
        self.branches_made += 1;
        viewer.branch = Some(self.branches_made);
        viewer.fec = Fec::default();
        viewer.probe = Probe::default();
        viewer.negotiating_since = Some(now);
        out.push(Effect::Attach {
            conn,
            branch: self.branches_made,
            encoding: viewer.encoding,
            offer: viewer.offer.clone(),
        });
    }

    fn source_failed(&mut self, now: Instant, reason: &str, out: &mut Vec<Effect>) {
        if self.encoded_any {
            self.source_failures = 0;
        }
        self.source_failures_total += 1;
        self.stop(out);
        if self.setup.is_none() {
            self.phase = Phase::Offline(Some(reason.to_string()));
            return;
        }
        let delay = (SOURCE_RETRY * 2u32.saturating_pow(self.source_failures)).min(SOURCE_RETRY_MAX);
        self.source_failures += 1;
        self.phase = Phase::Retrying {
            at: now + delay,
            reason: format!("{reason}; retrying in {} s", delay.as_secs()),
        };
    }

    fn encoder_failed(&mut self, reason: &str, out: &mut Vec<Effect>) {
        let failed = self.current_plan().map(|p| p.profile.clone()).unwrap_or_default();
        self.stop(out);
        self.encoder_index += 1;
        self.encoder_fallbacks += 1;
        if self.current_plan().is_some() {
            self.fallback_reason = Some(format!("fell back from {failed}: {reason}"));
        }
        self.start_or_fail(out, || format!("every usable encoder failed; last: {failed}: {reason}"));
    }

    fn tick(&mut self, now: Instant, health: Option<Health>, out: &mut Vec<Effect>) {
        let timeout = self.policy.negotiation_timeout;
        let overdue: Vec<ConnId> = self
            .viewers
            .iter()
            .filter(|(_, v)| v.negotiating_since.is_some_and(|t| now.duration_since(t) >= timeout))
            .map(|(conn, _)| *conn)
            .collect();
        for conn in overdue {
            let error = CameraError::NegotiationTimeout(timeout.as_secs());
            if self.push.as_ref().is_some_and(|p| p.conn == conn) {
                self.drop_viewer(now, conn, error, out);
            } else {
                out.push(Effect::Notify { conn, error });
                self.leave(now, conn, out);
            }
        }
        self.tick_push(now, out);
        if let Some(health) = health.filter(|_| self.is_streaming()) {
            self.encoded_any |= health.encoded_frames > 0;
            if health.source_silence > SOURCE_SILENCE_LIMIT {
                let reason = format!("source delivered no frames for {} s", SOURCE_SILENCE_LIMIT.as_secs());
                self.source_failed(now, &reason, out);
            }
        }
        if matches!(self.phase, Phase::Retrying { at, .. } if now >= at) {
            self.start_or_fail(out, || "no usable encoder for this camera".into());
        }
        self.snapshot_idle(now, out);
    }

    /// Ends a connected push whose server went silent; starts the next session once a retry is due.
    fn tick_push(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let Some(push) = &self.push else { return };
        let conn = push.conn;
        if self.connected(conn) && now.duration_since(push.heard.1) >= PUSH_SILENCE_LIMIT {
            let error = CameraError::ViewerFailed(format!(
                "no RTCP from the media server for {} s (restarted or gone)",
                PUSH_SILENCE_LIMIT.as_secs()
            ));
            return self.drop_viewer(now, conn, error, out);
        }
        if push.retry_at.is_some_and(|at| now >= at) && !self.viewers.contains_key(&conn) {
            if let Some(push) = self.push.as_mut() {
                push.retry_at = None;
            }
            self.add_viewer(conn, Codec::H264, None);
            self.serve(now, conn, out);
        }
    }

    /// The push's state for the card and the API; None for a camera that pushes nowhere.
    pub fn push_status(&self, now: Instant) -> Option<PushStatus> {
        let push = self.push.as_ref()?;
        let viewer = self.viewers.get(&push.conn);
        let state = match (push.retry_at, viewer) {
            (Some(_), _) => PushState::Retrying,
            (None, Some(v)) if v.branch.is_some() && v.negotiating_since.is_none() => PushState::Connected,
            (None, Some(v)) if v.branch.is_some() => PushState::Connecting,
            _ => PushState::Waiting,
        };
        Some(PushStatus {
            state,
            last_error: push.last_error.clone(),
            retry_in: push.retry_at.map(|at| at.saturating_duration_since(now)),
        })
    }

    /// Applies the bitrate policy (`bitrate::decide`) to the latest link reports: each encoding's
    /// bitrate, and which H.264 viewers watch the low tier.
    fn adapt(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let Some(setup) = self.setup.as_ref().filter(|_| self.is_streaming()) else {
            return;
        };
        let limits = setup.limits;
        let h264 = self.h264_links();
        let running = self.rates.len();
        let low_allowed =
            setup.low_tier.is_some() && (self.rates.contains_key(&EncodingKey::LOW) || running < setup.max_encodings);
        let decision = bitrate::decide(&h264, limits, low_allowed);

        for (conn, tier) in &decision.tiers {
            let Some(viewer) = self.viewers.get_mut(conn) else {
                continue;
            };
            let settled = viewer.moved_at.map_or(true, |t| now.duration_since(t) >= TIER_HOLD);
            if viewer.encoding.tier == *tier || !settled {
                continue;
            }
            // A viewer changes tier with a new session on the other encoding (a new offer; pages and
            // the original protocol both take one at any time).
            let from = viewer.encoding;
            viewer.encoding.tier = *tier;
            viewer.moved_at = Some(now);
            out.push(Effect::ChangeTier {
                conn: *conn,
                to: *tier,
                capacity_kbps: viewer.report.map_or(limits.ceiling_kbps, |r| r.capacity_kbps()),
                best_kbps: decision.best_kbps,
            });
            out.push(Effect::Detach { conn: *conn });
            self.attach(now, *conn, out);
            self.stop_unwatched(from, out);
        }
        // Rates for where the viewers are now (a viewer held in its tier counts there).
        let (main_kbps, low_kbps) = bitrate::rates(&self.h264_links(), limits);
        for (encoding, kbps) in [(EncodingKey::MAIN, Some(main_kbps)), (EncodingKey::LOW, low_kbps)] {
            let Some(kbps) = kbps else { continue };
            let current = self.rates.get(&encoding).copied();
            if current.map_or(true, |c| bitrate::worth_changing(c, kbps)) {
                self.rates.insert(encoding, kbps);
                out.push(Effect::SetBitrate { encoding, kbps });
            }
        }
        self.adapt_vp8(out);
    }

    /// Each streaming H.264 viewer's tier and latest report, as the policy takes them.
    fn h264_links(&self) -> BTreeMap<ConnId, (Tier, Option<LinkReport>)> {
        self.viewers
            .iter()
            .filter(|(_, v)| v.encoding.codec == Codec::H264 && v.branch.is_some())
            .map(|(conn, v)| (*conn, (v.encoding.tier, v.report)))
            .collect()
    }

    /// VP8 viewers have their encoding to themselves: it follows the weakest of them.
    fn adapt_vp8(&mut self, out: &mut Vec<Effect>) {
        let Some(limits) = self.setup.as_ref().map(|s| s.limits) else {
            return;
        };
        let weakest = self
            .viewers
            .values()
            .filter(|v| v.encoding == EncodingKey::VP8)
            .filter_map(|v| v.report.map(|r| r.capacity_kbps()))
            .min();
        if let Some(kbps) = weakest.map(|k| k.clamp(limits.floor_kbps, limits.ceiling_kbps)) {
            let current = self
                .rates
                .get(&EncodingKey::VP8)
                .copied()
                .unwrap_or(limits.ceiling_kbps);
            if bitrate::worth_changing(current, kbps) {
                self.rates.insert(EncodingKey::VP8, kbps);
                out.push(Effect::SetBitrate {
                    encoding: EncodingKey::VP8,
                    kbps,
                });
            }
        }
    }

    /// The bitrate each running encoding was last told, for the card and the API.
    pub fn rates(&self) -> &BTreeMap<EncodingKey, u32> {
        &self.rates
    }

    /// Encoder fallbacks and source failures since the camera appeared (for the metrics).
    pub fn failures(&self) -> (u64, u64) {
        (self.encoder_fallbacks, self.source_failures_total)
    }

    /// Whether a viewer's session is up (ICE and DTLS done).
    pub fn connected(&self, conn: ConnId) -> bool {
        self.viewers
            .get(&conn)
            .is_some_and(|v| v.branch.is_some() && v.negotiating_since.is_none())
    }

    /// The FEC redundancy a viewer's branch was last given.
    pub fn fec_percent(&self, conn: ConnId) -> u32 {
        self.viewers.get(&conn).map_or(0, |v| v.fec.percent())
    }

    /// A viewer's tier and latest link report, for the API.
    pub fn link_of(&self, conn: ConnId) -> Option<(Tier, Option<LinkReport>)> {
        self.viewers.get(&conn).map(|v| (v.encoding.tier, v.report))
    }

    /// Starts the pipeline with the current encoder, or fails the camera if none is left.
    fn start_or_fail(&mut self, out: &mut Vec<Effect>, why_failed: impl FnOnce() -> String) {
        if self.current_plan().is_some() {
            self.phase = Phase::Starting;
            out.push(Effect::StartPipeline {
                encoder: self.encoder_index,
            });
        } else {
            self.phase = Phase::Failed(why_failed());
        }
    }

    /// Stops a pipeline that runs (or is starting); branches go with it, viewers stay and wait for the
    /// next one, except those that brought their own offer and had it answered (or being answered) by
    /// a branch now gone: nothing can carry a new answer to them, so they are told and dropped.
    fn stop(&mut self, out: &mut Vec<Effect>) {
        self.rates.clear();
        // The snapshot branch goes with the pipeline; a later request (or start) attaches a new one.
        self.snapshot_attached = false;
        if matches!(self.phase, Phase::Streaming { .. } | Phase::Starting) {
            out.push(Effect::StopPipeline);
        }
        let answered: Vec<ConnId> = self
            .viewers
            .iter()
            .filter(|(_, v)| v.offer.is_some() && v.branch.is_some())
            .map(|(conn, _)| *conn)
            .collect();
        for conn in answered {
            self.viewers.remove(&conn);
            out.push(Effect::Notify {
                conn,
                error: CameraError::ViewerFailed("the camera's stream stopped; connect again".into()),
            });
        }
        for viewer in self.viewers.values_mut() {
            viewer.branch = None;
            viewer.negotiating_since = None;
        }
    }

    pub fn setup(&self) -> Option<&Setup> {
        self.setup.as_ref()
    }

    pub fn current_plan(&self) -> Option<&EncoderPlan> {
        self.setup.as_ref().and_then(|s| s.encoders.get(self.encoder_index))
    }

    /// The branch a viewer has now, for its answer and candidates.
    pub fn branch_of(&self, conn: ConnId, what: &'static str) -> Result<BranchId, CameraError> {
        let viewer = self.viewers.get(&conn).ok_or(CameraError::NoSuchViewer(what))?;
        viewer.branch.ok_or(CameraError::NotStreaming)
    }

    pub fn viewers(&self) -> usize {
        self.viewers.len()
    }

    /// The encoding a viewer watches.
    pub fn encoding_of(&self, conn: ConnId) -> Option<EncodingKey> {
        self.viewers.get(&conn).map(|v| v.encoding)
    }

    /// Whether the camera may be forgotten: only once its device is gone (unplugged, no setup), so
    /// forgetting never stops a stream; a device that returns later gets a new card.
    pub fn forgettable(&self, id: &str) -> Result<(), CameraError> {
        match (&self.phase, &self.setup) {
            (Phase::Offline(_), None) => Ok(()),
            _ => Err(CameraError::NotGone(id.to_string())),
        }
    }

    /// The state and its reason, as the card shows them.
    pub fn state(&self) -> (CameraState, Option<String>) {
        match &self.phase {
            Phase::Offline(why) => (CameraState::Offline, why.clone()),
            Phase::Idle => (CameraState::Idle, None),
            Phase::Starting => (CameraState::Starting, None),
            Phase::Streaming { reason } => (CameraState::Streaming, Some(reason.clone())),
            Phase::Retrying { reason, .. } => (CameraState::Offline, Some(reason.clone())),
            Phase::Failed(why) => (CameraState::Failed, Some(why.clone())),
        }
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;

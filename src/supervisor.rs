//! Owns the cameras: turns config entries and device events into camera actors, decides each
//! camera's mode and encoders, and keeps systemd informed (readiness, watchdog, status).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, info_span, warn};

use crate::camera::{self, CameraHandle, CameraState, Command, Identity, Limits, Setup, Shared};
use crate::config::{CameraConfig, Config, Selector, TestPattern};
use crate::devices::caps::{CaptureMode, PixelFormat};
use crate::devices::mode::{choose_mode, Wanted};
use crate::devices::watch::{Camera as Device, DeviceEvent};
use crate::encoders::{Catalog, Codec, EncodeSettings, Profile};
use crate::media::{EncoderPlan, SourceSpec};
use crate::service::Service;

/// Keyframe interval in seconds: short enough that a lost packet heals quickly, long enough that
/// keyframes don't eat the bitrate. New viewers get one on demand anyway.
const GOP_SECONDS: u32 = 2;

/// How long stopping may wait for every camera's pipeline to reach NULL: each is bounded by its own
/// detach wait and state-change timeout (2 s + 5 s), and systemd's stop timeout is 90 s.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Supervisor {
    config: Config,
    shared: Shared,
    catalog: Arc<Catalog>,
    cameras: HashMap<String, CameraHandle>,
    /// Camera id given to each device id seen, so a remove (which carries little) finds its camera.
    device_cameras: HashMap<String, String>,
}

impl Supervisor {
    pub fn new(config: Config, shared: Shared, catalog: Arc<Catalog>) -> Self {
        Self {
            config,
            shared,
            catalog,
            cameras: HashMap::new(),
            device_cameras: HashMap::new(),
        }
    }

    /// Runs until `shutdown` resolves. `devices` is None when discovery is off or udev is unavailable;
    /// readiness is then declared right away.
    pub async fn run(
        mut self,
        demo: u32,
        mut devices: Option<mpsc::Receiver<DeviceEvent>>,
        service: Service,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        self.start_test_cameras(demo);
        if devices.is_none() {
            service.ready();
        }
        let mut watchdog = tokio::time::interval(service.watchdog_interval().unwrap_or(Duration::from_secs(5)));
        #[cfg(feature = "fault-injection")]
        let mut hang =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()).expect("SIGUSR2 handler");
        tokio::pin!(shutdown);
        loop {
            #[cfg(feature = "fault-injection")]
            let hang_requested = hang.recv();
            #[cfg(not(feature = "fault-injection"))]
            let hang_requested = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = &mut shutdown => break,
                event = next_event(&mut devices) => match event {
                    Some(DeviceEvent::Added(device)) => self.device_added(device).await,
                    Some(DeviceEvent::Removed { id, devnode }) => self.device_removed(&id, &devnode.display().to_string()).await,
                    Some(DeviceEvent::Skipped(report)) => info!(node = %report.devnode.display(), reason = %report.summary(), "not a camera"),
                    Some(DeviceEvent::InitialScanDone) => {
                        info!(cameras = self.cameras.len(), "initial device scan done");
                        service.ready();
                    }
                    None => {
                        warn!("device watcher stopped; no more hot-plug");
                        devices = None;
                        service.ready();
                    }
                },
                _ = watchdog.tick() => {
                    // Pinged from this loop on purpose: a wedged supervisor stops the pings and systemd restarts us.
                    service.watchdog();
                    service.status(&self.status_line());
                }
                _ = hang_requested => {
                    warn!("fault injection: supervisor hangs now");
                    loop { std::thread::park(); }
                }
            }
        }
        info!("shutting down cameras");
        service.stopping();
        // Every camera stops at once; each answers when its pipeline and branches are in NULL.
        let stopping = futures_util::future::join_all(self.cameras.values().map(|h| h.shut_down()));
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, stopping).await.is_err() {
            warn!(
                "cameras still stopping after {} s; exiting anyway",
                SHUTDOWN_TIMEOUT.as_secs()
            );
        }
    }

    fn status_line(&self) -> String {
        let infos = self.shared.registry.infos();
        let streaming = infos.iter().filter(|i| i.state == CameraState::Streaming).count();
        let viewers: usize = infos.iter().map(|i| i.viewers).sum();
        format!("{streaming} cameras streaming, {viewers} viewers")
    }

    fn start_test_cameras(&mut self, demo: u32) {
        let configured = self.config.cameras.iter().filter_map(|(id, c)| match c.selector {
            Some(Selector::TestPattern(p)) if c.enabled => Some((id.to_string(), c.clone(), p)),
            _ => None,
        });
        let demos = (1..=demo).map(|n| {
            let pattern = TestPattern::DEMO_CYCLE[(n as usize - 1) % TestPattern::DEMO_CYCLE.len()];
            let config = CameraConfig::test_pattern(pattern, format!("Demo {n}"));
            (format!("demo{n}"), config, pattern)
        });
        let all: Vec<_> = configured.chain(demos).collect();
        for (id, config, pattern) in all {
            let name = config.name.clone().unwrap_or_else(|| id.clone());
            let (width, height, fps) = self.wanted(Some(&config));
            let source = SourceSpec::Test {
                pattern: pattern.gst_nick(),
                ball: pattern.draws_ball(),
                label: name.clone(),
                width,
                height,
                fps,
                time_code: pattern.stamps_time(),
            };
            let mode = format!("I420 {width}x{height}@{fps}");
            let identity = Identity {
                id: id.clone(),
                name,
                kind: "test",
                device: None,
            };
            self.start(identity, source, &PixelFormat::I420, Some(&config), &mode);
        }
    }

    async fn device_added(&mut self, device: Device) {
        let span = info_span!("camera", id = %device.id);
        let _enter = span.enter();
        let (id, config) = self.resolve(&device);
        if config.is_some_and(|c| !c.enabled) {
            info!(device = %device.devnode.display(), "disabled in the config; not streamed");
            return;
        }
        if config.is_none() && !self.config.discovery {
            info!(device = %device.devnode.display(), "not in the config and discovery is off; not streamed");
            return;
        }
        let config = config.cloned();
        let (width, height, fps) = self.wanted(config.as_ref());
        let Some(mode) = choose_mode(&device.formats, &Wanted { width, height, fps }, device.bus) else {
            warn!(device = %device.devnode.display(), "no usable capture mode");
            return;
        };
        info!(device = %device.devnode.display(), %mode, camera = %id, "camera plugged in");
        self.device_cameras.insert(device.id.clone(), id.clone());
        let identity = Identity {
            id,
            name: config
                .as_ref()
                .and_then(|c| c.name.clone())
                .unwrap_or(device.name.clone()),
            kind: "v4l2",
            device: Some(device.devnode.display().to_string()),
        };
        let source = SourceSpec::V4l2 {
            device: device.devnode.clone(),
            mode: mode.clone(),
        };
        self.start(identity, source, &mode.format, config.as_ref(), &mode.to_string());
    }

    async fn device_removed(&mut self, device_id: &str, devnode: &str) {
        let Some(id) = self.device_cameras.remove(device_id) else {
            return;
        };
        info!(camera = %id, device = devnode, "camera unplugged");
        if let Some(handle) = self.cameras.get(&id) {
            handle.send(Command::Offline).await;
        }
    }

    /// The config entry a device matches (by device path or link, serial, by-path, or its own id),
    /// and the camera id it gets.
    fn resolve(&self, device: &Device) -> (String, Option<&CameraConfig>) {
        let matches = |selector: &Selector| match selector {
            Selector::Device(path) => &device.devnode == path || device.links.iter().any(|l| l == path),
            Selector::Serial(serial) => device.serial.as_deref() == Some(serial.as_str()),
            Selector::Path(p) => device.links.iter().any(|l| {
                l.starts_with("/dev/v4l/by-path")
                    && l.file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with(p.as_str()))
            }),
            Selector::TestPattern(_) => false,
        };
        self.config
            .cameras
            .iter()
            .find(|(id, c)| match &c.selector {
                Some(selector) => matches(selector),
                None => id.as_str() == device.id,
            })
            .map(|(id, c)| (id.to_string(), Some(c)))
            .unwrap_or_else(|| (device.id.clone(), None))
    }

    fn wanted(&self, config: Option<&CameraConfig>) -> (u32, u32, u32) {
        let d = &self.config.defaults;
        (
            config.and_then(|c| c.width).unwrap_or(d.width).0,
            config.and_then(|c| c.height).unwrap_or(d.height).0,
            config.and_then(|c| c.fps).unwrap_or(d.fps).0,
        )
    }

    fn start(
        &mut self,
        identity: Identity,
        source: SourceSpec,
        input: &PixelFormat,
        config: Option<&CameraConfig>,
        mode: &str,
    ) {
        let bitrate_kbps = config.and_then(|c| c.bitrate).unwrap_or(self.config.defaults.bitrate).0;
        let (width, height, fps) = match &source {
            SourceSpec::Test { width, height, fps, .. } => (*width, *height, *fps),
            SourceSpec::V4l2 {
                mode: CaptureMode { width, height, fps, .. },
                ..
            } => (*width, *height, fps.as_f64().round().max(1.0) as u32),
        };
        let settings = EncodeSettings {
            bitrate_kbps,
            fps,
            gop: fps * GOP_SECONDS,
            width,
            height,
        };
        let forced = config
            .and_then(|c| c.profile.as_deref())
            .or(self.config.defaults.profile.as_deref());
        let plan = |p: &&Profile| EncoderPlan {
            profile: p.name().to_string(),
            fragment: p.render(&settings),
            raw_input: p.raw_input_for(input).map(str::to_string),
            codec: p.codec(),
            bitrate: p.bitrate_control().cloned(),
            size: None,
        };
        let encoders: Vec<EncoderPlan> = self
            .catalog
            .candidates(input, Codec::H264, forced)
            .iter()
            .map(plan)
            .collect();
        let encoder_reason = match (forced, encoders.first()) {
            (Some(f), Some(first)) if first.profile == f => format!("{f}: forced by the config"),
            (Some(f), Some(first)) => format!("{}: forced profile {f} is not usable here", first.profile),
            (None, Some(first)) => format!(
                "{}: highest-priority usable profile for {}",
                first.profile,
                input.fourcc()
            ),
            (_, None) => "no usable encoder".into(),
        };
        info!(camera = %identity.id, mode, encoders = ?encoders.iter().map(|e| &e.profile).collect::<Vec<_>>(), %encoder_reason, "camera set up");
        let vp8 = self.catalog.candidates(input, Codec::Vp8, None).first().map(plan);
        let limits = Limits::for_ceiling(bitrate_kbps);
        // The low tier: a quarter of the pixels at the low ceiling, from the best encoder that takes raw
        // pictures (a passthrough camera has none to scale).
        let low = EncodeSettings {
            bitrate_kbps: limits.low_ceiling_kbps,
            width: even(width / 2),
            height: even(height / 2),
            ..settings
        };
        let low_tier = encoders.iter().position(|e| e.raw_input.is_some()).map(|i| {
            let profile = &self.catalog.candidates(input, Codec::H264, forced)[i];
            EncoderPlan {
                fragment: profile.render(&low),
                size: Some((low.width, low.height)),
                ..encoders[i].clone()
            }
        });
        let setup = Setup {
            source,
            encoders,
            encoder_reason,
            vp8,
            low_tier,
            limits,
        };
        let handle = match self.cameras.get(&identity.id) {
            Some(handle) => handle.clone(),
            None => {
                let handle = camera::spawn(identity.clone(), self.shared.clone());
                self.cameras.insert(identity.id.clone(), handle.clone());
                handle
            }
        };
        if !handle.try_send(Command::Online(Box::new(setup))) {
            warn!(camera = %identity.id, "camera queue full; setup dropped");
        }
    }
}

/// Raw video sizes must be even in both directions for I420/NV12.
fn even(n: u32) -> u32 {
    (n & !1).max(2)
}

async fn next_event(devices: &mut Option<mpsc::Receiver<DeviceEvent>>) -> Option<DeviceEvent> {
    match devices {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

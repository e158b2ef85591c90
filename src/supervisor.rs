//! Owns the cameras: turns config entries and device events into camera actors, each set up with
//! the planner's answer (mode, encoders, why), and keeps systemd informed (readiness, watchdog, status).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, info_span, warn};

use crate::camera::{self, CameraHandle, CameraState, Command, Identity, Remembered, Setup, Shared};
use crate::config::{CameraConfig, Config, Selector, TestPattern};
use crate::devices::{Camera as Device, DeviceEvent};
use crate::encoders::Catalog;
use crate::planner::{self, DeviceKeys, NotStreamed, Plan, Source};
use crate::push::Pusher;
use crate::service::Service;

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
    /// Each pushing camera's WHIP client; it outlives unplugs, like the camera's card.
    pushers: HashMap<String, Pusher>,
    /// Cameras whose device is gone, oldest first, bounded (`camera::MAX_REMEMBERED_OFFLINE`).
    remembered: Remembered,
}

impl Supervisor {
    pub fn new(config: Config, shared: Shared, catalog: Arc<Catalog>) -> Self {
        Self {
            config,
            shared,
            catalog,
            cameras: HashMap::new(),
            device_cameras: HashMap::new(),
            pushers: HashMap::new(),
            remembered: Remembered::default(),
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
                    Some(DeviceEvent::Skipped(report)) => info!(node = %report.devnode.display(), reason = report.why.as_deref().unwrap_or(""), "not a camera"),
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
        // After the cameras: their push sessions are DELETEd once nothing is sent on them any more.
        futures_util::future::join_all(self.pushers.into_values().map(Pusher::stop)).await;
    }

    fn status_line(&self) -> String {
        let infos = self.shared.registry.infos();
        let streaming = infos.iter().filter(|i| i.state == CameraState::Streaming).count();
        let viewers: usize = infos.iter().map(|i| i.viewers).sum();
        format!("{streaming} cameras streaming, {viewers} viewers")
    }

    fn start_test_cameras(&mut self, demo: u32) {
        let configured = self.config.cameras.iter().filter_map(|(id, c)| match c.selector {
            Some(Selector::TestPattern(p)) => Some((id.to_string(), c.clone(), p)),
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
            let source = Source::Test { pattern, label: &name };
            match planner::plan(&self.config, Some(&config), source, &self.catalog) {
                Ok(plan) => {
                    let identity = Identity {
                        id,
                        name,
                        kind: "test",
                        device: None,
                    };
                    self.start(identity, plan);
                }
                Err(e) => info!(camera = %id, "{e}; not streamed"),
            }
        }
    }

    async fn device_added(&mut self, device: Device) {
        let span = info_span!("camera", id = %device.id);
        let _enter = span.enter();
        let keys = DeviceKeys {
            id: &device.id,
            devnode: &device.devnode,
            links: &device.links,
            serial: device.serial.as_deref(),
        };
        let (id, config) = planner::config_entry(&self.config, keys);
        let source = Source::Device {
            devnode: &device.devnode,
            formats: &device.formats,
            bus: device.bus,
        };
        let plan = match planner::plan(&self.config, config, source, &self.catalog) {
            Ok(plan) => plan,
            Err(e @ NotStreamed::NoUsableMode) => {
                warn!(device = %device.devnode.display(), "{e}; not streamed");
                return;
            }
            Err(e) => {
                info!(device = %device.devnode.display(), "{e}; not streamed");
                return;
            }
        };
        info!(device = %device.devnode.display(), mode = %plan.source, camera = %id, "camera plugged in");
        self.device_cameras.insert(device.id.clone(), id.clone());
        let identity = Identity {
            id,
            name: config.and_then(|c| c.name.clone()).unwrap_or(device.name.clone()),
            kind: "v4l2",
            device: Some(device.devnode.display().to_string()),
        };
        self.start(identity, plan);
    }

    async fn device_removed(&mut self, device_id: &str, devnode: &str) {
        let Some(id) = self.device_cameras.remove(device_id) else {
            return;
        };
        info!(camera = %id, device = devnode, "camera unplugged");
        if let Some(handle) = self.cameras.get(&id) {
            handle.send(Command::Offline).await;
        }
        // Cameras forgotten through the API no longer count against the bound.
        let forgotten: Vec<String> = self
            .cameras
            .values()
            .filter(|h| h.is_gone())
            .map(|h| h.id.clone())
            .collect();
        for gone in &forgotten {
            self.cameras.remove(gone);
            self.remembered.drop_id(gone);
        }
        for oldest in self.remembered.went_offline(&id) {
            let Some(handle) = self.cameras.remove(&oldest) else {
                continue;
            };
            info!(camera = %oldest, limit = camera::MAX_REMEMBERED_OFFLINE, "forgetting the oldest unplugged camera");
            // Its Offline is queued before this, so it is gone by then; a reply is not waited for.
            tokio::spawn(async move {
                if let Err(e) = handle.forget().await {
                    warn!(camera = %handle.id, "could not forget it: {e}");
                }
            });
        }
    }

    fn start(&mut self, identity: Identity, plan: Plan) {
        info!(camera = %identity.id, mode = %plan.source, encoders = ?plan.encoders.iter().map(|e| &e.profile).collect::<Vec<_>>(), reason = %plan.reason, "camera set up");
        let mut setup = Setup {
            source: plan.source,
            encoders: plan.encoders,
            encoder_reason: plan.reason.to_string(),
            vp8: plan.vp8,
            low_tier: plan.low_tier,
            limits: plan.limits,
            max_encodings: plan.max_encodings,
            push: None,
        };
        self.remembered.drop_id(&identity.id);
        let handle = match self.cameras.get(&identity.id).filter(|h| !h.is_gone()) {
            Some(handle) => handle.clone(),
            None => {
                let handle = camera::spawn(identity.clone(), self.shared.clone());
                self.cameras.insert(identity.id.clone(), handle.clone());
                handle
            }
        };
        if let Some(target) = plan.push {
            if !self.pushers.contains_key(&identity.id) {
                match Pusher::spawn(handle.clone(), target) {
                    Ok(pusher) => {
                        self.pushers.insert(identity.id.clone(), pusher);
                    }
                    Err(e) => warn!(camera = %identity.id, error = %e, "not pushed"),
                }
            }
            setup.push = self.pushers.get(&identity.id).map(Pusher::port);
        }
        if !handle.try_send(Command::Online(Box::new(setup))) {
            warn!(camera = %identity.id, "camera queue full; setup dropped");
        }
    }
}

async fn next_event(devices: &mut Option<mpsc::Receiver<DeviceEvent>>) -> Option<DeviceEvent> {
    match devices {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

//! `GET /metrics`: what the cameras, their viewers and the process are doing, in the OpenMetrics text
//! format that Prometheus scrapes. Built afresh from the cameras' own state on every scrape (a
//! registry per request), so a camera or viewer that is gone is simply not listed and nothing
//! keeps a second copy of the numbers. The `api` permission reads it, and only the cameras the
//! principal may watch are listed.

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::auth::Principal;
use super::AppState;
use crate::camera::{CameraState, Transport, ViewerLink};

/// What Prometheus asks for first in its Accept header, and what the encoder writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CameraLabels {
    camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    camera: String,
    name: String,
    kind: String,
    encoder: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    camera: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    camera: String,
    transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EncodingLabels {
    camera: String,
    encoding: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewerLabels {
    camera: String,
    conn: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewerInfoLabels {
    camera: String,
    conn: String,
    transport: String,
    tier: String,
}

/// A viewer's link, in base units (bit/s, ratios, seconds), labelled by camera and connection.
const LINK_GAUGES: [(&str, &str); 5] = [
    (
        "viewer_estimate_bits_per_second",
        "The congestion controller's estimate of the viewer's path",
    ),
    (
        "viewer_sent_bits_per_second",
        "What was sent to the viewer over the last second",
    ),
    ("viewer_loss_ratio", "Share of packets the viewer reported lost (0-1)"),
    (
        "viewer_rtt_seconds",
        "Round-trip time to the viewer from its receiver reports",
    ),
    ("viewer_fec_ratio", "FEC redundancy the viewer gets (0: none)"),
];

/// `LINK_GAUGES`' values for one viewer; None for what it has not reported yet.
fn link_values(link: &ViewerLink) -> [Option<f64>; 5] {
    [
        link.estimate_kbps.map(|k| f64::from(k) * 1000.0),
        link.sent_kbps.map(|k| f64::from(k) * 1000.0),
        link.loss_percent.map(|p| p / 100.0),
        link.rtt_ms.map(|ms| f64::from(ms) / 1000.0),
        Some(f64::from(link.fec_percent) / 100.0),
    ]
}

fn gauges<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, FloatGauge>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, FloatGauge>::default();
    registry.register(name, help, family.clone());
    family
}

fn counters<L>(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>) -> Family<L, Counter>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
        None => registry.register(name, help, family.clone()),
    }
    family
}

pub(super) async fn metrics(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    if !principal.api {
        return super::api::forbidden(&principal);
    }
    let mut registry = Registry::default();
    cameras(registry.sub_registry_with_prefix("edgecam"), &state, &principal);
    process(&mut registry);
    let mut body = String::new();
    if let Err(e) = text::encode(&mut body, &registry) {
        tracing::warn!(error = %e, "encoding the metrics failed");
        return (StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed\n").into_response();
    }
    ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response()
}

fn cameras(registry: &mut Registry, state: &AppState, principal: &Principal) {
    let info = gauges::<InfoLabels>(
        registry,
        "camera_info",
        "A camera: its name, kind, encoder profile and capture mode (always 1)",
    );
    let states = gauges::<StateLabels>(
        registry,
        "camera_state",
        "1 for the state the camera is in, 0 for the others",
    );
    let viewers = gauges::<TransportLabels>(
        registry,
        "camera_viewers",
        "Viewers of the camera, by what carries their signalling",
    );
    let frames = counters::<CameraLabels>(
        registry,
        "camera_encoded_frames",
        "Frames out of the main encoder",
        None,
    );
    let bytes = counters::<CameraLabels>(
        registry,
        "camera_encoded",
        "Bytes out of the main encoder",
        Some(Unit::Bytes),
    );
    let fps = gauges::<CameraLabels>(
        registry,
        "camera_fps",
        "Frames per second out of the main encoder over the last second",
    );
    let bitrate = gauges::<CameraLabels>(
        registry,
        "camera_bitrate_bits_per_second",
        "Bits per second out of the main encoder over the last second",
    );
    let targets = gauges::<EncodingLabels>(
        registry,
        "camera_encoding_target_bits_per_second",
        "The bitrate each running encoding was last told",
    );
    let fallbacks = counters::<CameraLabels>(
        registry,
        "camera_encoder_fallbacks",
        "Moves to the next encoder profile",
        None,
    );
    let source_failures = counters::<CameraLabels>(
        registry,
        "camera_source_failures",
        "Times the camera's source failed or went silent",
        None,
    );
    let snapshot = gauges::<CameraLabels>(
        registry,
        "camera_snapshot_active",
        "1 while the camera's JPEG snapshot branch is attached",
    );
    let viewer_info = gauges::<ViewerInfoLabels>(
        registry,
        "viewer_info",
        "A connected viewer: its transport and tier (always 1)",
    );
    // In the order `link_values` gives them.
    let links: Vec<Family<ViewerLabels, FloatGauge>> = LINK_GAUGES
        .iter()
        .map(|(name, help)| gauges(registry, name, help))
        .collect();

    for camera_info in state.registry.infos() {
        let id = camera_info.id.clone();
        if !principal.watch.allows(&id) {
            continue;
        }
        let Some(handle) = state.registry.handle(&id) else {
            continue;
        };
        let stats = handle.stats();
        let camera = CameraLabels { camera: id.clone() };
        info.get_or_create(&InfoLabels {
            camera: id.clone(),
            name: camera_info.name.clone(),
            kind: camera_info.kind.clone(),
            encoder: camera_info.encoder.clone().unwrap_or_default(),
            mode: camera_info.mode.clone().unwrap_or_default(),
        })
        .set(1.0);
        for s in CameraState::ALL {
            let labels = StateLabels {
                camera: id.clone(),
                state: s.as_str().into(),
            };
            states
                .get_or_create(&labels)
                .set(f64::from(u8::from(s == camera_info.state)));
        }
        for t in Transport::ALL {
            let labels = TransportLabels {
                camera: id.clone(),
                transport: t.as_str().into(),
            };
            let n = stats.viewers.get(&t).copied().unwrap_or(0);
            viewers.get_or_create(&labels).set(n as f64);
        }
        frames.get_or_create(&camera).inc_by(stats.encoded_frames);
        bytes.get_or_create(&camera).inc_by(stats.encoded_bytes);
        fps.get_or_create(&camera).set(stats.fps);
        bitrate.get_or_create(&camera).set(stats.bitrate_bps as f64);
        fallbacks.get_or_create(&camera).inc_by(stats.encoder_fallbacks);
        source_failures.get_or_create(&camera).inc_by(stats.source_failures);
        snapshot
            .get_or_create(&camera)
            .set(f64::from(u8::from(stats.snapshot_active)));
        for (encoding, kbps) in &camera_info.encodings {
            let labels = EncodingLabels {
                camera: id.clone(),
                encoding: encoding.clone(),
            };
            targets.get_or_create(&labels).set(f64::from(*kbps) * 1000.0);
        }
        for link in handle.links() {
            let labels = ViewerLabels {
                camera: id.clone(),
                conn: link.conn.to_string(),
            };
            viewer_info
                .get_or_create(&ViewerInfoLabels {
                    camera: id.clone(),
                    conn: link.conn.to_string(),
                    transport: link.transport.as_str().into(),
                    tier: link.tier.clone(),
                })
                .set(1.0);
            for (family, value) in links.iter().zip(link_values(&link)) {
                if let Some(value) = value {
                    family.get_or_create(&labels).set(value);
                }
            }
        }
    }
    let websockets = Gauge::<i64>::default();
    websockets.set(state.sockets.open() as i64);
    registry.register("websockets", "Signalling websockets open", websockets);
    let whep = Gauge::<i64>::default();
    whep.set(state.whep.len() as i64);
    registry.register("whep_sessions", "WHEP sessions held", whep);
}

/// The process's own numbers under the names every Prometheus client library uses for them.
fn process(registry: &mut Registry) {
    let Ok(p) = ProcessStats::read() else {
        return; // not Linux, or /proc not mounted: nothing to say
    };
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    registry.register("process_threads", "OS threads of the daemon", gauge(p.threads));
    registry.register("process_open_fds", "Open file descriptors", gauge(p.open_fds));
    registry.register_with_unit(
        "process_resident_memory",
        "Resident memory size",
        Unit::Bytes,
        gauge(p.resident_bytes),
    );
    let cpu = Counter::<f64, AtomicU64>::default();
    cpu.inc_by(p.cpu_seconds);
    registry.register_with_unit("process_cpu", "User and system CPU time", Unit::Seconds, cpu);
}

/// Read from /proc/self, as `ps` and the benchmarks see the daemon.
#[derive(Debug)]
struct ProcessStats {
    threads: u64,
    open_fds: u64,
    resident_bytes: u64,
    cpu_seconds: f64,
}

impl ProcessStats {
    fn read() -> std::io::Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // The listing holds one descriptor of its own while it reads.
        let open_fds = std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1) as u64;
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        // Fields after the command name (which may hold spaces and parentheses): state is the first,
        // utime and stime the 12th and 13th (proc(5) fields 14 and 15), in clock ticks.
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ticks: u64 = after_name
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum();
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(Self {
            threads: field("Threads:"),
            open_fds,
            resident_bytes: field("VmRSS:") * 1024,
            cpu_seconds: ticks as f64 / per_second,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reads_its_own_threads_fds_memory_and_cpu() {
        // Other tests run beside this one and open and close threads and files, so only bounds that
        // hold whatever they do: this thread and the harness's; the five files held here and stdio.
        let files: Vec<_> = (0..5)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        let busy = std::time::Instant::now();
        while busy.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        let p = ProcessStats::read().unwrap();
        assert!(p.threads >= 2, "{p:?}");
        assert!(p.open_fds >= 8, "{p:?}");
        assert!(p.resident_bytes > 1024 * 1024, "{p:?}");
        assert!(p.cpu_seconds > 0.0, "{p:?}");
        drop(files);
    }
}

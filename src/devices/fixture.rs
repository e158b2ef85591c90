//! Test fixtures: real devices' `v4l2-ctl --info --list-formats-ext` and `udevadm info -q
//! property` output (tests/fixtures/devices/*.txt, each saying where it comes from), read back
//! into what the probe would have produced. Formats go through `FormatCaps::from_enumeration`,
//! the probe's own assembly, so stepwise expansion and interval handling are tested too.
//!
//! Layout: `# comment` lines; `=== /dev/videoN` starts a node; v4l2-ctl's lines as printed;
//! `E: KEY=VALUE` udev properties; `sysfs index: N` and `sysfs usb speed: N` for the attributes.
//! An `Interval:` line under a stepwise `Size:` applies to every size of the range.

use super::caps::{FormatCaps, Fraction, FrameIntervals, FrameSizes};
use super::classify::{classify, Querycap};
use super::identity::DeviceProps;
use super::node::Node;
use super::probe::NodeInfo;
use std::collections::HashMap;
use std::path::PathBuf;

pub struct FixtureNode {
    pub devnode: PathBuf,
    pub cap: Querycap,
    pub props: DeviceProps,
    pub formats: Vec<FormatCaps>,
}

impl FixtureNode {
    /// The node as discovery would see it, for ids, reports and cameras.
    pub fn node(&self) -> Node {
        Node {
            devnode: self.devnode.clone(),
            props: self.props.clone(),
            info: Ok(NodeInfo {
                devnode: self.devnode.clone(),
                driver: self.cap.driver.clone(),
                card: self.cap.card.clone(),
                bus_info: self.cap.bus_info.clone(),
                kind: classify(&self.cap, &self.formats),
                formats: self.formats.clone(),
            }),
        }
    }
}

/// All nodes of tests/fixtures/devices/`name`.txt.
pub fn load(name: &str) -> Vec<FixtureNode> {
    let path = format!("{}/tests/fixtures/devices/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut nodes = Vec::new();
    let mut current: Option<Parser> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(devnode) = line.strip_prefix("=== ") {
            nodes.extend(current.take().map(Parser::finish));
            let devnode = devnode.split_whitespace().next().unwrap_or(devnode);
            current = Some(Parser::new(devnode));
        } else if let Some(p) = current.as_mut() {
            p.line(line.trim());
        }
    }
    nodes.extend(current.map(Parser::finish));
    assert!(!nodes.is_empty(), "{path}: no nodes");
    nodes
}

/// The one node of a fixture file, by its devnode.
pub fn node(name: &str, devnode: &str) -> FixtureNode {
    load(name)
        .into_iter()
        .find(|n| n.devnode == std::path::Path::new(devnode))
        .unwrap_or_else(|| panic!("{name}: no {devnode}"))
}

struct RawFormat {
    fourcc: String,
    description: String,
    discrete: Vec<((u32, u32), Option<FrameIntervals>)>,
    stepwise: Option<(FrameSizes, Option<FrameIntervals>)>,
}

struct Parser {
    devnode: PathBuf,
    cap: Querycap,
    udev: HashMap<String, String>,
    index: Option<u32>,
    usb_speed: Option<String>,
    formats: Vec<RawFormat>,
}

impl Parser {
    fn new(devnode: &str) -> Self {
        Self {
            devnode: devnode.into(),
            cap: Querycap::default(),
            udev: HashMap::new(),
            index: None,
            usb_speed: None,
            formats: Vec::new(),
        }
    }

    fn line(&mut self, line: &str) {
        let field = |name: &str| {
            line.strip_prefix(name)
                .map(|rest| rest.trim_start().trim_start_matches(':').trim().to_string())
        };
        let hex = |v: String| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok();
        // v4l2-ctl prints "Driver name" again under "Media Driver Info": the first one is QUERYCAP's
        if let (Some(v), true) = (field("Driver name"), self.cap.driver.is_empty()) {
            self.cap.driver = v;
        } else if let (Some(v), true) = (field("Card type"), self.cap.card.is_empty()) {
            self.cap.card = v;
        } else if let (Some(v), true) = (field("Bus info"), self.cap.bus_info.is_empty()) {
            self.cap.bus_info = v;
        } else if let Some(v) = field("Capabilities").filter(|v| v.starts_with("0x")) {
            self.cap.capabilities = hex(v).expect("capabilities hex");
        } else if let Some(v) = field("Device Caps") {
            self.cap.device_caps = hex(v).expect("device caps hex");
        } else if let Some(kv) = line.strip_prefix("E: ") {
            let (k, v) = kv.split_once('=').expect("E: KEY=VALUE");
            self.udev.insert(k.to_string(), v.to_string());
        } else if let Some(v) = field("sysfs index") {
            self.index = v.parse().ok();
        } else if let Some(v) = field("sysfs usb speed") {
            self.usb_speed = Some(v);
        } else if line.starts_with('[') && line.contains("]: '") {
            let mut quoted = line.split('\'');
            let fourcc = quoted.nth(1).expect("fourcc").to_string();
            let description = line
                .split_once(" (")
                .map(|(_, d)| d.trim_end_matches(')'))
                .unwrap_or("");
            // v4l2-ctl appends flags: "(Motion-JPEG, compressed)"
            let description = description.split(", ").next().unwrap_or("").to_string();
            self.formats.push(RawFormat {
                fourcc,
                description,
                discrete: Vec::new(),
                stepwise: None,
            });
        } else if let Some(size) = line.strip_prefix("Size: ") {
            let format = self.formats.last_mut().expect("size before format");
            if let Some(d) = size.strip_prefix("Discrete ") {
                format.discrete.push((dims(d), None));
            } else {
                // "Stepwise 32x32 - 2592x1944 with step 2/2" or "Continuous 16x16 - 1920x1080"
                let words: Vec<&str> = size.split_whitespace().collect();
                let (min_w, min_h) = dims(words[1]);
                let (max_w, max_h) = dims(words[3]);
                let (step_w, step_h) = words
                    .get(6)
                    .and_then(|s| s.split_once('/'))
                    .map_or((1, 1), |(w, h)| (num(w), num(h)));
                format.stepwise = Some((
                    FrameSizes::Stepwise {
                        min_w,
                        max_w,
                        step_w,
                        min_h,
                        max_h,
                        step_h,
                    },
                    None,
                ));
            }
        } else if let Some(interval) = line.strip_prefix("Interval: ") {
            let format = self.formats.last_mut().expect("interval before format");
            let slot = match (&mut format.stepwise, format.discrete.last_mut()) {
                (Some((_, slot)), _) => slot,
                (None, Some((_, slot))) => slot,
                (None, None) => panic!("interval before size"),
            };
            let fps = interval.rsplit_once('(').expect("(N fps)").1.trim_end_matches(" fps)");
            match (fps.split_once('-'), slot) {
                (None, Some(FrameIntervals::Discrete(list))) => list.push(interval_of(fps)),
                (None, slot) => *slot = Some(FrameIntervals::Discrete(vec![interval_of(fps)])),
                (Some((slowest, fastest)), slot) => {
                    *slot = Some(FrameIntervals::Stepwise {
                        min_interval: interval_of(fastest),
                        max_interval: interval_of(slowest),
                    })
                }
            }
        }
    }

    fn finish(self) -> FixtureNode {
        let prop = |k: &str| self.udev.get(k).cloned();
        let props = DeviceProps {
            sysname: self
                .devnode
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            syspath: prop("DEVPATH")
                .map(|p| PathBuf::from(format!("/sys{p}")))
                .unwrap_or_default(),
            index: self.index,
            serial: prop("ID_SERIAL_SHORT"),
            id_bus: prop("ID_BUS"),
            id_path: prop("ID_PATH"),
            v4l_product: prop("ID_V4L_PRODUCT"),
            model: prop("ID_MODEL_ENC").map(|m| m.replace("\\x20", " ")),
            usb_speed: self.usb_speed.clone(),
            links: prop("DEVLINKS")
                .map(|l| l.split_whitespace().map(PathBuf::from).collect())
                .unwrap_or_default(),
        };
        // as the probe does: a node that does not capture by itself is not asked for formats
        let formats = if self.cap.capture_buffer_type().is_some() {
            self.formats.iter().map(assemble).collect()
        } else {
            Vec::new()
        };
        FixtureNode {
            devnode: self.devnode,
            cap: self.cap,
            props,
            formats,
        }
    }
}

fn assemble(raw: &RawFormat) -> FormatCaps {
    match &raw.stepwise {
        Some((sizes, intervals)) => {
            FormatCaps::from_enumeration(&raw.fourcc, &raw.description, sizes, |_, _| intervals.clone())
        }
        None => {
            let sizes = FrameSizes::Discrete(raw.discrete.iter().map(|(s, _)| *s).collect());
            FormatCaps::from_enumeration(&raw.fourcc, &raw.description, &sizes, |w, h| {
                raw.discrete
                    .iter()
                    .find(|(s, _)| *s == (w, h))
                    .and_then(|(_, i)| i.clone())
            })
        }
    }
}

fn dims(s: &str) -> (u32, u32) {
    let (w, h) = s.trim().split_once('x').unwrap_or_else(|| panic!("size {s}"));
    (num(w), num(h))
}

fn num(s: &str) -> u32 {
    s.trim().parse().unwrap_or_else(|_| panic!("number {s}"))
}

/// "12.500" fps -> the interval 2/25 s (v4l2-ctl prints rates with three decimals).
fn interval_of(fps: &str) -> Fraction {
    let millis: u32 = (fps.trim().parse::<f64>().unwrap_or_else(|_| panic!("fps {fps}")) * 1000.0).round() as u32;
    let (mut a, mut b) = (1000, millis);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    Fraction {
        num: 1000 / a,
        den: millis / a,
    }
}

/// The camera discovery would hand the supervisor for one fixture node (it must be a camera).
pub fn camera(name: &str, devnode: &str) -> super::Camera {
    let node = node(name, devnode).node();
    node.camera(node.id())
        .unwrap_or_else(|| panic!("{name}: {devnode} is not a camera"))
}

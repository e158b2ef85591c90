//! Which V4L2 nodes are cameras. A Raspberry Pi 4 has a dozen /dev/videoN and one of them at most
//! is a camera; a UVC webcam brings a metadata node beside its capture node. Pure: it works on
//! QUERYCAP's answer and the enumerated formats, so it is tested on fixtures from real devices.

use super::caps::FormatCaps;
use serde::{Deserialize, Serialize};
use std::fmt;
use v4l::capability::Flags;

/// QUERYCAP's answer for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Querycap {
    pub driver: String,
    pub card: String,
    pub bus_info: String,
    /// The whole device's capabilities (all its nodes together).
    pub capabilities: u32,
    /// This node's own capabilities; valid when `capabilities` has V4L2_CAP_DEVICE_CAPS.
    pub device_caps: u32,
}

impl Querycap {
    /// What this node can do. `capabilities` describes the whole device: a UVC camera's capture
    /// node says "metadata capture" there because its sibling node can, so only device_caps tells
    /// the nodes apart. Kernels before 3.3 have no device_caps; then the device is one node.
    pub fn node_caps(&self) -> Flags {
        let caps = Flags::from_bits_truncate(self.capabilities);
        if caps.contains(Flags::DEVICE_CAPS) {
            Flags::from_bits_truncate(self.device_caps)
        } else {
            caps
        }
    }

    /// Whether ENUM_FMT should be asked for capture formats, and with which buffer type: not
    /// for memory-to-memory nodes, whose capture side lists what they decode to.
    pub fn capture_buffer_type(&self) -> Option<CaptureBuffers> {
        let caps = self.node_caps();
        if is_mem_to_mem(caps) {
            None
        } else if caps.contains(Flags::VIDEO_CAPTURE) {
            Some(CaptureBuffers::SinglePlane)
        } else if caps.contains(Flags::VIDEO_CAPTURE_MPLANE) {
            Some(CaptureBuffers::MultiPlane)
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureBuffers {
    SinglePlane,
    MultiPlane,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "reason", rename_all = "snake_case")]
pub enum NodeKind {
    Camera,
    Skipped(SkipReason),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Metadata capture (UVC payload headers, sensor embedded data, ISP statistics).
    Metadata,
    /// A memory-to-memory device (codec, scaler, ISP): frames go in and come out, nothing is filmed.
    MemoryToMemory,
    /// Output only: a display, a UVC gadget's side of the wire, an ISP's input.
    OutputOnly,
    /// Touch sensors, radio, VBI or SDR nodes.
    NotVideo,
    /// A capture node of an ISP whose input is another node: it only has frames when something
    /// feeds that input, which is libcamera's job.
    IspCapture { driver: String },
    /// A CSI-2 receiver behind which a raw Bayer sensor sits (unicam): its format list names what
    /// the receiver could write, not what the sensor sends; libcamera drives it with the ISP.
    RawSensorReceiver { driver: String },
    /// Capture capability but ENUM_FMT lists nothing.
    NoCaptureFormats,
    /// Formats that edgecam's pipelines cannot take (Bayer, greyscale, depth, ...).
    NoUsableFormat { formats: Vec<String> },
    /// The node could not be opened or queried (gone, busy, no permission).
    ProbeFailed { error: String },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Metadata => f.write_str("metadata node"),
            Self::MemoryToMemory => f.write_str("memory-to-memory node (codec/scaler/ISP)"),
            Self::OutputOnly => f.write_str("output-only node"),
            Self::NotVideo => f.write_str("not a video capture node (touch/radio/VBI/SDR)"),
            Self::IspCapture { driver } => write!(f, "ISP output of {driver}: needs libcamera to feed it"),
            Self::RawSensorReceiver { driver } => {
                write!(f, "{driver}: raw sensor receiver, needs libcamera (ISP)")
            }
            Self::NoCaptureFormats => f.write_str("no capture formats"),
            Self::NoUsableFormat { formats } => write!(f, "no usable format ({})", formats.join(", ")),
            Self::ProbeFailed { error } => write!(f, "probe failed: {error}"),
        }
    }
}

/// Drivers whose capture nodes are ISP outputs fed from another node of the same driver.
/// By capabilities they look like cameras (bcm2835-isp's capture0 is plain VIDEO_CAPTURE with
/// YUYV up to 16384x16384), so only the driver name gives them away.
const ISP_DRIVERS: [&str; 3] = ["bcm2835-isp", "pispbe", "rkisp1"];

/// CSI-2 receivers in front of raw sensors (Pi 4 `unicam`, Pi 5 `rp1-cfe`): streaming them with
/// v4l2src gives Bayer at best, and their ENUM_FMT lists YUYV they cannot actually deliver.
const RAW_RECEIVER_DRIVERS: [&str; 2] = ["unicam", "rp1-cfe"];

/// Camera or not, and why not.
pub fn classify(cap: &Querycap, formats: &[FormatCaps]) -> NodeKind {
    let caps = cap.node_caps();
    let skip = |reason| NodeKind::Skipped(reason);
    if is_mem_to_mem(caps) {
        return skip(SkipReason::MemoryToMemory);
    }
    let capture = caps.intersects(Flags::VIDEO_CAPTURE | Flags::VIDEO_CAPTURE_MPLANE);
    let output = caps.intersects(Flags::VIDEO_OUTPUT | Flags::VIDEO_OUTPUT_MPLANE);
    if caps.contains(Flags::TOUCH) {
        return skip(SkipReason::NotVideo);
    }
    if !capture {
        return skip(if caps.contains(Flags::META_CAPTURE) {
            SkipReason::Metadata
        } else if output || caps.contains(Flags::META_OUTPUT) {
            SkipReason::OutputOnly
        } else {
            SkipReason::NotVideo
        });
    }
    if ISP_DRIVERS.contains(&cap.driver.as_str()) {
        return skip(SkipReason::IspCapture {
            driver: cap.driver.clone(),
        });
    }
    if RAW_RECEIVER_DRIVERS.contains(&cap.driver.as_str()) {
        return skip(SkipReason::RawSensorReceiver {
            driver: cap.driver.clone(),
        });
    }
    if formats.is_empty() {
        return skip(SkipReason::NoCaptureFormats);
    }
    if !formats.iter().any(FormatCaps::is_usable) {
        let formats = formats.iter().map(|f| f.format.fourcc().to_string()).collect();
        return skip(SkipReason::NoUsableFormat { formats });
    }
    NodeKind::Camera
}

/// Codecs and scalers say M2M; a few older drivers say capture and output on one node instead.
fn is_mem_to_mem(caps: Flags) -> bool {
    caps.intersects(Flags::VIDEO_M2M | Flags::VIDEO_M2M_MPLANE)
        || (caps.intersects(Flags::VIDEO_CAPTURE | Flags::VIDEO_CAPTURE_MPLANE)
            && caps.intersects(Flags::VIDEO_OUTPUT | Flags::VIDEO_OUTPUT_MPLANE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::fixture::{load, node};

    fn kind(fixture: &str, devnode: &str) -> NodeKind {
        let n = node(fixture, devnode);
        classify(&n.cap, &n.formats)
    }

    fn skipped(reason: SkipReason) -> NodeKind {
        NodeKind::Skipped(reason)
    }

    #[test]
    fn webcams_are_cameras() {
        assert_eq!(kind("logitech-c920", "/dev/video0"), NodeKind::Camera);
        assert_eq!(kind("kodak-pixpro-mjpeg-only", "/dev/video8"), NodeKind::Camera);
        assert_eq!(kind("cheap-mjpeg-yuyv-webcam", "/dev/video2"), NodeKind::Camera);
        assert_eq!(kind("pi-legacy-camera", "/dev/video0"), NodeKind::Camera);
        assert_eq!(kind("vivid", "/dev/video0"), NodeKind::Camera);
    }

    #[test]
    fn uvc_metadata_node_and_gadget_output_are_skipped() {
        assert_eq!(kind("usbcam-uvc-gadget", "/dev/video1"), NodeKind::Camera);
        assert_eq!(kind("usbcam-uvc-gadget", "/dev/video2"), skipped(SkipReason::Metadata));
        assert_eq!(
            kind("usbcam-uvc-gadget", "/dev/video0"),
            skipped(SkipReason::OutputOnly)
        );
    }

    #[test]
    fn device_caps_not_capabilities_decide() {
        // the metadata node's `capabilities` (0x84a00001) say Video Capture: that is its sibling
        let meta = node("usbcam-uvc-gadget", "/dev/video2");
        assert!(Flags::from_bits_truncate(meta.cap.capabilities).contains(Flags::VIDEO_CAPTURE));
        assert_eq!(meta.cap.capture_buffer_type(), None);
        // without DEVICE_CAPS (pre-3.3 kernels) the capabilities are the node's
        let old = Querycap {
            capabilities: 0x0400_0001,
            device_caps: 0,
            ..Querycap::default()
        };
        assert_eq!(old.capture_buffer_type(), Some(CaptureBuffers::SinglePlane));
    }

    #[test]
    fn raspberry_pi_4_has_no_v4l2src_camera() {
        let kinds: Vec<(String, NodeKind)> = load("raspberry-pi-4")
            .iter()
            .map(|n| (n.devnode.display().to_string(), classify(&n.cap, &n.formats)))
            .collect();
        let raw = || {
            skipped(SkipReason::RawSensorReceiver {
                driver: "unicam".into(),
            })
        };
        let isp = || {
            skipped(SkipReason::IspCapture {
                driver: "bcm2835-isp".into(),
            })
        };
        let m2m = || skipped(SkipReason::MemoryToMemory);
        let expected = [
            ("/dev/video0", raw()),
            ("/dev/video1", skipped(SkipReason::Metadata)),
            ("/dev/video10", m2m()),
            ("/dev/video11", m2m()),
            ("/dev/video12", m2m()),
            ("/dev/video13", skipped(SkipReason::OutputOnly)),
            ("/dev/video14", isp()),
            ("/dev/video15", isp()),
            ("/dev/video16", skipped(SkipReason::Metadata)),
            ("/dev/video18", m2m()),
            ("/dev/video19", m2m()),
            ("/dev/video31", m2m()),
        ];
        let expected: Vec<(String, NodeKind)> = expected.into_iter().map(|(d, k)| (d.to_string(), k)).collect();
        assert_eq!(kinds, expected);
    }

    #[test]
    fn codec_nodes_are_not_asked_for_formats() {
        let decoder = node("raspberry-pi-4", "/dev/video10");
        assert_eq!(decoder.cap.capture_buffer_type(), None);
        assert!(
            decoder.formats.is_empty(),
            "the decoder's capture formats are not a camera's"
        );
    }

    #[test]
    fn vivid_output_node_beside_capture_is_skipped() {
        assert_eq!(kind("vivid-capture-and-output", "/dev/video0"), NodeKind::Camera);
        assert_eq!(
            kind("vivid-capture-and-output", "/dev/video1"),
            skipped(SkipReason::OutputOnly)
        );
    }

    #[test]
    fn loopback_is_a_camera_only_while_a_producer_streams() {
        let nodes = load("v4l2loopback");
        let kinds: Vec<NodeKind> = nodes.iter().map(|n| classify(&n.cap, &n.formats)).collect();
        assert_eq!(
            kinds,
            [
                skipped(SkipReason::OutputOnly),
                skipped(SkipReason::OutputOnly),
                NodeKind::Camera
            ]
        );
    }

    #[test]
    fn capture_nodes_without_usable_formats_say_which_they_have() {
        let vivid = node("vivid", "/dev/video0");
        let bayer_and_grey: Vec<FormatCaps> = vivid
            .formats
            .iter()
            .filter(|f| ["GREY", "BA81"].contains(&f.format.fourcc()))
            .cloned()
            .collect();
        assert_eq!(
            classify(&vivid.cap, &bayer_and_grey),
            skipped(SkipReason::NoUsableFormat {
                formats: vec!["GREY".into(), "BA81".into()]
            })
        );
        assert_eq!(classify(&vivid.cap, &[]), skipped(SkipReason::NoCaptureFormats));
    }

    #[test]
    fn touch_radio_and_m2m_by_caps() {
        let caps = |device_caps| Querycap {
            capabilities: 0x8000_0000 | device_caps,
            device_caps,
            ..Querycap::default()
        };
        assert_eq!(
            classify(&caps(0x1000_0001), &[]),
            skipped(SkipReason::NotVideo),
            "touch sensor with video capture"
        );
        assert_eq!(
            classify(&caps(0x0005_0000), &[]),
            skipped(SkipReason::NotVideo),
            "radio tuner"
        );
        assert_eq!(
            classify(&caps(0x0400_0003), &[]),
            skipped(SkipReason::MemoryToMemory),
            "capture + output"
        );
    }

    #[test]
    fn reasons_read_well_and_serialize_plainly() {
        assert_eq!(SkipReason::Metadata.to_string(), "metadata node");
        let json = serde_json::to_value(NodeKind::Skipped(SkipReason::Metadata)).expect("json");
        assert_eq!(json, serde_json::json!({"kind": "skipped", "reason": "metadata"}));
        let json = serde_json::to_value(NodeKind::Camera).expect("json");
        assert_eq!(json, serde_json::json!({"kind": "camera"}));
    }
}

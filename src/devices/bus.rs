//! Which bus a capture node sits on, and how much uncompressed video that bus can carry for one
//! camera. Mode choice uses it to decide when raw YUYV must give way to MJPEG or H.264.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Bus {
    /// USB, with the link speed in Mbit/s from sysfs (12, 480, 5000, ...) when known.
    Usb {
        speed_mbps: Option<u32>,
    },
    /// SoC devices: CSI receivers, the Pi legacy camera, vivid.
    Platform,
    /// PCI(e) capture cards.
    Pci,
    /// No hardware behind it (v4l2loopback): frames come from another process.
    Virtual,
    Unknown,
}

/// USB 1.1 full speed: one isochronous packet of at most 1023 bytes per 1 ms frame.
const USB1_RAW_BUDGET: u64 = 1_023 * 1_000;
/// USB 2.0 high speed: a high-bandwidth isochronous endpoint moves at most 3 x 1024 bytes per
/// 125 us microframe = 24.6 MB/s, and UVC cameras stream over exactly one such endpoint. So
/// YUYV 640x480@30 (18.4 MB/s) fits and 1280x720@30 (55 MB/s) cannot; that is why webcams list
/// raw 720p at 10 fps or less. (Two such cameras on one USB 2.0 bus also share its 80 % periodic
/// limit, about 48 MB/s; that is not modelled here.)
const USB2_RAW_BUDGET: u64 = 3 * 1_024 * 8_000;
/// USB 3.x SuperSpeed: 16-packet bursts, 3 per 125 us service interval, of 1024 bytes = 393 MB/s
/// per isochronous endpoint; about 300 MB/s is what UVC cameras get in practice.
const USB3_RAW_BUDGET: u64 = 300_000_000;

impl Bus {
    /// From what QUERYCAP and udev say: `bus_info` ("usb-0000:01:00.0-1.3", "platform:vivid-000",
    /// "PCI:0000:03:00.0"), udev's ID_BUS, the USB `speed` sysfs attribute, and whether the device
    /// lives under /sys/devices/virtual.
    pub fn from_node(bus_info: &str, id_bus: Option<&str>, usb_speed: Option<&str>, is_virtual: bool) -> Self {
        if is_virtual {
            return Self::Virtual;
        }
        let info = bus_info.to_ascii_lowercase();
        if id_bus == Some("usb") || info.starts_with("usb-") {
            // sysfs reports "1.5", "12", "480", "5000", "10000", "20000"
            let speed_mbps = usb_speed
                .and_then(|s| s.trim().parse::<f64>().ok())
                .map(|s| s.max(1.0) as u32);
            return Self::Usb { speed_mbps };
        }
        if info.starts_with("pci") {
            return Self::Pci;
        }
        if info.starts_with("platform:") {
            return Self::Platform;
        }
        Self::Unknown
    }

    /// Bytes per second of uncompressed video one camera can push through this bus;
    /// None when the bus is no practical limit.
    pub fn raw_budget(self) -> Option<u64> {
        match self {
            // an unknown speed is most likely a USB 2.0 webcam; assuming more would pick raw modes
            // that then fail with ENOSPC at STREAMON
            Self::Usb { speed_mbps: None } => Some(USB2_RAW_BUDGET),
            Self::Usb { speed_mbps: Some(s) } if s < 480 => Some(USB1_RAW_BUDGET),
            Self::Usb { speed_mbps: Some(s) } if s < 5000 => Some(USB2_RAW_BUDGET),
            Self::Usb { .. } => Some(USB3_RAW_BUDGET),
            Self::Platform | Self::Pci | Self::Virtual | Self::Unknown => None,
        }
    }
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usb { speed_mbps: None } => f.write_str("usb"),
            Self::Usb { speed_mbps: Some(s) } if *s < 480 => f.write_str("usb1"),
            Self::Usb { speed_mbps: Some(s) } if *s < 5000 => f.write_str("usb2"),
            Self::Usb { .. } => f.write_str("usb3"),
            Self::Platform => f.write_str("platform"),
            Self::Pci => f.write_str("pci"),
            Self::Virtual => f.write_str("virtual"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_speed_from_sysfs_sets_the_budget() {
        let c920 = Bus::from_node("usb-0000:01:00.0-1.3", Some("usb"), Some("480"), false);
        assert_eq!(c920, Bus::Usb { speed_mbps: Some(480) });
        assert_eq!(c920.raw_budget(), Some(24_576_000));
        assert_eq!(c920.to_string(), "usb2");
        let old = Bus::from_node("usb-3f980000.usb-1.4", None, Some("12"), false);
        assert_eq!(old.raw_budget(), Some(1_023_000));
        let usb3 = Bus::from_node("usb-0000:00:14.0-2", Some("usb"), Some("5000"), false);
        assert_eq!(usb3.to_string(), "usb3");
        assert_eq!(usb3.raw_budget(), Some(300_000_000));
    }

    #[test]
    fn unknown_usb_speed_is_treated_as_usb2() {
        assert_eq!(
            Bus::from_node("usb-0000:00:14.0-1", Some("usb"), None, false).raw_budget(),
            Some(24_576_000)
        );
    }

    #[test]
    fn soc_pci_and_loopback_nodes_have_no_budget() {
        assert_eq!(Bus::from_node("platform:vivid-000", None, None, false), Bus::Platform);
        assert_eq!(Bus::from_node("PCIe:0000:03:00.0", None, None, false), Bus::Pci);
        assert_eq!(
            Bus::from_node("platform:v4l2loopback-010", None, None, true),
            Bus::Virtual
        );
        assert_eq!(Bus::Platform.raw_budget(), None);
    }
}

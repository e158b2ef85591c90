//! Stable camera ids and names. /dev/videoN numbers follow probe order and change across
//! replugs and reboots, so ids come from what udev knows about the hardware instead. Pure
//! functions over [`DeviceProps`], filled from udev (or sysfs alone) elsewhere.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What udev and sysfs say about one V4L2 node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceProps {
    /// Kernel name, "video0".
    pub sysname: String,
    /// /sys/devices/.../video4linux/video0
    pub syspath: PathBuf,
    /// sysfs `index`: which node of its device this is (a UVC camera: 0 capture, 1 metadata).
    pub index: Option<u32>,
    /// ID_SERIAL_SHORT, or the USB device's `serial` attribute when udevd is not running.
    pub serial: Option<String>,
    /// ID_BUS ("usb").
    pub id_bus: Option<String>,
    /// ID_PATH: where the device is plugged in ("pci-0000:00:14.0-usb-0:2:1.0", "platform-vivid.0").
    pub id_path: Option<String>,
    /// ID_V4L_PRODUCT: the driver's card name as udev's v4l_id read it.
    pub v4l_product: Option<String>,
    /// ID_MODEL_ENC decoded (else ID_MODEL, else the USB `product` attribute).
    pub model: Option<String>,
    /// The USB device's `speed` attribute in Mbit/s ("480").
    pub usb_speed: Option<String>,
    /// DEVLINKS: /dev/v4l/by-id/... and /dev/v4l/by-path/... symlinks.
    pub links: Vec<PathBuf>,
}

impl DeviceProps {
    /// Devices with no hardware behind them (v4l2loopback) live under /sys/devices/virtual.
    pub fn is_virtual(&self) -> bool {
        self.syspath.starts_with("/sys/devices/virtual")
    }
}

/// The camera id: lowercase [a-z0-9-], the same after unplug/replug, reboot or a new /dev/videoN.
///
/// 1. USB serial: `usb-<serial>` follows the camera to any port.
/// 2. Virtual devices (v4l2loopback): driver and node name. Their node number is chosen by whoever
///    creates them (video_nr=), so it is their identity, unlike a probed device's.
/// 3. SoC devices, by the driver instance QUERYCAP names in `bus_info` ("platform:vivid-000"):
///    one platform device can carry several V4L2 devices (vivid n_devs=2 puts both under
///    vivid.0), and then ID_PATH is the same for both and their by-path links collide.
/// 4. ID_PATH (the by-path link name, `<path>-video-index<N>`): the port it is plugged into.
///    The by-id link is not used without a serial: it is then vendor and model only, the same
///    for two cameras of one model, which is the common two-camera setup.
/// 5. The sysfs device path when udev has no ID_PATH (no udevd).
///
/// Serial-based ids get `-video-index<N>` only for a device's second capture node, so every
/// capture node has its own id and a webcam's is simply `usb-<serial>`.
pub fn camera_id(props: &DeviceProps, driver: &str, bus_info: &str) -> String {
    let index = props.index.unwrap_or(0);
    if let Some(serial) = props.serial.as_deref().map(slug).filter(|s| !s.is_empty()) {
        let bus = props.id_bus.as_deref().unwrap_or("usb");
        let suffix = if index > 0 {
            format!("-video-index{index}")
        } else {
            String::new()
        };
        return slug(&format!("{bus}-{serial}{suffix}"));
    }
    if props.is_virtual() || props.syspath.as_os_str().is_empty() {
        let driver = if driver.is_empty() { "v4l2" } else { driver };
        return slug(&format!("{driver}-{}", props.sysname));
    }
    if let Some(instance) = bus_info.strip_prefix("platform:").filter(|i| !i.is_empty()) {
        return slug(&format!("platform-{instance}-video-index{index}"));
    }
    if let Some(path) = props.id_path.as_deref().filter(|p| !p.is_empty()) {
        return slug(&format!("{path}-video-index{index}"));
    }
    slug(&format!("{}-video-index{index}", sysfs_device_path(&props.syspath)))
}

/// A name for people: the USB product string, else the card name as udev's v4l_id read it, else
/// the card name now. USB first because uvcvideo appends the interface's name to the card
/// ("Fake UVC Camera: UVC Camera") when the camera has one.
pub fn camera_name(props: &DeviceProps, card: &str) -> String {
    [props.model.as_deref(), props.v4l_product.as_deref(), Some(card)]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or(&props.sysname)
        .to_string()
}

/// The device's place in /sys/devices, joined with '-' like ID_PATH: the parent of
/// `video4linux/videoN`, "/sys/devices/platform/vivid.0/video4linux/video0" -> "platform-vivid.0".
fn sysfs_device_path(syspath: &Path) -> String {
    let device = syspath.parent().and_then(Path::parent).unwrap_or(syspath);
    let rel = device.strip_prefix("/sys/devices").unwrap_or(device);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("-")
}

/// Lowercase, [a-z0-9] kept, every other run of characters one '-'.
fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `udevadm info` of the v4l2vm usbcam's capture node (tests/fixtures/devices/usbcam-uvc-gadget.txt).
    fn usbcam() -> DeviceProps {
        DeviceProps {
            sysname: "video1".into(),
            syspath: "/sys/devices/platform/vhci_hcd.0/usb1/1-1/1-1:1.0/video4linux/video1".into(),
            index: Some(0),
            serial: Some("FAKE0001".into()),
            id_bus: Some("usb".into()),
            id_path: Some("platform-vhci_hcd.0-usb-0:1:1.0".into()),
            v4l_product: Some("Fake UVC Camera: UVC Camera".into()),
            model: Some("Fake UVC Camera".into()),
            usb_speed: Some("480".into()),
            links: vec![
                "/dev/v4l/by-path/platform-vhci_hcd.0-usb-0:1:1.0-video-index0".into(),
                "/dev/v4l/by-id/usb-Fake_Cameras_Inc_Fake_UVC_Camera_FAKE0001-video-index0".into(),
            ],
        }
    }

    #[test]
    fn usb_serial_wins_and_survives_a_new_node_and_port() {
        let a = usbcam();
        assert_eq!(camera_id(&a, "uvcvideo", "usb-vhci_hcd.0-1"), "usb-fake0001");
        let mut replugged = usbcam();
        replugged.sysname = "video3".into();
        replugged.syspath = "/sys/devices/platform/vhci_hcd.0/usb1/1-2/1-2:1.0/video4linux/video3".into();
        replugged.id_path = Some("platform-vhci_hcd.0-usb-0:2:1.0".into());
        assert_eq!(camera_id(&replugged, "uvcvideo", "usb-vhci_hcd.0-2"), "usb-fake0001");
    }

    #[test]
    fn second_capture_node_of_one_device_gets_its_own_id() {
        let mut second = usbcam();
        second.index = Some(2);
        assert_eq!(
            camera_id(&second, "uvcvideo", "usb-vhci_hcd.0-1"),
            "usb-fake0001-video-index2"
        );
    }

    #[test]
    fn identical_cameras_without_serial_are_told_apart_by_port() {
        let mut left = usbcam();
        left.serial = None;
        let mut right = left.clone();
        right.id_path = Some("pci-0000:00:14.0-usb-0:2:1.0".into());
        left.id_path = Some("pci-0000:00:14.0-usb-0:1:1.0".into());
        assert_eq!(
            camera_id(&left, "uvcvideo", "usb-0000:00:14.0-1"),
            "pci-0000-00-14-0-usb-0-1-1-0-video-index0"
        );
        assert_ne!(
            camera_id(&left, "uvcvideo", "usb-0000:00:14.0-1"),
            camera_id(&right, "uvcvideo", "usb-0000:00:14.0-2")
        );
    }

    #[test]
    fn each_vivid_instance_has_its_own_id_though_both_sit_under_vivid_0() {
        // `modprobe vivid n_devs=2`: udev gives both nodes ID_PATH platform-vivid.0 and index 0
        let vivid = |sysname: &str| DeviceProps {
            sysname: sysname.into(),
            syspath: format!("/sys/devices/platform/vivid.0/video4linux/{sysname}").into(),
            index: Some(0),
            id_path: Some("platform-vivid.0".into()),
            ..DeviceProps::default()
        };
        assert_eq!(
            camera_id(&vivid("video0"), "vivid", "platform:vivid-000"),
            "platform-vivid-000-video-index0"
        );
        assert_eq!(
            camera_id(&vivid("video2"), "vivid", "platform:vivid-001"),
            "platform-vivid-001-video-index0"
        );
    }

    #[test]
    fn without_udevd_ids_come_from_sysfs() {
        let pci = DeviceProps {
            sysname: "video0".into(),
            syspath: "/sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/video4linux/video0".into(),
            index: Some(0),
            ..DeviceProps::default()
        };
        assert_eq!(
            camera_id(&pci, "cx23885", "PCIe:0000:03:00.0"),
            "pci0000-00-0000-00-1c-0-0000-03-00-0-video-index0"
        );
        let no_sysfs = DeviceProps {
            sysname: "video0".into(),
            ..DeviceProps::default()
        };
        assert_eq!(
            camera_id(&no_sysfs, "uvcvideo", "usb-0000:00:14.0-1"),
            "uvcvideo-video0"
        );
    }

    #[test]
    fn name_prefers_usb_product_then_v4l_product_then_card() {
        let mut props = usbcam();
        assert_eq!(camera_name(&props, "card"), "Fake UVC Camera");
        props.model = None;
        assert_eq!(camera_name(&props, "card"), "Fake UVC Camera: UVC Camera");
        props.v4l_product = Some("  ".into());
        assert_eq!(camera_name(&props, "HD Pro Webcam C920"), "HD Pro Webcam C920");
        assert_eq!(
            camera_name(
                &DeviceProps {
                    sysname: "video7".into(),
                    ..DeviceProps::default()
                },
                ""
            ),
            "video7"
        );
    }

    #[test]
    fn ids_and_names_of_the_fixture_cameras() {
        use crate::devices::fixture::node;
        let id_and_name = |fixture: &str, devnode: &str| {
            let n = node(fixture, devnode);
            (
                camera_id(&n.props, &n.cap.driver, &n.cap.bus_info),
                camera_name(&n.props, &n.cap.card),
            )
        };
        let expect = |id: &str, name: &str| (id.to_string(), name.to_string());
        assert_eq!(
            id_and_name("usbcam-uvc-gadget", "/dev/video1"),
            expect("usb-fake0001", "Fake UVC Camera")
        );
        assert_eq!(
            id_and_name("logitech-c920", "/dev/video0"),
            expect("usb-8c4a1e2f", "HD Pro Webcam C920")
        );
        assert_eq!(
            id_and_name("kodak-pixpro-mjpeg-only", "/dev/video8"),
            expect("pci-0000-00-14-0-usb-0-3-1-0-video-index0", "PIXPRO 4KVR360")
        );
        assert_eq!(
            id_and_name("vivid", "/dev/video0"),
            expect("platform-vivid-000-video-index0", "vivid")
        );
        assert_eq!(
            id_and_name("v4l2loopback", "/dev/video10"),
            expect("v4l2-loopback-video10", "Fake MJPEG Webcam")
        );
        assert_eq!(
            id_and_name("pi-legacy-camera", "/dev/video0"),
            expect("platform-bcm2835-v4l2-0-video-index0", "mmal service 16.1")
        );
    }

    #[test]
    fn ids_are_lowercase_alphanumerics_and_single_dashes() {
        assert_eq!(slug("usb-Fake_Cameras  Inc.__X"), "usb-fake-cameras-inc-x");
        assert_eq!(slug("--A:b--"), "a-b");
    }
}

//! Reading [`DeviceProps`] for a V4L2 node from udev's database, falling back to sysfs attributes
//! when udevd is not running (containers, this project's dev box): then ID_* properties are
//! missing and ids come from the USB serial attribute or the sysfs path.

use super::identity::DeviceProps;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Whether udevd runs here: it creates its control socket at start. Without it there are no
/// udev events, no ID_* properties and no /dev/v4l links.
pub fn udevd_running() -> bool {
    Path::new("/run/udev/control").exists()
}

/// Every /dev/videoN, in numeric order.
pub fn video_nodes() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// The udev device of the node at `devnode`, if sysfs knows it.
pub fn lookup(devnode: &Path) -> Option<udev::Device> {
    udev::Device::from_subsystem_sysname("video4linux".to_string(), sysname(devnode)).ok()
}

/// Properties of the node at `devnode`; only its name when sysfs does not know it.
pub fn props_for_devnode(devnode: &Path) -> DeviceProps {
    match lookup(devnode) {
        Some(dev) => from_udev(&dev),
        None => DeviceProps {
            sysname: sysname(devnode),
            ..DeviceProps::default()
        },
    }
}

fn sysname(devnode: &Path) -> String {
    devnode
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn from_udev(dev: &udev::Device) -> DeviceProps {
    let usb = dev.parent_with_subsystem_devtype("usb", "usb_device").ok().flatten();
    let usb_attr = |name: &str| usb.as_ref().and_then(|u| text(u.attribute_value(name)));
    let prop = |name: &str| text(dev.property_value(name));
    DeviceProps {
        sysname: dev.sysname().to_string_lossy().into_owned(),
        syspath: dev.syspath().to_path_buf(),
        index: text(dev.attribute_value("index")).and_then(|i| i.parse().ok()),
        serial: prop("ID_SERIAL_SHORT").or_else(|| usb_attr("serial")),
        id_bus: prop("ID_BUS"),
        id_path: prop("ID_PATH"),
        v4l_product: prop("ID_V4L_PRODUCT"),
        model: prop("ID_MODEL_ENC")
            .map(|m| decode_udev_escapes(&m))
            .or_else(|| prop("ID_MODEL").map(|m| m.replace('_', " ")))
            .or_else(|| usb_attr("product")),
        usb_speed: usb_attr("speed"),
        links: prop("DEVLINKS")
            .map(|l| l.split_whitespace().map(PathBuf::from).collect())
            .unwrap_or_default(),
    }
}

fn text(value: Option<&OsStr>) -> Option<String> {
    value
        .map(|v| v.to_string_lossy().trim().to_string())
        .filter(|v| !v.is_empty())
}

/// udev writes unsafe bytes of ID_*_ENC values as `\xHH` ("HD\x20Pro\x20Webcam\x20C920").
fn decode_udev_escapes(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes.get(i..i + 4).filter(|b| b.starts_with(b"\\x")).and_then(|b| {
            std::str::from_utf8(&b[2..])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match escaped {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_udev_hex_escapes() {
        assert_eq!(
            decode_udev_escapes("HD\\x20Pro\\x20Webcam\\x20C920"),
            "HD Pro Webcam C920"
        );
        assert_eq!(decode_udev_escapes("odd\\x2"), "odd\\x2");
        assert_eq!(decode_udev_escapes("Kamera\\xc3\\xa4\\x20"), "Kameraä");
    }

    #[test]
    fn a_node_sysfs_does_not_know_still_has_its_name() {
        let props = props_for_devnode(Path::new("/dev/video-not-here"));
        assert_eq!(props.sysname, "video-not-here");
        assert!(props.links.is_empty());
    }
}

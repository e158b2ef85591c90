//! One V4L2 node as discovery sees it: udev's properties plus the probe, turned into either a
//! [`Camera`] for the supervisor or a [`NodeReport`] saying why it is not one. Shared by the
//! watcher and the scan behind `edgecam probe`, so both agree on ids and on what is a camera.

use super::bus::Bus;
use super::camera::Camera;
use super::classify::{NodeKind, SkipReason};
use super::identity::{camera_id, camera_name, DeviceProps};
use super::probe::{probe_node, NodeInfo};
use super::report::NodeReport;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Node {
    pub devnode: PathBuf,
    pub props: DeviceProps,
    /// The probe's answer, or the probe error as text (it ends up in a report, not handled).
    pub info: Result<NodeInfo, String>,
}

impl Node {
    pub fn examine(devnode: &Path, props: DeviceProps) -> Self {
        Self {
            devnode: devnode.to_path_buf(),
            props,
            info: probe_node(devnode).map_err(|e| e.to_string()),
        }
    }

    pub fn is_camera(&self) -> bool {
        matches!(&self.info, Ok(info) if info.kind == NodeKind::Camera)
    }

    pub fn id(&self) -> String {
        camera_id(&self.props, self.driver(), self.bus_info())
    }

    /// When another node already has this node's serial-based id (cheap cameras ship one serial
    /// for every unit), the port-based id keeps both cameras apart.
    pub fn id_avoiding(&self, taken: impl Fn(&str) -> bool) -> String {
        let id = self.id();
        if !taken(&id) || self.props.serial.is_none() {
            return id;
        }
        let props = DeviceProps {
            serial: None,
            ..self.props.clone()
        };
        let port_id = camera_id(&props, self.driver(), self.bus_info());
        tracing::warn!(devnode = %self.devnode.display(), %id, %port_id, "serial shared with another camera, using port-based id");
        port_id
    }

    pub fn bus(&self) -> Bus {
        Bus::from_node(
            self.bus_info(),
            self.props.id_bus.as_deref(),
            self.props.usb_speed.as_deref(),
            self.props.is_virtual(),
        )
    }

    pub fn driver(&self) -> &str {
        self.info.as_ref().map(|i| i.driver.as_str()).unwrap_or("")
    }

    fn bus_info(&self) -> &str {
        self.info.as_ref().map(|i| i.bus_info.as_str()).unwrap_or("")
    }

    fn name(&self) -> String {
        camera_name(&self.props, self.info.as_ref().map(|i| i.card.as_str()).unwrap_or(""))
    }

    /// The camera, if this node is one.
    pub fn camera(&self, id: String) -> Option<Camera> {
        let info = self.info.as_ref().ok().filter(|i| i.kind == NodeKind::Camera)?;
        Some(Camera {
            id,
            name: self.name(),
            devnode: self.devnode.clone(),
            syspath: self.props.syspath.clone(),
            bus: self.bus(),
            serial: self.props.serial.clone(),
            links: self.props.links.clone(),
            formats: info.formats.clone(),
        })
    }

    pub fn report(&self, id: String) -> NodeReport {
        let bus = self.bus();
        let (kind, driver, card, bus_info, formats) = match &self.info {
            Ok(i) => (
                i.kind.clone(),
                i.driver.clone(),
                i.card.clone(),
                i.bus_info.clone(),
                i.formats.clone(),
            ),
            Err(error) => (
                NodeKind::Skipped(SkipReason::ProbeFailed { error: error.clone() }),
                String::new(),
                String::new(),
                String::new(),
                Vec::new(),
            ),
        };
        let why = match &kind {
            NodeKind::Skipped(reason) => Some(reason.to_string()),
            NodeKind::Camera => None,
        };
        NodeReport {
            devnode: self.devnode.clone(),
            kind,
            why,
            id,
            name: self.name(),
            driver,
            card,
            bus_info,
            bus,
            serial: self.props.serial.clone(),
            links: self.props.links.clone(),
            formats,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::devices::fixture::node;

    #[test]
    fn camera_carries_what_config_can_pin_it_by() {
        let n = node("usbcam-uvc-gadget", "/dev/video1").node();
        let camera = n.camera(n.id()).expect("a camera");
        assert_eq!(camera.id, "usb-fake0001");
        assert_eq!(camera.serial.as_deref(), Some("FAKE0001"));
        assert!(camera.links.iter().any(|l| l.starts_with("/dev/v4l/by-id")));
        assert_eq!(
            camera.syspath.to_str(),
            Some("/sys/devices/platform/vhci_hcd.0/usb1/1-1/1-1:1.0/video4linux/video1")
        );
        assert_eq!(camera.formats.len(), 2);
        assert!(node("usbcam-uvc-gadget", "/dev/video2")
            .node()
            .camera("x".into())
            .is_none());
    }

    #[test]
    fn a_serial_shared_by_two_cameras_falls_back_to_the_port() {
        let n = node("cheap-mjpeg-yuyv-webcam", "/dev/video2").node();
        assert_eq!(n.id(), "usb-sn0001");
        assert_eq!(
            n.id_avoiding(|id| id == "usb-sn0001"),
            "pci-0000-00-14-0-usb-0-2-1-0-video-index0"
        );
        assert_eq!(n.id_avoiding(|_| false), "usb-sn0001");
    }
}

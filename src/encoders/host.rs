//! The machine a profile's requirements are checked against. Files are read below a root
//! directory (`/` in the daemon), so tests fake a Raspberry Pi with a directory holding
//! `proc/device-tree/model` and `dev/video11`.

use std::path::{Path, PathBuf};

use super::profile::Requirements;
use crate::media::trial::{self, TrialError};

/// Where the board names itself on device-tree machines (Raspberry Pi, Jetson); absent on PCs.
const MODEL_FILE: &str = "proc/device-tree/model";

#[derive(Clone, Debug)]
pub struct Host {
    root: PathBuf,
}

/// One requirement that does not hold here.
#[derive(Debug, thiserror::Error)]
pub enum Unmet {
    /// Hardware encoder plugins register their elements only where the hardware and driver are,
    /// so on other machines the element is simply absent.
    #[error("GStreamer element {0} not found (plugin not installed, or no hardware/driver for it)")]
    Element(String),
    #[error("device {} does not exist", .0.display())]
    Device(PathBuf),
    #[error("needs platform {wanted:?}, this is {}", found.as_deref().map_or("not a device-tree machine (no /proc/device-tree/model)".into(), |m| format!("{m:?}")))]
    Platform { wanted: String, found: Option<String> },
    #[error("cannot look up GStreamer elements: {0}")]
    GStreamer(#[source] TrialError),
}

impl Host {
    /// This machine.
    pub fn real() -> Self {
        Self::with_root("/")
    }

    /// A machine whose /proc and /dev are below `root`.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, absolute: &Path) -> PathBuf {
        self.root.join(absolute.strip_prefix("/").unwrap_or(absolute))
    }

    /// The board's model, without the NUL the kernel ends it with.
    pub fn model(&self) -> Option<String> {
        let raw = std::fs::read(self.root.join(MODEL_FILE)).ok()?;
        Some(String::from_utf8_lossy(&raw).trim_end_matches(['\0', '\n']).to_string())
    }

    /// Every requirement that does not hold, so the report names all of them at once.
    pub fn unmet(&self, requires: &Requirements) -> Vec<Unmet> {
        let mut unmet = Vec::new();
        for element in &requires.elements {
            match trial::element_exists(element) {
                Ok(true) => {}
                Ok(false) => unmet.push(Unmet::Element(element.clone())),
                Err(err) => {
                    unmet.push(Unmet::GStreamer(err));
                    break;
                }
            }
        }
        for device in &requires.devices {
            if !self.path(device.as_path()).exists() {
                unmet.push(Unmet::Device(device.as_path().to_path_buf()));
            }
        }
        if let Some(wanted) = &requires.platform {
            let found = self.model();
            if !found.as_deref().is_some_and(|model| model.contains(wanted.as_str())) {
                unmet.push(Unmet::Platform {
                    wanted: wanted.clone(),
                    found,
                });
            }
        }
        unmet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoders::Profile;

    pub(crate) fn rpi4_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders/rpi4-root")
    }

    fn requirements(yaml: &str) -> Requirements {
        let text = format!(
            "name: t\ncodec: h264\npriority: 1\ninput: [I420]\n{yaml}\n\
             pipeline: \"x264enc name=enc\"\nbitrate: {{ element: enc, property: bitrate, scale: 1 }}\n"
        );
        Profile::from_yaml(&text).unwrap().requirements().clone()
    }

    #[test]
    fn reads_the_model_without_its_nul() {
        assert_eq!(
            Host::with_root(rpi4_root()).model().as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        assert_eq!(Host::with_root("/nonexistent").model(), None);
    }

    #[test]
    fn pi_requirements_hold_on_the_fake_pi() {
        let req = requirements("requires: { elements: [x264enc], devices: [/dev/video11], platform: Raspberry Pi }");
        let unmet = Host::with_root(rpi4_root()).unmet(&req);
        assert!(unmet.is_empty(), "{unmet:?}");
    }

    #[test]
    fn every_unmet_requirement_is_named() {
        let req = requirements(
            "requires: { elements: [x264enc, nosuchenc], devices: [/dev/video11], platform: Raspberry Pi 5 }",
        );
        let reasons: Vec<String> = Host::with_root("/nonexistent")
            .unmet(&req)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("nosuchenc not found"), "{reasons:?}");
        assert_eq!(reasons[1], "device /dev/video11 does not exist");
        assert!(reasons[2].contains("no /proc/device-tree/model"), "{reasons:?}");
        let reasons: Vec<String> = Host::with_root(rpi4_root())
            .unmet(&req)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            reasons[1],
            r#"needs platform "Raspberry Pi 5", this is "Raspberry Pi 4 Model B Rev 1.4""#
        );
    }
}

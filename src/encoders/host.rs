//! A profile's requirements checked against the machine it runs on (see [`Machine`]): elements,
//! device nodes and the board's model.

use std::path::{Path, PathBuf};

use super::machine::{Machine, TrialError};
use super::profile::Requirements;

/// Where the board names itself on device-tree machines (Raspberry Pi, Jetson); absent on PCs.
const MODEL_FILE: &str = "/proc/device-tree/model";

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

/// The board's model, without the NUL the kernel ends it with.
pub(super) fn model(machine: &dyn Machine) -> Option<String> {
    let raw = machine.read_file(Path::new(MODEL_FILE)).ok()?;
    Some(String::from_utf8_lossy(&raw).trim_end_matches(['\0', '\n']).to_string())
}

/// Every requirement that does not hold, so the report names all of them at once.
pub(super) fn unmet(requires: &Requirements, machine: &dyn Machine) -> Vec<Unmet> {
    let mut unmet = Vec::new();
    for element in &requires.elements {
        match machine.element_exists(element) {
            Ok(true) => {}
            Ok(false) => unmet.push(Unmet::Element(element.clone())),
            Err(err) => {
                unmet.push(Unmet::GStreamer(err));
                break;
            }
        }
    }
    for device in &requires.devices {
        if !machine.path_exists(device.as_path()) {
            unmet.push(Unmet::Device(device.as_path().to_path_buf()));
        }
    }
    if let Some(wanted) = &requires.platform {
        let found = model(machine);
        if !found.as_deref().is_some_and(|model| model.contains(wanted.as_str())) {
            unmet.push(Unmet::Platform {
                wanted: wanted.clone(),
                found,
            });
        }
    }
    unmet
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoders::machine::FakeMachine;
    use crate::encoders::Profile;

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
            model(&FakeMachine::pi4()).as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        assert_eq!(model(&FakeMachine::pc()), None);
    }

    #[test]
    fn pi_requirements_hold_on_the_fake_pi() {
        let req = requirements("requires: { elements: [x264enc], devices: [/dev/video11], platform: Raspberry Pi }");
        let unmet = unmet(&req, &FakeMachine::pi4());
        assert!(unmet.is_empty(), "{unmet:?}");
    }

    #[test]
    fn every_unmet_requirement_is_named() {
        let req = requirements(
            "requires: { elements: [x264enc, nosuchenc], devices: [/dev/video11], platform: Raspberry Pi 5 }",
        );
        let reasons =
            |machine: &FakeMachine| -> Vec<String> { unmet(&req, machine).iter().map(ToString::to_string).collect() };
        let on_pc = reasons(&FakeMachine::pc());
        assert_eq!(on_pc.len(), 3, "{on_pc:?}");
        assert!(on_pc[0].contains("nosuchenc not found"), "{on_pc:?}");
        assert_eq!(on_pc[1], "device /dev/video11 does not exist");
        assert!(on_pc[2].contains("no /proc/device-tree/model"), "{on_pc:?}");
        let on_pi = reasons(&FakeMachine::pi4());
        assert_eq!(
            on_pi[1],
            r#"needs platform "Raspberry Pi 5", this is "Raspberry Pi 4 Model B Rev 1.4""#
        );
    }
}

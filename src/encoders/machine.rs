//! Everything `encoders` asks of the machine it runs on, behind one trait: whether an element
//! exists, whether a fragment parses, whether a trial encode passes, and the files that say what
//! hardware is there. The daemon's machine is `media::GstMachine` (GStreamer, files below `/`);
//! unit tests fake one, so profile checks and choice are tested without GStreamer or a Raspberry Pi.

use std::io;
use std::path::Path;
use std::time::Duration;

/// Trial frames are small: the trial proves the encoder opens and produces output, not its speed.
pub const TRIAL_WIDTH: u32 = 320;
pub const TRIAL_HEIGHT: u32 = 240;
pub const TRIAL_FPS: u32 = 30;

pub trait Machine {
    /// Whether an element of this name is registered here. Hardware encoder plugins register theirs
    /// only where the hardware and driver are.
    fn element_exists(&self, name: &str) -> Result<bool, TrialError>;

    /// Parses a gst-launch fragment without running it. Where every element exists, property names
    /// and values are checked too, and so is `control`. `MissingElements` means the rest parses.
    fn check_fragment(&self, fragment: &str, control: Option<Control<'_>>) -> Result<(), TrialError>;

    /// Runs `frames` test frames of [`TRIAL_WIDTH`]x[`TRIAL_HEIGHT`]@[`TRIAL_FPS`] through `fragment`
    /// to its end. `raw_input` is the raw format it takes; None (passthrough) feeds it H.264.
    fn trial_encode(
        &self,
        fragment: &str,
        raw_input: Option<&str>,
        frames: u32,
        timeout: Duration,
    ) -> Result<(), TrialError>;

    /// A file by its absolute path on this machine (`/proc/device-tree/model`).
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Whether a path exists on this machine (`/dev/video11`).
    fn path_exists(&self, path: &Path) -> bool;
}

/// A property the caller will set at run time; `check_fragment` proves it exists.
#[derive(Clone, Copy, Debug)]
pub struct Control<'a> {
    pub element: &'a str,
    pub property: &'a str,
    /// The property holds a structure whose field is set (v4l2 `extra-controls`).
    pub structure: bool,
}

/// Why a fragment does not parse or a trial encode failed. The machine's own errors are kept as text:
/// they end up in a profile's report, never handled by kind beyond these variants.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("GStreamer did not initialise: {0}")]
    Init(String),
    #[error("missing GStreamer element(s): {}", .0.join(", "))]
    MissingElements(Vec<String>),
    #[error("does not parse: {0}")]
    Parse(String),
    #[error("no element named {0:?} in the fragment")]
    NoNamedElement(String),
    #[error("element {element:?} has no property {property:?}")]
    NoProperty { element: String, property: String },
    #[error("property {property:?} of {element:?} is not a structure, so it has no field to set")]
    NotAStructure { element: String, property: String },
    #[error("no {encoder} to make H.264 test input for a passthrough trial")]
    NoH264Source { encoder: &'static str },
    #[error("{element}: {message}{}", debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Failed {
        element: String,
        message: String,
        debug: Option<String>,
    },
    #[error("refused to start, with no error message")]
    StartRefused,
    #[error("did not finish {frames} frames within {timeout:?}")]
    Timeout { frames: u32, timeout: Duration },
    #[error("finished without producing any output")]
    NoOutput,
}

/// A machine described in the test: which elements exist, which fragments fail their trial, which
/// files it has. Fragments "parse" unless they name an element it lacks.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FakeMachine {
    pub elements: Vec<&'static str>,
    /// A trial fails when the fragment contains one of these.
    pub failing: Vec<&'static str>,
    pub files: std::collections::HashMap<std::path::PathBuf, Vec<u8>>,
}

#[cfg(test)]
impl FakeMachine {
    /// A PC with the software encoders Debian ships (x264, openh264, vp8) and GStreamer's basics.
    pub fn pc() -> Self {
        let elements = vec![
            "x264enc",
            "openh264enc",
            "vp8enc",
            "h264parse",
            "capsfilter",
            "identity",
            "videoconvert",
        ];
        Self {
            elements,
            ..Self::default()
        }
    }

    /// A Raspberry Pi 4: its board model and codec node, and v4l2h264enc with the PC's encoders.
    pub fn pi4() -> Self {
        let mut pi = Self::pc();
        pi.elements.push("v4l2h264enc");
        pi.files.insert(
            "/proc/device-tree/model".into(),
            b"Raspberry Pi 4 Model B Rev 1.4\0".to_vec(),
        );
        pi.files.insert("/dev/video11".into(), Vec::new());
        pi
    }

    /// The first word of each link of a fragment, skipping caps: the element names it uses.
    fn elements_of(fragment: &str) -> Vec<&str> {
        fragment
            .split('!')
            .filter_map(|link| link.split_whitespace().next())
            .filter(|first| !first.contains('/') && !first.contains('=') && !first.starts_with('('))
            .collect()
    }
}

#[cfg(test)]
impl Machine for FakeMachine {
    fn element_exists(&self, name: &str) -> Result<bool, TrialError> {
        Ok(self.elements.contains(&name))
    }

    fn check_fragment(&self, fragment: &str, _control: Option<Control<'_>>) -> Result<(), TrialError> {
        let missing: Vec<String> = Self::elements_of(fragment)
            .into_iter()
            .filter(|e| !self.elements.contains(e))
            .map(String::from)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(TrialError::MissingElements(missing))
        }
    }

    fn trial_encode(
        &self,
        fragment: &str,
        _raw: Option<&str>,
        _frames: u32,
        _timeout: Duration,
    ) -> Result<(), TrialError> {
        self.check_fragment(fragment, None)?;
        match self.failing.iter().find(|f| fragment.contains(*f)) {
            Some(f) => Err(TrialError::Failed {
                element: f.to_string(),
                message: "failed by the test".into(),
                debug: None,
            }),
            None => Ok(()),
        }
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn path_exists(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }
}

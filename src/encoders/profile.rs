//! One encoder profile as read from its YAML file: what it needs, what it takes, the fragment it
//! renders and how its bitrate changes at run time. Reading is strict (unknown keys, unknown
//! placeholders and contradictions are errors with a line and column) and needs no GStreamer;
//! whether the fragment parses is checked by the catalog.

use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::template::Template;
use super::{Codec, EncodeSettings};
use crate::devices::caps::PixelFormat;

/// A profile read from YAML; see profiles/README.md for the schema.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    name: ProfileName,
    codec: Codec,
    /// Higher wins among usable profiles for the same codec and input.
    priority: u32,
    #[serde(default)]
    requires: Requirements,
    input: Vec<InputFormat>,
    pipeline: Template,
    #[serde(default)]
    bitrate: Option<BitrateControl>,
}

/// What must hold on this machine before a trial encode is even attempted.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// GStreamer element factories that must be registered.
    #[serde(default)]
    pub elements: Vec<String>,
    /// Device nodes that must exist, such as /dev/dri/renderD128.
    #[serde(default)]
    pub devices: Vec<DevicePath>,
    /// A substring of /proc/device-tree/model, such as "Raspberry Pi".
    #[serde(default)]
    pub platform: Option<String>,
}

/// An absolute device path (relative ones would depend on the daemon's working directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePath(PathBuf);

impl DevicePath {
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl TryFrom<String> for DevicePath {
    type Error = String;

    fn try_from(path: String) -> Result<Self, Self::Error> {
        if Path::new(&path).is_absolute() {
            Ok(Self(path.into()))
        } else {
            Err(format!("device {path} is not an absolute path"))
        }
    }
}

/// How to change the bitrate of a running encoder (for adaptive bitrate): set `property` of the
/// element named `element` in the fragment to `value(kbps)`. If `field` is set the property is a
/// GstStructure (v4l2h264enc's `extra-controls`) and the value goes into that field of it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitrateControl {
    pub element: String,
    pub property: String,
    #[serde(default)]
    pub field: Option<String>,
    /// Property units per kbit/s: 1 for encoders counting in kbit/s, 1000 for those in bit/s.
    pub scale: NonZeroU32,
}

impl BitrateControl {
    pub fn value(&self, kbps: u32) -> u64 {
        u64::from(kbps) * u64::from(self.scale.get())
    }
}

/// A profile name: also the key that /etc overrides match and that the config forces, so it is
/// kept to characters that need no quoting anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ProfileName(String);

/// Long enough for any real name, short enough for a table column.
const MAX_NAME_LEN: usize = 64;

impl TryFrom<String> for ProfileName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(valid_char) {
            return Err(format!(
                "profile name {name:?} must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 - _ ."
            ));
        }
        Ok(Self(name))
    }
}

/// One entry of `input:`: a GStreamer raw format name, or H264 for passthrough.
#[derive(Clone, Debug, PartialEq, Eq)]
enum InputFormat {
    Raw(String),
    H264,
}

impl TryFrom<String> for InputFormat {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        match name.as_str() {
            "H264" => Ok(Self::H264),
            "MJPG" | "MJPEG" | "JPEG" => Err(format!(
                "{name}: MJPEG is decoded before encoding; list the raw format the encoder takes"
            )),
            // GStreamer format names (I420, NV12, YUY2, BGRx): anything else would break the caps string.
            _ if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Ok(Self::Raw(name)),
            _ => Err(format!("{name:?} is not a GStreamer raw format name")),
        }
    }
}

/// Reads a string and validates it inside the YAML deserializer, so the error carries the value's
/// line and column (serde's `try_from` attribute validates afterwards, when the position is gone).
struct ValidatedStr<T>(PhantomData<T>);

impl<T> Visitor<'_> for ValidatedStr<T>
where
    T: TryFrom<String>,
    T::Error: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        T::try_from(value.to_string()).map_err(E::custom)
    }
}

macro_rules! deserialize_validated_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(ValidatedStr(PhantomData))
            }
        }
    )*};
}

deserialize_validated_str!(Template, ProfileName, InputFormat, DevicePath);

/// A profile file that cannot be used, with the position in the file (1-based).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{line}:{column}: {message}")]
pub struct ProfileError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ProfileError {
    fn from_yaml(err: serde_yaml::Error) -> Self {
        let (line, column) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
        // serde_yaml appends " at line L column C"; the position is already in front.
        let message = err.to_string();
        let suffix = format!(" at line {line} column {column}");
        let message = message.strip_suffix(&suffix).unwrap_or(&message).to_string();
        Self { line, column, message }
    }

    /// An error about a top-level key whose value serde has no position for.
    pub fn at_key(text: &str, key: &str, message: String) -> Self {
        let (line, column) = key_position(text, key);
        Self {
            line,
            column,
            message: format!("{key}: {message}"),
        }
    }
}

/// Where a top-level `key:` is written, for errors found after deserialising (1:1 if not found).
fn key_position(text: &str, key: &str) -> (usize, usize) {
    let prefix = format!("{key}:");
    text.lines()
        .position(|line| line.starts_with(&prefix))
        .map_or((1, 1), |index| (index + 1, 1))
}

impl Profile {
    pub fn from_yaml(text: &str) -> Result<Self, ProfileError> {
        let profile: Profile = serde_yaml::from_str(text).map_err(ProfileError::from_yaml)?;
        profile
            .validate()
            .map_err(|(key, message)| ProfileError::at_key(text, key, message))?;
        Ok(profile)
    }

    /// Contradictions between keys, which serde cannot see one value at a time.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let passthrough = self.input.contains(&InputFormat::H264);
        if self.input.is_empty() {
            return Err(("input", "lists no format".into()));
        }
        if passthrough && self.input.len() > 1 {
            return Err(("input", "H264 (passthrough) cannot be mixed with raw formats".into()));
        }
        if passthrough && self.codec != Codec::H264 {
            return Err(("input", "H264 passthrough only makes an h264 stream".into()));
        }
        match (&self.bitrate, passthrough) {
            (None, false) => Err((
                "bitrate",
                "missing: an encoder must say how its bitrate is changed".into(),
            )),
            (Some(_), true) => Err(("bitrate", "passthrough has no bitrate to change; remove it".into())),
            (Some(control), false)
                if !names_element(&self.pipeline.render(&EncodeSettings::default()), &control.element) =>
            {
                Err((
                    "bitrate",
                    format!(
                        "element {:?} is not named in the pipeline (add name={0})",
                        control.element
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name.0
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn priority(&self) -> u32 {
        self.priority
    }

    pub fn requirements(&self) -> &Requirements {
        &self.requires
    }

    /// Complete fragment from raw video (or, for passthrough, H.264) to the encoded stream.
    pub fn render(&self, settings: &EncodeSettings) -> String {
        self.pipeline.render(settings)
    }

    /// The raw format the encoder prefers (the first listed), or None for passthrough.
    pub fn raw_input(&self) -> Option<&str> {
        match self.input.first() {
            Some(InputFormat::Raw(format)) => Some(format),
            _ => None,
        }
    }

    /// The raw format to convert to for a camera delivering `input`: the camera's own format when
    /// the encoder lists it (no conversion at all), else the preferred one. None for passthrough.
    pub fn raw_input_for(&self, input: &PixelFormat) -> Option<&str> {
        let own = input.gst_raw_format();
        self.input
            .iter()
            .find_map(|f| match f {
                InputFormat::Raw(format) if Some(format.as_str()) == own => Some(format.as_str()),
                _ => None,
            })
            .or_else(|| self.raw_input())
    }

    pub fn is_passthrough(&self) -> bool {
        self.raw_input().is_none()
    }

    /// Passthrough takes the camera's H.264 only. Encoders take any raw format GStreamer can
    /// convert and MJPEG (decoded first); a camera's own H.264 is not decoded to be re-encoded.
    pub fn accepts(&self, input: &PixelFormat) -> bool {
        if self.is_passthrough() {
            *input == PixelFormat::H264
        } else {
            *input == PixelFormat::Mjpeg || input.gst_raw_format().is_some()
        }
    }

    /// None for passthrough, whose bitrate is the camera's.
    pub fn bitrate_control(&self) -> Option<&BitrateControl> {
        self.bitrate.as_ref()
    }
}

/// Whether a gst-launch fragment gives some element `name=<element>` (a textual check; the catalog
/// proves it on the parsed bin where the elements exist).
fn names_element(fragment: &str, element: &str) -> bool {
    fragment
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("name="))
        .any(|name| name.trim_matches(|c| c == '"' || c == '\'') == element)
}

#[cfg(test)]
mod tests {
    use super::*;

    const X264: &str = r#"name: x264
codec: h264
priority: 10
requires:
  elements: [x264enc]
input: [I420]
pipeline: "x264enc name=enc bitrate={bitrate_kbps} key-int-max={gop} ! video/x-h264,profile=constrained-baseline"
bitrate: { element: enc, property: bitrate, scale: 1 }
"#;

    const PASSTHROUGH: &str = r#"name: passthrough
codec: h264
priority: 100
input: [H264]
pipeline: "h264parse config-interval=-1"
"#;

    fn error(text: &str) -> ProfileError {
        Profile::from_yaml(text).unwrap_err()
    }

    #[test]
    fn reads_a_complete_profile() {
        let p = Profile::from_yaml(X264).unwrap();
        assert_eq!(p.name(), "x264");
        assert_eq!(p.codec(), Codec::H264);
        assert_eq!(p.priority(), 10);
        assert_eq!(p.requirements().elements, ["x264enc"]);
        assert_eq!(p.raw_input(), Some("I420"));
        let control = p.bitrate_control().unwrap();
        assert_eq!(
            (control.element.as_str(), control.property.as_str(), control.value(800)),
            ("enc", "bitrate", 800)
        );
    }

    #[test]
    fn renders_settings_into_the_fragment() {
        let p = Profile::from_yaml(X264).unwrap();
        let s = EncodeSettings {
            bitrate_kbps: 900,
            gop: 45,
            ..EncodeSettings::default()
        };
        assert_eq!(
            p.render(&s),
            "x264enc name=enc bitrate=900 key-int-max=45 ! video/x-h264,profile=constrained-baseline"
        );
    }

    #[test]
    fn unknown_key_is_reported_at_its_line_and_column() {
        let text = X264.replace("priority: 10\n", "priority: 10\npriorty: 3\n");
        let err = error(&text);
        assert_eq!((err.line, err.column), (4, 1), "{err}");
        assert!(err.message.contains("unknown field `priorty`"), "{err}");
    }

    #[test]
    fn unknown_key_inside_requires_is_an_error() {
        let text = X264.replace("  elements: [x264enc]\n", "  elements: [x264enc]\n  kernel: 6\n");
        let err = error(&text);
        assert_eq!((err.line, err.column), (6, 3), "{err}");
    }

    #[test]
    fn unknown_placeholder_is_reported_at_the_pipeline_value() {
        let err = error(&X264.replace("{gop}", "{keyframes}"));
        assert_eq!((err.line, err.column), (7, 11), "{err}");
        assert!(err.message.contains("unknown placeholder {keyframes}"), "{err}");
    }

    #[test]
    fn yaml_syntax_error_has_a_position() {
        let err = error("name: \"x264\ncodec: h264\n");
        assert_eq!(err.line, 3, "{err}");
        assert!(
            err.message
                .contains("while scanning a quoted scalar at line 1 column 7"),
            "{err}"
        );
    }

    #[test]
    fn relative_device_and_zero_scale_are_errors() {
        let err = error(&X264.replace(
            "  elements: [x264enc]\n",
            "  elements: [x264enc]\n  devices: [dri/renderD128]\n",
        ));
        assert!(err.message.contains("not an absolute path"), "{err}");
        let err = error(&X264.replace("scale: 1", "scale: 0"));
        assert!(err.message.contains("nonzero"), "{err}");
    }

    #[test]
    fn bad_names_and_inputs_are_errors() {
        assert!(error(&X264.replace("name: x264", "name: \"x 264\""))
            .message
            .contains("profile name"));
        assert!(error(&X264.replace("[I420]", "[MJPG]"))
            .message
            .contains("decoded before"));
        assert!(error(&X264.replace("[I420]", "[\"I420,NV12\"]"))
            .message
            .contains("not a GStreamer raw format"));
    }

    #[test]
    fn contradictions_point_at_their_key() {
        let err = error(&X264.replace("[I420]", "[]"));
        assert_eq!((err.line, err.message.as_str()), (6, "input: lists no format"));
        let err = error(&X264.replace("[I420]", "[H264, I420]"));
        assert!(
            err.message.starts_with("input: H264 (passthrough) cannot be mixed"),
            "{err}"
        );
        let err = error(&X264.replace("element: enc", "element: encoder"));
        assert_eq!(err.line, 8, "{err}");
        assert!(err.message.contains("not named in the pipeline"), "{err}");
        let without_bitrate: String = X264
            .lines()
            .filter(|l| !l.starts_with("bitrate:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(error(&without_bitrate).message.starts_with("bitrate: missing"));
        let err = error(&format!(
            "{PASSTHROUGH}bitrate: {{ element: enc, property: bitrate, scale: 1 }}\n"
        ));
        assert!(err.message.starts_with("bitrate: passthrough has no bitrate"), "{err}");
        assert!(error(&PASSTHROUGH.replace("h264\n", "vp8\n"))
            .message
            .contains("only makes an h264 stream"));
    }

    #[test]
    fn encoders_accept_raw_and_mjpeg_passthrough_only_h264() {
        let enc = Profile::from_yaml(X264).unwrap();
        let pass = Profile::from_yaml(PASSTHROUGH).unwrap();
        for input in [
            PixelFormat::Yuyv,
            PixelFormat::Nv12,
            PixelFormat::I420,
            PixelFormat::Mjpeg,
        ] {
            assert!(enc.accepts(&input) && !pass.accepts(&input), "{input:?}");
        }
        assert!(!enc.accepts(&PixelFormat::H264) && pass.accepts(&PixelFormat::H264));
        assert!(!enc.accepts(&PixelFormat::Other("BA81".into())));
        assert!(pass.is_passthrough() && pass.raw_input().is_none() && pass.bitrate_control().is_none());
    }

    #[test]
    fn conversion_only_when_the_encoder_lacks_the_cameras_format() {
        let p = Profile::from_yaml(&X264.replace("[I420]", "[I420, NV12, YUY2]")).unwrap();
        assert_eq!(p.raw_input_for(&PixelFormat::Yuyv), Some("YUY2"));
        assert_eq!(p.raw_input_for(&PixelFormat::Nv12), Some("NV12"));
        assert_eq!(p.raw_input_for(&PixelFormat::Mjpeg), Some("I420"));
    }

    #[test]
    fn quoted_element_names_count() {
        assert!(names_element("x264enc name=\"enc\" ! identity", "enc"));
        assert!(!names_element("x264enc name=encoder", "enc"));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn profile_text() -> impl Strategy<Value = String> {
        use crate::fuzz::mutated;
        prop_oneof![
            mutated(include_str!("../../profiles/x264.yaml")),
            mutated(include_str!("../../profiles/vp8.yaml")),
            mutated(include_str!("../../profiles/passthrough.yaml")),
            mutated(include_str!("../../profiles/v4l2h264enc.yaml")),
            mutated(include_str!("../../profiles/vah264enc.yaml")),
        ]
    }

    proptest! {
        /// A broken profile (users put their own in /etc/edgecam/profiles) is an error with a
        /// position inside the file and a message; one that loads renders its fragment.
        #[test]
        fn fuzz_profile_from_yaml(text in profile_text()) {
            match Profile::from_yaml(&text) {
                Ok(profile) => {
                    let _ = profile.render(&EncodeSettings::default());
                    prop_assert!(!profile.name().is_empty());
                }
                Err(e) => {
                    prop_assert!(!e.message.is_empty());
                    prop_assert!(e.line >= 1 && e.column >= 1, "{}", e);
                    prop_assert!(e.line <= crate::fuzz::yaml_lines(&text) + 1, "{}", e);
                }
            }
        }
    }
}

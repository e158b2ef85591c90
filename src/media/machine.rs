//! The machine `encoders` checks profiles against, for real: GStreamer's registry and parser and a
//! trial encode (`trial`), and files below a root directory (`/` in the daemon; tests point it at
//! a directory that looks like a Raspberry Pi's /proc and /dev).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::trial;
use crate::encoders::{Control, Machine, TrialError};

#[derive(Clone, Debug)]
pub struct GstMachine {
    root: PathBuf,
}

impl GstMachine {
    /// This machine.
    pub fn real() -> Self {
        Self::with_root("/")
    }

    /// GStreamer here, files below `root`.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn below_root(&self, absolute: &Path) -> PathBuf {
        self.root.join(absolute.strip_prefix("/").unwrap_or(absolute))
    }
}

impl Machine for GstMachine {
    fn element_exists(&self, name: &str) -> Result<bool, TrialError> {
        trial::element_exists(name)
    }

    fn check_fragment(&self, fragment: &str, control: Option<Control<'_>>) -> Result<(), TrialError> {
        trial::check_fragment(fragment, control)
    }

    fn trial_encode(
        &self,
        fragment: &str,
        raw_input: Option<&str>,
        frames: u32,
        timeout: Duration,
    ) -> Result<(), TrialError> {
        trial::trial_encode(fragment, raw_input, frames, timeout)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(self.below_root(path))
    }

    fn path_exists(&self, path: &Path) -> bool {
        self.below_root(path).exists()
    }
}

/// The catalog checked on this machine for real: what the fake machines in `encoders` stand for.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::caps::PixelFormat;
    use crate::encoders::{Catalog, Codec, EncodeSettings, ProfileReport};

    fn fixture(dir: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/encoders")
            .join(dir)
    }

    fn report_of<'a>(reports: &'a [ProfileReport], name: &str) -> &'a ProfileReport {
        reports
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no {name} in {reports:#?}"))
    }

    fn names(catalog: &Catalog, input: PixelFormat, codec: Codec) -> Vec<String> {
        catalog
            .choose(&input, codec, None)
            .profiles
            .iter()
            .map(|p| p.name().to_string())
            .collect()
    }

    #[test]
    fn files_are_read_below_the_root() {
        let pi = GstMachine::with_root(fixture("rpi4-root"));
        let model = pi.read_file(Path::new("/proc/device-tree/model")).unwrap();
        assert!(model.starts_with(b"Raspberry Pi 4 Model B"), "{model:?}");
        assert!(pi.path_exists(Path::new("/dev/video11")));
        assert!(!GstMachine::with_root("/nonexistent").path_exists(Path::new("/dev/video11")));
    }

    /// A PC with x264, openh264, vp8 and gstreamer1.0-vaapi installed, no GPU: every shipped profile
    /// parses, and is either proven usable or unusable with its reason.
    #[test]
    fn real_check_on_this_machine() {
        let mut catalog = Catalog::load(&[], &GstMachine::real());
        catalog.check(&GstMachine::real());
        let reports = catalog.report();
        assert!(
            reports.iter().all(|r| !r.reason.starts_with("rejected")),
            "{reports:#?}"
        );
        for usable in ["x264", "openh264", "vp8", "passthrough"] {
            let r = report_of(&reports, usable);
            assert!(r.usable, "{r:?}");
            assert!(r.reason.contains("trial encode of 10 frames passed"), "{r:?}");
        }
        let vaapi = report_of(&reports, "vaapih264enc");
        assert!(!vaapi.usable);
        assert!(vaapi.reason.contains("vaapih264enc not found"), "{vaapi:?}");
        assert!(
            vaapi.reason.contains("device /dev/dri/renderD128 does not exist"),
            "{vaapi:?}"
        );
        let nv = report_of(&reports, "nvh264enc");
        assert!(
            !nv.usable && nv.reason.starts_with("GStreamer element nvh264enc not found"),
            "{nv:?}"
        );
        let v4l2 = report_of(&reports, "v4l2h264enc");
        assert!(
            !v4l2.usable && v4l2.reason.contains("needs platform \"Raspberry Pi\""),
            "{v4l2:?}"
        );
        assert_eq!(names(&catalog, PixelFormat::Yuyv, Codec::H264), ["x264", "openh264"]);
        assert_eq!(names(&catalog, PixelFormat::H264, Codec::H264), ["passthrough"]);
        assert_eq!(names(&catalog, PixelFormat::Mjpeg, Codec::Vp8), ["vp8"]);
    }

    #[test]
    fn on_the_fake_pi_4_root_only_the_missing_element_stops_v4l2h264enc() {
        let pi = GstMachine::with_root(fixture("rpi4-root"));
        let mut catalog = Catalog::load(&[], &pi);
        catalog.check(&pi);
        let v4l2 = report_of(&catalog.report(), "v4l2h264enc").clone();
        assert!(!v4l2.usable);
        assert_eq!(
            v4l2.reason,
            "GStreamer element v4l2h264enc not found (plugin not installed, or no hardware/driver for it)"
        );
    }

    /// The fragment checks of the bad-files fixture (its YAML errors are tested in `encoders`).
    #[test]
    fn broken_fragments_are_rejected_at_their_key() {
        let dir = fixture("bad");
        let reports = Catalog::load(std::slice::from_ref(&dir), &GstMachine::real()).report();
        let reason = |file: &str| {
            let source = dir.join(file).display().to_string();
            let r = reports
                .iter()
                .find(|r| r.source == source)
                .unwrap_or_else(|| panic!("{file}: {reports:#?}"));
            r.reason
                .strip_prefix(&format!("rejected: {source}:"))
                .unwrap_or(&r.reason)
                .to_string()
        };
        assert!(
            reason("d-fragment-syntax.yaml").starts_with("5:1: pipeline: does not parse:"),
            "{reports:#?}"
        );
        assert!(reason("e-no-such-property.yaml")
            .contains("6:1: bitrate: element \"enc\" has no property \"target-bitrate\""));
        assert_eq!(
            reports.iter().filter(|r| r.reason.starts_with("rejected")).count(),
            6,
            "README.txt is not a profile"
        );
    }

    #[test]
    fn v4l2h264enc_fragment_parses_though_the_element_is_absent() {
        let catalog = Catalog::load(&[], &GstMachine::real());
        let v4l2 = catalog.profile("v4l2h264enc").unwrap();
        let fragment = v4l2.render(&EncodeSettings::default());
        assert!(fragment.contains("repeat_sequence_header=1") && fragment.contains("video_bitrate=1000000"));
        assert!(fragment.contains("level=(string)4"));
        // The grammar is parsed before any element is made: a syntax error would be Parse, not this.
        match trial::check_fragment(&fragment, None) {
            Err(TrialError::MissingElements(missing)) => assert_eq!(missing, ["v4l2h264enc"]),
            other => panic!("{other:?}"),
        }
        // v4l2src (present here) shares v4l2h264enc's V4L2 object and its extra-controls property:
        // standing in for it, the controls structure and the caps parse for real, and the bitrate
        // field is proven to sit in a structure property.
        let stand_in = fragment.replace("v4l2h264enc", "v4l2src");
        let control = v4l2.bitrate_control().unwrap();
        assert_eq!(
            (control.field.as_deref(), control.value(1000)),
            (Some("video_bitrate"), 1_000_000)
        );
        let control = Control {
            element: &control.element,
            property: &control.property,
            structure: true,
        };
        trial::check_fragment(&stand_in, Some(control)).unwrap();
    }

    #[test]
    fn test_only_failing_profile_passes_the_trial_then_fails_at_run_time() {
        let mut catalog = Catalog::load(&[fixture("failing")], &GstMachine::real());
        catalog.check(&GstMachine::real());
        let first = catalog.choose(&PixelFormat::Yuyv, Codec::H264, None).profiles;
        let first_two: Vec<&str> = first[..2].iter().map(|p| p.name()).collect();
        assert_eq!(first_two, ["x264-fails-after-60", "x264"]);
        let err = trial::trial_encode(
            &first[0].render(&EncodeSettings::default()),
            Some("I420"),
            100,
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(
            matches!(err, TrialError::Failed { ref element, .. } if element == "fail_after"),
            "{err}"
        );
    }
}

//! Every known profile, where it came from and whether it is usable here, and the per-camera
//! choice. Loading never fails: a bad file is kept as a rejection with its reason, so one typo in
//! /etc cannot stop the daemon, and `edgecam profiles` shows what went wrong.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use super::host::unmet;
use super::machine::{Control, Machine, TrialError, TRIAL_FPS, TRIAL_HEIGHT, TRIAL_WIDTH};
use super::profile::{Profile, ProfileError};
use super::{builtin, Codec, EncodeSettings};
use crate::devices::caps::PixelFormat;

/// Enough frames to get past an encoder's start-up and see output; few enough that all trials
/// together add well under a second to start on a PC.
const TRIAL_FRAMES: u32 = 10;
/// A hardware encoder may take a second or two to open; one that hangs must not stall start longer.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot list profiles: {source}", dir.display())]
    ListDir { dir: PathBuf, source: io::Error },
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: io::Error },
    #[error("{file}:{error}")]
    Invalid { file: String, error: ProfileError },
    #[error("{file}: profile {name:?} is already defined by {first} in the same directory")]
    Duplicate { file: String, name: String, first: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    Unchecked,
    Usable(String),
    Unusable(String),
}

#[derive(Debug)]
struct Entry {
    profile: Profile,
    /// "builtin:x264.yaml" or the file's path.
    source: String,
    status: Status,
}

/// A file that was not loaded, under the name its file would have given it.
#[derive(Debug)]
struct Rejected {
    name: String,
    source: String,
    error: LoadError,
}

#[derive(Debug, Default)]
pub struct Catalog {
    entries: Vec<Entry>,
    rejected: Vec<Rejected>,
}

/// One line of `edgecam profiles`, the start-up log and GET /api/profiles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProfileReport {
    pub name: String,
    /// None for a file that was rejected before its codec was known.
    pub codec: Option<Codec>,
    pub priority: Option<u32>,
    pub usable: bool,
    pub reason: String,
    pub source: String,
}

/// The candidates for one camera, and why a forced profile was not put first, if it was not.
#[derive(Debug)]
pub struct Choice<'a> {
    pub profiles: Vec<&'a Profile>,
    pub forced_refused: Option<String>,
}

impl Catalog {
    /// Where the .deb installs profiles, then where the administrator overrides or adds them.
    pub fn default_dirs() -> Vec<PathBuf> {
        vec![
            PathBuf::from("/usr/share/edgecam/profiles"),
            PathBuf::from("/etc/edgecam/profiles"),
        ]
    }

    /// The built-in profiles, then each directory in order: a profile with a known name replaces
    /// it, a new name adds one. A missing directory is normal (nothing installed or overridden).
    /// `machine` checks that each fragment parses.
    pub fn load(dirs: &[PathBuf], machine: &dyn Machine) -> Catalog {
        let mut catalog = Catalog::default();
        let builtin = builtin::PROFILES
            .iter()
            .map(|(file, text)| (format!("builtin:{file}"), Ok(text.to_string())));
        catalog.add_layer(builtin.collect(), machine);
        for dir in dirs {
            match read_dir(dir) {
                Ok(files) => catalog.add_layer(files, machine),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => catalog.reject(
                    dir.display().to_string(),
                    LoadError::ListDir {
                        dir: dir.clone(),
                        source,
                    },
                ),
            }
        }
        catalog
    }

    /// One directory's files: names must be unique within it, and override earlier layers.
    fn add_layer(&mut self, files: Vec<(String, io::Result<String>)>, machine: &dyn Machine) {
        let mut defined_here: Vec<(String, String)> = Vec::new();
        for (file, text) in files {
            let profile = match text {
                Ok(text) => parse(&file, &text, machine),
                Err(source) => Err(LoadError::Read {
                    file: file.clone(),
                    source,
                }),
            };
            let profile = match profile {
                Ok(profile) => profile,
                Err(error) => {
                    self.reject(file, error);
                    continue;
                }
            };
            let name = profile.name().to_string();
            if let Some((_, first)) = defined_here.iter().find(|(n, _)| *n == name) {
                let error = LoadError::Duplicate {
                    file: file.clone(),
                    name,
                    first: first.clone(),
                };
                self.reject(file, error);
                continue;
            }
            defined_here.push((name.clone(), file.clone()));
            let entry = Entry {
                profile,
                source: file,
                status: Status::Unchecked,
            };
            match self.entries.iter_mut().find(|e| e.profile.name() == name) {
                Some(old) => {
                    info!(profile = %name, from = %entry.source, replaces = %old.source, "encoder profile overridden");
                    *old = entry;
                }
                None => self.entries.push(entry),
            }
        }
    }

    fn reject(&mut self, source: String, error: LoadError) {
        warn!("encoder profile skipped: {error}");
        let name = Path::new(source.trim_start_matches("builtin:"))
            .file_stem()
            .map_or_else(|| source.clone(), |s| s.to_string_lossy().into_owned());
        self.rejected.push(Rejected { name, source, error });
    }

    /// Proves each profile usable here, once per run: requirements first (cheap, and they give the
    /// clearest reason), then a trial encode, because an element can exist with no hardware behind it.
    pub fn check(&mut self, machine: &dyn Machine) {
        for entry in self.entries.iter_mut().filter(|e| e.status == Status::Unchecked) {
            entry.status = check_one(&entry.profile, machine);
            match &entry.status {
                Status::Usable(why) => info!(profile = entry.profile.name(), "encoder profile usable: {why}"),
                Status::Unusable(why) => info!(profile = entry.profile.name(), "encoder profile unusable: {why}"),
                Status::Unchecked => {}
            }
        }
    }

    /// Usable profiles for a camera delivering `input`, best first. A forced profile goes first if
    /// it can be used; else the automatic order stands and `forced_refused` says why.
    pub fn choose(&self, input: &PixelFormat, codec: Codec, forced: Option<&str>) -> Choice<'_> {
        let fits = |p: &Profile| p.codec() == codec && p.accepts(input);
        let mut profiles: Vec<&Profile> = self
            .entries
            .iter()
            .filter(|e| matches!(e.status, Status::Usable(_)) && fits(&e.profile))
            .map(|e| &e.profile)
            .collect();
        profiles.sort_by(|a, b| b.priority().cmp(&a.priority()).then_with(|| a.name().cmp(b.name())));

        let forced_refused = forced.and_then(|name| {
            let Some(entry) = self.entries.iter().find(|e| e.profile.name() == name) else {
                return Some(format!("forced encoder profile {name:?} does not exist"));
            };
            let refusal = match &entry.status {
                Status::Unusable(why) => format!("is unusable here: {why}"),
                Status::Unchecked => "has not been checked on this machine".into(),
                Status::Usable(_) if entry.profile.codec() != codec => {
                    format!("makes {}, not {codec}", entry.profile.codec())
                }
                Status::Usable(_) if !entry.profile.accepts(input) => format!("does not take {} input", input.fourcc()),
                Status::Usable(_) => {
                    let at = profiles.iter().position(|p| p.name() == name)?;
                    let forced = profiles.remove(at);
                    profiles.insert(0, forced);
                    return None;
                }
            };
            Some(format!("forced encoder profile {name:?} {refusal}"))
        });
        Choice {
            profiles,
            forced_refused,
        }
    }

    /// A loaded profile by name, whatever its status.
    #[cfg(test)]
    pub(crate) fn profile(&self, name: &str) -> Option<&Profile> {
        self.entries.iter().map(|e| &e.profile).find(|p| p.name() == name)
    }

    /// Every profile and every rejected file, usable ones first, best first within a codec.
    pub fn report(&self) -> Vec<ProfileReport> {
        let mut reports: Vec<ProfileReport> = self
            .entries
            .iter()
            .map(|e| {
                let (usable, reason) = match &e.status {
                    Status::Usable(why) => (true, why.clone()),
                    Status::Unusable(why) => (false, why.clone()),
                    Status::Unchecked => (false, "not checked yet".into()),
                };
                ProfileReport {
                    name: e.profile.name().into(),
                    codec: Some(e.profile.codec()),
                    priority: Some(e.profile.priority()),
                    usable,
                    reason,
                    source: e.source.clone(),
                }
            })
            .collect();
        reports.sort_by(|a, b| {
            b.usable
                .cmp(&a.usable)
                .then_with(|| a.codec.cmp(&b.codec))
                .then_with(|| b.priority.cmp(&a.priority))
                .then_with(|| a.name.cmp(&b.name))
        });
        reports.extend(self.rejected.iter().map(|r| ProfileReport {
            name: r.name.clone(),
            codec: None,
            priority: None,
            usable: false,
            reason: format!("rejected: {}", r.error),
            source: r.source.clone(),
        }));
        reports
    }
}

/// Reads a profile and checks that its fragment parses. A fragment whose elements are missing here
/// is not an error of the file: the requirement check reports it as unusable.
fn parse(file: &str, text: &str, machine: &dyn Machine) -> Result<Profile, LoadError> {
    let invalid = |error| LoadError::Invalid {
        file: file.to_string(),
        error,
    };
    let profile = Profile::from_yaml(text).map_err(invalid)?;
    let control = profile.bitrate_control().map(|c| Control {
        element: &c.element,
        property: &c.property,
        structure: c.field.is_some(),
    });
    match machine.check_fragment(&profile.render(&EncodeSettings::default()), control) {
        Ok(()) | Err(TrialError::MissingElements(_)) => Ok(profile),
        Err(err @ TrialError::Parse(_)) => Err(invalid(ProfileError::at_key(text, "pipeline", err.to_string()))),
        Err(err) => Err(invalid(ProfileError::at_key(text, "bitrate", err.to_string()))),
    }
}

fn check_one(profile: &Profile, machine: &dyn Machine) -> Status {
    let unmet = unmet(profile.requirements(), machine);
    if !unmet.is_empty() {
        let reasons: Vec<String> = unmet.iter().map(ToString::to_string).collect();
        return Status::Unusable(reasons.join("; "));
    }
    let settings = EncodeSettings {
        width: TRIAL_WIDTH,
        height: TRIAL_HEIGHT,
        fps: TRIAL_FPS,
        ..EncodeSettings::default()
    };
    match machine.trial_encode(
        &profile.render(&settings),
        profile.raw_input(),
        TRIAL_FRAMES,
        TRIAL_TIMEOUT,
    ) {
        Ok(()) => Status::Usable(format!(
            "requirements met, trial encode of {TRIAL_FRAMES} frames passed"
        )),
        // The camera supplies passthrough's input; lacking a test source says nothing against it.
        Err(err @ TrialError::NoH264Source { .. }) => {
            Status::Usable(format!("requirements met, not trial-encoded: {err}"))
        }
        Err(err) => Status::Unusable(format!("trial encode failed: {err}")),
    }
}

/// The profile files of one directory, sorted so the order (and any duplicate error) is stable.
fn read_dir(dir: &Path) -> io::Result<Vec<(String, io::Result<String>)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) && path.is_file())
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|path| (path.display().to_string(), std::fs::read_to_string(&path)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoders::machine::FakeMachine;

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

    fn names(profiles: &[&Profile]) -> Vec<String> {
        profiles.iter().map(|p| p.name().to_string()).collect()
    }

    /// The built-in catalog with statuses set by hand, so choice is tested without trial encodes.
    fn checked_by_hand(usable: &[&str]) -> Catalog {
        let mut catalog = Catalog::load(&[], &FakeMachine::pc());
        for entry in &mut catalog.entries {
            entry.status = if usable.contains(&entry.profile.name()) {
                Status::Usable("by hand".into())
            } else {
                Status::Unusable("by hand".into())
            };
        }
        catalog
    }

    #[test]
    fn every_builtin_profile_loads_and_nothing_is_rejected() {
        let catalog = Catalog::load(&[], &FakeMachine::pc());
        assert!(catalog.rejected.is_empty(), "{:#?}", catalog.rejected);
        let mut loaded: Vec<&str> = catalog.entries.iter().map(|e| e.profile.name()).collect();
        loaded.sort();
        let shipped = [
            "nvh264enc",
            "openh264",
            "passthrough",
            "v4l2h264enc",
            "vaapih264enc",
            "vah264enc",
            "vp8",
            "x264",
        ];
        assert_eq!(loaded, shipped);
    }

    #[test]
    fn default_dirs_are_installed_then_etc() {
        assert_eq!(
            Catalog::default_dirs(),
            [
                PathBuf::from("/usr/share/edgecam/profiles"),
                PathBuf::from("/etc/edgecam/profiles")
            ]
        );
    }

    #[test]
    fn missing_directories_are_not_errors() {
        let catalog = Catalog::load(&[PathBuf::from("/nonexistent/edgecam/profiles")], &FakeMachine::pc());
        assert!(catalog.rejected.is_empty());
    }

    /// The files whose YAML is wrong; the fragment checks of the same fixture, which need real
    /// GStreamer, are in `media::machine`.
    #[test]
    fn bad_files_are_rejected_with_file_line_and_column_and_loading_goes_on() {
        let dir = fixture("bad");
        let catalog = Catalog::load(std::slice::from_ref(&dir), &FakeMachine::pc());
        let reports = catalog.report();
        let reason = |file: &str| {
            let source = dir.join(file).display().to_string();
            let r = reports
                .iter()
                .find(|r| r.source == source)
                .unwrap_or_else(|| panic!("{file}: {reports:#?}"));
            assert!(!r.usable && r.codec.is_none(), "{r:?}");
            r.reason
                .strip_prefix(&format!("rejected: {source}:"))
                .unwrap_or_else(|| panic!("{r:?}"))
                .to_string()
        };
        assert!(
            reason("a-unknown-key.yaml").starts_with("7:1: unknown field `latency`"),
            "{reports:#?}"
        );
        assert!(reason("b-unknown-placeholder.yaml").starts_with("5:11: pipeline: unknown placeholder {kbps}"));
        assert!(reason("c-yaml-syntax.yaml").contains("scanning a quoted scalar at line 5 column 11"));
        assert!(reason("g-duplicate.yaml").contains("\"x264-good\" is already defined by"));
        assert_eq!(
            report_of(&reports, "a-unknown-key").source,
            dir.join("a-unknown-key.yaml").display().to_string()
        );
        assert_eq!(report_of(&reports, "x264-good").reason, "not checked yet");
    }

    #[test]
    fn a_fragment_the_machine_cannot_parse_is_rejected_at_its_pipeline_key() {
        let dir = fixture("bad");
        struct Unparsable(FakeMachine);
        impl Machine for Unparsable {
            fn element_exists(&self, name: &str) -> Result<bool, TrialError> {
                self.0.element_exists(name)
            }
            fn check_fragment(&self, fragment: &str, _: Option<Control<'_>>) -> Result<(), TrialError> {
                match fragment.contains("! !") {
                    true => Err(TrialError::Parse("empty link".into())),
                    false => Ok(()),
                }
            }
            fn trial_encode(&self, f: &str, r: Option<&str>, n: u32, t: Duration) -> Result<(), TrialError> {
                self.0.trial_encode(f, r, n, t)
            }
            fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
                self.0.read_file(path)
            }
            fn path_exists(&self, path: &Path) -> bool {
                self.0.path_exists(path)
            }
        }
        let catalog = Catalog::load(std::slice::from_ref(&dir), &Unparsable(FakeMachine::pc()));
        let source = dir.join("d-fragment-syntax.yaml").display().to_string();
        let report = report_of(&catalog.report(), "d-fragment-syntax").clone();
        assert_eq!(
            report.reason,
            format!("rejected: {source}:5:1: pipeline: does not parse: empty link")
        );
    }

    #[test]
    fn later_directories_override_by_name_and_add_new_names() {
        let catalog = Catalog::load(&[fixture("override")], &FakeMachine::pc());
        let reports = catalog.report();
        let x264 = report_of(&reports, "x264");
        assert_eq!(
            (x264.priority, x264.source.as_str()),
            (Some(70), fixture("override/x264.yaml").to_str().unwrap())
        );
        assert_eq!(reports.iter().filter(|r| r.name == "x264").count(), 1);
        assert_eq!(report_of(&reports, "x264-slow").priority, Some(1));
        assert_eq!(report_of(&reports, "vp8").source, "builtin:vp8.yaml");
    }

    #[test]
    fn highest_priority_usable_profile_that_takes_the_input_comes_first() {
        let catalog = checked_by_hand(&["x264", "openh264", "vp8", "passthrough", "v4l2h264enc"]);
        for input in [PixelFormat::Yuyv, PixelFormat::Mjpeg, PixelFormat::Nv12] {
            assert_eq!(
                names(&catalog.choose(&input, Codec::H264, None).profiles),
                ["v4l2h264enc", "x264", "openh264"]
            );
        }
        assert_eq!(
            names(&catalog.choose(&PixelFormat::H264, Codec::H264, None).profiles),
            ["passthrough"]
        );
        assert_eq!(
            names(&catalog.choose(&PixelFormat::Yuyv, Codec::Vp8, None).profiles),
            ["vp8"]
        );
        assert!(catalog.choose(&PixelFormat::H264, Codec::Vp8, None).profiles.is_empty());
        assert!(catalog
            .choose(&PixelFormat::Other("BA81".into()), Codec::H264, None)
            .profiles
            .is_empty());
        assert!(
            Catalog::load(&[], &FakeMachine::pc())
                .choose(&PixelFormat::Yuyv, Codec::H264, None)
                .profiles
                .is_empty(),
            "unchecked is not usable"
        );
    }

    #[test]
    fn a_usable_forced_profile_goes_first_and_the_rest_stay_as_fallbacks() {
        let catalog = checked_by_hand(&["x264", "openh264", "v4l2h264enc"]);
        let choice = catalog.choose(&PixelFormat::Yuyv, Codec::H264, Some("openh264"));
        assert_eq!(choice.forced_refused, None);
        assert_eq!(names(&choice.profiles), ["openh264", "v4l2h264enc", "x264"]);
    }

    #[test]
    fn an_unusable_forced_profile_is_refused_with_its_reason() {
        let catalog = checked_by_hand(&["x264", "vp8", "passthrough"]);
        let refused = |forced: &str, input: PixelFormat| {
            let choice = catalog.choose(&input, Codec::H264, Some(forced));
            assert_eq!(
                names(&choice.profiles),
                names(&catalog.choose(&input, Codec::H264, None).profiles)
            );
            choice.forced_refused.unwrap()
        };
        assert_eq!(
            refused("nvh264enc", PixelFormat::Yuyv),
            "forced encoder profile \"nvh264enc\" is unusable here: by hand"
        );
        assert_eq!(
            refused("nope", PixelFormat::Yuyv),
            "forced encoder profile \"nope\" does not exist"
        );
        assert_eq!(
            refused("vp8", PixelFormat::Yuyv),
            "forced encoder profile \"vp8\" makes vp8, not h264"
        );
        assert_eq!(
            refused("passthrough", PixelFormat::Mjpeg),
            "forced encoder profile \"passthrough\" does not take MJPG input"
        );
        assert_eq!(
            refused("x264", PixelFormat::H264),
            "forced encoder profile \"x264\" does not take H264 input"
        );
    }

    #[test]
    fn report_lists_usable_first_then_by_codec_and_priority() {
        let catalog = checked_by_hand(&["x264", "openh264", "vp8"]);
        let order: Vec<String> = catalog.report().into_iter().map(|r| r.name).collect();
        assert_eq!(order[..3], ["x264", "openh264", "vp8"]);
        assert_eq!(order[3], "passthrough");
        let json = serde_json::to_value(&catalog.report()[0]).unwrap();
        assert_eq!(json["codec"], "h264");
        assert_eq!(json["usable"], true);
    }

    #[test]
    fn checks_on_a_fake_pc_keep_the_software_encoders_and_say_why_the_others_are_out() {
        let mut catalog = Catalog::load(&[], &FakeMachine::pc());
        catalog.check(&FakeMachine::pc());
        let reports = catalog.report();
        for usable in ["x264", "openh264", "vp8", "passthrough"] {
            let r = report_of(&reports, usable);
            assert!(r.usable, "{r:?}");
            assert_eq!(r.reason, "requirements met, trial encode of 10 frames passed");
        }
        let vaapi = report_of(&reports, "vaapih264enc");
        assert_eq!(
            vaapi.reason,
            "GStreamer element vaapih264enc not found (plugin not installed, or no hardware/driver for it); \
             device /dev/dri/renderD128 does not exist"
        );
        let v4l2 = report_of(&reports, "v4l2h264enc");
        assert!(
            !v4l2.usable && v4l2.reason.contains("needs platform \"Raspberry Pi\""),
            "{v4l2:?}"
        );
        assert_eq!(
            names(&catalog.choose(&PixelFormat::Yuyv, Codec::H264, None).profiles),
            ["x264", "openh264"]
        );
    }

    #[test]
    fn a_failed_trial_makes_a_profile_unusable_with_the_encoder_message() {
        let machine = FakeMachine {
            failing: vec!["openh264enc"],
            ..FakeMachine::pc()
        };
        let mut catalog = Catalog::load(&[], &machine);
        catalog.check(&machine);
        let openh264 = report_of(&catalog.report(), "openh264").clone();
        assert!(!openh264.usable);
        assert_eq!(openh264.reason, "trial encode failed: openh264enc: failed by the test");
    }

    #[test]
    fn on_a_fake_pi_4_v4l2h264enc_comes_first_and_without_its_plugin_only_the_element_stops_it() {
        let mut catalog = Catalog::load(&[], &FakeMachine::pi4());
        catalog.check(&FakeMachine::pi4());
        assert_eq!(
            names(&catalog.choose(&PixelFormat::Yuyv, Codec::H264, None).profiles),
            ["v4l2h264enc", "x264", "openh264"]
        );
        let mut no_plugin = FakeMachine::pi4();
        no_plugin.elements.retain(|e| *e != "v4l2h264enc");
        let mut catalog = Catalog::load(&[], &no_plugin);
        catalog.entries.retain(|e| e.profile.name() == "v4l2h264enc");
        catalog.check(&no_plugin);
        let report = &catalog.report()[0];
        assert!(!report.usable);
        assert_eq!(
            report.reason,
            "GStreamer element v4l2h264enc not found (plugin not installed, or no hardware/driver for it)"
        );
    }

    #[test]
    fn results_are_cached_for_the_run() {
        let mut catalog = Catalog::load(&[], &FakeMachine::pc());
        catalog.entries.retain(|e| e.profile.name() == "v4l2h264enc");
        catalog.check(&FakeMachine::pc());
        let first = catalog.report();
        catalog.check(&FakeMachine::pi4());
        assert_eq!(catalog.report(), first);
    }
}

//! One answer to "which mode, which encoder, and why" for a camera, used by `edgecam run` (the
//! supervisor), `edgecam probe` and, through the camera's setup, the API: so they cannot disagree.
//! Plain logic over the config, what a device offers (or a test pattern) and the checked catalog;
//! no GStreamer and no I/O.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::camera::Limits;
use crate::config::{self, CameraConfig, Config, Selector, TestPattern};
use crate::devices::bus::Bus;
use crate::devices::caps::{CaptureMode, FormatCaps, Fraction, PixelFormat};
use crate::devices::mode::{choose_mode, Wanted};
use crate::encoders::{Catalog, Codec, EncodeSettings, Profile};
use crate::media::{EncoderPlan, Origin, SourceSpec};

/// Keyframe interval in seconds: short enough that a lost packet heals quickly, long enough that
/// keyframes don't eat the bitrate. New viewers get one on demand anyway.
const GOP_SECONDS: u32 = 2;

/// Where a camera's pictures would come from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A V4L2 camera, with what its probe found.
    Device {
        devnode: &'a Path,
        formats: &'a [FormatCaps],
        bus: Bus,
    },
    /// A synthetic camera, labelled with `label`.
    Test { pattern: TestPattern, label: &'a str },
}

/// What a camera streams and with which encoders.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub source: SourceSpec,
    /// H.264 encoders, best first; a failure at run time moves to the next. Empty when none is
    /// usable for the source's format (the camera then shows that as its failure).
    pub encoders: Vec<EncoderPlan>,
    /// VP8 for browsers without H.264, if a VP8 profile is usable for the format.
    pub vp8: Option<EncoderPlan>,
    /// The smaller H.264 encoding for viewers on weak links (`camera::bitrate`).
    pub low_tier: Option<EncoderPlan>,
    /// The adaptive bitrate's bounds; the ceiling is the configured bitrate.
    pub limits: Limits,
    /// Encodings the camera may run at once.
    pub max_encodings: usize,
    pub reason: EncoderReason,
    /// The media server the camera is pushed to, if its config says so.
    pub push: Option<config::Push>,
}

/// Why the first H.264 encoder is the one it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncoderReason {
    /// The config names a profile (for this camera or in `defaults`) and it is usable.
    Forced {
        profile: String,
    },
    /// The config names a profile that is not usable here; the automatic choice stands.
    ForcedUnusable {
        chosen: String,
        refusal: String,
    },
    /// `format` as the source names it (see `SourceSpec::format_name`).
    HighestPriority {
        profile: String,
        format: String,
    },
    NoUsableEncoder {
        format: String,
        refusal: Option<String>,
    },
}

impl fmt::Display for EncoderReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forced { profile } => write!(f, "{profile}: forced by the config"),
            Self::ForcedUnusable { chosen, refusal } => write!(f, "{chosen}: {refusal}"),
            Self::HighestPriority { profile, format } => {
                write!(f, "{profile}: highest-priority usable profile for {format}")
            }
            Self::NoUsableEncoder { format, refusal } => {
                write!(f, "no usable encoder for {format}")?;
                match refusal {
                    Some(refusal) => write!(f, " ({refusal})"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Why a camera gets no plan at all, and is not streamed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotStreamed {
    #[error("disabled in the config")]
    Disabled,
    #[error("not in the config and discovery is off")]
    NotConfigured,
    #[error("no usable capture mode")]
    NoUsableMode,
}

/// What a device can be pinned to a config entry by.
#[derive(Clone, Copy, Debug)]
pub struct DeviceKeys<'a> {
    /// The id discovery gave it.
    pub id: &'a str,
    pub devnode: &'a Path,
    pub links: &'a [PathBuf],
    pub serial: Option<&'a str>,
}

/// The config entry a device matches (by device path or link, serial, by-path, or its own id),
/// and the camera id it gets: the entry's key, else the device's own id.
pub fn config_entry<'a>(config: &'a Config, device: DeviceKeys<'_>) -> (String, Option<&'a CameraConfig>) {
    let matches = |selector: &Selector| match selector {
        Selector::Device(path) => device.devnode == path || device.links.iter().any(|l| l == path),
        Selector::Serial(serial) => device.serial == Some(serial.as_str()),
        Selector::Path(p) => device.links.iter().any(|l| {
            l.starts_with("/dev/v4l/by-path")
                && l.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(p.as_str()))
        }),
        Selector::TestPattern(_) => false,
    };
    config
        .cameras
        .iter()
        .find(|(id, c)| match &c.selector {
            Some(selector) => matches(selector),
            None => id.as_str() == device.id,
        })
        .map(|(id, c)| (id.to_string(), Some(c)))
        .unwrap_or_else(|| (device.id.to_string(), None))
}

/// The plan for one camera: `entry` is its config entry (see [`config_entry`]), if it has one.
pub fn plan(
    config: &Config,
    entry: Option<&CameraConfig>,
    source: Source<'_>,
    catalog: &Catalog,
) -> Result<Plan, NotStreamed> {
    match entry {
        Some(entry) if !entry.enabled => return Err(NotStreamed::Disabled),
        None if !config.discovery => return Err(NotStreamed::NotConfigured),
        _ => {}
    }
    let defaults = &config.defaults;
    let wanted = Wanted {
        width: entry.and_then(|c| c.width).unwrap_or(defaults.width).0,
        height: entry.and_then(|c| c.height).unwrap_or(defaults.height).0,
        fps: entry.and_then(|c| c.fps).unwrap_or(defaults.fps).0,
    };
    let source = match source {
        Source::Device { devnode, formats, bus } => SourceSpec {
            mode: choose_mode(formats, &wanted, bus).ok_or(NotStreamed::NoUsableMode)?,
            origin: Origin::V4l2 {
                device: devnode.to_path_buf(),
            },
        },
        Source::Test { pattern, label } => SourceSpec {
            mode: CaptureMode {
                format: PixelFormat::I420,
                width: wanted.width,
                height: wanted.height,
                fps: Fraction::fps(wanted.fps),
            },
            origin: Origin::Test {
                pattern,
                label: label.to_string(),
            },
        },
    };
    let bitrate_kbps = entry.and_then(|c| c.bitrate).unwrap_or(defaults.bitrate).0;
    let mode = &source.mode;
    let fps = mode.fps.as_f64().round().max(1.0) as u32;
    let settings = EncodeSettings {
        bitrate_kbps,
        fps,
        gop: fps * GOP_SECONDS,
        width: mode.width,
        height: mode.height,
    };
    let encoder = |p: &&Profile| EncoderPlan {
        profile: p.name().to_string(),
        fragment: p.render(&settings),
        raw_input: p.raw_input_for(&mode.format).map(str::to_string),
        codec: p.codec(),
        bitrate: p.bitrate_control().cloned(),
        size: None,
    };
    let forced = entry.and_then(|c| c.profile.as_deref()).or(defaults.profile.as_deref());
    let choice = catalog.choose(&mode.format, Codec::H264, forced);
    let encoders: Vec<EncoderPlan> = choice.profiles.iter().map(encoder).collect();
    let reason = match (forced, choice.forced_refused, encoders.first()) {
        (_, refusal, None) => EncoderReason::NoUsableEncoder {
            format: source.format_name().to_string(),
            refusal,
        },
        (Some(_), Some(refusal), Some(first)) => EncoderReason::ForcedUnusable {
            chosen: first.profile.clone(),
            refusal,
        },
        (Some(_), None, Some(first)) => EncoderReason::Forced {
            profile: first.profile.clone(),
        },
        (None, _, Some(first)) => EncoderReason::HighestPriority {
            profile: first.profile.clone(),
            format: source.format_name().to_string(),
        },
    };
    let vp8 = catalog
        .choose(&mode.format, Codec::Vp8, None)
        .profiles
        .first()
        .map(encoder);
    let floor_kbps = entry.and_then(|c| c.min_bitrate).unwrap_or(defaults.min_bitrate).0;
    let limits = Limits::new(floor_kbps, bitrate_kbps);
    let max_encodings = entry.and_then(|c| c.max_encodings).unwrap_or(defaults.max_encodings).0 as usize;
    // The low tier: a quarter of the pixels at the low ceiling, from the best encoder that takes raw
    // pictures (a passthrough camera has none to scale).
    let low = EncodeSettings {
        bitrate_kbps: limits.low_ceiling_kbps,
        width: even(mode.width / 2),
        height: even(mode.height / 2),
        ..settings
    };
    let low_tier = choice
        .profiles
        .iter()
        .find(|p| p.raw_input_for(&mode.format).is_some())
        .map(|p| EncoderPlan {
            fragment: p.render(&low),
            size: Some((low.width, low.height)),
            ..encoder(p)
        });
    Ok(Plan {
        source,
        encoders,
        vp8,
        low_tier,
        limits,
        max_encodings,
        reason,
        push: entry.and_then(|c| c.push.clone()),
    })
}

/// Raw video sizes must be even in both directions for I420/NV12.
fn even(n: u32) -> u32 {
    (n & !1).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::fixture;
    use crate::devices::Camera;
    use crate::encoders::machine::FakeMachine;

    fn catalog(machine: &FakeMachine) -> Catalog {
        let mut catalog = Catalog::load(&[], machine);
        catalog.check(machine);
        catalog
    }

    fn config(yaml: &str) -> Config {
        Config::parse(yaml, Path::new("test.yaml")).unwrap()
    }

    fn keys(camera: &Camera) -> DeviceKeys<'_> {
        DeviceKeys {
            id: &camera.id,
            devnode: &camera.devnode,
            links: &camera.links,
            serial: camera.serial.as_deref(),
        }
    }

    fn device(camera: &Camera) -> Source<'_> {
        Source::Device {
            devnode: &camera.devnode,
            formats: &camera.formats,
            bus: camera.bus,
        }
    }

    /// The plan `run` would make for a fixture camera: its config entry, then the plan.
    fn plan_for(config: &Config, camera: &Camera, catalog: &Catalog) -> Result<Plan, NotStreamed> {
        let (_, entry) = config_entry(config, keys(camera));
        plan(config, entry, device(camera), catalog)
    }

    fn names(plans: &[EncoderPlan]) -> Vec<&str> {
        plans.iter().map(|p| p.profile.as_str()).collect()
    }

    #[test]
    fn a_usb_webcam_gets_its_closest_mode_and_the_best_software_encoder_on_a_pc() {
        let c920 = fixture::camera("logitech-c920", "/dev/video0");
        let plan = plan_for(&Config::default(), &c920, &catalog(&FakeMachine::pc())).unwrap();
        assert_eq!(plan.source.to_string(), "YUYV 640x480@30");
        assert_eq!(names(&plan.encoders), ["x264", "openh264"]);
        assert_eq!(
            plan.reason.to_string(),
            "x264: highest-priority usable profile for YUYV"
        );
        assert_eq!(plan.vp8.as_ref().map(|p| p.profile.as_str()), Some("vp8"));
        assert_eq!(plan.limits.ceiling_kbps, 1000);
        let x264 = &plan.encoders[0];
        assert_eq!(x264.raw_input.as_deref(), Some("I420"));
        assert!(
            x264.fragment.contains("bitrate=1000") && x264.fragment.contains("key-int-max=60"),
            "{}",
            x264.fragment
        );
    }

    #[test]
    fn on_a_pi_4_the_hardware_encoder_comes_first_with_software_fallbacks() {
        let cheap = fixture::camera("cheap-mjpeg-yuyv-webcam", "/dev/video2");
        let plan = plan_for(&Config::default(), &cheap, &catalog(&FakeMachine::pi4())).unwrap();
        assert_eq!(plan.source.to_string(), "YUYV 640x480@30");
        assert_eq!(names(&plan.encoders), ["v4l2h264enc", "x264", "openh264"]);
        assert_eq!(
            plan.reason,
            EncoderReason::HighestPriority {
                profile: "v4l2h264enc".into(),
                format: "YUYV".into(),
            }
        );
    }

    #[test]
    fn the_cameras_config_entry_sets_mode_bitrate_and_a_forced_profile() {
        let c920 = fixture::camera("logitech-c920", "/dev/video0");
        let config = config(
            "cameras:\n  front: { device: /dev/video0, width: 1280, height: 720, bitrate: 2500, profile: openh264 }\n",
        );
        assert_eq!(config_entry(&config, keys(&c920)).0, "front");
        let plan = plan_for(&config, &c920, &catalog(&FakeMachine::pc())).unwrap();
        // Raw 720p only does 10 fps on USB 2: MJPEG keeps 30.
        assert_eq!(plan.source.to_string(), "MJPG 1280x720@30");
        assert_eq!(names(&plan.encoders), ["openh264", "x264"]);
        assert_eq!(plan.reason.to_string(), "openh264: forced by the config");
        assert_eq!(plan.limits.ceiling_kbps, 2500);
        assert!(
            plan.encoders[0].fragment.contains("bitrate=2500000"),
            "{}",
            plan.encoders[0].fragment
        );
    }

    #[test]
    fn a_forced_profile_not_usable_here_says_why_and_the_automatic_choice_stands() {
        let c920 = fixture::camera("logitech-c920", "/dev/video0");
        let config = config("defaults: { profile: v4l2h264enc }\n");
        let plan = plan_for(&config, &c920, &catalog(&FakeMachine::pc())).unwrap();
        assert_eq!(names(&plan.encoders), ["x264", "openh264"]);
        let reason = plan.reason.to_string();
        assert!(
            reason.starts_with(
                "x264: forced encoder profile \"v4l2h264enc\" is unusable here: GStreamer element v4l2h264enc not found"
            ),
            "{reason}"
        );
    }

    #[test]
    fn a_camera_with_no_usable_encoder_still_gets_a_plan_that_says_so() {
        let c920 = fixture::camera("logitech-c920", "/dev/video0");
        let nothing = FakeMachine {
            elements: vec![],
            ..FakeMachine::pc()
        };
        let plan = plan_for(&Config::default(), &c920, &catalog(&nothing)).unwrap();
        assert!(plan.encoders.is_empty() && plan.vp8.is_none());
        assert_eq!(plan.reason.to_string(), "no usable encoder for YUYV");
    }

    #[test]
    fn disabled_unconfigured_and_modeless_cameras_are_not_streamed() {
        let c920 = fixture::camera("logitech-c920", "/dev/video0");
        let catalog = catalog(&FakeMachine::pc());
        let id = c920.id.clone();
        let disabled = config(&format!("cameras:\n  {id}: {{ enabled: false }}\n"));
        assert_eq!(plan_for(&disabled, &c920, &catalog), Err(NotStreamed::Disabled));
        let closed = config("discovery: false\n");
        assert_eq!(plan_for(&closed, &c920, &catalog), Err(NotStreamed::NotConfigured));
        let mut unusable = c920.clone();
        unusable.formats.retain(|f| !f.is_usable());
        assert_eq!(
            plan_for(&Config::default(), &unusable, &catalog),
            Err(NotStreamed::NoUsableMode)
        );
    }

    #[test]
    fn a_test_pattern_is_i420_at_the_wanted_mode() {
        let config = config("defaults: { width: 320, height: 240, fps: 15 }\n");
        let entry = CameraConfig::test_pattern(TestPattern::Smpte, "Demo".into());
        let source = Source::Test {
            pattern: TestPattern::Smpte,
            label: "Demo",
        };
        let plan = plan(&config, Some(&entry), source, &catalog(&FakeMachine::pc())).unwrap();
        assert_eq!(plan.source.to_string(), "I420 320x240@15 (test smpte)");
        assert_eq!(
            plan.reason.to_string(),
            "x264: highest-priority usable profile for I420"
        );
        assert!(
            plan.encoders[0].fragment.contains("key-int-max=30"),
            "{}",
            plan.encoders[0].fragment
        );
    }

    #[test]
    fn a_camera_delivering_h264_is_passed_through() {
        let c920 = fixture::camera("logitech-c920", "/dev/video0");
        let mut h264_only = c920.clone();
        h264_only.formats.retain(|f| f.format == PixelFormat::H264);
        let plan = plan_for(&Config::default(), &h264_only, &catalog(&FakeMachine::pc())).unwrap();
        assert_eq!(names(&plan.encoders), ["passthrough"]);
        assert_eq!(plan.encoders[0].raw_input, None);
        assert_eq!(plan.vp8, None, "VP8 would need the camera's H.264 decoded first");
    }
}

//! Where a camera's pictures come from: plain data the planner fills in and the camera pipeline
//! turns into a source element. One mode (format, size, rate as a fraction) whatever the origin,
//! and one display form for the log, the API and `edgecam probe`.

use std::fmt;
use std::path::PathBuf;

use crate::config::TestPattern;
use crate::devices::caps::CaptureMode;

#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// What the source delivers. A V4L2 device is always given an exact mode from its own list: left
    /// unconstrained, v4l2src picks odd ones (vivid negotiates 3840x2160 at 2 fps). A test source is
    /// I420, the format its drawing (`moving_ball`, `timecode`) writes into.
    pub mode: CaptureMode,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A synthetic camera: videotestsrc, labelled with a running clock.
    Test {
        pattern: TestPattern,
        label: String,
    },
    V4l2 {
        device: PathBuf,
    },
}

impl SourceSpec {
    /// The pictures' format as their origin names it: a device's V4L2 fourcc ("MJPG", "YUYV"), a
    /// test source's GStreamer format ("I420", which V4L2 calls "YU12").
    pub fn format_name(&self) -> &str {
        let format = &self.mode.format;
        match &self.origin {
            Origin::Test { .. } => format.gst_raw_format().unwrap_or(format.fourcc()),
            Origin::V4l2 { .. } => format.fourcc(),
        }
    }
}

impl fmt::Display for SourceSpec {
    /// "MJPG 1280x720@30" for a device, "I420 640x480@30 (test smpte)" for a synthetic camera.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let CaptureMode { width, height, fps, .. } = &self.mode;
        write!(f, "{} {width}x{height}@{fps}", self.format_name())?;
        match &self.origin {
            Origin::Test { pattern, .. } => write!(f, " (test {pattern})"),
            Origin::V4l2 { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
impl SourceSpec {
    /// A synthetic camera of this size at 30 fps, for tests.
    pub fn test_camera(pattern: crate::config::TestPattern, label: &str, width: u32, height: u32) -> Self {
        use crate::devices::caps::{Fraction, PixelFormat};
        Self {
            mode: CaptureMode {
                format: PixelFormat::I420,
                width,
                height,
                fps: Fraction::fps(30),
            },
            origin: Origin::Test {
                pattern,
                label: label.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::caps::{Fraction, PixelFormat};

    #[test]
    fn displays_the_mode_and_a_test_source_says_so() {
        let mode = CaptureMode {
            format: PixelFormat::Mjpeg,
            width: 1280,
            height: 720,
            fps: Fraction::fps(30),
        };
        let device = SourceSpec {
            mode: mode.clone(),
            origin: Origin::V4l2 {
                device: "/dev/video0".into(),
            },
        };
        assert_eq!(device.to_string(), "MJPG 1280x720@30");
        let test = SourceSpec {
            mode: CaptureMode {
                format: PixelFormat::I420,
                width: 640,
                height: 480,
                fps: Fraction { num: 15, den: 2 },
            },
            origin: Origin::Test {
                pattern: TestPattern::Smpte,
                label: "Demo".into(),
            },
        };
        assert_eq!(test.to_string(), "I420 640x480@15/2 (test smpte)");
    }
}

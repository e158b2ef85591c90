//! What a V4L2 capture device can deliver, as plain data: no ioctls here, so mode choice and
//! node filtering are unit-tested on fixtures captured from real cameras.

use serde::{Deserialize, Serialize};

/// A pixel format as V4L2 names it (fourcc), with the ones edgecam treats specially named.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Packed 4:2:2, what most UVC webcams send uncompressed ("YUYV", GStreamer "YUY2").
    Yuyv,
    /// Motion JPEG ("MJPG"): how USB webcams fit 720p/1080p at 30 fps through USB 2.0.
    Mjpeg,
    /// H.264 elementary stream from the camera itself ("H264"): can be passed through without re-encoding.
    H264,
    /// Semi-planar 4:2:0 ("NV12"), common on ISPs and what hardware encoders want.
    Nv12,
    /// Planar 4:2:0 ("YU12", GStreamer "I420"); what videotestsrc produces for demo cameras.
    I420,
    /// Anything else, by its fourcc.
    Other(String),
}

impl PixelFormat {
    pub fn from_fourcc(fourcc: &str) -> Self {
        match fourcc.trim_end() {
            "YUYV" => Self::Yuyv,
            "MJPG" | "JPEG" => Self::Mjpeg,
            "H264" => Self::H264,
            "NV12" => Self::Nv12,
            "YU12" => Self::I420,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn fourcc(&self) -> &str {
        match self {
            Self::Yuyv => "YUYV",
            Self::Mjpeg => "MJPG",
            Self::H264 => "H264",
            Self::Nv12 => "NV12",
            Self::I420 => "YU12",
            Self::Other(s) => s,
        }
    }

    /// Compressed formats cost the USB bus a fraction of raw ones.
    pub fn is_compressed(&self) -> bool {
        matches!(self, Self::Mjpeg | Self::H264)
    }

    /// The GStreamer raw video format name, for raw formats only.
    pub fn gst_raw_format(&self) -> Option<&'static str> {
        match self {
            Self::Yuyv => Some("YUY2"),
            Self::Nv12 => Some("NV12"),
            Self::I420 => Some("I420"),
            _ => None,
        }
    }
}

/// A frame rate as a fraction (V4L2 reports intervals; rate = 1 / interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fraction {
    pub num: u32,
    pub den: u32,
}

impl Fraction {
    pub fn fps(num: u32) -> Self {
        Self { num, den: 1 }
    }

    pub fn as_f64(self) -> f64 {
        if self.den == 0 {
            0.0
        } else {
            self.num as f64 / self.den as f64
        }
    }
}

impl std::fmt::Display for Fraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// One capture mode: what v4l2src is told to deliver, exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CaptureMode {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: Fraction,
}

impl std::fmt::Display for CaptureMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}x{}@{}",
            self.format.fourcc(),
            self.width,
            self.height,
            self.fps
        )
    }
}

/// What VIDIOC_ENUM_FRAMESIZES reported for one pixel format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameSizes {
    /// Every size listed (UVC webcams).
    Discrete(Vec<(u32, u32)>),
    /// Any size in a range (ISPs, scalers, v4l2loopback before a producer, Pi legacy camera).
    /// CONTINUOUS is reported as steps of 1.
    Stepwise {
        min_w: u32,
        max_w: u32,
        step_w: u32,
        min_h: u32,
        max_h: u32,
        step_h: u32,
    },
}

/// Sizes a stepwise range is tried at: what viewers and encoders expect, from QVGA to 1080p.
/// A range says "anything", so edgecam offers these (plus the range's ends) rather than millions.
const STANDARD_SIZES: [(u32, u32); 9] = [
    (320, 240),
    (640, 360),
    (640, 480),
    (800, 600),
    (1024, 768),
    (1280, 720),
    (1280, 960),
    (1600, 1200),
    (1920, 1080),
];

impl FrameSizes {
    /// The sizes to probe and to choose from: discrete ones as listed; for a range the standard
    /// sizes inside it (on its step grid) plus its minimum and maximum, smallest first.
    pub fn candidates(&self) -> Vec<(u32, u32)> {
        match *self {
            Self::Discrete(ref sizes) => sizes.clone(),
            Self::Stepwise {
                min_w,
                max_w,
                step_w,
                min_h,
                max_h,
                step_h,
            } => {
                let on_grid = |v: u32, min: u32, max: u32, step: u32| {
                    (min..=max).contains(&v) && (step <= 1 || (v - min) % step == 0)
                };
                let mut sizes: Vec<(u32, u32)> = STANDARD_SIZES
                    .iter()
                    .copied()
                    .filter(|&(w, h)| on_grid(w, min_w, max_w, step_w) && on_grid(h, min_h, max_h, step_h))
                    .collect();
                sizes.push((min_w, min_h));
                sizes.push((max_w, max_h));
                sizes.sort_by_key(|&(w, h)| (u64::from(w) * u64::from(h), w));
                sizes.dedup();
                sizes
            }
        }
    }
}

/// What VIDIOC_ENUM_FRAMEINTERVALS reported for one format and size. These are intervals
/// (seconds per frame, 1/30 for 30 fps), not rates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameIntervals {
    Discrete(Vec<Fraction>),
    /// A range of intervals (STEPWISE or CONTINUOUS); the step is not kept: S_PARM rounds to
    /// the nearest interval the driver can do, and only a few drivers report steps at all.
    Stepwise {
        min_interval: Fraction,
        max_interval: Fraction,
    },
}

/// Rates a range of intervals is tried at, fastest first.
const STANDARD_RATES: [u32; 9] = [60, 50, 30, 25, 24, 20, 15, 10, 5];

impl FrameIntervals {
    /// The frame rates (frames per second, as fractions) these intervals allow, fastest first.
    pub fn rates(&self) -> Vec<Fraction> {
        let mut rates: Vec<Fraction> = match self {
            Self::Discrete(intervals) => intervals.iter().filter_map(|i| interval_to_rate(*i)).collect(),
            Self::Stepwise {
                min_interval,
                max_interval,
            } => match (interval_to_rate(*min_interval), interval_to_rate(*max_interval)) {
                (Some(fastest), Some(slowest)) => {
                    let mut rates = vec![fastest, slowest];
                    rates.extend(
                        STANDARD_RATES
                            .iter()
                            .map(|&r| Fraction::fps(r))
                            .filter(|r| r.as_f64() <= fastest.as_f64() && r.as_f64() >= slowest.as_f64()),
                    );
                    rates
                }
                _ => Vec::new(),
            },
        };
        rates.sort_by(|a, b| b.as_f64().total_cmp(&a.as_f64()));
        rates.dedup_by(|a, b| a.as_f64() == b.as_f64());
        rates
    }
}

/// 1/30 s per frame is 30/1 frames per second, reduced (2/50 -> 25/1). None for a zero interval,
/// which buggy drivers do report.
fn interval_to_rate(interval: Fraction) -> Option<Fraction> {
    if interval.num == 0 || interval.den == 0 {
        return None;
    }
    let g = gcd(interval.num, interval.den);
    Some(Fraction {
        num: interval.den / g,
        den: interval.num / g,
    })
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One frame size of a format, with the frame rates the device offers at that size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeCaps {
    pub width: u32,
    pub height: u32,
    /// Frame rates (frames per second), fastest first. Empty when the driver does not enumerate
    /// intervals: the rate is then whatever S_PARM gets.
    pub intervals: Vec<Fraction>,
}

/// One pixel format a capture node offers, with every size (and rates per size) it can deliver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatCaps {
    pub format: PixelFormat,
    /// The driver's own name for it ("Motion-JPEG"), for people reading `edgecam probe`.
    pub description: String,
    pub sizes: Vec<SizeCaps>,
}

impl FormatCaps {
    /// Assembles one format from the enumeration ioctls' answers; `intervals_at` asks
    /// ENUM_FRAMEINTERVALS for one size (None: the driver does not say).
    pub fn from_enumeration(
        fourcc: &str,
        description: &str,
        sizes: &FrameSizes,
        mut intervals_at: impl FnMut(u32, u32) -> Option<FrameIntervals>,
    ) -> Self {
        Self {
            format: PixelFormat::from_fourcc(fourcc),
            description: description.to_string(),
            sizes: sizes
                .candidates()
                .into_iter()
                .map(|(width, height)| SizeCaps {
                    width,
                    height,
                    intervals: intervals_at(width, height).map(|i| i.rates()).unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Formats edgecam's pipelines can take: compressed ones, and raw ones GStreamer names.
    pub fn is_usable(&self) -> bool {
        self.format.is_compressed() || self.format.gst_raw_format().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stepwise_range_offers_standard_sizes_on_its_grid_plus_its_ends() {
        // Pi legacy camera: 32x32 - 2592x1944, step 2
        let pi = FrameSizes::Stepwise {
            min_w: 32,
            max_w: 2592,
            step_w: 2,
            min_h: 32,
            max_h: 1944,
            step_h: 2,
        };
        let sizes = pi.candidates();
        assert_eq!(sizes.first(), Some(&(32, 32)));
        assert_eq!(sizes.last(), Some(&(2592, 1944)));
        assert!(sizes.contains(&(640, 480)) && sizes.contains(&(1920, 1080)));
        // step 64 from 64: 640 and 1280 are on the grid, 1080 is not
        let coarse = FrameSizes::Stepwise {
            min_w: 64,
            max_w: 4096,
            step_w: 64,
            min_h: 64,
            max_h: 4096,
            step_h: 64,
        };
        let sizes = coarse.candidates();
        assert!(sizes.contains(&(1280, 960)) && !sizes.contains(&(1920, 1080)) && !sizes.contains(&(640, 360)));
    }

    #[test]
    fn intervals_become_rates_fastest_first() {
        let intervals = FrameIntervals::Discrete(vec![
            Fraction { num: 1, den: 15 },
            Fraction { num: 1, den: 30 },
            Fraction { num: 2, den: 25 },
            Fraction { num: 0, den: 1 },
        ]);
        assert_eq!(
            intervals.rates(),
            [Fraction::fps(30), Fraction::fps(15), Fraction { num: 25, den: 2 }]
        );
        let range = FrameIntervals::Stepwise {
            min_interval: Fraction { num: 1, den: 90 },
            max_interval: Fraction::fps(1),
        };
        let rates: Vec<String> = range.rates().iter().map(ToString::to_string).collect();
        assert_eq!(rates, ["90", "60", "50", "30", "25", "24", "20", "15", "10", "5", "1"]);
    }

    #[test]
    fn sizes_without_enumerated_intervals_have_no_rates() {
        let sizes = FrameSizes::Discrete(vec![(640, 480)]);
        let caps = FormatCaps::from_enumeration("MJPG", "Motion-JPEG", &sizes, |_, _| None);
        assert_eq!(caps.format, PixelFormat::Mjpeg);
        assert_eq!(
            caps.sizes,
            [SizeCaps {
                width: 640,
                height: 480,
                intervals: vec![]
            }]
        );
    }
}

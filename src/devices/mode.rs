//! Choosing the capture mode: the probed (format, size, rate) closest to what is wanted that the
//! bus can carry. The result is always one exact mode from the device's own list, because
//! v4l2src left to negotiate picks the biggest (vivid: 3840x2160 at 2 fps).

use super::bus::Bus;
use super::caps::{CaptureMode, FormatCaps, Fraction, PixelFormat};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// The mode asked for, per camera from the config, else 640x480@30 like the original system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wanted {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl Default for Wanted {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            fps: 30,
        }
    }
}

/// The mode for edgecam's own encoder: raw when the bus can carry it at that size and rate (no
/// decode cost), else MJPEG, else the camera's H.264 (which then has to be decoded first).
/// Closeness to `wanted` ranks before format: size first, then rate. A raw mode that does not
/// fit the bus ranks after every mode that does, whatever its size, and is only chosen when
/// nothing else exists (the camera may still manage a lower rate).
pub fn choose_mode(formats: &[FormatCaps], wanted: &Wanted, bus: Bus) -> Option<CaptureMode> {
    candidates(formats, wanted).min_by(|a, b| {
        let overflows = |c: &CaptureMode| !fits_bus(c, bus);
        overflows(a)
            .cmp(&overflows(b))
            .then_with(|| closeness(a, b, wanted))
            .then_with(|| format_rank(&a.format).cmp(&format_rank(&b.format)))
            .then_with(|| b.fps.as_f64().total_cmp(&a.fps.as_f64()))
    })
}

/// Every (format, size, rate) the pipelines can take. A size whose driver lists no rates gets
/// the wanted one, which v4l2src then asks for with S_PARM.
fn candidates<'a>(formats: &'a [FormatCaps], wanted: &'a Wanted) -> impl Iterator<Item = CaptureMode> + 'a {
    formats.iter().filter(|f| f.is_usable()).flat_map(move |f| {
        f.sizes.iter().flat_map(move |s| {
            let rates = if s.intervals.is_empty() {
                vec![Fraction::fps(wanted.fps)]
            } else {
                s.intervals.clone()
            };
            rates.into_iter().map(move |fps| CaptureMode {
                format: f.format.clone(),
                width: s.width,
                height: s.height,
                fps,
            })
        })
    })
}

/// Which of two modes is closer to `wanted`: size distance first, then rate distance, both as
/// ratios (|ln|): 1280x720 is as far above 640x360 as 320x180 is below it, and 15 fps as far from
/// 30 as 60 is. Width and height count separately so a different aspect ratio counts against a mode.
fn closeness(a: &CaptureMode, b: &CaptureMode, wanted: &Wanted) -> Ordering {
    let ratio = |have: f64, want: u32| {
        if have > 0.0 && want > 0 {
            (have / f64::from(want)).ln().abs()
        } else {
            f64::MAX
        }
    };
    let size = |c: &CaptureMode| ratio(f64::from(c.width), wanted.width) + ratio(f64::from(c.height), wanted.height);
    let rate = |c: &CaptureMode| ratio(c.fps.as_f64(), wanted.fps);
    size(a).total_cmp(&size(b)).then_with(|| rate(a).total_cmp(&rate(b)))
}

/// Raw first (no decode), then MJPEG (cheap to decode), then H.264 (a full decode before encoding).
fn format_rank(format: &PixelFormat) -> u8 {
    match format {
        PixelFormat::Mjpeg => 1,
        PixelFormat::H264 => 2,
        _ => 0,
    }
}

/// Bytes per second of a raw mode against what the bus carries; compressed modes always fit.
fn fits_bus(mode: &CaptureMode, bus: Bus) -> bool {
    let (Some(budget), Some(bits)) = (bus.raw_budget(), bits_per_pixel(&mode.format)) else {
        return true;
    };
    let bytes_per_second = f64::from(mode.width) * f64::from(mode.height) * f64::from(bits) / 8.0 * mode.fps.as_f64();
    bytes_per_second <= budget as f64
}

fn bits_per_pixel(format: &PixelFormat) -> Option<u32> {
    match format {
        PixelFormat::Yuyv => Some(16),
        PixelFormat::Nv12 | PixelFormat::I420 => Some(12),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::caps::{FrameIntervals, FrameSizes, SizeCaps};
    use crate::devices::fixture::node;

    const USB2: Bus = Bus::Usb { speed_mbps: Some(480) };

    fn formats(fixture: &str, devnode: &str) -> Vec<FormatCaps> {
        node(fixture, devnode).formats
    }

    fn want(width: u32, height: u32, fps: u32) -> Wanted {
        Wanted { width, height, fps }
    }

    fn mode(text: &str) -> Option<String> {
        Some(text.to_string())
    }

    fn chosen(formats: &[FormatCaps], wanted: Wanted, bus: Bus) -> Option<String> {
        choose_mode(formats, &wanted, bus).map(|m| m.to_string())
    }

    #[test]
    fn yuyv_640x480_at_30_fits_usb2_so_raw_is_chosen() {
        // 640 * 480 * 2 bytes * 30 = 18.4 MB/s of 24.6
        let c920 = formats("logitech-c920", "/dev/video0");
        assert_eq!(chosen(&c920, Wanted::default(), USB2), mode("YUYV 640x480@30"));
        let cheap = formats("cheap-mjpeg-yuyv-webcam", "/dev/video2");
        assert_eq!(chosen(&cheap, Wanted::default(), USB2), mode("YUYV 640x480@30"));
    }

    #[test]
    fn c920_720p30_is_mjpeg_because_its_raw_720p_only_does_10_fps() {
        let c920 = formats("logitech-c920", "/dev/video0");
        assert_eq!(chosen(&c920, want(1280, 720, 30), USB2), mode("MJPG 1280x720@30"));
        assert_eq!(chosen(&c920, want(1920, 1080, 30), USB2), mode("MJPG 1920x1080@30"));
    }

    #[test]
    fn raw_1280x720_at_30_does_not_fit_usb2_so_mjpeg_is_chosen() {
        // as a USB 3 camera lists it, whatever port it is in: raw 720p30 is 55 MB/s
        let sizes = |intervals: Vec<Fraction>| {
            vec![SizeCaps {
                width: 1280,
                height: 720,
                intervals,
            }]
        };
        let caps = vec![
            FormatCaps {
                format: PixelFormat::Yuyv,
                description: "YUYV 4:2:2".into(),
                sizes: sizes(vec![Fraction::fps(30)]),
            },
            FormatCaps {
                format: PixelFormat::Mjpeg,
                description: "Motion-JPEG".into(),
                sizes: sizes(vec![Fraction::fps(30)]),
            },
        ];
        assert_eq!(chosen(&caps, want(1280, 720, 30), USB2), mode("MJPG 1280x720@30"));
        assert_eq!(
            chosen(&caps, want(1280, 720, 30), Bus::Usb { speed_mbps: Some(5000) }),
            mode("YUYV 1280x720@30")
        );
        assert_eq!(
            chosen(&caps, want(1280, 720, 30), Bus::Platform),
            mode("YUYV 1280x720@30")
        );
    }

    #[test]
    fn usb1_cannot_carry_even_vga_raw() {
        let c920 = formats("logitech-c920", "/dev/video0");
        assert_eq!(
            chosen(&c920, Wanted::default(), Bus::Usb { speed_mbps: Some(12) }),
            mode("MJPG 640x480@30")
        );
    }

    #[test]
    fn raw_that_does_not_fit_is_still_chosen_when_there_is_nothing_else() {
        let caps = vec![FormatCaps {
            format: PixelFormat::Yuyv,
            description: "YUYV 4:2:2".into(),
            sizes: vec![SizeCaps {
                width: 640,
                height: 480,
                intervals: vec![Fraction::fps(30)],
            }],
        }];
        assert_eq!(
            chosen(&caps, Wanted::default(), Bus::Usb { speed_mbps: Some(12) }),
            mode("YUYV 640x480@30")
        );
        assert_eq!(chosen(&[], Wanted::default(), USB2), None);
    }

    #[test]
    fn vivid_gets_an_explicit_vga_mode_not_what_v4l2src_would_negotiate() {
        // vivid lists 640x480 up to 25 fps: same size at 25 beats 640x360 at 30 (size first)
        let vivid = formats("vivid", "/dev/video0");
        assert_eq!(
            chosen(&vivid, Wanted::default(), Bus::Platform),
            mode("YUYV 640x480@25")
        );
        assert_eq!(
            chosen(&vivid, want(640, 360, 30), Bus::Platform),
            mode("YUYV 640x360@30")
        );
    }

    #[test]
    fn stepwise_sizes_give_the_wanted_mode_not_the_largest() {
        // no intervals enumerated for a range: the wanted rate is asked for
        let pi = formats("pi-legacy-camera", "/dev/video0");
        assert_eq!(chosen(&pi, Wanted::default(), Bus::Platform), mode("YU12 640x480@30"));
        // a vivid-like range with a continuous rate range: still exactly 640x480@30
        let range = FrameSizes::Stepwise {
            min_w: 16,
            max_w: 3840,
            step_w: 1,
            min_h: 16,
            max_h: 2160,
            step_h: 1,
        };
        let rates = FrameIntervals::Stepwise {
            min_interval: Fraction { num: 1, den: 60 },
            max_interval: Fraction::fps(1),
        };
        let caps = vec![FormatCaps::from_enumeration("YUYV", "YUYV 4:2:2", &range, |_, _| {
            Some(rates.clone())
        })];
        assert_eq!(chosen(&caps, Wanted::default(), Bus::Platform), mode("YUYV 640x480@30"));
    }

    #[test]
    fn mjpeg_only_camera_gets_the_nearest_size() {
        // 640x360@30 is nearer 640x480 than 1280x720@30
        let kodak = formats("kodak-pixpro-mjpeg-only", "/dev/video8");
        assert_eq!(
            chosen(&kodak, Wanted::default(), Bus::Usb { speed_mbps: Some(5000) }),
            mode("MJPG 640x360@30")
        );
        assert_eq!(
            chosen(&kodak, want(3840, 2160, 30), Bus::Usb { speed_mbps: Some(5000) }),
            mode("MJPG 3840x2160@5")
        );
    }

    #[test]
    fn loopback_webcam_mode_is_its_one_mode() {
        // the third node of the fixture: video11 once its producer streams
        let streaming = crate::devices::fixture::load("v4l2loopback").remove(2).formats;
        assert_eq!(
            chosen(&streaming, Wanted::default(), Bus::Virtual),
            mode("YUYV 640x480@30")
        );
    }
}

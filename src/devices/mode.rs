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
        Self { width: 640, height: 480, fps: 30 }
    }
}

/// The mode for edgecam's own encoder: raw when the bus can carry it at that size and rate (no
/// decode cost), else MJPEG, else the camera's H.264 (which then has to be decoded first).
/// Closeness to `wanted` ranks before format: size first, then rate. A raw mode that does not
/// fit the bus ranks after every mode that does, whatever its size, and is only chosen when
/// nothing else exists (the camera may still manage a lower rate).
pub fn choose_mode(formats: &[FormatCaps], wanted: &Wanted, bus: Bus) -> Option<CaptureMode> {
    candidates(formats, wanted)
        .min_by(|a, b| {
            let overflows = |c: &CaptureMode| !fits_bus(c, bus);
            overflows(a)
                .cmp(&overflows(b))
                .then_with(|| closeness(a, b, wanted))
                .then_with(|| format_rank(&a.format).cmp(&format_rank(&b.format)))
                .then_with(|| b.fps.as_f64().total_cmp(&a.fps.as_f64()))
        })
}

/// The camera's own H.264 closest to `wanted`, for passing it through without re-encoding (one
/// encode fewer, and the only way a Pi Zero streams 1080p). None when the camera has no H.264;
/// the caller then uses [`choose_mode`] with an encoder.
pub fn choose_passthrough_mode(formats: &[FormatCaps], wanted: &Wanted) -> Option<CaptureMode> {
    candidates(formats, wanted)
        .filter(|c| c.format == PixelFormat::H264)
        .min_by(|a, b| closeness(a, b, wanted).then_with(|| b.fps.as_f64().total_cmp(&a.fps.as_f64())))
}

/// Every (format, size, rate) the pipelines can take. A size whose driver lists no rates gets
/// the wanted one, which v4l2src then asks for with S_PARM.
fn candidates<'a>(formats: &'a [FormatCaps], wanted: &'a Wanted) -> impl Iterator<Item = CaptureMode> + 'a {
    formats.iter().filter(|f| f.is_usable()).flat_map(move |f| {
        f.sizes.iter().flat_map(move |s| {
            let rates = if s.intervals.is_empty() { vec![Fraction::fps(wanted.fps)] } else { s.intervals.clone() };
            rates.into_iter().map(move |fps| CaptureMode { format: f.format.clone(), width: s.width, height: s.height, fps })
        })
    })
}

/// Which of two modes is closer to `wanted`: size distance first, then rate distance, both as ratios (|ln|): 1280x720 is as far above
/// 640x360 as 320x180 is below it, and 15 fps as far from 30 as 60 is. Width and height count
/// separately so a different aspect ratio counts against a mode.
fn closeness(a: &CaptureMode, b: &CaptureMode, wanted: &Wanted) -> Ordering {
    let ratio = |have: f64, want: u32| if have > 0.0 && want > 0 { (have / f64::from(want)).ln().abs() } else { f64::MAX };
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

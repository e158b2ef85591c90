//! Asking one V4L2 node what it is and what it can deliver: QUERYCAP, ENUM_FMT,
//! ENUM_FRAMESIZES and ENUM_FRAMEINTERVALS through the `v4l` crate.
//!
//! QUERYCAP and ENUM_FMT go through the crate's raw `ioctl` rather than `Device::query_caps` and
//! `Capture::enum_formats`: those `unwrap()` the driver's strings as UTF-8, and uvcvideo copies
//! the USB product string into the 32-byte card name, cutting a multi-byte character in half
//! when the name is long, which would panic the daemon on plugging such a camera in. They also
//! only enumerate single-planar capture formats.

use super::caps::{FormatCaps, Fraction, FrameIntervals, FrameSizes};
use super::classify::{classify, CaptureBuffers, NodeKind, Querycap};
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::v4l_sys::{v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE, v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE};
use v4l::v4l_sys::{v4l2_capability, v4l2_fmtdesc};
use v4l::video::Capture;
use v4l::{Device, FourCC};

/// One probed node: who made it, what it is, what it offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub devnode: PathBuf,
    pub driver: String,
    pub card: String,
    pub bus_info: String,
    pub kind: NodeKind,
    /// Capture formats; empty for nodes that do not capture video.
    pub formats: Vec<FormatCaps>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot open {}: {source}", devnode.display())]
    Open { devnode: PathBuf, source: io::Error },
    #[error("VIDIOC_QUERYCAP on {}: {source}", devnode.display())]
    Querycap { devnode: PathBuf, source: io::Error },
    #[error("VIDIOC_ENUM_FMT on {} (index {index}): {source}", devnode.display())]
    EnumFormats {
        devnode: PathBuf,
        index: u32,
        source: io::Error,
    },
}

/// Formats beyond this are a driver bug (UVC devices list a handful, unicam about 50).
const MAX_FORMATS: u32 = 256;

pub fn probe_node(devnode: &Path) -> Result<NodeInfo, ProbeError> {
    let device = Device::with_path(devnode).map_err(|source| ProbeError::Open {
        devnode: devnode.into(),
        source,
    })?;
    let cap = querycap(&device).map_err(|source| ProbeError::Querycap {
        devnode: devnode.into(),
        source,
    })?;
    let formats = match cap.capture_buffer_type() {
        Some(buffers) => enum_formats(&device, devnode, buffers)?,
        None => Vec::new(),
    };
    Ok(NodeInfo {
        devnode: devnode.to_path_buf(),
        kind: classify(&cap, &formats),
        driver: cap.driver,
        card: cap.card,
        bus_info: cap.bus_info,
        formats,
    })
}

fn querycap(device: &Device) -> io::Result<Querycap> {
    // SAFETY: v4l2_capability is plain integers and byte arrays, valid when zeroed, and is the
    // argument type VIDIOC_QUERYCAP is defined with; the fd stays open for the call.
    let raw: v4l2_capability = unsafe {
        let mut raw: v4l2_capability = std::mem::zeroed();
        v4l::v4l2::ioctl(
            device.handle().fd(),
            v4l::v4l2::vidioc::VIDIOC_QUERYCAP,
            &mut raw as *mut _ as *mut _,
        )?;
        raw
    };
    Ok(Querycap {
        driver: c_string(&raw.driver),
        card: c_string(&raw.card),
        bus_info: c_string(&raw.bus_info),
        capabilities: raw.capabilities,
        device_caps: raw.device_caps,
    })
}

fn enum_formats(device: &Device, devnode: &Path, buffers: CaptureBuffers) -> Result<Vec<FormatCaps>, ProbeError> {
    let buf_type = match buffers {
        CaptureBuffers::SinglePlane => v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE,
        CaptureBuffers::MultiPlane => v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
    };
    let mut formats = Vec::new();
    for index in 0..MAX_FORMATS {
        // SAFETY: as in querycap; index and type are set as ENUM_FMT expects.
        let desc = unsafe {
            let mut desc: v4l2_fmtdesc = std::mem::zeroed();
            desc.index = index;
            desc.type_ = buf_type;
            match v4l::v4l2::ioctl(
                device.handle().fd(),
                v4l::v4l2::vidioc::VIDIOC_ENUM_FMT,
                &mut desc as *mut _ as *mut _,
            ) {
                Ok(()) => desc,
                // EINVAL marks the end of the list
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(source) => {
                    return Err(ProbeError::EnumFormats {
                        devnode: devnode.into(),
                        index,
                        source,
                    })
                }
            }
        };
        let fourcc = FourCC::from(desc.pixelformat);
        let sizes = frame_sizes(device, fourcc);
        formats.push(FormatCaps::from_enumeration(
            &fourcc_text(desc.pixelformat),
            &c_string(&desc.description),
            &sizes,
            |w, h| frame_intervals(device, fourcc, w, h),
        ));
    }
    Ok(formats)
}

/// A format without ENUM_FRAMESIZES (old drivers) gets no sizes and so is never chosen.
fn frame_sizes(device: &Device, fourcc: FourCC) -> FrameSizes {
    let Ok(sizes) = device.enum_framesizes(fourcc) else {
        return FrameSizes::Discrete(Vec::new());
    };
    let mut discrete = Vec::new();
    for size in sizes {
        match size.size {
            FrameSizeEnum::Stepwise(s) => {
                return FrameSizes::Stepwise {
                    min_w: s.min_width,
                    max_w: s.max_width,
                    step_w: s.step_width,
                    min_h: s.min_height,
                    max_h: s.max_height,
                    step_h: s.step_height,
                }
            }
            FrameSizeEnum::Discrete(d) => discrete.push((d.width, d.height)),
        }
    }
    FrameSizes::Discrete(discrete)
}

fn frame_intervals(device: &Device, fourcc: FourCC, width: u32, height: u32) -> Option<FrameIntervals> {
    let frac = |f: v4l::Fraction| Fraction {
        num: f.numerator,
        den: f.denominator,
    };
    let intervals = device.enum_frameintervals(fourcc, width, height).ok()?;
    let mut discrete = Vec::new();
    for interval in intervals {
        match interval.interval {
            FrameIntervalEnum::Stepwise(s) => {
                return Some(FrameIntervals::Stepwise {
                    min_interval: frac(s.min),
                    max_interval: frac(s.max),
                })
            }
            FrameIntervalEnum::Discrete(f) => discrete.push(frac(f)),
        }
    }
    Some(FrameIntervals::Discrete(discrete))
}

/// A NUL-terminated driver string, with invalid UTF-8 replaced rather than trusted.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

/// V4L2 marks the big-endian variant of a format with the fourcc's top bit (V4L2_PIX_FMT_FLAG_BE).
const FOURCC_BIG_ENDIAN: u32 = 1 << 31;

/// The fourcc as text ("YUYV"; "Y16 -BE" as v4l2-ctl writes big-endian variants), bytes that are
/// not printable replaced.
fn fourcc_text(code: u32) -> String {
    let bytes = (code & !FOURCC_BIG_ENDIAN).to_le_bytes();
    let text: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    if code & FOURCC_BIG_ENDIAN != 0 {
        text + "-BE"
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_multibyte_card_name_does_not_panic() {
        // "Kamera ä" cut after the first byte of "ä" (0xc3), then NUL padding
        let mut card = [0u8; 32];
        card[..8].copy_from_slice(b"Kamera \xc3");
        assert_eq!(c_string(&card), "Kamera \u{fffd}");
    }

    #[test]
    fn fourcc_is_read_little_endian() {
        assert_eq!(fourcc_text(u32::from_le_bytes(*b"MJPG")), "MJPG");
        assert_eq!(fourcc_text(u32::from_le_bytes(*b"Y10 ")), "Y10 ");
        assert_eq!(fourcc_text(0x0000_4d4a), "JM??");
        assert_eq!(fourcc_text(u32::from_le_bytes(*b"Y16 ") | FOURCC_BIG_ENDIAN), "Y16 -BE");
    }

    #[test]
    fn a_missing_node_is_an_open_error_with_its_path() {
        let err = probe_node(Path::new("/dev/video-edgecam-none")).unwrap_err();
        assert!(matches!(err, ProbeError::Open { .. }));
        assert!(err.to_string().contains("/dev/video-edgecam-none"), "{err}");
    }
}

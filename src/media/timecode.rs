//! A capture time drawn into video frames, machine-readable after encoding, so glass-to-glass latency
//! can be measured through the daemon itself (`test_pattern: stamp`; bench/latency.rs reads it back).
//!
//! Layout: 48 blocks of 16x16 luma pixels at the top-left corner, 2 rows of 24, black (16) for 0 and
//! white (235) for 1, most significant bit first: the low 40 bits of the wall-clock time in ms since the
//! Unix epoch, then a check byte: 0xff xor those 5 bytes, so neither an all-black nor an all-white
//! corner reads as a time. Blocks align with the encoder's 16x16 macroblocks and
//! only two levels are used, so the code survives lossy encoding at low bitrates; the check byte rejects
//! a block misread in a damaged or half-updated frame. 40 bits of ms wrap every 34 years: a reader
//! resolves the wrap against its own clock (`age_ms`).
//!
//! Also compiled into bench/latency.rs (by path), so the reader there decodes with this same code.

use std::time::{SystemTime, UNIX_EPOCH};

use super::luma_probe;

pub const BLOCK: usize = 16;
const PER_ROW: usize = 24;
const TIME_BITS: u32 = 40;
pub const BITS: usize = 48;
/// The corner the code covers; a frame must be at least this big.
pub const WIDTH: usize = PER_ROW * BLOCK;
pub const HEIGHT: usize = BITS / PER_ROW * BLOCK;

const BLACK: u8 = 16;
const WHITE: u8 = 235;
/// Between the two levels, on both the luma (16..235) and the RGB (0..255) scale.
const THRESHOLD: u8 = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimecodeError {
    #[error("a {width}x{height} frame (stride {stride}, {len} bytes) cannot hold the {WIDTH}x{HEIGHT} time code")]
    TooSmall {
        width: usize,
        height: usize,
        stride: usize,
        len: usize,
    },
    #[error("expected {BITS} block samples, got {0}")]
    SampleCount(usize),
    #[error("check byte does not match: no time code in this frame, or a misread block")]
    Check,
}

/// The 48-bit word drawn for `unix_ms`: its low 40 bits, then their check byte.
fn word(unix_ms: u64) -> u64 {
    let time = unix_ms & ((1 << TIME_BITS) - 1);
    (time << 8) | u64::from(check_byte(time))
}

fn check_byte(time: u64) -> u8 {
    (0..TIME_BITS / 8).fold(0xff, |acc, i| acc ^ (time >> (8 * i)) as u8)
}

/// Top-left pixel of block `i` (bit `i`, most significant first).
fn block_origin(i: usize) -> (usize, usize) {
    ((i % PER_ROW) * BLOCK, (i / PER_ROW) * BLOCK)
}

/// The pixel (x, y) to sample for each bit, in bit order: the middle of its block, away from the
/// edges where compression smears neighbouring blocks together.
pub fn sample_points() -> [(usize, usize); BITS] {
    std::array::from_fn(|i| {
        let (x, y) = block_origin(i);
        (x + BLOCK / 2, y + BLOCK / 2)
    })
}

fn check_fits(len: usize, stride: usize, width: usize, height: usize) -> Result<(), TimecodeError> {
    let fits = width >= WIDTH && height >= HEIGHT && stride >= WIDTH && len >= stride * (HEIGHT - 1) + WIDTH;
    if fits {
        Ok(())
    } else {
        Err(TimecodeError::TooSmall {
            width,
            height,
            stride,
            len,
        })
    }
}

/// Draws `unix_ms` into a luma plane of `width` x `height` pixels, `stride` bytes a row.
pub fn stamp(luma: &mut [u8], stride: usize, width: usize, height: usize, unix_ms: u64) -> Result<(), TimecodeError> {
    check_fits(luma.len(), stride, width, height)?;
    let bits = word(unix_ms);
    for i in 0..BITS {
        let level = if (bits >> (BITS - 1 - i)) & 1 == 1 {
            WHITE
        } else {
            BLACK
        };
        let (x, y) = block_origin(i);
        for row in y..y + BLOCK {
            luma[row * stride + x..row * stride + x + BLOCK].fill(level);
        }
    }
    Ok(())
}

/// The 40-bit time code from one sample per block (luma, or a colour channel of the decoded picture),
/// in `sample_points` order.
pub fn decode(samples: &[u8]) -> Result<u64, TimecodeError> {
    if samples.len() != BITS {
        return Err(TimecodeError::SampleCount(samples.len()));
    }
    let bits = samples
        .iter()
        .fold(0u64, |acc, &s| (acc << 1) | u64::from(s >= THRESHOLD));
    let time = bits >> 8;
    if check_byte(time) == (bits & 0xff) as u8 {
        Ok(time)
    } else {
        Err(TimecodeError::Check)
    }
}

/// Reads the time code back from a luma plane (the inverse of `stamp`).
pub fn read(luma: &[u8], stride: usize, width: usize, height: usize) -> Result<u64, TimecodeError> {
    check_fits(luma.len(), stride, width, height)?;
    let samples: Vec<u8> = sample_points().iter().map(|&(x, y)| luma[y * stride + x]).collect();
    decode(&samples)
}

/// How many ms before `now_unix_ms` (same clock, fractions allowed) the frame carrying `code` was
/// stamped; the 40-bit wrap is resolved towards the nearest interpretation.
pub fn age_ms(code: u64, now_unix_ms: f64) -> f64 {
    let span = (1u64 << TIME_BITS) as f64;
    let age = now_unix_ms.rem_euclid(span) - code as f64;
    if age > span / 2.0 {
        age - span
    } else if age < -span / 2.0 {
        age + span
    } else {
        age
    }
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Stamps the wall-clock time into every raw YUV buffer passing `pad`, as it passes. The caller makes
/// sure the frames are big enough (the pipeline is refused otherwise); a buffer that still cannot be
/// stamped passes unchanged, and the reader counts it as unreadable.
pub fn stamp_buffers(pad: &gst::Pad) {
    luma_probe::draw_on_frames(pad, |luma| {
        let _ = stamp(luma.plane, luma.stride, luma.width, luma.height, now_unix_ms());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use gst::prelude::*;
    use gst_video::prelude::*;
    use std::sync::{Arc, Mutex};

    const NOW: u64 = 1_796_050_064_123; // ms since the epoch, past the first 40-bit wrap

    #[test]
    fn stamp_then_read_round_trips_with_a_padded_stride() {
        let (width, height, stride) = (400, 40, 416);
        let mut luma = vec![90u8; stride * height];
        stamp(&mut luma, stride, width, height, NOW).unwrap();
        let code = read(&luma, stride, width, height).unwrap();
        assert_eq!(code, NOW & ((1 << 40) - 1));
        assert_eq!(age_ms(code, NOW as f64 + 42.5), 42.5);
        // Outside the code's corner the picture is untouched.
        assert!(luma[WIDTH..stride].iter().all(|&p| p == 90), "right of the code");
        assert!(luma[HEIGHT * stride..].iter().all(|&p| p == 90), "below the code");
    }

    #[test]
    fn a_flipped_block_is_rejected_by_the_check_byte() {
        let (width, height) = (WIDTH, HEIGHT);
        let mut luma = vec![0u8; width * height];
        stamp(&mut luma, width, width, height, NOW).unwrap();
        for bit in [0, 17, 39, 47] {
            let mut damaged = luma.clone();
            let (x, y) = sample_points()[bit];
            damaged[y * width + x] = 255 - damaged[y * width + x];
            assert_eq!(
                read(&damaged, width, width, height),
                Err(TimecodeError::Check),
                "bit {bit}"
            );
        }
        // A flat corner (an unstamped picture) is not a code.
        assert_eq!(decode(&[16; BITS]), Err(TimecodeError::Check));
        assert_eq!(decode(&[235; BITS]), Err(TimecodeError::Check));
        assert_eq!(decode(&[1; 3]), Err(TimecodeError::SampleCount(3)));
    }

    #[test]
    fn too_small_frames_are_refused() {
        let mut luma = vec![0u8; 320 * 240];
        let e = stamp(&mut luma, 320, 320, 240, NOW).unwrap_err();
        assert!(matches!(e, TimecodeError::TooSmall { width: 320, .. }), "{e}");
        // Claimed big enough, but the buffer is short.
        assert!(read(&luma[..WIDTH * 10], WIDTH, WIDTH, HEIGHT).is_err());
    }

    #[test]
    fn age_resolves_the_40_bit_wrap() {
        let span = 1u64 << 40;
        // Stamped just before a wrap, read just after it.
        assert_eq!(age_ms(span - 10, (3 * span + 5) as f64), 15.0);
        // A reader whose clock is behind the stamper's sees a small negative age, not 34 years.
        assert_eq!(age_ms(100, (2 * span + 90) as f64), -10.0);
    }

    /// Stamps real buffers in a running pipeline (odd width: I420 pads the stride) and reads them back
    /// downstream.
    #[test]
    fn probe_stamps_buffers_in_a_pipeline() {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(
            "videotestsrc name=src num-buffers=5 pattern=snow ! video/x-raw,format=I420,width=390,height=64 \
             ! fakesink name=sink",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let by_name = |n: &str| pipeline.by_name(n).unwrap();
        stamp_buffers(&by_name("src").static_pad("src").unwrap());
        let codes = Arc::new(Mutex::new(Vec::new()));
        let seen = codes.clone();
        by_name("sink")
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |pad, probe| {
                let info = gst_video::VideoInfo::from_caps(&pad.current_caps().unwrap()).unwrap();
                if let Some(gst::PadProbeData::Buffer(buffer)) = &probe.data {
                    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).unwrap();
                    let stride = frame.plane_stride()[0] as usize;
                    let code = read(frame.plane_data(0).unwrap(), stride, 390, 64);
                    seen.lock().unwrap().push((code, now_unix_ms()));
                }
                gst::PadProbeReturn::Ok
            });
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let eos = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(matches!(eos.map(|m| m.type_()), Some(gst::MessageType::Eos)));
        let codes = codes.lock().unwrap();
        assert_eq!(codes.len(), 5);
        for (code, read_at) in codes.iter() {
            let age = age_ms(code.clone().unwrap(), *read_at as f64);
            assert!((0.0..2000.0).contains(&age), "age {age} ms");
        }
    }
}

//! One GStreamer pipeline per camera: source -> (decode) -> convert -> encoder -> payloader -> tee.
//! The encode happens once; every viewer is a branch hanging off the tee (see `viewer`), so adding
//! viewers costs DTLS/SRTP work, not encoding work.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::MediaError;
use crate::devices::caps::{CaptureMode, PixelFormat};
use crate::encoders::Codec;

/// Where a camera's pictures come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A synthetic camera: videotestsrc with a running clock drawn on it.
    Test {
        pattern: &'static str,
        label: String,
        width: u32,
        height: u32,
        fps: u32,
    },
    /// A V4L2 device, always with explicit caps: left unconstrained, v4l2src picks odd modes
    /// (vivid negotiates 3840x2160 at 2 fps).
    V4l2 { device: PathBuf, mode: CaptureMode },
}

/// The encoder part of a pipeline, as chosen from the profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderPlan {
    pub profile: String,
    /// gst-launch fragment from raw (or camera H.264) to the encoded stream.
    pub fragment: String,
    /// Raw format the encoder wants; `None` means the stream goes in as the camera delivers it (passthrough).
    pub raw_input: Option<String>,
    pub codec: Codec,
}

/// The RTP payload type offered to browsers; any dynamic type works, 96 is what everyone uses.
pub const PAYLOAD_TYPE: u32 = 96;
/// Payload size under typical path MTUs once SRTP and TURN overhead are added.
const RTP_MTU: u32 = 1200;

pub struct CameraPipeline {
    pipeline: gst::Pipeline,
    tee: gst::Element,
    payloader: gst::Element,
    counters: Arc<Counters>,
}

/// Updated from streaming threads by pad probes, read by the actor and the API.
#[derive(Debug)]
pub struct Counters {
    started: Instant,
    encoded_frames: AtomicU64,
    /// Milliseconds since `started` at the last buffer out of the source: a camera that silently stops
    /// delivering (some USB cameras do when yanked) is noticed by this going stale.
    last_source_buffer_ms: AtomicU64,
}

impl Counters {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            encoded_frames: AtomicU64::new(0),
            last_source_buffer_ms: AtomicU64::new(0),
        }
    }

    pub fn encoded_frames(&self) -> u64 {
        self.encoded_frames.load(Ordering::Relaxed)
    }

    /// How long since the source last produced a buffer (or since start, if it never did).
    pub fn source_silence(&self) -> Duration {
        let last = Duration::from_millis(self.last_source_buffer_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Where a bus error came from, which decides what the camera does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOrigin {
    /// The device (unplugged, busy, gone silent): wait for it to come back.
    Source,
    /// Anything after the source, the encoder above all: try the next profile.
    Encoder,
}

impl CameraPipeline {
    pub fn build(source: &SourceSpec, encoder: &EncoderPlan) -> Result<Self, MediaError> {
        let description = launch_description(source, encoder)?;
        let pipeline = gst::parse::launch(&description)
            .map_err(|e| MediaError::Build(format!("{description}: {e}")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| MediaError::Build("launch description did not give a pipeline".into()))?;

        let by_name = |name: &str| {
            pipeline
                .by_name(name)
                .ok_or_else(|| MediaError::Build(format!("element {name} missing from pipeline")))
        };
        let src = by_name("src")?;
        match source {
            SourceSpec::Test { label, .. } => {
                if let Some(overlay) = pipeline.by_name("label") {
                    overlay.set_property("text", label);
                }
            }
            SourceSpec::V4l2 { device, .. } => src.set_property("device", device.to_string_lossy().as_ref()),
        }
        let tee = by_name("fanout")?;
        let payloader = by_name("pay")?;

        let counters = Arc::new(Counters::new());
        let c = counters.clone();
        src.static_pad("src")
            .ok_or_else(|| MediaError::Build("source has no src pad".into()))?
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                let ms = c.started.elapsed().as_millis() as u64;
                c.last_source_buffer_ms.store(ms, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        let c = counters.clone();
        payloader
            .static_pad("sink")
            .ok_or_else(|| MediaError::Build("payloader has no sink pad".into()))?
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                c.encoded_frames.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });

        Ok(Self {
            pipeline,
            tee,
            payloader,
            counters,
        })
    }

    pub fn play(&self) -> Result<(), MediaError> {
        self.pipeline
            .set_state(gst::State::Playing)
            .map(|_| ())
            .map_err(|_| MediaError::State("could not start the pipeline".into()))
    }

    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    pub fn tee(&self) -> &gst::Element {
        &self.tee
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    pub fn bus(&self) -> gst::Bus {
        // A pipeline always has a bus; `expect` documents that invariant rather than guarding input.
        self.pipeline.bus().expect("pipelines have a bus")
    }

    /// Asks the encoder for a keyframe (with SPS/PPS), so a viewer that just joined can start decoding
    /// without waiting for the next GOP.
    pub fn request_keyframe(&self) {
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        if let Some(pad) = self.payloader.static_pad("src") {
            pad.send_event(event);
        }
    }

    pub fn failure_origin(&self, message_source: Option<&gst::Object>) -> FailureOrigin {
        let from_source = message_source
            .and_then(|o| self.pipeline.by_name("src").map(|src| o == src.upcast_ref::<gst::Object>()))
            .unwrap_or(false);
        if from_source {
            FailureOrigin::Source
        } else {
            FailureOrigin::Encoder
        }
    }

    /// Stops the pipeline and waits for it to reach NULL, so the device is released before anyone
    /// (a replug, a fallback rebuild) opens it again. Blocking: call off the async runtime.
    pub fn shut_down(self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = self.pipeline.state(gst::ClockTime::from_seconds(5));
    }
}

fn launch_description(source: &SourceSpec, encoder: &EncoderPlan) -> Result<String, MediaError> {
    let mut parts: Vec<String> = Vec::new();
    match source {
        SourceSpec::Test {
            pattern,
            width,
            height,
            fps,
            ..
        } => {
            parts.push(format!("videotestsrc name=src is-live=true pattern={pattern}"));
            parts.push(format!("video/x-raw,width={width},height={height},framerate={fps}/1"));
            // A visible running clock proves the picture is live, not a frozen frame. The overlay lives
            // in gstreamer1.0-x (pango); without it demo cameras still stream, just unlabelled.
            if gst::ElementFactory::find("clockoverlay").is_some() {
                parts.push(
                "clockoverlay name=label time-format=\"%H:%M:%S\" halignment=left valignment=top shaded-background=true font-desc=\"Sans 20\""
                    .into(),
                );
            }
        }
        SourceSpec::V4l2 { mode, .. } => {
            parts.push("v4l2src name=src".into());
            parts.push(v4l2_caps(mode)?);
            if mode.format == PixelFormat::Mjpeg && encoder.raw_input.is_some() {
                parts.push("jpegdec".into());
            }
        }
    }
    if let Some(format) = &encoder.raw_input {
        // A leaky queue decouples capture from encoding: if the encoder falls behind, frames are dropped
        // here instead of stalling the capture thread (which makes v4l2src run out of buffers).
        parts.push("queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream".into());
        parts.push(format!("videoconvert ! video/x-raw,format={format}"));
    }
    parts.push(encoder.fragment.clone());
    parts.push(match encoder.codec {
        // config-interval=-1 puts SPS/PPS before every IDR: a viewer joining mid-stream can decode the next keyframe.
        Codec::H264 => format!(
            "h264parse ! rtph264pay name=pay config-interval=-1 aggregate-mode=zero-latency pt={PAYLOAD_TYPE} mtu={RTP_MTU}"
        ),
        Codec::Vp8 => format!("rtpvp8pay name=pay picture-id-mode=15-bit pt={PAYLOAD_TYPE} mtu={RTP_MTU}"),
    });
    // allow-not-linked: with no viewers the encoder keeps running instead of erroring with not-linked.
    parts.push("tee name=fanout allow-not-linked=true".into());
    Ok(parts.join(" ! "))
}

fn v4l2_caps(mode: &CaptureMode) -> Result<String, MediaError> {
    let media = match &mode.format {
        PixelFormat::Mjpeg => "image/jpeg".to_string(),
        PixelFormat::H264 => "video/x-h264,stream-format=byte-stream".to_string(),
        raw => match raw.gst_raw_format() {
            Some(f) => format!("video/x-raw,format={f}"),
            None => return Err(MediaError::Build(format!("no GStreamer caps for pixel format {}", raw.fourcc()))),
        },
    };
    Ok(format!(
        "{media},width={},height={},framerate={}/{}",
        mode.width, mode.height, mode.fps.num, mode.fps.den
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::caps::Fraction;

    fn x264() -> EncoderPlan {
        EncoderPlan {
            profile: "x264".into(),
            fragment: "x264enc".into(),
            raw_input: Some("I420".into()),
            codec: Codec::H264,
        }
    }

    #[test]
    fn mjpeg_camera_is_decoded_before_encoding() {
        let mode = CaptureMode {
            format: PixelFormat::Mjpeg,
            width: 1280,
            height: 720,
            fps: Fraction::fps(30),
        };
        let d = launch_description(
            &SourceSpec::V4l2 {
                device: "/dev/video0".into(),
                mode,
            },
            &x264(),
        )
        .unwrap();
        assert!(
            d.starts_with("v4l2src name=src ! image/jpeg,width=1280,height=720,framerate=30/1 ! jpegdec ! queue"),
            "{d}"
        );
        assert!(d.contains("videoconvert ! video/x-raw,format=I420 ! x264enc ! h264parse ! rtph264pay"), "{d}");
    }

    #[test]
    fn passthrough_does_not_decode_or_convert() {
        let mode = CaptureMode {
            format: PixelFormat::H264,
            width: 1920,
            height: 1080,
            fps: Fraction::fps(30),
        };
        let plan = EncoderPlan {
            profile: "passthrough".into(),
            fragment: "identity".into(),
            raw_input: None,
            codec: Codec::H264,
        };
        let d = launch_description(
            &SourceSpec::V4l2 {
                device: "/dev/video0".into(),
                mode,
            },
            &plan,
        )
        .unwrap();
        assert!(!d.contains("videoconvert") && !d.contains("jpegdec"), "{d}");
    }

    #[test]
    fn demo_camera_builds_and_encodes() {
        gst::init().unwrap();
        let source = SourceSpec::Test {
            pattern: "ball",
            label: "Demo \"1\" ! fakesink".into(),
            width: 320,
            height: 240,
            fps: 30,
        };
        let plan = EncoderPlan {
            fragment: "x264enc tune=zerolatency speed-preset=ultrafast ! video/x-h264,profile=constrained-baseline".into(),
            ..x264()
        };
        let p = CameraPipeline::build(&source, &plan).unwrap();
        p.play().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.counters().encoded_frames() < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(p.counters().encoded_frames() >= 10);
        assert!(p.counters().source_silence() < Duration::from_secs(5));
        p.shut_down();
    }
}

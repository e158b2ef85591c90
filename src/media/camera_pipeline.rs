//! One GStreamer pipeline per camera: source -> (decode) -> convert -> encoder -> payloader -> tee.
//! The encode happens once; every viewer is a branch hanging off the tee (see `viewer`), so adding
//! viewers costs DTLS/SRTP work, not encoding work.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::{keyframe_gate, moving_ball, tee_branch, timecode, MediaError};
use crate::devices::caps::{CaptureMode, PixelFormat};
use crate::encoders::Codec;

/// Where a camera's pictures come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A synthetic camera: videotestsrc with a running clock drawn on it.
    Test {
        pattern: &'static str,
        /// Draw a moving ball onto each frame (`moving_ball`).
        ball: bool,
        label: String,
        width: u32,
        height: u32,
        fps: u32,
        /// Draw each frame's capture time into it (`timecode`), for glass-to-glass measurements.
        time_code: bool,
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
    /// Decoded, converted pictures, before any encoder; None for passthrough (nothing is decoded).
    raw_tee: Option<gst::Element>,
    main: Encoding,
    /// A second encoding (VP8 for browsers without H.264) that exists only while someone watches it.
    extra: Option<ExtraEncoding>,
    counters: Arc<Counters>,
}

/// An encoded stream ready for viewers: its codec, the tee viewers hang off, the payloader to ask
/// for keyframes.
struct Encoding {
    codec: Codec,
    fanout: gst::Element,
    payloader: gst::Element,
}

impl Encoding {
    /// Viewers' PLI/FIR and the daemon's own requests reach the shared encoder at most once per interval.
    fn gate_keyframes(&self) -> Result<(), MediaError> {
        let pad = self
            .payloader
            .static_pad("src")
            .ok_or_else(|| MediaError::Build("payloader has no src pad".into()))?;
        keyframe_gate::install(&pad, keyframe_gate::KEYFRAME_INTERVAL);
        Ok(())
    }
}

struct ExtraEncoding {
    encoding: Encoding,
    bin: gst::Bin,
    raw_pad: gst::Pad,
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
            SourceSpec::Test {
                label, ball, time_code, ..
            } => {
                if let Some(overlay) = pipeline.by_name("label") {
                    overlay.set_property("text", label);
                }
                let pad = src
                    .static_pad("src")
                    .ok_or_else(|| MediaError::Build("source has no src pad".into()))?;
                if *ball {
                    moving_ball::draw_buffers(&pad);
                }
                if *time_code {
                    // At the source's output, after the ball: the measured latency includes everything
                    // the daemon does.
                    timecode::stamp_buffers(&pad);
                }
            }
            SourceSpec::V4l2 { device, .. } => src.set_property("device", device.to_string_lossy().as_ref()),
        }
        let main = Encoding {
            codec: encoder.codec,
            fanout: by_name("fanout")?,
            payloader: by_name("pay")?,
        };
        main.gate_keyframes()?;

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
        main.payloader
            .static_pad("sink")
            .ok_or_else(|| MediaError::Build("payloader has no sink pad".into()))?
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                c.encoded_frames.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });

        Ok(Self {
            raw_tee: pipeline.by_name("raw"),
            pipeline,
            main,
            extra: None,
            counters,
        })
    }

    /// Starts the pipeline. A source that cannot start (a busy or vanished device) is told apart from
    /// an encoder that cannot: only the latter is a reason to try another encoder.
    pub fn play(&self) -> Result<(), MediaError> {
        if self.pipeline.set_state(gst::State::Playing).is_ok() {
            return Ok(());
        }
        let failure = self
            .pipeline
            .bus()
            .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
            .and_then(|message| self.failure(&message));
        Err(match failure {
            Some((FailureOrigin::Source, text)) => MediaError::Source(text),
            Some((FailureOrigin::Encoder, text)) => MediaError::State(text),
            None => MediaError::State("could not start the pipeline".into()),
        })
    }

    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// The tee that viewers of `codec` attach to, if this pipeline currently encodes it.
    pub fn fanout(&self, codec: Codec) -> Option<&gst::Element> {
        self.encodings().find(|e| e.codec == codec).map(|e| &e.fanout)
    }

    fn encodings(&self) -> impl Iterator<Item = &Encoding> {
        std::iter::once(&self.main).chain(self.extra.as_ref().map(|x| &x.encoding))
    }

    /// Adds a second encoding of the same pictures (e.g. VP8 next to H.264), off the raw tee, and
    /// returns its fanout. Only one extra encoding exists at a time.
    pub fn add_encoding(&mut self, plan: &EncoderPlan) -> Result<&gst::Element, MediaError> {
        let raw_tee = self.raw_tee.as_ref().ok_or_else(|| {
            MediaError::Build("this camera's stream is passed through undecoded; it cannot be re-encoded".into())
        })?;
        if self.extra.is_some() {
            return Err(MediaError::Build("an extra encoding is already running".into()));
        }
        let convert = plan
            .raw_input
            .as_deref()
            .map(|f| format!("videoconvert ! video/x-raw,format={f} ! "))
            .unwrap_or_default();
        let description = format!(
            "{ENCODER_QUEUE} ! {convert}{} ! {} ! tee name=fanout allow-not-linked=true",
            plan.fragment,
            payloader(plan.codec)
        );
        let bin = gst::parse::bin_from_description(&description, true)
            .map_err(|e| MediaError::Build(format!("{description}: {e}")))?;
        let encoding = Encoding {
            codec: plan.codec,
            fanout: bin
                .by_name("fanout")
                .ok_or_else(|| MediaError::Build("no fanout in extra encoding".into()))?,
            payloader: bin
                .by_name("pay")
                .ok_or_else(|| MediaError::Build("no payloader in extra encoding".into()))?,
        };
        encoding.gate_keyframes()?;
        self.pipeline
            .add(&bin)
            .map_err(|e| MediaError::Build(format!("adding extra encoding: {e}")))?;
        let sink = bin
            .static_pad("sink")
            .ok_or_else(|| MediaError::Build("extra encoding has no sink".into()))?;
        let started = bin.sync_state_with_parent().is_ok();
        let raw_pad = match tee_branch::link(raw_tee, &sink) {
            Some(pad) if started => pad,
            _ => {
                let _ = bin.set_state(gst::State::Null);
                let _ = self.pipeline.remove(&bin);
                return Err(MediaError::Build("could not start the extra encoding".into()));
            }
        };
        let extra = self.extra.insert(ExtraEncoding { encoding, bin, raw_pad });
        Ok(&extra.encoding.fanout)
    }

    /// Stops the extra encoding of `codec` (its last viewer left).
    pub fn remove_encoding(&mut self, codec: Codec) {
        if self.extra.as_ref().is_some_and(|x| x.encoding.codec == codec) {
            if let (Some(extra), Some(raw_tee)) = (self.extra.take(), &self.raw_tee) {
                tee_branch::detach(raw_tee, extra.raw_pad, vec![extra.bin.upcast()]);
            }
        }
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
    pub fn request_keyframe(&self, codec: Codec) {
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        if let Some(pad) = self
            .encodings()
            .find(|e| e.codec == codec)
            .and_then(|e| e.payloader.static_pad("src"))
        {
            pad.send_event(event);
        }
    }

    /// What an error message from this pipeline means: where it came from, and its text (the posting
    /// element's path first). None for any other message.
    pub fn failure(&self, message: &gst::Message) -> Option<(FailureOrigin, String)> {
        let gst::MessageView::Error(e) = message.view() else {
            return None;
        };
        let from = message.src().map(|s| s.path_string().to_string()).unwrap_or_default();
        Some((self.failure_origin(message.src()), format!("{from}: {}", e.error())))
    }

    fn failure_origin(&self, message_source: Option<&gst::Object>) -> FailureOrigin {
        // v4l2src's buffer pool and other helpers post under the source, so ancestry counts too.
        let from_source = message_source
            .zip(self.pipeline.by_name("src"))
            .is_some_and(|(o, src)| o == src.upcast_ref::<gst::Object>() || o.has_as_ancestor(&src));
        if from_source {
            FailureOrigin::Source
        } else {
            FailureOrigin::Encoder
        }
    }

    /// Stops the pipeline and waits for it to reach NULL, so the device is released before anyone
    /// (a replug, a fallback rebuild) opens it again. Blocking: call off the async runtime.
    pub fn shut_down(self) {
        if self.pipeline.set_state(gst::State::Null).is_err() {
            tracing::warn!("pipeline did not stop cleanly; its device may stay open");
        }
        let _ = self.pipeline.state(gst::ClockTime::from_seconds(5));
        drop(self);
        release_freed_memory();
    }
}

/// A stopped pipeline frees tens of MB (encoder frame buffers) that glibc keeps mapped; without handing
/// it back, a camera stopped and started for every first viewer (`idle: stop`) grew the daemon by ~40 MB
/// over 300 cycles (bench/issue7.rs leak).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Drop for CameraPipeline {
    /// A pipeline dropped while PLAYING keeps its streaming threads running on freed elements; however
    /// the owner goes away (a panic, a runtime shutting down), stop it first.
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
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
            ball,
            time_code,
            ..
        } => {
            parts.push(format!("videotestsrc name=src is-live=true pattern={pattern}"));
            if *time_code {
                let too_small = (*width as usize) < timecode::WIDTH || (*height as usize) < timecode::HEIGHT;
                if too_small {
                    return Err(MediaError::Build(format!(
                        "{width}x{height} is too small for the time code, which needs {}x{}",
                        timecode::WIDTH,
                        timecode::HEIGHT
                    )));
                }
            }
            if *time_code || *ball {
                // Both draw into the luma plane of a known layout.
                parts.push(format!(
                    "video/x-raw,format=I420,width={width},height={height},framerate={fps}/1"
                ));
            } else {
                parts.push(format!("video/x-raw,width={width},height={height},framerate={fps}/1"));
            }
            // A visible running clock proves the picture is live, not a frozen frame. The overlay lives
            // in gstreamer1.0-x (pango); without it demo cameras still stream, just unlabelled. Under a
            // time code (top left) it goes to the bottom.
            if gst::ElementFactory::find("clockoverlay").is_some() {
                let valign = if *time_code { "bottom" } else { "top" };
                parts.push(format!(
                    "clockoverlay name=label time-format=\"%H:%M:%S\" halignment=left valignment={valign} shaded-background=true font-desc=\"Sans 20\""
                ));
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
        // Converted once, then teed: the main encoder and any extra encoding share the same pictures.
        parts.push(format!(
            "videoconvert ! video/x-raw,format={format} ! tee name=raw allow-not-linked=true"
        ));
        parts.push(ENCODER_QUEUE.into());
    }
    parts.push(encoder.fragment.clone());
    parts.push(payloader(encoder.codec));
    // allow-not-linked: with no viewers the encoder keeps running instead of erroring with not-linked.
    parts.push("tee name=fanout allow-not-linked=true".into());
    Ok(parts.join(" ! "))
}

/// A leaky queue in front of each encoder: if it falls behind, frames are dropped here instead of
/// stalling the capture thread (which makes v4l2src run out of buffers) or the other encoder.
const ENCODER_QUEUE: &str = "queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream";

fn payloader(codec: Codec) -> String {
    match codec {
        // config-interval=-1 puts SPS/PPS before every IDR: a viewer joining mid-stream can decode the next keyframe.
        Codec::H264 => format!(
            "h264parse ! rtph264pay name=pay config-interval=-1 aggregate-mode=zero-latency pt={PAYLOAD_TYPE} mtu={RTP_MTU}"
        ),
        Codec::Vp8 => format!("rtpvp8pay name=pay picture-id-mode=15-bit pt={PAYLOAD_TYPE} mtu={RTP_MTU}"),
    }
}

fn v4l2_caps(mode: &CaptureMode) -> Result<String, MediaError> {
    let media = match &mode.format {
        PixelFormat::Mjpeg => "image/jpeg".to_string(),
        PixelFormat::H264 => "video/x-h264,stream-format=byte-stream".to_string(),
        raw => match raw.gst_raw_format() {
            Some(f) => format!("video/x-raw,format={f}"),
            None => {
                return Err(MediaError::Build(format!(
                    "no GStreamer caps for pixel format {}",
                    raw.fourcc()
                )))
            }
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
            d.starts_with(
                "v4l2src name=src ! image/jpeg,width=1280,height=720,framerate=30/1 ! jpegdec ! videoconvert"
            ),
            "{d}"
        );
        assert!(d.contains("video/x-raw,format=I420 ! tee name=raw"), "{d}");
        assert!(d.contains("leaky=downstream ! x264enc ! h264parse ! rtph264pay"), "{d}");
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
            pattern: "black",
            ball: true,
            label: "Demo \"1\" ! fakesink".into(),
            width: 320,
            height: 240,
            fps: 30,
            time_code: false,
        };
        let plan = EncoderPlan {
            fragment: "x264enc tune=zerolatency speed-preset=ultrafast ! video/x-h264,profile=constrained-baseline"
                .into(),
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

    fn stamped(width: u32, height: u32) -> SourceSpec {
        SourceSpec::Test {
            pattern: "black",
            ball: true,
            label: "latency".into(),
            width,
            height,
            fps: 30,
            time_code: true,
        }
    }

    #[test]
    fn time_code_needs_room_in_the_frame() {
        let e = launch_description(&stamped(320, 240), &x264()).unwrap_err().to_string();
        assert!(e.contains("too small for the time code"), "{e}");
        let d = launch_description(&stamped(640, 480), &x264()).unwrap();
        assert!(d.contains("video/x-raw,format=I420,width=640,height=480"), "{d}");
    }

    /// The stamp survives the real chain: the camera pipeline's own encoder and payloader, then a
    /// depayloader and decoder hung off its fanout like a viewer, where the time is read back.
    #[test]
    fn stamped_camera_frames_decode_to_their_capture_time() {
        use gst_video::prelude::*;
        use std::sync::Mutex;
        gst::init().unwrap();
        let plan = EncoderPlan {
            fragment: "x264enc tune=zerolatency speed-preset=ultrafast bitrate=1000 key-int-max=60 \
                       ! video/x-h264,profile=constrained-baseline"
                .into(),
            ..x264()
        };
        let p = CameraPipeline::build(&stamped(640, 480), &plan).unwrap();
        // decodebin picks whichever H.264 decoder is installed (openh264dec on plain Debian). Its output
        // is linked late, so only the queue's sink is ghosted (not videoconvert's, unlinked at parse time).
        let branch = gst::parse::bin_from_description(
            "queue name=in ! rtph264depay ! decodebin ! videoconvert ! video/x-raw,format=I420 ! fakesink name=check",
            false,
        )
        .unwrap();
        let input = gst::GhostPad::with_target(&branch.by_name("in").unwrap().static_pad("sink").unwrap()).unwrap();
        branch.add_pad(&input).unwrap();
        p.pipeline().add(&branch).unwrap();
        tee_branch::link(p.fanout(Codec::H264).unwrap(), input.upcast_ref()).unwrap();
        // (code or error, when it was read)
        let reads = Arc::new(Mutex::new(Vec::new()));
        let seen = reads.clone();
        let check = branch.by_name("check").unwrap().static_pad("sink").unwrap();
        check.add_probe(gst::PadProbeType::BUFFER, move |pad, probe| {
            let info = gst_video::VideoInfo::from_caps(&pad.current_caps().unwrap()).unwrap();
            if let Some(gst::PadProbeData::Buffer(buffer)) = &probe.data {
                let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).unwrap();
                let stride = frame.plane_stride()[0] as usize;
                let code = timecode::read(frame.plane_data(0).unwrap(), stride, 640, 480);
                seen.lock().unwrap().push((code, timecode::now_unix_ms()));
            }
            gst::PadProbeReturn::Ok
        });
        p.play().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while reads.lock().unwrap().len() < 30 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        p.shut_down();
        let reads = reads.lock().unwrap();
        assert!(reads.len() >= 30, "only {} frames decoded", reads.len());
        let codes: Vec<u64> = reads.iter().filter_map(|(code, _)| code.clone().ok()).collect();
        assert_eq!(codes.len(), reads.len(), "unreadable time codes: {reads:?}");
        assert!(
            codes.windows(2).all(|w| w[0] < w[1]),
            "capture times not increasing: {codes:?}"
        );
        for (code, read_at) in reads.iter() {
            let age = timecode::age_ms(code.clone().unwrap(), *read_at as f64);
            // Generous: a loaded 2-core machine; this checks the code is a real, recent time.
            assert!((0.0..5000.0).contains(&age), "frame read {age} ms after its stamp");
        }
    }
}

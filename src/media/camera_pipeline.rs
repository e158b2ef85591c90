//! One GStreamer pipeline per camera: source -> (decode) -> convert -> raw tee -> encoding(s), each
//! encoding a bin of encoder -> encoded tee -> payloader -> RTP tee. The encode happens once; every
//! viewer is a branch hanging off an RTP tee (see `branch`, `viewer`), so adding viewers costs
//! DTLS/SRTP work, not encoding work. The skeleton is built from typed stages (`stage`); only the
//! profile's fragment is parsed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::branch::{self, Tap};
use super::events::{self, FailureOrigin, PipelineEvent};
use super::snapshot::{SnapshotBranch, SnapshotSlot};
use super::source::{Origin, SourceSpec};
use super::stage::{self, Stage};
use super::{bitrate, congestion};
use super::{keyframe_gate, moving_ball, timecode, MediaError};
use crate::devices::caps::{CaptureMode, PixelFormat};
use crate::encoders::{BitrateControl, Codec};

/// The encoder part of a pipeline, as chosen from the profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderPlan {
    pub profile: String,
    /// gst-launch fragment from raw (or camera H.264) to the encoded stream.
    pub fragment: String,
    /// Raw format the encoder wants; `None` means the stream goes in as the camera delivers it (passthrough).
    pub raw_input: Option<String>,
    pub codec: Codec,
    /// How the bitrate changes while playing (the profile's `bitrate`); None for passthrough.
    pub bitrate: Option<BitrateControl>,
    /// Scale the pictures to this size first (the low tier); None keeps the camera's size.
    pub size: Option<(u32, u32)>,
}

/// Which of a camera's encodings: the main H.264 one, its low tier, or VP8 for browsers without H.264.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EncodingKey {
    pub codec: Codec,
    pub tier: Tier,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Main,
    /// Smaller and slower, started on demand for viewers on weak links.
    Low,
}

impl EncodingKey {
    pub const MAIN: Self = Self {
        codec: Codec::H264,
        tier: Tier::Main,
    };
    pub const LOW: Self = Self {
        codec: Codec::H264,
        tier: Tier::Low,
    };
    pub const VP8: Self = Self {
        codec: Codec::Vp8,
        tier: Tier::Main,
    };
}

impl std::fmt::Display for EncodingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tier {
            Tier::Main => write!(f, "{}", self.codec),
            Tier::Low => write!(f, "{}-low", self.codec),
        }
    }
}

/// The RTP payload type offered to browsers; any dynamic type works, 96 is what everyone uses.
pub const PAYLOAD_TYPE: u32 = 96;
/// Payload size under typical path MTUs once SRTP and TURN overhead are added.
const RTP_MTU: u32 = 1200;

pub struct CameraPipeline {
    pipeline: gst::Pipeline,
    source: gst::Element,
    /// Decoded, converted pictures, before any encoder; None for passthrough (nothing is decoded).
    raw_tee: Option<gst::Element>,
    main: Encoding,
    /// Encodings that exist only while someone watches them (VP8, the low tier), each a branch of the raw tee.
    extras: Vec<(Encoding, branch::Attached)>,
    counters: Arc<Counters>,
}

/// One encoded stream, as a bin: (queue) -> the profile's fragment -> (parser) -> encoded tee ->
/// payloader -> RTP tee. Branches hang off either tee.
struct Encoding {
    key: EncodingKey,
    bitrate: Option<BitrateControl>,
    bin: gst::Bin,
    encoded: gst::Element,
    rtp: gst::Element,
    payloader: gst::Element,
    keyframes: keyframe_gate::Gate,
}

impl Encoding {
    /// `fed_from_raw_tee`: it takes pictures from the raw tee (through a leaky queue, so a slow encoder
    /// drops frames instead of stalling capture or the other encoding); otherwise the source feeds it
    /// directly (passthrough of camera H.264).
    fn build(key: EncodingKey, plan: &EncoderPlan, fed_from_raw_tee: bool, convert: bool) -> Result<Self, MediaError> {
        let bin = gst::Bin::with_name(&format!("encoding-{key}"));
        let elements = stage::build_chain(&bin, &encoding_stages(plan, fed_from_raw_tee, convert))?;
        let first = elements.first().and_then(|e| e.static_pad("sink"));
        let sink = first.ok_or_else(|| MediaError::Build("encoding has no input".into()))?;
        let ghost = gst::GhostPad::with_target(&sink).map_err(|e| MediaError::Build(format!("encoding input: {e}")))?;
        bin.add_pad(&ghost)
            .map_err(|e| MediaError::Build(format!("encoding input: {e}")))?;
        let by_name = |name: &str| {
            bin.by_name(name)
                .ok_or_else(|| MediaError::Build(format!("element {name} missing from the encoding")))
        };
        let payloader = by_name("pay")?;
        // Each viewer's congestion controller needs transport-wide sequence numbers (see `congestion`).
        congestion::add_twcc_extension(&payloader)?;
        // Viewers' PLI/FIR reach the shared encoder at most once per interval.
        let payloader_src = payloader
            .static_pad("src")
            .ok_or_else(|| MediaError::Build("payloader has no src pad".into()))?;
        let keyframes = keyframe_gate::install(&payloader_src, keyframe_gate::KEYFRAME_INTERVAL);
        Ok(Self {
            key,
            bitrate: plan.bitrate.clone(),
            encoded: by_name("encoded")?,
            rtp: by_name("fanout")?,
            payloader,
            keyframes,
            bin,
        })
    }

    /// Changes the encoder's bitrate while it plays, through the profile's declared control.
    fn set_bitrate(&self, kbps: u32) -> Result<(), MediaError> {
        let control = self
            .bitrate
            .as_ref()
            .ok_or_else(|| MediaError::Build("no bitrate control".into()))?;
        Ok(bitrate::apply(&self.bin, control, kbps)?)
    }

    fn tee(&self, tap: Tap) -> &gst::Element {
        match tap {
            Tap::Encoded => &self.encoded,
            Tap::Rtp => &self.rtp,
        }
    }
}

/// Updated from streaming threads by pad probes, read by the actor and the API.
#[derive(Debug)]
pub struct Counters {
    started: Instant,
    encoded_frames: AtomicU64,
    encoded_bytes: AtomicU64,
    /// Milliseconds since `started` at the last buffer out of the source: a camera that silently stops
    /// delivering (some USB cameras do when yanked) is noticed by this going stale.
    last_source_buffer_ms: AtomicU64,
}

impl Counters {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            encoded_frames: AtomicU64::new(0),
            encoded_bytes: AtomicU64::new(0),
            last_source_buffer_ms: AtomicU64::new(0),
        }
    }

    pub fn encoded_frames(&self) -> u64 {
        self.encoded_frames.load(Ordering::Relaxed)
    }

    pub fn encoded_bytes(&self) -> u64 {
        self.encoded_bytes.load(Ordering::Relaxed)
    }

    /// How long since the source last produced a buffer (or since start, if it never did).
    pub fn source_silence(&self) -> Duration {
        let last = Duration::from_millis(self.last_source_buffer_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

impl CameraPipeline {
    pub fn build(source: &SourceSpec, encoder: &EncoderPlan) -> Result<Self, MediaError> {
        let pipeline = gst::Pipeline::new();
        let elements = stage::build_chain(pipeline.upcast_ref(), &source_stages(source, encoder)?)?;
        let src = elements[0].clone();
        let main = Encoding::build(EncodingKey::MAIN, encoder, encoder.raw_input.is_some(), false)?;
        pipeline
            .add(&main.bin)
            .map_err(|e| MediaError::Build(format!("adding the encoding: {e}")))?;
        let last = elements.last().unwrap_or(&src);
        last.link(&main.bin)
            .map_err(|e| MediaError::Build(format!("linking the encoding: {e}")))?;

        let src_pad = src
            .static_pad("src")
            .ok_or_else(|| MediaError::Build("source has no src pad".into()))?;
        match &source.origin {
            Origin::Test { label, pattern } => {
                if let Some(overlay) = pipeline.by_name("label") {
                    overlay.set_property("text", label);
                }
                if pattern.draws_ball() {
                    moving_ball::draw_buffers(&src_pad);
                }
                if pattern.stamps_time() {
                    // At the source's output, after the ball: the measured latency includes everything
                    // the daemon does.
                    timecode::stamp_buffers(&src_pad);
                }
            }
            Origin::V4l2 { device } => src.set_property("device", device.to_string_lossy().as_ref()),
        }

        let counters = Arc::new(Counters::new());
        let c = counters.clone();
        src_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let ms = c.started.elapsed().as_millis() as u64;
            c.last_source_buffer_ms.store(ms, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
        let c = counters.clone();
        main.payloader
            .static_pad("sink")
            .ok_or_else(|| MediaError::Build("payloader has no sink pad".into()))?
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                c.encoded_frames.fetch_add(1, Ordering::Relaxed);
                if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                    c.encoded_bytes.fetch_add(buffer.size() as u64, Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });

        Ok(Self {
            raw_tee: pipeline.by_name("raw"),
            source: src,
            pipeline,
            main,
            extras: Vec::new(),
            counters,
        })
    }

    /// Starts the pipeline. A source that cannot start (a busy or vanished device) is told apart from
    /// an encoder that cannot: only the latter is a reason to try another encoder.
    pub fn play(&self) -> Result<(), (FailureOrigin, String)> {
        if self.pipeline.set_state(gst::State::Playing).is_ok() {
            return Ok(());
        }
        let failure = self
            .pipeline
            .bus()
            .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
            .and_then(|message| events::classify(&self.source, &message));
        Err(match failure {
            Some(PipelineEvent::Failed { origin, reason }) => (origin, reason),
            _ => (FailureOrigin::Encoder, "could not start the pipeline".into()),
        })
    }

    /// The pipeline's bus, read as camera events.
    pub fn events(&self) -> impl futures_util::Stream<Item = PipelineEvent> + Send + Unpin {
        use futures_util::StreamExt;
        let source = self.source.clone();
        // A pipeline always has a bus; `expect` documents that invariant rather than guarding input.
        let bus = self.pipeline.bus().expect("pipelines have a bus");
        bus.stream()
            .filter_map(move |message| std::future::ready(events::classify(&source, &message)))
    }

    /// The tee of encoding `key` at `tap`, if this pipeline currently encodes it.
    pub fn tee(&self, key: EncodingKey, tap: Tap) -> Option<&gst::Element> {
        self.encoding(key).map(|e| e.tee(tap))
    }

    fn encoding(&self, key: EncodingKey) -> Option<&Encoding> {
        std::iter::once(&self.main)
            .chain(self.extras.iter().map(|(e, _)| e))
            .find(|e| e.key == key)
    }

    /// Adds another encoding of the same pictures (VP8 next to H.264, the low tier) off the raw tee.
    pub fn add_encoding(&mut self, key: EncodingKey, plan: &EncoderPlan) -> Result<(), MediaError> {
        let raw_tee = self.raw_tee.as_ref().ok_or_else(|| {
            MediaError::Build("this camera's stream is passed through undecoded; it cannot be re-encoded".into())
        })?;
        if self.encoding(key).is_some() {
            return Err(MediaError::Build(format!("the {key} encoding is already running")));
        }
        let encoding = Encoding::build(key, plan, true, plan.raw_input.is_some())?;
        let attached = branch::Attached::link(raw_tee, encoding.bin.clone())
            .map_err(|e| MediaError::Build(format!("could not start the {key} encoding: {e}")))?;
        self.extras.push((encoding, attached));
        Ok(())
    }

    /// Hangs a JPEG snapshot branch off the raw tee.
    pub fn attach_snapshot(&self, slot: SnapshotSlot) -> Result<SnapshotBranch, MediaError> {
        let raw_tee = self.raw_tee.as_ref().ok_or_else(|| {
            MediaError::Build("this camera's stream is passed through undecoded; it has no pictures to snapshot".into())
        })?;
        SnapshotBranch::attach(raw_tee, slot)
    }

    /// Stops an extra encoding (its last viewer left).
    pub fn remove_encoding(&mut self, key: EncodingKey) -> Option<branch::Detaching> {
        let index = self.extras.iter().position(|(e, _)| e.key == key)?;
        Some(self.extras.remove(index).1.detach())
    }

    /// Changes a running encoding's bitrate.
    pub fn set_bitrate(&self, key: EncodingKey, kbps: u32) -> Result<(), MediaError> {
        let encoding = self
            .encoding(key)
            .ok_or_else(|| MediaError::Build(format!("no {key} encoding")))?;
        encoding.set_bitrate(kbps)
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Asks the encoder for a keyframe (with SPS/PPS), so a viewer that just joined can start decoding
    /// without waiting for the next GOP. It enters upstream of the keyframe gate: held back there, a join
    /// within a second of another viewer's PLI waited for the GOP (first frame median 772 ms instead of
    /// ~200). The gate's interval restarts, so the PLIs of the join are answered by this keyframe.
    pub fn request_keyframe(&self, key: EncodingKey) {
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        let Some(encoding) = self.encoding(key) else {
            return;
        };
        if let Some(upstream) = encoding.payloader.static_pad("sink").and_then(|p| p.peer()) {
            encoding.keyframes.restart();
            upstream.send_event(event);
        }
    }

    /// Stops the pipeline, every branch with it, and waits (bounded) for it to reach NULL, so the device
    /// is released before anyone (a replug, a fallback rebuild) opens it again. Blocking: call off the
    /// async runtime. True if it got to NULL in time.
    pub fn shut_down(self) -> bool {
        let stopped = self.pipeline.set_state(gst::State::Null).is_ok() && self.pipeline.state(STOP_TIMEOUT).0.is_ok();
        if !stopped {
            tracing::warn!("pipeline did not stop cleanly; its device may stay open");
        }
        drop(self);
        release_freed_memory();
        stopped
    }
}

/// How long a pipeline may take to reach NULL (a driver releasing its buffers) before it is given up on.
const STOP_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(5);

/// A stopped pipeline frees tens of MB (encoder frame buffers) that glibc keeps mapped; without handing
/// it back, a camera stopped and started for every first viewer (`idle: stop`) grew the daemon by ~40 MB
/// over 300 cycles (the leaks benchmark).
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

/// Source -> (decode) -> (convert -> raw tee): everything before the main encoding.
fn source_stages(source: &SourceSpec, encoder: &EncoderPlan) -> Result<Vec<Stage>, MediaError> {
    let mut stages = Vec::new();
    let mode = &source.mode;
    let (width, height) = (mode.width, mode.height);
    let framerate = format!("{}/{}", mode.fps.num, mode.fps.den);
    match &source.origin {
        Origin::Test { pattern, .. } => {
            let (ball, time_code) = (pattern.draws_ball(), pattern.stamps_time());
            stages.push(
                Stage::element("videotestsrc")
                    .named("src")
                    .prop("is-live", true)
                    .prop("pattern", pattern.gst_nick()),
            );
            if time_code {
                let too_small = (width as usize) < timecode::WIDTH || (height as usize) < timecode::HEIGHT;
                if too_small {
                    return Err(MediaError::Build(format!(
                        "{width}x{height} is too small for the time code, which needs {}x{}",
                        timecode::WIDTH,
                        timecode::HEIGHT
                    )));
                }
            }
            if time_code || ball {
                // Both draw into the luma plane of a known layout.
                stages.push(Stage::Caps(format!(
                    "video/x-raw,format=I420,width={width},height={height},framerate={framerate}"
                )));
            } else {
                stages.push(Stage::Caps(format!(
                    "video/x-raw,width={width},height={height},framerate={framerate}"
                )));
            }
            // A visible running clock proves the picture is live, not a frozen frame. The overlay lives
            // in gstreamer1.0-x (pango); without it demo cameras still stream, just unlabelled. Under a
            // time code (top left) it goes to the bottom.
            if gst::ElementFactory::find("clockoverlay").is_some() {
                stages.push(
                    Stage::element("clockoverlay")
                        .named("label")
                        .prop("time-format", "%H:%M:%S")
                        .prop("halignment", "left")
                        .prop("valignment", if time_code { "bottom" } else { "top" })
                        .prop("shaded-background", true)
                        .prop("font-desc", "Sans 20"),
                );
            }
        }
        Origin::V4l2 { .. } => {
            stages.push(Stage::element("v4l2src").named("src"));
            stages.push(Stage::Caps(v4l2_caps(mode)?));
            if mode.format == PixelFormat::Mjpeg && encoder.raw_input.is_some() {
                stages.push(Stage::element("jpegdec"));
            }
        }
    }
    if let Some(format) = &encoder.raw_input {
        // Converted once, then teed: the main encoder and any extra encoding share the same pictures.
        stages.push(Stage::element("videoconvert"));
        stages.push(Stage::Caps(format!("video/x-raw,format={format}")));
        stages.push(Stage::element("tee").named("raw").prop("allow-not-linked", true));
    }
    Ok(stages)
}

/// One encoding's chain (see `Encoding`).
fn encoding_stages(plan: &EncoderPlan, fed_from_raw_tee: bool, convert: bool) -> Vec<Stage> {
    let mut stages = Vec::new();
    if fed_from_raw_tee {
        stages.push(
            Stage::element("queue")
                .prop("max-size-buffers", 2)
                .prop("max-size-bytes", 0)
                .prop("max-size-time", 0)
                .prop("leaky", "downstream"),
        );
    }
    if let Some((width, height)) = plan.size {
        stages.push(Stage::element("videoscale"));
        stages.push(Stage::Caps(format!("video/x-raw,width={width},height={height}")));
    }
    if let (true, Some(format)) = (convert, &plan.raw_input) {
        stages.push(Stage::element("videoconvert"));
        stages.push(Stage::Caps(format!("video/x-raw,format={format}")));
    }
    stages.push(Stage::Fragment(plan.fragment.clone()));
    match plan.codec {
        Codec::H264 => stages.push(Stage::element("h264parse")),
        Codec::Vp8 => {}
    }
    // allow-not-linked: with no branch the encoder keeps running instead of erroring with not-linked.
    stages.push(Stage::element("tee").named("encoded").prop("allow-not-linked", true));
    stages.push(match plan.codec {
        // config-interval=-1 puts SPS/PPS before every IDR: a viewer joining mid-stream can decode the next keyframe.
        Codec::H264 => Stage::element("rtph264pay")
            .named("pay")
            .prop("config-interval", -1)
            .prop("aggregate-mode", "zero-latency")
            .prop("pt", PAYLOAD_TYPE)
            .prop("mtu", RTP_MTU),
        Codec::Vp8 => Stage::element("rtpvp8pay")
            .named("pay")
            .prop("picture-id-mode", "15-bit")
            .prop("pt", PAYLOAD_TYPE)
            .prop("mtu", RTP_MTU),
    });
    stages.push(Stage::element("tee").named("fanout").prop("allow-not-linked", true));
    stages
}

/// The whole chain of a camera with `encoder`, in gst-launch form (the log shows it at start).
pub fn describe(source: &SourceSpec, encoder: &EncoderPlan) -> Result<String, MediaError> {
    let mut stages = source_stages(source, encoder)?;
    stages.extend(encoding_stages(encoder, encoder.raw_input.is_some(), false));
    Ok(stage::describe(&stages))
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
    use crate::config::TestPattern;
    use crate::devices::caps::Fraction;

    fn v4l2(mode: CaptureMode) -> SourceSpec {
        SourceSpec {
            mode,
            origin: Origin::V4l2 {
                device: "/dev/video0".into(),
            },
        }
    }

    fn x264() -> EncoderPlan {
        EncoderPlan {
            profile: "x264".into(),
            fragment: "x264enc".into(),
            raw_input: Some("I420".into()),
            codec: Codec::H264,
            bitrate: None,
            size: None,
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
        let d = describe(&v4l2(mode), &x264()).unwrap();
        assert!(
            d.starts_with(
                "v4l2src name=src ! image/jpeg,width=1280,height=720,framerate=30/1 ! jpegdec ! videoconvert"
            ),
            "{d}"
        );
        assert!(d.contains("video/x-raw,format=I420 ! tee name=raw"), "{d}");
        assert!(
            d.contains("leaky=downstream ! x264enc ! h264parse ! tee name=encoded allow-not-linked=true ! rtph264pay"),
            "{d}"
        );
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
            bitrate: None,
            size: None,
        };
        let d = describe(&v4l2(mode), &plan).unwrap();
        assert!(!d.contains("videoconvert") && !d.contains("jpegdec"), "{d}");
    }

    #[test]
    fn demo_camera_builds_and_encodes() {
        gst::init().unwrap();
        let source = SourceSpec::test_camera(TestPattern::Ball, "Demo \"1\" ! fakesink", 320, 240);
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
        assert!(p.counters().encoded_bytes() > 10 * 100, "frames have bytes");
        assert!(p.counters().source_silence() < Duration::from_secs(5));
        p.shut_down();
    }

    fn stamped(width: u32, height: u32) -> SourceSpec {
        SourceSpec::test_camera(TestPattern::Stamp, "latency", width, height)
    }

    #[test]
    fn time_code_needs_room_in_the_frame() {
        let e = describe(&stamped(320, 240), &x264()).unwrap_err().to_string();
        assert!(e.contains("too small for the time code"), "{e}");
        let d = describe(&stamped(640, 480), &x264()).unwrap();
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
        // Hung off the RTP tee like a viewer.
        let _attached = branch::Attached::link(p.tee(EncodingKey::MAIN, Tap::Rtp).unwrap(), branch.clone()).unwrap();
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

    /// Bytes per second leaving an encoding, measured on its encoded tee over `window`.
    fn encoded_rate(p: &CameraPipeline, key: EncodingKey, window: Duration) -> f64 {
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = bytes.clone();
        let pad = p.tee(key, Tap::Encoded).unwrap().static_pad("sink").unwrap();
        let probe = pad
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                    counted.fetch_add(b.size() as u64, Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            })
            .unwrap();
        std::thread::sleep(window);
        pad.remove_probe(probe);
        bytes.load(Ordering::Relaxed) as f64 / window.as_secs_f64()
    }

    fn control(property: &str, scale: u32) -> Option<BitrateControl> {
        let yaml = format!("{{ element: enc, property: {property}, scale: {scale} }}");
        Some(serde_yaml::from_str(&yaml).unwrap())
    }

    /// The shared encode follows its viewers through the profile's bitrate control while it plays:
    /// x264 (kbit/s) as the main encoding, VP8 (bit/s) as an extra one, and a scaled low tier.
    #[test]
    fn encodings_change_bitrate_while_playing() {
        gst::init().unwrap();
        let source = SourceSpec::test_camera(TestPattern::Smpte, "rate", 320, 240);
        let main = EncoderPlan {
            fragment: "x264enc name=enc tune=zerolatency speed-preset=ultrafast bitrate=1200 key-int-max=30".into(),
            bitrate: control("bitrate", 1),
            ..x264()
        };
        let mut p = CameraPipeline::build(&source, &main).unwrap();
        // A moving zone plate: hard enough that both encoders spend what they are allowed (snow makes
        // VP8 overshoot any target, a still picture needs nothing).
        p.source.set_property_from_str("pattern", "zone-plate");
        for (key, value) in [("kt2", 2), ("kx2", 10), ("ky2", 10)] {
            p.source.set_property(key, value);
        }
        p.play().unwrap();
        let vp8 = EncoderPlan {
            profile: "vp8".into(),
            fragment: "vp8enc name=enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate=1200000".into(),
            codec: Codec::Vp8,
            bitrate: control("target-bitrate", 1000),
            ..x264()
        };
        p.add_encoding(EncodingKey::VP8, &vp8).unwrap();
        let low = EncoderPlan {
            size: Some((160, 120)),
            ..main.clone()
        };
        p.add_encoding(EncodingKey::LOW, &low).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let window = Duration::from_secs(3);
        let before = [EncodingKey::MAIN, EncodingKey::VP8].map(|k| encoded_rate(&p, k, window));
        p.set_bitrate(EncodingKey::MAIN, 200).unwrap();
        p.set_bitrate(EncodingKey::VP8, 200).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let after = [EncodingKey::MAIN, EncodingKey::VP8].map(|k| encoded_rate(&p, k, window));
        let caps = p
            .tee(EncodingKey::LOW, Tap::Encoded)
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .current_caps()
            .unwrap();
        let low_width = caps.structure(0).unwrap().get::<i32>("width").unwrap();
        assert!(p.set_bitrate(EncodingKey::LOW, 100).is_ok());
        p.shut_down();
        for (i, name) in ["x264", "vp8"].iter().enumerate() {
            // 200 of 1200 kbit/s is a sixth; half is a generous bound on a loaded machine.
            assert!(
                after[i] < before[i] * 0.5,
                "{name}: {} -> {} bytes/s",
                before[i],
                after[i]
            );
        }
        assert_eq!(low_width, 160, "the low tier is scaled");
    }
}

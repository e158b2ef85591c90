//! Proving an encoder fragment on this machine before any camera depends on it.
//!
//! `check_fragment` parses a fragment without running it (used when a profile file is read), telling
//! a syntax error (the file is broken) from a missing element (the profile is merely unusable here).
//! `trial_encode` pushes a few test frames through it: an element can be registered with no hardware
//! behind it, and only running it shows that. Both are used once per profile at start, never on a
//! camera's pipeline.

use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;

/// Trial frames are small: the trial proves the encoder opens and produces output, not its speed.
pub const TRIAL_WIDTH: u32 = 320;
pub const TRIAL_HEIGHT: u32 = 240;
pub const TRIAL_FPS: u32 = 30;

/// Makes the H.264 test input for passthrough profiles (which take a camera's H.264, not raw video).
const H264_TEST_ENCODER: &str = "x264enc";

/// Named so the output check finds it; unlikely to clash with a name in a profile's fragment.
const SINK_NAME: &str = "edgecam_trial_sink";

#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("GStreamer did not initialise: {0}")]
    Init(#[source] glib::Error),
    #[error("missing GStreamer element(s): {}", .0.join(", "))]
    MissingElements(Vec<String>),
    #[error("does not parse: {0}")]
    Parse(#[source] glib::Error),
    #[error("no element named {0:?} in the fragment")]
    NoNamedElement(String),
    #[error("element {element:?} has no property {property:?}")]
    NoProperty { element: String, property: String },
    #[error("property {property:?} of {element:?} is not a structure, so it has no field to set")]
    NotAStructure { element: String, property: String },
    #[error("no {H264_TEST_ENCODER} to make H.264 test input for a passthrough trial")]
    NoH264Source,
    #[error("{element}: {message}{}", debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Failed { element: String, message: String, debug: Option<String> },
    #[error("refused to start, with no error message")]
    StartRefused,
    #[error("did not finish {frames} frames within {timeout:?}")]
    Timeout { frames: u32, timeout: Duration },
    #[error("finished without producing any output")]
    NoOutput,
}

/// A property the caller will set at run time; `check_fragment` proves it exists.
#[derive(Clone, Copy, Debug)]
pub struct Control<'a> {
    pub element: &'a str,
    pub property: &'a str,
    /// The property holds a GstStructure whose field is set (v4l2 `extra-controls`).
    pub structure: bool,
}

fn init() -> Result<(), TrialError> {
    gst::init().map_err(TrialError::Init)
}

pub fn element_exists(name: &str) -> Result<bool, TrialError> {
    init()?;
    Ok(gst::ElementFactory::find(name).is_some())
}

/// Parses with a context, so a missing element is told apart from a broken description.
/// FATAL_ERRORS: without it GStreamer returns a half-built bin along with the error, and the
/// bindings drop the bin on the floor.
fn parse(
    description: &str,
    parse: impl FnOnce(&str, Option<&mut gst::ParseContext>, gst::ParseFlags) -> Result<gst::Element, glib::Error>,
) -> Result<gst::Element, TrialError> {
    init()?;
    let mut context = gst::ParseContext::new();
    parse(description, Some(&mut context), gst::ParseFlags::FATAL_ERRORS).map_err(|err| {
        let missing = context.missing_elements();
        if err.matches(gst::ParseError::NoSuchElement) && !missing.is_empty() {
            TrialError::MissingElements(missing)
        } else {
            TrialError::Parse(err)
        }
    })
}

/// Parses a fragment without running it. `MissingElements` means the syntax is fine (the grammar is
/// parsed before any element is made) but properties of the missing elements could not be checked.
/// Where every element exists, property names and values are checked too, and so is `control`.
pub fn check_fragment(fragment: &str, control: Option<Control<'_>>) -> Result<(), TrialError> {
    let bin = parse(fragment, |d, c, f| gst::parse::bin_from_description_full(d, false, c, f))?;
    let Some(control) = control else { return Ok(()) };
    let bin = bin.downcast::<gst::Bin>().map_err(|_| TrialError::NoNamedElement(control.element.into()))?;
    let element = bin.by_name(control.element).ok_or_else(|| TrialError::NoNamedElement(control.element.into()))?;
    let pspec = element.find_property(control.property).ok_or_else(|| TrialError::NoProperty {
        element: control.element.into(),
        property: control.property.into(),
    })?;
    if control.structure && pspec.value_type() != gst::Structure::static_type() {
        return Err(TrialError::NotAStructure { element: control.element.into(), property: control.property.into() });
    }
    Ok(())
}

/// Sets the pipeline to NULL however the trial ends, so no encoder or device stays open.
struct NullOnDrop(gst::Element);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        // Nothing useful can be done if this fails; the pipeline is dropped either way.
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// Runs `frames` test frames through `fragment` to EOS. `raw_input` is the raw format the fragment
/// takes, or None for passthrough (then the input is H.264 made by x264enc).
pub fn trial_encode(fragment: &str, raw_input: Option<&str>, frames: u32, timeout: Duration) -> Result<(), TrialError> {
    let caps = format!("width={TRIAL_WIDTH},height={TRIAL_HEIGHT},framerate={TRIAL_FPS}/1");
    let source = match raw_input {
        Some(format) => format!("videotestsrc num-buffers={frames} ! video/x-raw,format={format},{caps}"),
        None if element_exists(H264_TEST_ENCODER)? => format!(
            "videotestsrc num-buffers={frames} ! video/x-raw,format=I420,{caps} \
             ! {H264_TEST_ENCODER} tune=zerolatency speed-preset=ultrafast key-int-max={TRIAL_FPS}"
        ),
        None => return Err(TrialError::NoH264Source),
    };
    let description = format!("{source} ! {fragment} ! fakesink name={SINK_NAME} sync=false");
    let pipeline = NullOnDrop(parse(&description, gst::parse::launch_full)?);
    let bus = pipeline.0.bus().ok_or(TrialError::StartRefused)?;

    if pipeline.0.set_state(gst::State::Playing).is_err() {
        let error = bus.pop_filtered(&[gst::MessageType::Error]);
        return Err(error.as_ref().and_then(failure).unwrap_or(TrialError::StartRefused));
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = gst::ClockTime::from_nseconds(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX));
        let message = bus
            .timed_pop_filtered(wait, &[gst::MessageType::Eos, gst::MessageType::Error])
            .ok_or(TrialError::Timeout { frames, timeout })?;
        if let Some(error) = failure(&message) {
            return Err(error);
        }
        if message.type_() == gst::MessageType::Eos {
            break;
        }
    }
    // EOS alone would also follow an encoder that swallowed every frame.
    let sink = pipeline.0.downcast_ref::<gst::Bin>().and_then(|bin| bin.by_name(SINK_NAME));
    match sink.and_then(|sink| sink.property::<Option<gst::Sample>>("last-sample")) {
        Some(_) => Ok(()),
        None => Err(TrialError::NoOutput),
    }
}

fn failure(message: &gst::Message) -> Option<TrialError> {
    let gst::MessageView::Error(err) = message.view() else { return None };
    Some(TrialError::Failed {
        element: err.src().map_or_else(|| "pipeline".into(), |s| s.name().to_string()),
        message: err.error().to_string(),
        debug: err.debug().map(|d| d.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const X264: &str = "x264enc name=enc tune=zerolatency speed-preset=ultrafast bitrate=500 key-int-max=30 \
                        ! video/x-h264,profile=constrained-baseline";
    const TIMEOUT: Duration = Duration::from_secs(10);

    fn bitrate() -> Option<Control<'static>> {
        Some(Control { element: "enc", property: "bitrate", structure: false })
    }

    #[test]
    fn x264_fragment_parses_and_encodes() {
        check_fragment(X264, bitrate()).unwrap();
        trial_encode(X264, Some("I420"), 5, TIMEOUT).unwrap();
    }

    #[test]
    fn syntax_error_is_not_a_missing_element() {
        let err = check_fragment("x264enc name=enc ! ! fakesink", None).unwrap_err();
        assert!(matches!(err, TrialError::Parse(_)), "{err}");
        let err = check_fragment("nosuchenc ! video/x-h264,level=(string)4 !", None).unwrap_err();
        assert!(matches!(err, TrialError::Parse(_)), "syntax is checked before elements are made: {err}");
    }

    #[test]
    fn missing_element_with_good_syntax_is_reported_by_name() {
        let fragment = r#"nosuch264enc extra-controls="controls,repeat_sequence_header=1,video_bitrate=1000000" ! video/x-h264,level=(string)4"#;
        match check_fragment(fragment, None) {
            Err(TrialError::MissingElements(missing)) => assert_eq!(missing, ["nosuch264enc"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_property_of_a_present_element_does_not_parse() {
        let err = check_fragment("x264enc no-such-property=1", None).unwrap_err();
        assert!(matches!(err, TrialError::Parse(_)), "{err}");
    }

    #[test]
    fn bitrate_control_must_exist_on_the_named_element() {
        let err = check_fragment(X264, Some(Control { element: "x", property: "bitrate", structure: false })).unwrap_err();
        assert!(matches!(err, TrialError::NoNamedElement(_)), "{err}");
        let err = check_fragment(X264, Some(Control { element: "enc", property: "kbps", structure: false })).unwrap_err();
        assert!(matches!(err, TrialError::NoProperty { .. }), "{err}");
        let err = check_fragment(X264, Some(Control { element: "enc", property: "bitrate", structure: true })).unwrap_err();
        assert!(matches!(err, TrialError::NotAStructure { .. }), "{err}");
    }

    #[test]
    fn an_encoder_failing_mid_stream_fails_the_trial_with_its_message() {
        let fragment = format!("{X264} ! identity name=breaker error-after=3");
        match trial_encode(&fragment, Some("I420"), 10, TIMEOUT) {
            Err(TrialError::Failed { element, .. }) => assert_eq!(element, "breaker"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn passthrough_is_tried_on_h264_from_x264enc() {
        let fragment = "h264parse config-interval=-1 ! video/x-h264,profile=(string){constrained-baseline,baseline,main}";
        trial_encode(fragment, None, 5, TIMEOUT).unwrap();
    }

    #[test]
    fn an_encoder_swallowing_every_frame_has_no_output() {
        let err = trial_encode(&format!("{X264} ! identity drop-probability=1.0"), Some("I420"), 5, TIMEOUT).unwrap_err();
        assert!(matches!(err, TrialError::NoOutput), "{err}");
    }
}

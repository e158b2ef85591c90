//! Proving an encoder fragment on this machine before any camera depends on it: the GStreamer half
//! of [`crate::encoders::Machine`] (see `machine`).
//!
//! `check_fragment` parses a fragment without running it (used when a profile file is read), telling
//! a syntax error (the file is broken) from a missing element (the profile is merely unusable here).
//! `trial_encode` pushes a few test frames through it: an element can be registered with no hardware
//! behind it, and only running it shows that. Both are used once per profile at start, never on a
//! camera's pipeline.

use std::time::Duration;

use gst::glib;
use gst::prelude::*;

use crate::encoders::machine::{Control, TrialError, TRIAL_FPS, TRIAL_HEIGHT, TRIAL_WIDTH};

/// Makes the H.264 test input for passthrough profiles (which take a camera's H.264, not raw video).
const H264_TEST_ENCODER: &str = "x264enc";

/// Named so the output check finds it; unlikely to clash with a name in a profile's fragment.
const SINK_NAME: &str = "edgecam_trial_sink";

/// A parse that failed, before it becomes a [`TrialError`]: the GStreamer error is kept so a
/// retry can tell a property error from a syntax error.
enum ParseFailure {
    Init(glib::Error),
    Missing(Vec<String>),
    Invalid(glib::Error),
}

impl From<ParseFailure> for TrialError {
    fn from(failure: ParseFailure) -> Self {
        match failure {
            ParseFailure::Init(e) => TrialError::Init(e.to_string()),
            ParseFailure::Missing(missing) => TrialError::MissingElements(missing),
            ParseFailure::Invalid(e) => TrialError::Parse(e.to_string()),
        }
    }
}

pub fn element_exists(name: &str) -> Result<bool, TrialError> {
    gst::init().map_err(|e| TrialError::Init(e.to_string()))?;
    Ok(gst::ElementFactory::find(name).is_some())
}

/// Parses with a context, so a missing element is told apart from a broken description.
/// FATAL_ERRORS: without it GStreamer returns a half-built bin along with the error, and the
/// bindings drop the bin on the floor.
fn parse(
    description: &str,
    parse: impl FnOnce(&str, Option<&mut gst::ParseContext>, gst::ParseFlags) -> Result<gst::Element, glib::Error>,
) -> Result<gst::Element, ParseFailure> {
    gst::init().map_err(ParseFailure::Init)?;
    let mut context = gst::ParseContext::new();
    parse(description, Some(&mut context), gst::ParseFlags::FATAL_ERRORS).map_err(|err| {
        let missing = context.missing_elements();
        if err.matches(gst::ParseError::NoSuchElement) && !missing.is_empty() {
            ParseFailure::Missing(missing)
        } else {
            ParseFailure::Invalid(err)
        }
    })
}

/// Parses a fragment without running it. Where every element exists, property names and values
/// are checked too, and so is `control`. `MissingElements` means the rest of the fragment parses;
/// properties of the missing elements could not be checked.
pub fn check_fragment(fragment: &str, control: Option<Control<'_>>) -> Result<(), TrialError> {
    // Caps are only recognised between two links (`! caps !`), so a fragment ending in caps (as
    // encoder fragments do) needs an element after it to parse on its own.
    let description = format!("{fragment} ! {STAND_IN}");
    let bin = match parse_bin(&description) {
        Err(ParseFailure::Missing(missing)) => return Err(check_syntax_without(&description, missing)),
        other => other?,
    };
    let Some(control) = control else { return Ok(()) };
    let bin = bin
        .downcast::<gst::Bin>()
        .map_err(|_| TrialError::NoNamedElement(control.element.into()))?;
    let element = bin
        .by_name(control.element)
        .ok_or_else(|| TrialError::NoNamedElement(control.element.into()))?;
    let pspec = element
        .find_property(control.property)
        .ok_or_else(|| TrialError::NoProperty {
            element: control.element.into(),
            property: control.property.into(),
        })?;
    if control.structure && pspec.value_type() != gst::Structure::static_type() {
        return Err(TrialError::NotAStructure {
            element: control.element.into(),
            property: control.property.into(),
        });
    }
    Ok(())
}

fn parse_bin(description: &str) -> Result<gst::Element, ParseFailure> {
    parse(description, |d, c, f| {
        gst::parse::bin_from_description_full(d, false, c, f)
    })
}

/// GStreamer keeps only the first error of a parse, so a missing element hides a syntax error after
/// it. Parsing again with each missing element replaced by a stand-in, minus the properties only the
/// real element could check, shows what is wrong with the rest.
fn check_syntax_without(description: &str, missing: Vec<String>) -> TrialError {
    match parse_bin(&stand_in_for(description, &missing)) {
        // A property error here may be the stand-in's (a property not recognised as the missing
        // element's): no verdict on the file, the missing element decides.
        Err(ParseFailure::Invalid(err))
            if !err.matches(gst::ParseError::NoSuchProperty) && !err.matches(gst::ParseError::CouldNotSetProperty) =>
        {
            TrialError::Parse(err.to_string())
        }
        _ => TrialError::MissingElements(missing),
    }
}

/// Present in every GStreamer install (coreelements), with one sink and one src pad like an encoder.
const STAND_IN: &str = "identity";

/// Replaces each missing element by [`STAND_IN`], keeping its `name=` (links may refer to it) and
/// dropping its other properties.
fn stand_in_for(description: &str, missing: &[String]) -> String {
    let tokens = split_outside_quotes(description);
    let mut out: Vec<&str> = Vec::with_capacity(tokens.len());
    let mut in_missing_element = false;
    for (index, token) in tokens.iter().enumerate() {
        let element_position = index == 0 || tokens[index - 1].ends_with(['!', '(']);
        if element_position && missing.iter().any(|m| m == token) {
            out.push(STAND_IN);
            in_missing_element = true;
            continue;
        }
        let property = !token.starts_with('!') && token.contains('=');
        if in_missing_element && property && !token.starts_with("name=") {
            continue;
        }
        in_missing_element &= property;
        out.push(token);
    }
    out.join(" ")
}

/// Splits at whitespace outside double quotes (`extra-controls="controls, a=1"` is one token).
fn split_outside_quotes(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let (mut start, mut quoted, mut escaped) = (None, false, false);
    for (index, c) in text.char_indices() {
        if c.is_whitespace() && !quoted {
            if let Some(s) = start.take() {
                tokens.push(&text[s..index]);
            }
            continue;
        }
        start.get_or_insert(index);
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    if let Some(s) = start {
        tokens.push(&text[s..]);
    }
    tokens
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
        None => {
            return Err(TrialError::NoH264Source {
                encoder: H264_TEST_ENCODER,
            })
        }
    };
    let description = format!("{source} ! {fragment} ! fakesink name={SINK_NAME} sync=false");
    let pipeline = NullOnDrop(parse(&description, gst::parse::launch_full)?);
    let bus = pipeline.0.bus().ok_or(TrialError::StartRefused)?;

    if pipeline.0.set_state(gst::State::Playing).is_err() {
        let error = bus.pop_filtered(&[gst::MessageType::Error]);
        return Err(error.as_ref().and_then(failure).unwrap_or(TrialError::StartRefused));
    }
    let wait = gst::ClockTime::from_nseconds(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
    let message = bus
        .timed_pop_filtered(wait, &[gst::MessageType::Eos, gst::MessageType::Error])
        .ok_or(TrialError::Timeout { frames, timeout })?;
    if let Some(error) = failure(&message) {
        return Err(error);
    }
    // EOS alone would also follow an encoder that swallowed every frame.
    let sink = pipeline
        .0
        .downcast_ref::<gst::Bin>()
        .and_then(|bin| bin.by_name(SINK_NAME));
    match sink.and_then(|sink| sink.property::<Option<gst::Sample>>("last-sample")) {
        Some(_) => Ok(()),
        None => Err(TrialError::NoOutput),
    }
}

fn failure(message: &gst::Message) -> Option<TrialError> {
    let gst::MessageView::Error(err) = message.view() else {
        return None;
    };
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
        Some(Control {
            element: "enc",
            property: "bitrate",
            structure: false,
        })
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
        // GStreamer alone would report only the missing element for these.
        for broken in [
            "nosuchenc ! video/x-h264,level=(string)4 !",
            "nosuchenc a=\"b c\" ! ! video/x-h264",
            "nosuchenc ! video/x-h264,level=(strin g)4,,",
        ] {
            let err = check_fragment(broken, None).unwrap_err();
            assert!(matches!(err, TrialError::Parse(_)), "{broken}: {err}");
        }
    }

    #[test]
    fn missing_element_with_good_syntax_is_reported_by_name() {
        let fragment = r#"nosuch264enc name=enc extra-controls="controls,repeat_sequence_header=1,video_bitrate=1000000" ! video/x-h264,level=(string)4"#;
        match check_fragment(fragment, None) {
            Err(TrialError::MissingElements(missing)) => assert_eq!(missing, ["nosuch264enc"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stand_in_keeps_the_name_and_drops_the_other_properties() {
        let missing = ["v4l2h264enc".to_string()];
        let fragment =
            r#"v4l2h264enc name=enc extra-controls="controls, a=1" ! video/x-h264,level=(string)4 ! v4l2h264enc2 a=1"#;
        assert_eq!(
            stand_in_for(fragment, &missing),
            "identity name=enc ! video/x-h264,level=(string)4 ! v4l2h264enc2 a=1"
        );
        assert_eq!(split_outside_quotes(r#"a b="c \" d"  e"#), ["a", r#"b="c \" d""#, "e"]);
    }

    #[test]
    fn unknown_property_of_a_present_element_does_not_parse() {
        let err = check_fragment("x264enc no-such-property=1", None).unwrap_err();
        assert!(matches!(err, TrialError::Parse(_)), "{err}");
    }

    #[test]
    fn bitrate_control_must_exist_on_the_named_element() {
        let err = check_fragment(
            X264,
            Some(Control {
                element: "x",
                property: "bitrate",
                structure: false,
            }),
        )
        .unwrap_err();
        assert!(matches!(err, TrialError::NoNamedElement(_)), "{err}");
        let err = check_fragment(
            X264,
            Some(Control {
                element: "enc",
                property: "kbps",
                structure: false,
            }),
        )
        .unwrap_err();
        assert!(matches!(err, TrialError::NoProperty { .. }), "{err}");
        let err = check_fragment(
            X264,
            Some(Control {
                element: "enc",
                property: "bitrate",
                structure: true,
            }),
        )
        .unwrap_err();
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
    fn a_stalling_encoder_times_out_and_is_stopped() {
        // 100 ms per frame: 10 frames cannot finish in 300 ms.
        let fragment = format!("{X264} ! identity sleep-time=100000");
        let err = trial_encode(&fragment, Some("I420"), 10, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, TrialError::Timeout { frames: 10, .. }), "{err}");
    }

    #[test]
    fn passthrough_is_tried_on_h264_from_x264enc() {
        let fragment =
            "h264parse config-interval=-1 ! video/x-h264,profile=(string){constrained-baseline,baseline,main}";
        trial_encode(fragment, None, 5, TIMEOUT).unwrap();
    }

    #[test]
    fn an_encoder_swallowing_every_frame_has_no_output() {
        let err = trial_encode(
            &format!("{X264} ! identity drop-probability=1.0"),
            Some("I420"),
            5,
            TIMEOUT,
        )
        .unwrap_err();
        assert!(matches!(err, TrialError::NoOutput), "{err}");
    }
}

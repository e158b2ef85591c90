//! Changing a running encoder's bitrate through the control its profile declares (`BitrateControl`:
//! x264enc `bitrate` in kbit/s, vp8enc `target-bitrate` in bit/s, v4l2h264enc's `video_bitrate` inside
//! `extra-controls`, ...). Which bitrate to set, and how often, is the camera's policy; some encoders pay
//! for every change (legacy nvh264enc forces a keyframe, vah264enc reconfigures), so it must not set one
//! per estimate.

use gst::prelude::*;

use crate::encoders::BitrateControl;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BitrateError {
    #[error("no element named {0:?} in the encoding")]
    NoElement(String),
    #[error("{element} has no property {property:?}")]
    NoProperty { element: String, property: String },
    #[error("{element}.{property}: {value} is out of the property's range")]
    OutOfRange {
        element: String,
        property: String,
        value: u64,
    },
    #[error("{element}.{property} is not a structure with field {field:?}")]
    NotAStructure {
        element: String,
        property: String,
        field: String,
    },
}

/// Sets `kbps` on the encoder named by `control` among the direct children of `encoding` (the camera's
/// pipeline for its main encoding, the extra encoding's bin for that one: both name their encoder the
/// same, and a recursive lookup from the pipeline could find the other one).
pub fn apply(encoding: &gst::Bin, control: &BitrateControl, kbps: u32) -> Result<(), BitrateError> {
    let element = encoding
        .children()
        .into_iter()
        .find(|e| e.name() == control.element.as_str())
        .ok_or_else(|| BitrateError::NoElement(control.element.clone()))?;
    let pspec = element
        .find_property(&control.property)
        .ok_or_else(|| BitrateError::NoProperty {
            element: control.element.clone(),
            property: control.property.clone(),
        })?;
    let value = control.value(kbps);
    let out_of_range = || BitrateError::OutOfRange {
        element: control.element.clone(),
        property: control.property.clone(),
        value,
    };
    match &control.field {
        None => {
            if !integer_range(&pspec).is_some_and(|(min, max)| (min..=max).contains(&i128::from(value))) {
                return Err(out_of_range());
            }
            let converted = value
                .to_value()
                .transform_with_type(pspec.value_type())
                .map_err(|_| out_of_range())?;
            element.set_property_from_value(&control.property, &converted);
        }
        Some(field) => {
            let not_a_structure = || BitrateError::NotAStructure {
                element: control.element.clone(),
                property: control.property.clone(),
                field: field.clone(),
            };
            if pspec.value_type() != gst::Structure::static_type() {
                return Err(not_a_structure());
            }
            // V4L2 controls are 32-bit integers; the structure keeps the profile's other controls.
            let value = i32::try_from(value).map_err(|_| out_of_range())?;
            let mut controls = element
                .property::<Option<gst::Structure>>(&control.property)
                .ok_or_else(not_a_structure)?;
            controls.set(field.as_str(), value);
            element.set_property(&control.property, controls);
        }
    }
    Ok(())
}

/// The range of an integer property (the types encoders use for bitrates); None for anything else.
fn integer_range(pspec: &gst::glib::ParamSpec) -> Option<(i128, i128)> {
    use gst::glib::{ParamSpecInt, ParamSpecInt64, ParamSpecUInt, ParamSpecUInt64};
    if let Some(p) = pspec.downcast_ref::<ParamSpecUInt>() {
        Some((p.minimum().into(), p.maximum().into()))
    } else if let Some(p) = pspec.downcast_ref::<ParamSpecInt>() {
        Some((p.minimum().into(), p.maximum().into()))
    } else if let Some(p) = pspec.downcast_ref::<ParamSpecUInt64>() {
        Some((p.minimum().into(), p.maximum().into()))
    } else {
        pspec
            .downcast_ref::<ParamSpecInt64>()
            .map(|p| (p.minimum().into(), p.maximum().into()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::encoders::{EncodeSettings, Profile};
    use crate::media::{tee_branch, CameraPipeline, EncoderPlan, SourceSpec};

    fn profile(yaml: &str) -> Profile {
        Profile::from_yaml(yaml).unwrap()
    }

    /// Moving colour bars: detailed enough that each encoder spends a 1.5 Mbit/s budget at 320x240, plain
    /// enough that it can get down to 300 kbit/s (noise cannot: vp8enc stays above 2 Mbit/s on it).
    fn moving_bars() -> SourceSpec {
        SourceSpec::Test {
            pattern: "smpte",
            ball: false,
            label: "bitrate".into(),
            width: 320,
            height: 240,
            fps: 30,
            time_code: false,
        }
    }

    /// The camera pipeline with `profile` at `kbps`, and a counter of the RTP bytes leaving its fanout.
    fn camera(profile: &Profile, kbps: u32) -> (CameraPipeline, Arc<AtomicU64>) {
        let settings = EncodeSettings {
            bitrate_kbps: kbps,
            width: 320,
            height: 240,
            fps: 30,
            gop: 60,
        };
        let plan = EncoderPlan {
            profile: profile.name().into(),
            fragment: profile.render(&settings),
            raw_input: profile.raw_input().map(str::to_string),
            codec: profile.codec(),
        };
        let pipeline = CameraPipeline::build(&moving_bars(), &plan).unwrap();
        pipeline
            .pipeline()
            .by_name("src")
            .unwrap()
            .set_property("horizontal-speed", 16i32);
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .unwrap();
        pipeline.pipeline().add(&sink).unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = bytes.clone();
        let sink_pad = sink.static_pad("sink").unwrap();
        // The payloader pushes a fragmented frame as one buffer list.
        sink_pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, probe| {
                let size = match &probe.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => buffer.size(),
                    Some(gst::PadProbeData::BufferList(list)) => list.calculate_size(),
                    _ => 0,
                };
                counted.fetch_add(size as u64, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            },
        );
        tee_branch::link(pipeline.fanout(profile.codec()).unwrap(), &sink_pad).unwrap();
        pipeline.play().unwrap();
        (pipeline, bytes)
    }

    /// kbit/s out of the fanout over `window`, after `settle` for the encoder's rate control to follow.
    fn measure(bytes: &AtomicU64, settle: Duration, window: Duration) -> f64 {
        std::thread::sleep(settle);
        let (start, at) = (bytes.load(Ordering::Relaxed), Instant::now());
        std::thread::sleep(window);
        let sent = bytes.load(Ordering::Relaxed) - start;
        sent as f64 * 8.0 / at.elapsed().as_secs_f64() / 1000.0
    }

    /// Starts at `high`, measures, lowers to `low` while playing, measures, and raises it again, giving
    /// the encoder `raise_settle` to climb back.
    fn follows_its_bitrate(yaml: &str, high: u32, low: u32, raise_settle: Duration) {
        gst::init().unwrap();
        let profile = profile(yaml);
        let control = profile.bitrate_control().unwrap().clone();
        let (pipeline, bytes) = camera(&profile, high);
        let window = Duration::from_secs(4);
        let at_high = measure(&bytes, Duration::from_secs(2), window);
        apply(pipeline.pipeline().upcast_ref(), &control, low).unwrap();
        let at_low = measure(&bytes, Duration::from_secs(2), window);
        apply(pipeline.pipeline().upcast_ref(), &control, high).unwrap();
        let back_high = measure(&bytes, raise_settle, window);
        pipeline.shut_down();
        eprintln!(
            "{}: {high} kbit/s -> sent {at_high:.0}, {low} -> {at_low:.0}, {high} -> {back_high:.0}",
            profile.name()
        );
        // Generous: rate controls overshoot and undershoot for a while, and the machine is loaded. What
        // matters is that the output follows each change, in its direction and to near the target.
        let near = |sent: f64, target: u32| (0.5..1.6).contains(&(sent / f64::from(target)));
        assert!(near(at_high, high), "at {high} kbit/s sent {at_high:.0}");
        assert!(near(at_low, low), "lowered to {low} kbit/s, sent {at_low:.0}");
        assert!(
            near(back_high, high),
            "raised to {high} kbit/s again, sent {back_high:.0}"
        );
    }

    #[test]
    fn x264_follows_a_bitrate_change_while_playing() {
        follows_its_bitrate(
            include_str!("../../profiles/x264.yaml"),
            1500,
            300,
            Duration::from_secs(2),
        );
    }

    #[test]
    fn vp8_follows_a_bitrate_change_while_playing() {
        // libvpx's CBR lowers at once but climbs back over ~10 s (measured: 400 -> 1300 kbit/s in 10 s).
        follows_its_bitrate(
            include_str!("../../profiles/vp8.yaml"),
            1500,
            300,
            Duration::from_secs(12),
        );
    }

    fn control(element: &str, property: &str, field: Option<&str>, scale: u32) -> BitrateControl {
        BitrateControl {
            element: element.into(),
            property: property.into(),
            field: field.map(str::to_string),
            scale: scale.try_into().unwrap(),
        }
    }

    fn bin(description: &str) -> gst::Bin {
        gst::init().unwrap();
        gst::parse::bin_from_description(description, false).unwrap()
    }

    #[test]
    fn sets_the_value_in_the_property_unit() {
        let b = bin("vp8enc name=enc target-bitrate=256000");
        apply(&b, &control("enc", "target-bitrate", None, 1000), 700).unwrap();
        assert_eq!(b.by_name("enc").unwrap().property::<i32>("target-bitrate"), 700_000);
    }

    #[test]
    fn sets_a_field_of_a_controls_structure_and_keeps_the_others() {
        // v4l2src shares v4l2h264enc's extra-controls property (v4l2h264enc needs the Pi's device).
        let b = bin("v4l2src name=enc extra-controls=\"controls,repeat_sequence_header=1,video_bitrate=1000000\"");
        apply(&b, &control("enc", "extra-controls", Some("video_bitrate"), 1000), 400).unwrap();
        let controls = b.by_name("enc").unwrap().property::<gst::Structure>("extra-controls");
        assert_eq!(controls.get::<i32>("video_bitrate"), Ok(400_000));
        assert_eq!(controls.get::<i32>("repeat_sequence_header"), Ok(1));
    }

    #[test]
    fn wrong_controls_are_errors_not_panics() {
        let b = bin("x264enc name=enc");
        let e = apply(&b, &control("encoder", "bitrate", None, 1), 500).unwrap_err();
        assert_eq!(e, BitrateError::NoElement("encoder".into()));
        let e = apply(&b, &control("enc", "kbps", None, 1), 500).unwrap_err();
        assert!(matches!(e, BitrateError::NoProperty { .. }), "{e}");
        // x264enc's bitrate tops out at 2048000 kbit/s.
        let e = apply(&b, &control("enc", "bitrate", None, 1000), 100_000).unwrap_err();
        assert!(matches!(e, BitrateError::OutOfRange { .. }), "{e}");
        let e = apply(&b, &control("enc", "bitrate", Some("video_bitrate"), 1), 500).unwrap_err();
        assert!(matches!(e, BitrateError::NotAStructure { .. }), "{e}");
        assert_eq!(
            b.by_name("enc").unwrap().property::<u32>("bitrate"),
            2048,
            "unchanged default"
        );
    }

    #[test]
    fn finds_only_the_encoder_of_this_encoding() {
        // The extra encoding's bin names its encoder like the main one; from the pipeline only the direct
        // child counts.
        let outer = bin("x264enc name=enc bitrate=1000");
        let inner = gst::parse::bin_from_description("vp8enc name=enc", false).unwrap();
        outer.add(&inner).unwrap();
        apply(&outer, &control("enc", "bitrate", None, 1), 600).unwrap();
        let main = outer.children().into_iter().find(|e| e.name() == "enc").unwrap();
        assert_eq!(main.property::<u32>("bitrate"), 600);
    }
}

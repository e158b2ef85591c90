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
    // By name, at any depth: the encoder sits in the bin its profile's fragment was parsed into.
    let element = encoding
        .by_name(&control.element)
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
    use super::*;

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
    fn finds_the_encoder_inside_the_bin_its_fragment_was_parsed_into() {
        gst::init().unwrap();
        // An encoding is a bin holding the profile's fragment as a bin of its own (camera_pipeline.rs).
        let encoding = gst::Bin::new();
        encoding.add(&bin("x264enc name=enc bitrate=1000")).unwrap();
        apply(&encoding, &control("enc", "bitrate", None, 1), 600).unwrap();
        assert_eq!(encoding.by_name("enc").unwrap().property::<u32>("bitrate"), 600);
    }
}

//! The fixed parts of a camera pipeline as plain data: a chain of stages (an element with its
//! properties, a caps filter, a tee, or a profile's fragment), shown in gst-launch form for the log and
//! tests, and built with element factories. Only a profile's fragment is ever parsed, into a bin of its
//! own, so nothing a profile writes can collide with the names the daemon gives its elements.

use std::fmt;

use gst::prelude::*;

use super::MediaError;

#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    Element {
        factory: &'static str,
        name: Option<&'static str>,
        props: Vec<(&'static str, String)>,
    },
    Caps(String),
    /// A profile's gst-launch fragment, parsed into one bin.
    Fragment(String),
}

impl Stage {
    pub fn element(factory: &'static str) -> Self {
        Self::Element {
            factory,
            name: None,
            props: Vec::new(),
        }
    }

    pub fn named(mut self, name: &'static str) -> Self {
        if let Self::Element { name: n, .. } = &mut self {
            *n = Some(name);
        }
        self
    }

    pub fn prop(mut self, key: &'static str, value: impl ToString) -> Self {
        if let Self::Element { props, .. } = &mut self {
            props.push((key, value.to_string()));
        }
        self
    }

    pub fn build(&self) -> Result<gst::Element, MediaError> {
        match self {
            Self::Element { factory, name, props } => {
                let mut builder = gst::ElementFactory::make(factory);
                if let Some(name) = name {
                    builder = builder.name(*name);
                }
                for (key, value) in props {
                    builder = builder.property_from_str(key, value);
                }
                builder
                    .build()
                    .map_err(|e| MediaError::Build(format!("{factory}: {e}")))
            }
            Self::Caps(caps) => {
                let caps: gst::Caps = caps
                    .parse()
                    .map_err(|_| MediaError::Build(format!("bad caps {caps}")))?;
                gst::ElementFactory::make("capsfilter")
                    .property("caps", caps)
                    .build()
                    .map_err(|e| MediaError::Build(format!("capsfilter: {e}")))
            }
            // Profiles end in a caps filter (`x264enc ! video/x-h264,profile=...`), which gst-launch only
            // accepts between two elements: a pass-through identity closes the chain.
            Self::Fragment(fragment) => gst::parse::bin_from_description(&format!("{fragment} ! identity"), true)
                .map(|bin| bin.upcast())
                .map_err(|e| MediaError::Build(format!("{fragment}: {e}"))),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Element { factory, name, props } => {
                f.write_str(factory)?;
                if let Some(name) = name {
                    write!(f, " name={name}")?;
                }
                props.iter().try_for_each(|(k, v)| write!(f, " {k}={v}"))
            }
            Self::Caps(caps) => f.write_str(caps),
            Self::Fragment(fragment) => f.write_str(fragment),
        }
    }
}

/// A chain in gst-launch form, for the log and for tests.
pub fn describe(stages: &[Stage]) -> String {
    stages.iter().map(Stage::to_string).collect::<Vec<_>>().join(" ! ")
}

/// Builds the stages, adds them to `bin` and links them in order; returns the elements.
pub fn build_chain(bin: &gst::Bin, stages: &[Stage]) -> Result<Vec<gst::Element>, MediaError> {
    let elements = stages.iter().map(Stage::build).collect::<Result<Vec<_>, _>>()?;
    bin.add_many(&elements)
        .map_err(|e| MediaError::Build(format!("adding elements: {e}")))?;
    gst::Element::link_many(&elements).map_err(|e| MediaError::Build(format!("{}: {e}", describe(stages))))?;
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_read_like_gst_launch() {
        let stages = [
            Stage::element("queue")
                .prop("max-size-buffers", 2)
                .prop("leaky", "downstream"),
            Stage::Caps("video/x-raw,format=I420".into()),
            Stage::Fragment("x264enc tune=zerolatency".into()),
            Stage::element("tee").named("encoded").prop("allow-not-linked", true),
        ];
        assert_eq!(
            describe(&stages),
            "queue max-size-buffers=2 leaky=downstream ! video/x-raw,format=I420 ! x264enc tune=zerolatency ! \
             tee name=encoded allow-not-linked=true"
        );
    }

    #[test]
    fn a_fragment_cannot_take_the_daemons_names() {
        gst::init().unwrap();
        // A profile naming its elements like the daemon's own: scoped inside the fragment's bin.
        let bin = gst::Bin::new();
        let stages = [
            Stage::element("videotestsrc").named("src").prop("num-buffers", 1),
            Stage::Fragment("identity name=src ! identity name=fanout".into()),
            Stage::element("fakesink").named("fanout"),
        ];
        let elements = build_chain(&bin, &stages).expect("no name collision");
        let names: Vec<String> = elements.iter().map(|e| e.name().to_string()).collect();
        assert_eq!(names[0], "src");
        assert_eq!(names[2], "fanout");
    }
}

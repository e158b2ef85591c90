//! Pipeline fragments with `{placeholder}`s, validated when the profile is read so that a typo
//! (`{bitrate_kpbs}`) rejects the file instead of reaching GStreamer as literal text.
//!
//! A placeholder is `{` + lowercase letters, digits or `_` + `}`. Anything else in braces stays
//! literal, because GStreamer caps use braces for lists: `profile=(string){main,baseline}`.

use super::EncodeSettings;

/// The values a fragment may use; `render` fills them from [`EncodeSettings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placeholder {
    BitrateKbps,
    BitrateBps,
    Gop,
    Fps,
    Width,
    Height,
}

impl Placeholder {
    const ALL: [(&'static str, Placeholder); 6] = [
        ("bitrate_kbps", Self::BitrateKbps),
        ("bitrate_bps", Self::BitrateBps),
        ("gop", Self::Gop),
        ("fps", Self::Fps),
        ("width", Self::Width),
        ("height", Self::Height),
    ];

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    fn value(self, s: &EncodeSettings) -> u64 {
        match self {
            Self::BitrateKbps => s.bitrate_kbps.into(),
            Self::BitrateBps => u64::from(s.bitrate_kbps) * 1000,
            Self::Gop => s.gop.into(),
            Self::Fps => s.fps.into(),
            Self::Width => s.width.into(),
            Self::Height => s.height.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Value(Placeholder),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("is empty")]
    Empty,
    #[error("unknown placeholder {{{name}}} (known: {})", known_names())]
    UnknownPlaceholder { name: String },
}

fn known_names() -> String {
    Placeholder::ALL
        .iter()
        .map(|(n, _)| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A validated fragment (read from YAML through `TryFrom<String>`, see profile.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    pub fn render(&self, settings: &EncodeSettings) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Value(p) => out.push_str(&p.value(settings).to_string()),
            }
        }
        out
    }
}

impl TryFrom<String> for Template {
    type Error = TemplateError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text.as_str();
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let name_len = after
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(after.len());
            if name_len > 0 && after[name_len..].starts_with('}') {
                let name = &after[..name_len];
                let placeholder = Placeholder::from_name(name)
                    .ok_or_else(|| TemplateError::UnknownPlaceholder { name: name.to_string() })?;
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Value(placeholder));
                rest = &after[name_len + 1..];
            } else {
                literal.push('{');
                rest = after;
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Self { segments })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EncodeSettings {
        EncodeSettings {
            bitrate_kbps: 1500,
            fps: 25,
            gop: 50,
            width: 1280,
            height: 720,
        }
    }

    fn template(text: &str) -> Result<Template, TemplateError> {
        Template::try_from(text.to_string())
    }

    #[test]
    fn every_placeholder_renders() {
        let t = template("a={bitrate_kbps} b={bitrate_bps} g={gop} f={fps} {width}x{height}").unwrap();
        assert_eq!(t.render(&settings()), "a=1500 b=1500000 g=50 f=25 1280x720");
    }

    #[test]
    fn caps_lists_in_braces_stay_literal() {
        let text = "h264parse ! video/x-h264,profile=(string){constrained-baseline,main} ! x format={ I420 }";
        let t = template(text).unwrap();
        assert_eq!(t.render(&settings()), text);
    }

    #[test]
    fn unknown_placeholder_is_an_error_naming_the_known_ones() {
        let err = template("x264enc bitrate={bitrate_kpbs}").unwrap_err();
        assert_eq!(
            err,
            TemplateError::UnknownPlaceholder {
                name: "bitrate_kpbs".into()
            }
        );
        assert!(err.to_string().contains("{bitrate_kbps}"), "{err}");
    }

    #[test]
    fn empty_fragment_is_an_error() {
        assert_eq!(template("  ").unwrap_err(), TemplateError::Empty);
    }

    #[test]
    fn unclosed_brace_is_literal() {
        assert_eq!(template("a {gop").unwrap().render(&settings()), "a {gop");
    }
}

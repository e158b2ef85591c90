//! The websocket protocol as plain data: the original dual-camera messages (`ready`, `offer`, `answer`,
//! `candidate`, each tagged with `camera`) plus `stop`, `cameras` and `error`. No I/O here.

use serde::{Deserialize, Serialize};

use crate::camera::{CameraInfo, ViewerLink};

/// Largest websocket message accepted. An SDP answer from a browser is a few KiB; 64 KiB leaves room
/// for many codecs and candidates while keeping a hostile client from making us buffer megabytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Browser -> daemon.
#[derive(Debug, Clone, PartialEq, Deserialize)]
/// Unknown extra fields are ignored (browsers add `sdpMid`, `usernameFragment`; newer pages may add more).
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    Ready {
        camera: String,
        /// Video codecs the browser can receive ("H264", "VP8"); absent in the original protocol,
        /// which means H.264.
        #[serde(default)]
        codecs: Option<Vec<String>>,
        /// Also send `link` messages (this viewer's tier, estimate, loss, RTT). Off unless asked for:
        /// a client of the original protocol knows only offer, candidate and error.
        #[serde(default)]
        links: bool,
    },
    Answer {
        camera: String,
        sdp: String,
    },
    Candidate {
        camera: String,
        candidate: String,
        #[serde(rename = "sdpMLineIndex", default)]
        sdp_mline_index: u32,
    },
    Stop {
        camera: String,
    },
}

impl ClientMessage {
    pub fn camera(&self) -> &str {
        match self {
            Self::Ready { camera, .. }
            | Self::Answer { camera, .. }
            | Self::Candidate { camera, .. }
            | Self::Stop { camera } => camera,
        }
    }

    /// Parses one text frame. The error is meant for the `error` reply: it names what was wrong and,
    /// when the frame got that far, the camera it was about.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ParseError::new(None, format!("malformed JSON: {e}")))?;
        let camera = value.get("camera").and_then(|c| c.as_str()).map(str::to_string);
        let Some(kind) = value.get("type").cloned() else {
            return Err(ParseError::new(camera, "message has no \"type\"".into()));
        };
        if !matches!(kind.as_str(), Some("ready" | "answer" | "candidate" | "stop")) {
            return Err(ParseError::new(camera, format!("unknown message type {kind}")));
        }
        serde_json::from_value(value).map_err(|e| ParseError::new(camera, format!("invalid {kind} message: {e}")))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub camera: Option<String>,
    pub message: String,
}

impl ParseError {
    fn new(camera: Option<String>, message: String) -> Self {
        Self { camera, message }
    }
}

/// Daemon -> browser.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    Offer {
        camera: String,
        sdp: String,
    },
    Candidate {
        camera: String,
        candidate: String,
        #[serde(rename = "sdpMLineIndex")]
        sdp_mline_index: u32,
    },
    Cameras {
        cameras: Vec<CameraInfo>,
    },
    Error {
        camera: Option<String>,
        message: String,
    },
    /// This viewer's link as the daemon sees it (tier, estimate, loss, RTT), about once a second.
    Link {
        camera: String,
        #[serde(flatten)]
        link: ViewerLink,
    },
}

impl ServerMessage {
    pub fn error(camera: Option<&str>, message: impl Into<String>) -> Self {
        Self::Error {
            camera: camera.map(str::to_string),
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail (no maps with non-string keys, no custom impls).
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_messages() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ready","camera":"camera1"}"#).unwrap(),
            ClientMessage::Ready {
                camera: "camera1".into(),
                codecs: None,
                links: false
            }
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"answer","camera":"camera1","sdp":"v=0"}"#).unwrap(),
            ClientMessage::Answer {
                camera: "camera1".into(),
                sdp: "v=0".into()
            }
        );
        let c = ClientMessage::parse(
            r#"{"type":"candidate","camera":"camera2","candidate":"candidate:1 1 UDP 1 1.2.3.4 5 typ host","sdpMLineIndex":0,"sdpMid":"video0"}"#,
        )
        .unwrap();
        assert_eq!(c.camera(), "camera2");
    }

    #[test]
    fn ready_may_list_codecs_and_ask_for_link_reports() {
        let m = ClientMessage::parse(r#"{"type":"ready","camera":"c","codecs":["VP8"],"links":true}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Ready {
                camera: "c".into(),
                codecs: Some(vec!["VP8".into()]),
                links: true
            }
        );
    }

    #[test]
    fn bad_messages_say_what_is_wrong() {
        let e = ClientMessage::parse("{not json").unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{e:?}");
        assert_eq!(e.camera, None);

        let e = ClientMessage::parse(r#"[1,2]"#).unwrap_err();
        assert!(e.message.contains("no \"type\""), "{e:?}");

        let e = ClientMessage::parse(r#"{"type":"hello","camera":"c1"}"#).unwrap_err();
        assert_eq!(e.camera.as_deref(), Some("c1"));
        assert!(e.message.contains("unknown message type \"hello\""), "{e:?}");

        let e = ClientMessage::parse(r#"{"type":"answer","camera":"c1"}"#).unwrap_err();
        assert!(e.message.contains("missing field `sdp`"), "{e:?}");

        let e = ClientMessage::parse(r#"{"type":"ready"}"#).unwrap_err();
        assert!(e.message.contains("missing field `camera`"), "{e:?}");

        let e = ClientMessage::parse(r#"{"type":"stop","camera":7}"#).unwrap_err();
        assert!(e.message.contains("invalid"), "{e:?}");
    }

    #[test]
    fn server_messages_match_the_wire_format() {
        let m = ServerMessage::Candidate {
            camera: "camera1".into(),
            candidate: "candidate:x".into(),
            sdp_mline_index: 0,
        };
        assert_eq!(
            m.to_json(),
            r#"{"type":"candidate","camera":"camera1","candidate":"candidate:x","sdpMLineIndex":0}"#
        );
        assert_eq!(
            ServerMessage::error(None, "nope").to_json(),
            r#"{"type":"error","camera":null,"message":"nope"}"#
        );
        let m = ServerMessage::Offer {
            camera: "c".into(),
            sdp: "v=0".into(),
        };
        assert_eq!(m.to_json(), r#"{"type":"offer","camera":"c","sdp":"v=0"}"#);
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;
    use crate::fuzz::mutated;

    /// Any JSON, nested a few levels, with the protocol's own keys among the random ones.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("type".to_string()),
            Just("camera".to_string()),
            Just("sdp".to_string()),
            Just("candidate".to_string()),
            Just("sdpMLineIndex".to_string()),
            Just("codecs".to_string()),
            ".{0,12}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop_oneof![
                Just("ready"),
                Just("answer"),
                Just("candidate"),
                Just("stop"),
                Just("demo1")
            ]
            .prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn frame() -> impl Strategy<Value = String> {
        prop_oneof![
            mutated(r#"{"type":"ready","camera":"camera1","codecs":["H264","VP8"],"links":true}"#),
            mutated(r#"{"type":"answer","camera":"camera1","sdp":"v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\n"}"#),
            mutated(
                r#"{"type":"candidate","camera":"c2","candidate":"candidate:1 1 UDP 1 1.2.3.4 5 typ host","sdpMLineIndex":0}"#
            ),
            mutated(r#"{"type":"stop","camera":"camera1"}"#),
            json_value().prop_map(|v| v.to_string()),
            (
                json_value(),
                prop_oneof![Just("ready"), Just("answer"), Just("candidate"), Just("stop")]
            )
                .prop_map(|(v, ty)| {
                    let mut v = if v.is_object() { v } else { json!({ "x": v }) };
                    v["type"] = ty.into();
                    v.to_string()
                }),
        ]
    }

    proptest! {
        /// Whatever arrives, `parse` answers: a message for the camera the frame named, or an error
        /// that says what was wrong and names that camera, which is what the `error` reply carries.
        #[test]
        fn fuzz_signalling_parse(text in frame()) {
            let named = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("camera").and_then(Value::as_str).map(str::to_string));
            match ClientMessage::parse(&text) {
                Ok(message) => prop_assert_eq!(Some(message.camera()), named.as_deref()),
                Err(e) => {
                    prop_assert!(!e.message.is_empty());
                    prop_assert_eq!(&e.camera, &named);
                    let reply: Value = serde_json::from_str(&ServerMessage::error(e.camera.as_deref(), e.message.clone()).to_json()).unwrap();
                    prop_assert_eq!(reply["type"].as_str(), Some("error"));
                    prop_assert_eq!(reply["message"].as_str(), Some(e.message.as_str()));
                }
            }
        }
    }
}

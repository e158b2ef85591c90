//! A client's SDP: its answer to the daemon's offer, checked before webrtcbin gets it, and its offer
//! (WHEP: the client offers, the daemon answers), read for what a camera can send into it: which video codecs it takes, and under which payload type. The camera's payloaders
//! always stamp `PAYLOAD_TYPE` (96); a client picks its own numbers (Chrome 102/103, whepsrc 103), so
//! each answering branch rewrites to the client's type (`viewer::rewrite_payload_type`).

use gst_sdp::SDPMessage;

use super::MediaError;
use crate::encoders::Codec;

/// RFC 6184 packetization mode 1 (FU-A, STAP-A): what rtph264pay sends. Mode 0 (single NAL units)
/// cannot carry a 640x480 keyframe in a 1200-byte packet.
const H264_PACKETIZATION_MODE: &str = "1";

/// An offer that parsed as SDP and has something a camera could send into.
#[derive(Debug, Clone)]
pub struct ClientOffer {
    message: SDPMessage,
}

/// The payload type a branch sends a codec under, and the caps to prefer for it on its transceiver.
#[derive(Debug, Clone)]
pub struct ChosenPayload {
    pub pt: u32,
    /// `application/x-rtp` caps for `codec-preferences`: media, encoding, clock rate, payload type and
    /// the fields that must match (H.264's packetization mode and profile).
    pub caps: gst::Caps,
    /// The client's `profile-level-id` for this payload type (H.264 only).
    pub profile_level_id: Option<String>,
}

impl ClientOffer {
    pub fn parse(sdp: &str) -> Result<Self, MediaError> {
        let message = parse_sdp(sdp, "offer")?;
        if message.medias_len() == 0 {
            return Err(MediaError::Sdp("the offer has no media (m=) lines".into()));
        }
        Ok(Self { message })
    }

    pub fn message(&self) -> &SDPMessage {
        &self.message
    }

    /// The offer's ICE username fragment (session level, else the first m-line's): a trickled
    /// candidate with another one belongs to an ICE restart.
    pub fn ice_ufrag(&self) -> Option<String> {
        self.message
            .attribute_val("ice-ufrag")
            .or_else(|| self.message.medias().find_map(|m| m.attribute_val("ice-ufrag")))
            .map(str::to_string)
    }

    /// The m-line index a trickled candidate for `mid` goes to: with BUNDLE every candidate is for the
    /// one transport, which webrtcbin keeps under the group's first m-line.
    pub fn candidate_mline(&self, mid: Option<&str>) -> u32 {
        let index_of = |mid: &str| {
            self.message
                .medias()
                .position(|m| m.attribute_val("mid") == Some(mid))
                .map(|i| i as u32)
        };
        let bundle_first = self
            .message
            .attributes()
            .filter(|a| a.key() == "group")
            .find_map(|a| a.value()?.strip_prefix("BUNDLE ")?.split_whitespace().next());
        bundle_first.or(mid).and_then(index_of).unwrap_or(0)
    }

    /// The video codecs a camera could send into this offer, by name as `Codec` parses them ("H264",
    /// "VP8"), in the client's order; other codecs (AV1, VP9, H.264 in mode 0) by their SDP name, so a
    /// refusal can say what the client wanted.
    pub fn video_codecs(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (_, s) in self.video_formats() {
            let Ok(encoding) = s.get::<String>("encoding-name") else {
                continue;
            };
            let name = match encoding.to_ascii_uppercase().as_str() {
                "H264" if packetization_mode(&s) == H264_PACKETIZATION_MODE => "H264".to_string(),
                "H264" => "H264 (packetization-mode 0)".to_string(),
                other => other.to_string(),
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The first video payload type of `codec` the camera can send. For H.264 one with the stream's
    /// profile (`stream_profile`, the first two bytes of its profile-level-id) is preferred, then any in
    /// packetization mode 1.
    pub fn payload_for(&self, codec: Codec, stream_profile: Option<&str>) -> Result<ChosenPayload, MediaError> {
        let wanted = match codec {
            Codec::H264 => "H264",
            Codec::Vp8 => "VP8",
        };
        let candidates: Vec<(u32, gst::Structure)> = self
            .video_formats()
            .into_iter()
            .filter(|(_, s)| {
                s.get::<String>("encoding-name")
                    .is_ok_and(|e| e.eq_ignore_ascii_case(wanted))
                    && (codec != Codec::H264 || packetization_mode(s) == H264_PACKETIZATION_MODE)
            })
            .collect();
        let profile = |s: &gst::Structure| s.get::<String>("profile-level-id").ok();
        let same_profile = |s: &gst::Structure| {
            let (Some(ours), Some(theirs)) = (stream_profile, profile(s)) else {
                return false;
            };
            // The profile is the first 4 hex digits; a client's may be anything, so no byte slicing.
            matches!((theirs.get(..4), ours.get(..4)), (Some(t), Some(o)) if t.eq_ignore_ascii_case(o))
        };
        let (pt, s) = candidates
            .iter()
            .find(|(_, s)| same_profile(s))
            .or_else(|| candidates.first())
            .ok_or_else(|| MediaError::Codec(format!("the offer has no {codec} the camera can send")))?;
        let mut caps = gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("encoding-name", wanted)
            .field("clock-rate", 90000i32)
            .field("payload", *pt as i32);
        let profile_level_id = profile(s).filter(|_| codec == Codec::H264);
        if codec == Codec::H264 {
            caps = caps.field("packetization-mode", H264_PACKETIZATION_MODE);
            if let Some(p) = &profile_level_id {
                caps = caps.field("profile-level-id", p.as_str());
            }
        }
        Ok(ChosenPayload {
            pt: *pt,
            caps: caps.build(),
            profile_level_id,
        })
    }

    /// Every payload type of every video m-line that is not rejected: its rtpmap encoding
    /// name and its fmtp parameters as string fields. Read from the attributes themselves: GStreamer's
    /// `caps_from_media` turns `profile-level-id` into a `profile` name and drops the level.
    fn video_formats(&self) -> Vec<(u32, gst::Structure)> {
        let mut out = Vec::new();
        for media in self.message.medias() {
            // Port 0 rejects an m-line unless it is `bundle-only` (RFC 8843 6: it rides on the bundle's
            // transport; webrtcbin and so whepsrc offer every m-line after the first this way).
            let rejected = media.port() == 0 && media.attribute_val("bundle-only").is_none();
            if media.media() != Some("video") || rejected {
                continue;
            }
            for format in media.formats() {
                let Ok(pt) = format.parse::<u32>() else { continue };
                let Some(encoding) = format_attribute(media, "rtpmap", pt).and_then(|m| m.split('/').next()) else {
                    continue;
                };
                let mut s = gst::Structure::builder("application/x-rtp").field("encoding-name", encoding);
                for param in format_attribute(media, "fmtp", pt).unwrap_or_default().split(';') {
                    if let Some((key, value)) = param.split_once('=') {
                        s = s.field(key.trim().to_ascii_lowercase(), value.trim());
                    }
                }
                out.push((pt, s.build()));
            }
        }
        out
    }
}

/// A client's SDP body (`what`: "offer" or "answer", for the error).
pub(super) fn parse_sdp(sdp: &str, what: &str) -> Result<SDPMessage, MediaError> {
    // GStreamer's SDP parser accepts nearly anything; an SDP body starts with its version line.
    if !sdp.trim_start().starts_with("v=0") {
        return Err(MediaError::Sdp(format!("the {what} is not valid SDP (no v=0 line)")));
    }
    SDPMessage::parse_buffer(sdp.as_bytes()).map_err(|_| MediaError::Sdp(format!("the {what} is not valid SDP")))
}

/// A client's answer to the daemon's offer, checked before webrtcbin sees it.
pub(super) fn parse_answer(sdp: &str) -> Result<SDPMessage, MediaError> {
    let message = parse_sdp(sdp, "answer")?;
    // A browser that cannot take the offered codec answers with port 0; renegotiating would loop
    // (Chrome rejecting High profile made webrtcbin re-offer hundreds of times a second).
    if message.medias().next().is_some_and(|media| media.port() == 0) {
        return Err(MediaError::Sdp(
            "the browser rejected the video (no codec in common: it may lack H.264)".into(),
        ));
    }
    Ok(message)
}

/// The value of `a=<key>:<pt> <value>` for this payload type.
fn format_attribute<'a>(media: &'a gst_sdp::SDPMediaRef, key: &str, pt: u32) -> Option<&'a str> {
    let prefix = format!("{pt} ");
    media
        .attributes()
        .filter(|a| a.key() == key)
        .find_map(|a| a.value()?.strip_prefix(prefix.as_str()))
}

fn packetization_mode(s: &gst::StructureRef) -> String {
    // SDP fmtp values arrive as strings; an absent packetization-mode means mode 0 (RFC 6184 8.1).
    s.get::<String>("packetization-mode").unwrap_or_else(|_| "0".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The video half of what Chrome offers (trimmed), with an H.264 in mode 0 first.
    pub(super) const CHROME_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 102 106 45\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
        a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:45 AV1/90000\r\n";

    #[test]
    fn an_offer_lists_what_a_camera_could_send_in_the_clients_order() {
        gst::init().unwrap();
        let offer = ClientOffer::parse(CHROME_LIKE).unwrap();
        assert_eq!(
            offer.video_codecs(),
            ["VP8", "H264 (packetization-mode 0)", "H264", "AV1"]
        );
    }

    #[test]
    fn h264_goes_out_under_the_clients_mode_1_payload_type() {
        gst::init().unwrap();
        let offer = ClientOffer::parse(CHROME_LIKE).unwrap();
        let chosen = offer.payload_for(Codec::H264, Some("42c01f")).unwrap();
        assert_eq!(chosen.pt, 106, "mode 0 is skipped");
        let s = chosen.caps.structure(0).unwrap();
        assert_eq!(s.get::<i32>("payload").unwrap(), 106);
        assert_eq!(s.get::<&str>("profile-level-id").unwrap(), "42e01f");
        assert_eq!(offer.payload_for(Codec::Vp8, None).unwrap().pt, 96);
    }

    #[test]
    fn the_streams_profile_is_preferred_among_several() {
        gst::init().unwrap();
        let sdp = CHROME_LIKE.replace(" 45\r\n", " 108\r\n").replace(
            "a=rtpmap:45 AV1/90000\r\n",
            "a=rtpmap:108 H264/90000\r\na=fmtp:108 packetization-mode=1;profile-level-id=4d001f\r\n",
        );
        let offer = ClientOffer::parse(&sdp).unwrap();
        assert_eq!(offer.payload_for(Codec::H264, Some("4d0028")).unwrap().pt, 108);
        assert_eq!(
            offer.payload_for(Codec::H264, Some("640028")).unwrap().pt,
            106,
            "else the first"
        );
    }

    #[test]
    fn trickled_candidates_go_to_the_bundles_transport() {
        gst::init().unwrap();
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE v a\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\na=ice-ufrag:abcd\r\na=rtpmap:111 OPUS/48000\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\na=rtpmap:96 VP8/90000\r\n";
        let offer = ClientOffer::parse(sdp).unwrap();
        assert_eq!(
            offer.candidate_mline(Some("a")),
            1,
            "the group's first mid is video, m-line 1"
        );
        assert_eq!(offer.candidate_mline(None), 1);
        assert_eq!(offer.ice_ufrag().as_deref(), Some("abcd"));
        let unbundled = ClientOffer::parse(&sdp.replace("a=group:BUNDLE v a\r\n", "")).unwrap();
        assert_eq!(unbundled.candidate_mline(Some("a")), 0);
        assert_eq!(unbundled.candidate_mline(Some("v")), 1);
    }

    #[test]
    fn offers_without_a_sendable_codec_or_not_sdp_are_refused() {
        gst::init().unwrap();
        let av1 = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 45\r\n\
                   a=rtpmap:45 AV1/90000\r\n";
        let offer = ClientOffer::parse(av1).unwrap();
        assert_eq!(offer.video_codecs(), ["AV1"]);
        assert!(matches!(
            offer.payload_for(Codec::H264, None),
            Err(MediaError::Codec(_))
        ));
        assert!(matches!(ClientOffer::parse("hello"), Err(MediaError::Sdp(_))));
        assert!(matches!(
            ClientOffer::parse("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"),
            Err(MediaError::Sdp(_))
        ));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::tests::CHROME_LIKE;
    use super::*;
    use crate::fuzz::mutated;

    /// What Chromium answered to a camera's offer (trimmed to what webrtcbin reads).
    const ANSWER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE video0\r\na=msid-semantic: WMS\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
        c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Kq4f\r\na=ice-pwd:ZXg2bjF1c3R1dnd4eXphYmNk\r\n\
        a=ice-options:trickle\r\na=fingerprint:sha-256 0B:3E:6C:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD\r\n\
        a=setup:active\r\na=mid:video0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:96 H264/90000\r\n\
        a=rtcp-fb:96 nack pli\r\na=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";

    proptest! {
        /// A client's offer, however broken, is refused with a reason or read for codecs, payload
        /// types, its ICE username and the m-line of trickled candidates, without a panic.
        #[test]
        fn fuzz_client_offer(sdp in prop_oneof![mutated(CHROME_LIKE), mutated(ANSWER)], mid in ".{0,8}") {
            gst::init().unwrap();
            match ClientOffer::parse(&sdp) {
                Ok(offer) => {
                    let codecs = offer.video_codecs();
                    for codec in [Codec::H264, Codec::Vp8] {
                        match offer.payload_for(codec, Some("42e01f")) {
                            Ok(_) => prop_assert!(codecs.contains(&codec.to_string().to_ascii_uppercase()), "{:?}", codecs),
                            Err(e) => prop_assert!(e.to_string().contains(&codec.to_string()), "{}", e),
                        }
                        // The stream's own profile is device input too (a camera's H.264).
                        for profile in ["", "4", "\u{20ac}\u{20ac}", "42\u{20ac}1f"] {
                            let _ = offer.payload_for(codec, Some(profile));
                        }
                    }
                    let _ = offer.ice_ufrag();
                    prop_assert!(offer.candidate_mline(Some(&mid)) < offer.message().medias_len().max(1));
                }
                Err(e) => prop_assert!(e.to_string().contains("offer"), "{}", e),
            }
        }

        /// An answer is refused with a reason that names it, or handed on as parsed SDP.
        #[test]
        fn fuzz_answer(sdp in prop_oneof![mutated(ANSWER), mutated(CHROME_LIKE)]) {
            gst::init().unwrap();
            match parse_answer(&sdp) {
                Ok(message) => prop_assert!(message.medias().next().map_or(true, |m| m.port() != 0)),
                Err(e) => {
                    let shown = e.to_string();
                    prop_assert!(shown.contains("answer") || shown.contains("rejected the video"), "{}", shown);
                }
            }
        }
    }
}

//! Everything a camera can refuse a viewer, as one type: the websocket turns it into an `error` message,
//! an HTTP handler into a status code (`http_status`), and tests match on the variant.

use crate::encoders::Codec;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CameraError {
    #[error("unknown camera {0:?}")]
    Unknown(String),
    #[error("camera is busy; try again")]
    Busy,
    /// A limit (see `lifecycle::MAX_VIEWERS`, `MAX_NEGOTIATING`) is reached.
    #[error("this camera has the most {what} it takes ({limit}); try again later")]
    TooMany { what: &'static str, limit: usize },
    #[error("no codec in common: this camera sends {offered}, the browser takes {wanted}")]
    NoCommonCodec { offered: String, wanted: String },
    #[error("this camera has no {0} encoding")]
    NoEncoding(Codec),
    #[error("{0} for a viewer that does not exist: send ready first")]
    NoSuchViewer(&'static str),
    #[error("answer while the camera is not streaming")]
    NotStreaming,
    /// A viewer that brings its own offer cannot wait for a camera that is not there.
    #[error("camera is offline: {0}")]
    Offline(String),
    /// The viewer's offer asks for something its branch cannot send (webrtcbin found no transceiver
    /// for its video, or refused it).
    #[error("the offer cannot be answered: {0}")]
    Unanswerable(String),
    /// The viewer's SDP or candidate was refused (not SDP, rejected video, ...).
    #[error("{0}")]
    BadSdp(String),
    #[error("negotiation did not finish within {0} s")]
    NegotiationTimeout(u64),
    /// The viewer's own session broke (ICE, DTLS, its branch): only that viewer is affected.
    #[error("{0}")]
    ViewerFailed(String),
    /// The camera has no pictures to take a JPEG of (its H.264 is passed through undecoded).
    #[error("{0}")]
    NoSnapshot(String),
    /// Its branch could not be added to the running pipeline.
    #[error("{0}")]
    Branch(String),
    /// Only a camera whose device is gone can be forgotten (`DELETE /api/cameras/{id}`).
    #[error("camera {0:?} is still plugged in; only a camera whose device is gone can be forgotten")]
    NotGone(String),
}

impl CameraError {
    /// The status an HTTP endpoint (WHEP, the API) answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Unknown(_) | Self::NoSuchViewer(_) => 404,
            Self::NoCommonCodec { .. } | Self::NoEncoding(_) => 406,
            Self::BadSdp(_) => 400,
            Self::Unanswerable(_) => 422,
            Self::NotStreaming | Self::Offline(_) | Self::Busy | Self::TooMany { .. } => 503,
            Self::NegotiationTimeout(_) => 408,
            Self::ViewerFailed(_) | Self::Branch(_) => 500,
            Self::NoSnapshot(_) => 501,
            Self::NotGone(_) => 409,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_a_status_a_client_can_act_on() {
        assert_eq!(CameraError::Unknown("x".into()).http_status(), 404);
        assert_eq!(CameraError::BadSdp("not SDP".into()).http_status(), 400);
        assert_eq!(CameraError::NotStreaming.http_status(), 503);
        assert_eq!(CameraError::Offline("device unplugged".into()).http_status(), 503);
        let cap = CameraError::TooMany {
            what: "viewers",
            limit: 32,
        };
        assert_eq!(cap.http_status(), 503);
        assert_eq!(CameraError::Unanswerable("no video".into()).http_status(), 422);
        assert_eq!(CameraError::NoSnapshot("passthrough".into()).http_status(), 501);
        let e = CameraError::NoCommonCodec {
            offered: "H.264".into(),
            wanted: "AV1".into(),
        };
        assert_eq!(e.http_status(), 406);
        assert_eq!(
            e.to_string(),
            "no codec in common: this camera sends H.264, the browser takes AV1"
        );
    }
}

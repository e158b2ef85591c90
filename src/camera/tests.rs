//! The camera actor driven through its commands, with real GStreamer pipelines and webrtcbin.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::config::{IdlePolicy, TestPattern};
use crate::devices::caps::{CaptureMode, Fraction, PixelFormat};
use crate::encoders::Codec;
use crate::http::test_viewer;
use crate::media::Origin;
use crate::signalling::protocol::ServerMessage;

/// Short, so the test of a viewer that never answers need not wait the default 10 s.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(2);

const X264: &str = "x264enc tune=zerolatency speed-preset=ultrafast bitrate=500 key-int-max=30 ! video/x-h264,profile=constrained-baseline";

fn plan(profile: &str, fragment: &str, codec: Codec) -> EncoderPlan {
    EncoderPlan {
        profile: profile.into(),
        fragment: fragment.into(),
        raw_input: Some("I420".into()),
        codec,
        bitrate: None,
        size: None,
    }
}

fn setup(encoders: Vec<EncoderPlan>) -> Box<Setup> {
    Box::new(Setup {
        source: SourceSpec {
            mode: CaptureMode {
                format: PixelFormat::I420,
                width: 320,
                height: 240,
                fps: Fraction::fps(30),
            },
            origin: Origin::Test {
                pattern: TestPattern::Ball,
                label: "t".into(),
            },
        },
        encoders,
        encoder_reason: "test".into(),
        vp8: Some(plan("vp8", "vp8enc deadline=1 cpu-used=8", Codec::Vp8)),
        low_tier: None,
        limits: Limits::new(50, 500),
        max_encodings: 2,
        push: None,
    })
}

struct Running {
    handle: CameraHandle,
}

impl Running {
    async fn send(&self, command: Command) {
        assert!(self.handle.send(command).await, "camera actor gone");
    }

    fn encoded_frames(&self) -> u64 {
        self.handle.encoded_frames()
    }

    /// Shuts the actor down and waits for it, so its pipeline is stopped before the test's runtime goes.
    async fn stop(self) {
        self.handle.shut_down().await;
    }
}

fn start(idle: IdlePolicy) -> (Running, Registry) {
    gst::init().unwrap();
    let registry = Registry::new();
    let shared = Shared {
        ice: IceSettings {
            servers: vec![],
            local_addresses: vec!["127.0.0.1".parse().unwrap()],
        },
        policy: Policy::new(idle, NEGOTIATION_TIMEOUT),
        registry: registry.clone(),
    };
    let identity = Identity {
        id: "cam".into(),
        name: "Cam".into(),
        kind: "test",
        device: None,
    };
    let handle = spawn(identity, shared);
    (Running { handle }, registry)
}

/// A keep-encoding camera online with x264, once it streams.
async fn streaming_with_x264() -> (Running, Registry) {
    let (camera, registry) = start(IdlePolicy::KeepEncoding);
    camera
        .send(Command::Online(setup(vec![plan("x264", X264, Codec::H264)])))
        .await;
    wait_for(&registry, "streaming", |i| i.state == CameraState::Streaming).await;
    (camera, registry)
}

async fn wait_for(registry: &Registry, what: &str, ok: impl Fn(&CameraInfo) -> bool) -> CameraInfo {
    let mut list = registry.subscribe();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(info) = list.borrow_and_update().iter().find(|i| ok(i)) {
                return info.clone();
            }
            list.changed().await.unwrap();
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("camera never got to: {what}; last {:?}", registry.infos()))
}

async fn next_message(rx: &mut mpsc::Receiver<ServerMessage>) -> ServerMessage {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a message within the liveness bound")
        .expect("outbox open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plug_unplug_replug_keeps_the_camera_and_its_frames_count() {
    let (camera, registry) = start(IdlePolicy::KeepEncoding);
    wait_for(&registry, "listed offline", |i| i.state == CameraState::Offline).await;

    camera
        .send(Command::Online(setup(vec![plan("x264", X264, Codec::H264)])))
        .await;
    let info = wait_for(&registry, "streaming", |i| i.state == CameraState::Streaming).await;
    assert_eq!(info.encoder.as_deref(), Some("x264"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = camera.encoded_frames();
    assert!(before > 0, "frames are encoded with no viewer (keep-encoding)");

    camera.send(Command::Offline).await;
    let info = wait_for(&registry, "offline", |i| i.state == CameraState::Offline).await;
    assert_eq!(info.detail.as_deref(), Some("device unplugged"));

    camera
        .send(Command::Online(setup(vec![plan("x264", X264, Codec::H264)])))
        .await;
    wait_for(&registry, "streaming again", |i| i.state == CameraState::Streaming).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        camera.encoded_frames() > before,
        "the count carries on across pipelines"
    );
    camera.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_is_forgotten_only_once_its_device_is_gone() {
    let (camera, registry) = streaming_with_x264().await;
    let (tx, mut rx) = mpsc::channel(16);
    let viewer = test_viewer("cam", 7, tx);
    let refused = camera.handle.forget().await.unwrap_err();
    assert!(matches!(refused, CameraError::NotGone(_)), "{refused}");
    assert_eq!(
        registry.infos()[0].state,
        CameraState::Streaming,
        "refusing stopped nothing"
    );

    camera.send(Command::Offline).await;
    camera
        .send(Command::Join {
            viewer,
            codecs: None,
            offer: None,
        })
        .await;
    wait_for(&registry, "a viewer waiting for the unplugged camera", |i| {
        i.viewers == 1
    })
    .await;
    camera.handle.forget().await.unwrap();
    assert!(
        registry.infos().is_empty() && registry.handle("cam").is_none(),
        "its card is gone"
    );
    assert!(camera.handle.is_gone());
    // The viewer that waited for it is told.
    loop {
        match next_message(&mut rx).await {
            ServerMessage::Error { message, .. } => {
                assert!(message.contains("unknown camera"), "{message}");
                break;
            }
            ServerMessage::Candidate { .. } | ServerMessage::Offer { .. } => continue,
            other => panic!("expected an error, got {other:?}"),
        }
    }
    assert!(matches!(camera.handle.forget().await, Err(CameraError::Unknown(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gets_an_offer_and_leaving_frees_it() {
    let (camera, registry) = streaming_with_x264().await;

    let (tx, mut rx) = mpsc::channel(64);
    let viewer = test_viewer("cam", 1, tx);
    camera
        .send(Command::Join {
            viewer: viewer.clone(),
            codecs: None,
            offer: None,
        })
        .await;
    match next_message(&mut rx).await {
        ServerMessage::Offer { camera, sdp } => {
            assert_eq!(camera, "cam");
            assert!(sdp.contains("H264/90000"), "{sdp}");
            assert!(sdp.contains("a=sendonly"), "{sdp}");
            assert!(sdp.contains("a=group:BUNDLE"), "{sdp}");
        }
        other => panic!("expected an offer, got {other:?}"),
    }
    wait_for(&registry, "one viewer", |i| i.viewers == 1).await;

    // An answer that is not SDP is refused with an error; the viewer stays.
    camera
        .send(Command::Answer {
            viewer: viewer.clone(),
            sdp: "garbage".into(),
        })
        .await;
    loop {
        match next_message(&mut rx).await {
            ServerMessage::Error { message, .. } => {
                assert!(message.contains("not valid SDP"), "{message}");
                break;
            }
            ServerMessage::Candidate { .. } => continue,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    camera.send(Command::Leave { conn: 1 }).await;
    wait_for(&registry, "no viewers", |i| i.viewers == 0).await;
    camera.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_never_answers_is_dropped_after_the_negotiation_timeout() {
    let (camera, registry) = streaming_with_x264().await;

    let (tx, mut rx) = mpsc::channel(64);
    camera
        .send(Command::Join {
            viewer: test_viewer("cam", 1, tx),
            codecs: None,
            offer: None,
        })
        .await;
    wait_for(&registry, "one viewer", |i| i.viewers == 1).await;
    let error = loop {
        match next_message(&mut rx).await {
            ServerMessage::Offer { .. } | ServerMessage::Candidate { .. } => continue,
            ServerMessage::Error { message, .. } => break message,
            other => panic!("expected the timeout error, got {other:?}"),
        }
    };
    assert_eq!(error, "negotiation did not finish within 2 s");
    let info = wait_for(&registry, "no viewers", |i| i.viewers == 0).await;
    assert_eq!(info.state, CameraState::Streaming, "the camera itself is unaffected");
    camera.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codecs_decide_h264_vp8_or_an_error() {
    let (camera, _registry) = streaming_with_x264().await;

    let (tx, mut rx) = mpsc::channel(64);
    camera
        .send(Command::Join {
            viewer: test_viewer("cam", 1, tx),
            codecs: Some(vec!["VP8".into(), "AV1".into()]),
            offer: None,
        })
        .await;
    match next_message(&mut rx).await {
        ServerMessage::Offer { sdp, .. } => assert!(sdp.contains("VP8/90000") && !sdp.contains("H264"), "{sdp}"),
        other => panic!("expected a VP8 offer, got {other:?}"),
    }

    let (tx, mut rx) = mpsc::channel(64);
    camera
        .send(Command::Join {
            viewer: test_viewer("cam", 2, tx),
            codecs: Some(vec!["AV1".into()]),
            offer: None,
        })
        .await;
    match next_message(&mut rx).await {
        ServerMessage::Error { message, .. } => assert!(message.contains("no codec in common"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    camera.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_encoder_falls_back_then_fails_when_none_is_left() {
    let (camera, registry) = start(IdlePolicy::KeepEncoding);
    // identity error-after makes a real encoder branch fail after some frames.
    let failing = |name: &str| plan(name, &format!("{X264} ! identity error-after=20"), Codec::H264);
    camera
        .send(Command::Online(setup(vec![
            failing("first"),
            plan("x264", X264, Codec::H264),
        ])))
        .await;
    let info = wait_for(&registry, "fell back to x264", |i| i.encoder.as_deref() == Some("x264")).await;
    assert_eq!(info.state, CameraState::Streaming);
    assert!(info.detail.unwrap_or_default().starts_with("fell back from first"));

    camera
        .send(Command::Online(setup(vec![failing("a"), failing("b")])))
        .await;
    let info = wait_for(&registry, "failed", |i| i.state == CameraState::Failed).await;
    assert!(info.detail.unwrap_or_default().contains("every usable encoder failed"));
    camera.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_policy_stop_starts_for_the_first_viewer_and_stops_after_the_last() {
    let (camera, registry) = start(IdlePolicy::Stop);
    camera
        .send(Command::Online(setup(vec![plan("x264", X264, Codec::H264)])))
        .await;
    wait_for(&registry, "idle", |i| i.state == CameraState::Idle).await;
    assert_eq!(camera.encoded_frames(), 0);

    let (tx, mut rx) = mpsc::channel(64);
    camera
        .send(Command::Join {
            viewer: test_viewer("cam", 1, tx),
            codecs: None,
            offer: None,
        })
        .await;
    wait_for(&registry, "streaming", |i| i.state == CameraState::Streaming).await;
    assert!(matches!(next_message(&mut rx).await, ServerMessage::Offer { .. }));

    camera.send(Command::Leave { conn: 1 }).await;
    wait_for(&registry, "idle again", |i| {
        i.state == CameraState::Idle && i.viewers == 0
    })
    .await;
    camera.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_cannot_start_is_retried_with_backoff_not_blamed_on_encoders() {
    let (camera, registry) = start(IdlePolicy::KeepEncoding);
    let mut gone = setup(vec![
        plan("x264", X264, Codec::H264),
        plan("openh264", "openh264enc", Codec::H264),
    ]);
    gone.source = SourceSpec {
        mode: CaptureMode {
            format: PixelFormat::Yuyv,
            width: 640,
            height: 480,
            fps: Fraction { num: 30, den: 1 },
        },
        origin: Origin::V4l2 {
            device: "/dev/edgecam-test-no-such-device".into(),
        },
    };
    camera.send(Command::Online(gone)).await;
    let first = wait_for(&registry, "first retry", |i| {
        i.detail.as_deref().is_some_and(|d| d.ends_with("retrying in 3 s"))
    })
    .await;
    assert_eq!(first.state, CameraState::Offline);
    assert!(first.detail.unwrap().contains("the device did not start"));
    let second = wait_for(&registry, "a longer wait", |i| {
        i.detail.as_deref().is_some_and(|d| d.ends_with("retrying in 6 s"))
    })
    .await;
    assert!(
        !second.detail.unwrap_or_default().contains("fell back"),
        "a source failure must not move the camera to another encoder"
    );
    camera.stop().await;
}

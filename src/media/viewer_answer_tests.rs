//! The answering direction against a real client: a receiving webrtcbin makes the offer (recvonly
//! audio and video, H.264 under its own payload type, as whepsrc and browsers do), a branch on a
//! playing x264 pipeline answers it, and the client decodes.

use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc as std_mpsc;

use super::*;
use crate::media::offer::ClientOffer;

const WAIT: Duration = Duration::from_secs(30);

fn camera_pipeline() -> (gst::Pipeline, gst::Element) {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 ! \
         x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! video/x-h264,profile=constrained-baseline ! \
         h264parse ! rtph264pay pt=96 config-interval=-1 aggregate-mode=zero-latency ! \
         tee name=t allow-not-linked=true",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let tee = pipeline.by_name("t").unwrap();
    (pipeline, tee)
}

fn loopback() -> IceSettings {
    IceSettings {
        servers: vec![],
        local_addresses: vec!["127.0.0.1".parse().unwrap()],
    }
}

/// A receiving peer that offers `video_caps` (and Opus audio), decodes what arrives and remembers the
/// payload type its RTP came in with.
struct Client {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    frames: Arc<AtomicU64>,
    payload: Arc<Mutex<Option<i32>>>,
}

impl Client {
    fn new(video_caps: &str) -> Self {
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .unwrap();
        pipeline.add(&webrtc).unwrap();
        let agent = webrtc.property::<glib::Object>("ice-agent");
        assert!(agent.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]));
        let recvonly = gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly;
        let audio =
            gst::Caps::from_str("application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000")
                .unwrap();
        webrtc.emit_by_name::<glib::Object>("add-transceiver", &[&recvonly, &audio]);
        let video = gst::Caps::from_str(video_caps).unwrap();
        webrtc.emit_by_name::<glib::Object>("add-transceiver", &[&recvonly, &video]);

        let frames = Arc::new(AtomicU64::new(0));
        let payload = Arc::new(Mutex::new(None));
        let (weak, counted, seen) = (pipeline.downgrade(), frames.clone(), payload.clone());
        webrtc.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else { return };
            *seen.lock().unwrap() = pad
                .current_caps()
                .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("payload").ok()));
            let decodebin = gst::ElementFactory::make("decodebin").build().unwrap();
            let (weak, counted) = (weak.clone(), counted.clone());
            decodebin.connect_pad_added(move |_, decoded| {
                let Some(pipeline) = weak.upgrade() else { return };
                let sink = gst::ElementFactory::make("fakesink")
                    .property("sync", false)
                    .build()
                    .unwrap();
                pipeline.add(&sink).unwrap();
                sink.sync_state_with_parent().unwrap();
                decoded.link(&sink.static_pad("sink").unwrap()).unwrap();
                let counted = counted.clone();
                decoded.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                });
            });
            pipeline.add(&decodebin).unwrap();
            decodebin.sync_state_with_parent().unwrap();
            pad.link(&decodebin.static_pad("sink").unwrap()).unwrap();
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Self {
            pipeline,
            webrtc,
            frames,
            payload,
        }
    }

    /// The offer once gathering is done (candidates inside), as whepsrc posts it.
    fn offer(&self) -> String {
        let (tx, rx) = std_mpsc::channel();
        let webrtc = self.webrtc.clone();
        let promise = gst::Promise::with_change_func(move |reply| {
            let offer = reply
                .unwrap()
                .unwrap()
                .get::<gst_webrtc::WebRTCSessionDescription>("offer")
                .unwrap();
            webrtc.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
            let _ = tx.send(());
        });
        self.webrtc
            .emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
        rx.recv_timeout(WAIT).expect("an offer");
        let start = std::time::Instant::now();
        while self
            .webrtc
            .property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
            != gst_webrtc::WebRTCICEGatheringState::Complete
        {
            assert!(start.elapsed() < WAIT, "client gathering did not complete");
            std::thread::sleep(Duration::from_millis(20));
        }
        let local = self
            .webrtc
            .property::<gst_webrtc::WebRTCSessionDescription>("local-description");
        local.sdp().as_text().unwrap()
    }

    fn take_answer(&self, sdp: &str) {
        let message = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        let answer = gst_webrtc::WebRTCSessionDescription::new(WebRTCSDPType::Answer, message);
        self.webrtc
            .emit_by_name::<()>("set-remote-description", &[&answer, &None::<gst::Promise>]);
    }

    fn wait_frames(&self, n: u64) -> u64 {
        let start = std::time::Instant::now();
        loop {
            let frames = self.frames.load(Ordering::Relaxed);
            if frames >= n {
                return frames;
            }
            assert!(
                start.elapsed() < WAIT,
                "decoded {frames} frames, wanted {n}; ice {:?}, connection {:?}",
                self.webrtc
                    .property::<gst_webrtc::WebRTCICEConnectionState>("ice-connection-state"),
                self.webrtc
                    .property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn event_channel() -> (EventSink, std_mpsc::Receiver<ViewerEvent>) {
    let (tx, rx) = std_mpsc::channel();
    let tx = Mutex::new(tx);
    let events: EventSink = Arc::new(move |event| {
        let _ = tx.lock().unwrap().send(event);
    });
    (events, rx)
}

fn answer_of(rx: &std_mpsc::Receiver<ViewerEvent>) -> Result<String, String> {
    loop {
        match rx.recv_timeout(WAIT).expect("an answer or a refusal") {
            ViewerEvent::Answer(sdp) => return Ok(sdp),
            ViewerEvent::OfferRefused(why) | ViewerEvent::Failed(why) => return Err(why),
            _ => continue,
        }
    }
}

const CHROME_H264: &str = "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,\
                           packetization-mode=(string)1,profile-level-id=(string)42e01f";

#[test]
fn a_client_offer_is_answered_and_decoded_under_its_own_payload_type() {
    let (pipeline, tee) = camera_pipeline();
    let client = Client::new(CHROME_H264);
    let offer = ClientOffer::parse(&client.offer()).unwrap();
    let (events, rx) = event_channel();
    let branch = ViewerBranch::answer(&tee, 1, &loopback(), events, &offer, Codec::H264).unwrap();
    let answer = answer_of(&rx).unwrap();

    assert!(
        answer.contains("a=candidate:"),
        "the answer carries the daemon's candidates:\n{answer}"
    );
    let video = answer.split("m=video").nth(1).expect("a video m-line");
    assert!(
        video.contains("a=sendonly") && video.contains("a=rtpmap:102 H264/90000"),
        "{answer}"
    );
    let audio = answer.split("m=audio").nth(1).expect("the audio m-line is answered");
    let audio = audio.split("m=video").next().unwrap();
    assert!(
        !audio.contains("a=sendonly") && !audio.contains("a=sendrecv"),
        "no audio is sent:\n{answer}"
    );

    client.take_answer(&answer);
    client.wait_frames(30);
    assert_eq!(
        *client.payload.lock().unwrap(),
        Some(102),
        "RTP arrives under the client's type"
    );
    drop(branch);
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn an_offer_the_camera_cannot_serve_fails_that_viewer_only() {
    let (pipeline, tee) = camera_pipeline();
    let good = Client::new(CHROME_H264);
    let offer = ClientOffer::parse(&good.offer()).unwrap();
    let (events, rx) = event_channel();
    let _branch = ViewerBranch::answer(&tee, 1, &loopback(), events, &offer, Codec::H264).unwrap();
    good.take_answer(&answer_of(&rx).unwrap());
    let before = good.wait_frames(10);

    // H.264 in mode 0 only: no payload type the payloader's stream can go under.
    let mode0 = Client::new(&CHROME_H264.replace("packetization-mode=(string)1", "packetization-mode=(string)0"));
    let offer = ClientOffer::parse(&mode0.offer()).unwrap();
    let (events, _rx) = event_channel();
    assert!(matches!(
        ViewerBranch::answer(&tee, 2, &loopback(), events, &offer, Codec::H264),
        Err(MediaError::Codec(_))
    ));
    // VP8 asked of an H.264 tee (the codec preference matches nothing the tee carries): that answer
    // is refused, and the stream goes on for the good viewer.
    let vp8 = Client::new("application/x-rtp,media=video,encoding-name=VP8,payload=100,clock-rate=90000");
    let offer = ClientOffer::parse(&vp8.offer()).unwrap();
    let (events, rx) = event_channel();
    let branch = ViewerBranch::answer(&tee, 3, &loopback(), events, &offer, Codec::Vp8).unwrap();
    let refusal = answer_of(&rx).expect_err("no answer that sends nothing");
    assert!(refusal.contains("no video"), "{refusal}");
    branch.detach().blocking_recv().expect("the refused branch is freed");
    good.wait_frames(before + 30);
    pipeline.set_state(gst::State::Null).unwrap();
}

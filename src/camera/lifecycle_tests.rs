//! The camera lifecycle driven through input sequences: no pipeline, no runtime, a clock we move by hand.

use super::*;
use crate::camera::Limits;
use crate::config::TestPattern;
use crate::media::{SourceSpec, Tier};

const TIMEOUT: Duration = Duration::from_secs(10);

fn plan(profile: &str, codec: Codec) -> EncoderPlan {
    EncoderPlan {
        profile: profile.into(),
        fragment: String::new(),
        raw_input: Some("I420".into()),
        codec,
        bitrate: None,
        size: None,
    }
}

fn setup(encoders: &[&str]) -> Box<Setup> {
    Box::new(Setup {
        source: SourceSpec::test_camera(TestPattern::Ball, "t", 320, 240),
        encoders: encoders.iter().map(|p| plan(p, Codec::H264)).collect(),
        encoder_reason: "first choice".into(),
        vp8: Some(plan("vp8", Codec::Vp8)),
        low_tier: Some(EncoderPlan {
            size: Some((160, 120)),
            ..plan("x264", Codec::H264)
        }),
        limits: Limits::new(50, 1000),
        max_encodings: 2,
        push: None,
    })
}

/// A lifecycle and its clock.
struct Camera {
    lc: Lifecycle,
    now: Instant,
}

impl Camera {
    fn new(idle: IdlePolicy) -> Self {
        Self {
            lc: Lifecycle::new(Policy::new(idle, TIMEOUT)),
            now: Instant::now(),
        }
    }

    fn input(&mut self, input: Input) -> Vec<Effect> {
        self.lc.handle(self.now, input)
    }

    fn after(&mut self, elapsed: Duration, input: Input) -> Vec<Effect> {
        self.now += elapsed;
        self.input(input)
    }

    fn tick(&mut self, elapsed: Duration) -> Vec<Effect> {
        self.after(elapsed, Input::Tick { health: None })
    }

    /// Online with these encoders and started with the first: streaming.
    fn streaming(encoders: &[&str]) -> Self {
        Self::streaming_with(setup(encoders))
    }

    /// Online with this setup and started with its first encoder: streaming.
    fn streaming_with(setup: Box<Setup>) -> Self {
        let mut camera = Self::new(IdlePolicy::KeepEncoding);
        assert_eq!(
            camera.input(Input::Online(setup)),
            [Effect::StartPipeline { encoder: 0 }]
        );
        assert_eq!(camera.input(Input::Started), []);
        camera
    }

    fn state(&self) -> CameraState {
        self.lc.state().0
    }

    fn detail(&self) -> String {
        self.lc.state().1.unwrap_or_default()
    }
}

fn join(conn: ConnId) -> Input {
    Input::Join {
        conn,
        codecs: None,
        offer: None,
    }
}

fn failed(origin: FailureOrigin, reason: &str) -> Input {
    Input::Failed {
        origin,
        reason: reason.into(),
    }
}

#[test]
fn plug_unplug_replug() {
    let mut camera = Camera::new(IdlePolicy::KeepEncoding);
    assert_eq!(
        (camera.state(), camera.lc.state().1),
        (CameraState::Offline, None),
        "listed before it is plugged"
    );

    assert_eq!(
        camera.input(Input::Online(setup(&["x264"]))),
        [Effect::StartPipeline { encoder: 0 }]
    );
    assert_eq!(camera.state(), CameraState::Starting);
    camera.input(Input::Started);
    assert_eq!(
        (camera.state(), camera.detail()),
        (CameraState::Streaming, "first choice".into())
    );

    assert_eq!(camera.input(Input::Offline), [Effect::StopPipeline]);
    assert_eq!(
        (camera.state(), camera.detail()),
        (CameraState::Offline, "device unplugged".into())
    );
    assert_eq!(camera.input(Input::Offline), [], "a second remove stops nothing");

    assert_eq!(
        camera.input(Input::Online(setup(&["x264"]))),
        [Effect::StartPipeline { encoder: 0 }]
    );
}

#[test]
fn only_a_camera_whose_device_is_gone_may_be_forgotten() {
    let mut camera = Camera::new(IdlePolicy::KeepEncoding);
    camera.input(Input::Online(setup(&["x264"])));
    assert!(
        matches!(camera.lc.forgettable("c"), Err(CameraError::NotGone(_))),
        "starting"
    );
    camera.input(Input::Started);
    assert!(
        matches!(camera.lc.forgettable("c"), Err(CameraError::NotGone(_))),
        "streaming"
    );
    // A device that is there but failing (retried) is not gone either.
    camera.input(failed(FailureOrigin::Source, "EIO"));
    assert_eq!(camera.state(), CameraState::Offline);
    assert!(
        matches!(camera.lc.forgettable("c"), Err(CameraError::NotGone(_))),
        "retrying"
    );
    camera.input(Input::Offline);
    assert!(camera.lc.forgettable("c").is_ok(), "unplugged");
    camera.input(Input::Online(setup(&["x264"])));
    assert!(camera.lc.forgettable("c").is_err(), "plugged back in");
}

#[test]
fn viewers_wait_for_an_unplugged_camera_and_get_a_branch_when_it_returns() {
    let mut camera = Camera::streaming(&["x264"]);
    assert_eq!(
        camera.input(join(1)),
        [Effect::Attach {
            conn: 1,
            branch: 1,
            encoding: EncodingKey::MAIN,
            offer: None,
        }]
    );
    camera.input(Input::Offline);
    assert_eq!(camera.input(join(2)), [], "nothing to attach to");
    assert_eq!(camera.lc.viewers(), 2);
    assert_eq!(camera.lc.branch_of(1, "answer"), Err(CameraError::NotStreaming));

    assert_eq!(
        camera.input(Input::Online(setup(&["x264"]))),
        [Effect::StartPipeline { encoder: 0 }]
    );
    assert_eq!(
        camera.input(Input::Started),
        [
            Effect::Attach {
                conn: 1,
                branch: 2,
                encoding: EncodingKey::MAIN,
                offer: None,
            },
            Effect::Attach {
                conn: 2,
                branch: 3,
                encoding: EncodingKey::MAIN,
                offer: None,
            }
        ]
    );
}

#[test]
fn an_encoder_that_does_not_start_falls_through_to_the_next() {
    let mut camera = Camera::new(IdlePolicy::KeepEncoding);
    camera.input(Input::Online(setup(&["nvh264enc", "x264"])));
    let effects = camera.input(Input::StartFailed {
        origin: FailureOrigin::Encoder,
        reason: "no NVENC".into(),
    });
    assert_eq!(effects, [Effect::StartPipeline { encoder: 1 }]);
    camera.input(Input::Started);
    assert_eq!(camera.detail(), "fell back from nvh264enc: no NVENC");
    assert_eq!(camera.lc.failures(), (1, 0));
    assert_eq!(camera.lc.current_plan().unwrap().profile, "x264");
}

#[test]
fn an_encoder_failing_at_run_time_falls_back_then_fails_when_none_is_left() {
    let mut camera = Camera::streaming(&["a", "b"]);
    assert_eq!(
        camera.input(failed(FailureOrigin::Encoder, "boom")),
        [Effect::StopPipeline, Effect::StartPipeline { encoder: 1 }]
    );
    camera.input(Input::Started);
    assert_eq!(
        (camera.state(), camera.detail()),
        (CameraState::Streaming, "fell back from a: boom".into())
    );

    assert_eq!(
        camera.input(failed(FailureOrigin::Encoder, "bang")),
        [Effect::StopPipeline]
    );
    assert_eq!(camera.state(), CameraState::Failed);
    assert_eq!(camera.detail(), "every usable encoder failed; last: b: bang");
    assert_eq!(
        camera.input(join(1)),
        [],
        "a failed camera takes viewers but starts nothing"
    );
    assert_eq!(camera.tick(Duration::from_secs(120)), [], "and never retries by itself");
    assert_eq!(camera.lc.failures(), (2, 0), "two fallbacks counted, no source failure");

    // A replug (or a new plan) starts over from the best encoder.
    assert_eq!(
        camera.input(Input::Online(setup(&["a", "b"]))),
        [Effect::StartPipeline { encoder: 0 }]
    );
}

#[test]
fn a_failing_source_is_retried_with_a_doubling_delay_and_never_costs_an_encoder() {
    let mut camera = Camera::streaming(&["x264", "openh264"]);
    assert_eq!(
        camera.input(failed(FailureOrigin::Source, "device busy")),
        [Effect::StopPipeline]
    );
    assert_eq!(
        (camera.state(), camera.detail()),
        (CameraState::Offline, "device busy; retrying in 3 s".into())
    );
    assert_eq!(camera.tick(Duration::from_millis(2900)), []);
    assert_eq!(
        camera.tick(Duration::from_millis(100)),
        [Effect::StartPipeline { encoder: 0 }]
    );

    let mut delays = Vec::new();
    for _ in 0..6 {
        camera.input(Input::StartFailed {
            origin: FailureOrigin::Source,
            reason: "gone".into(),
        });
        let detail = camera.detail();
        assert!(
            detail.starts_with("the device did not start: gone; retrying in"),
            "{detail}"
        );
        let seconds: u64 = detail.rsplit(' ').nth(1).unwrap().parse().unwrap();
        delays.push(seconds);
        assert_eq!(
            camera.tick(Duration::from_secs(seconds)),
            [Effect::StartPipeline { encoder: 0 }]
        );
    }
    assert_eq!(delays, [6, 12, 24, 48, 60, 60]);
    assert_eq!(
        camera.lc.current_plan().unwrap().profile,
        "x264",
        "source faults never move to another encoder"
    );

    // A pipeline that streamed resets the backoff.
    camera.input(Input::Started);
    camera.input(Input::Tick {
        health: Some(Health {
            encoded_frames: 30,
            source_silence: Duration::ZERO,
        }),
    });
    camera.input(failed(FailureOrigin::Source, "unplugged"));
    assert_eq!(camera.detail(), "unplugged; retrying in 3 s");
    assert_eq!(
        camera.lc.failures(),
        (0, 8),
        "every source failure counted (the backoff's reset does not reset the total), no fallback"
    );
}

#[test]
fn a_silent_source_is_treated_as_gone() {
    let mut camera = Camera::streaming(&["x264"]);
    let quiet = |ms| Input::Tick {
        health: Some(Health {
            encoded_frames: 0,
            source_silence: Duration::from_millis(ms),
        }),
    };
    assert_eq!(camera.input(quiet(4000)), []);
    assert_eq!(camera.input(quiet(5500)), [Effect::StopPipeline]);
    assert_eq!(camera.detail(), "source delivered no frames for 5 s; retrying in 3 s");
}

#[test]
fn a_source_failure_after_unplug_just_stays_offline() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(Input::Offline);
    camera.input(Input::StartFailed {
        origin: FailureOrigin::Source,
        reason: "no such device".into(),
    });
    assert_eq!(camera.state(), CameraState::Offline);
    assert_eq!(camera.tick(Duration::from_secs(120)), [], "no retry without a device");
}

#[test]
fn idle_stop_starts_for_the_first_viewer_and_stops_after_the_last() {
    let mut camera = Camera::new(IdlePolicy::Stop);
    assert_eq!(camera.input(Input::Online(setup(&["x264"]))), []);
    assert_eq!(camera.state(), CameraState::Idle);

    assert_eq!(camera.input(join(1)), [Effect::StartPipeline { encoder: 0 }]);
    assert_eq!(
        camera.input(Input::Started),
        [Effect::Attach {
            conn: 1,
            branch: 1,
            encoding: EncodingKey::MAIN,
            offer: None,
        }]
    );
    assert_eq!(
        camera.input(join(2)),
        [Effect::Attach {
            conn: 2,
            branch: 2,
            encoding: EncodingKey::MAIN,
            offer: None,
        }]
    );
    assert_eq!(camera.input(Input::Leave { conn: 1 }), [Effect::Detach { conn: 1 }]);
    // The last viewer's branch goes with the pipeline: no detach of a pad that stops flowing.
    assert_eq!(camera.input(Input::Leave { conn: 2 }), [Effect::StopPipeline]);
    assert_eq!(camera.state(), CameraState::Idle);
    assert_eq!(camera.input(Input::Leave { conn: 2 }), [], "leaving twice is harmless");
}

#[test]
fn keep_encoding_keeps_the_pipeline_without_viewers() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(join(1));
    assert_eq!(camera.input(Input::Leave { conn: 1 }), [Effect::Detach { conn: 1 }]);
    assert_eq!(camera.state(), CameraState::Streaming);
}

#[test]
fn a_viewer_that_does_not_connect_in_time_is_dropped_and_one_that_does_gets_a_keyframe() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(join(1));
    camera.input(join(2));
    assert_eq!(
        camera.after(Duration::from_secs(3), Input::ViewerConnected { conn: 2, branch: 2 }),
        [Effect::RequestKeyframe(EncodingKey::MAIN)]
    );
    assert_eq!(
        camera.input(Input::ViewerConnected { conn: 2, branch: 2 }),
        [],
        "one keyframe per connection"
    );
    assert_eq!(camera.tick(Duration::from_secs(6)), []);
    assert_eq!(
        camera.tick(Duration::from_secs(1)),
        [
            Effect::Notify {
                conn: 1,
                error: CameraError::NegotiationTimeout(10)
            },
            Effect::Detach { conn: 1 }
        ]
    );
    assert_eq!(camera.lc.viewers(), 1);
    assert_eq!(
        camera.state(),
        CameraState::Streaming,
        "the camera itself is unaffected"
    );
}

#[test]
fn a_late_failure_of_a_replaced_branch_does_not_touch_the_new_one() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(join(1));
    // The page asks again on the same connection (a reload of one card): new branch, old one freed.
    assert_eq!(
        camera.input(join(1)),
        [
            Effect::Detach { conn: 1 },
            Effect::Attach {
                conn: 1,
                branch: 2,
                encoding: EncodingKey::MAIN,
                offer: None,
            }
        ]
    );
    let late = Input::ViewerFailed {
        conn: 1,
        branch: 1,
        error: CameraError::ViewerFailed("connection failed (DTLS)".into()),
    };
    assert_eq!(camera.input(late), []);
    assert_eq!(
        camera.input(Input::ViewerConnected { conn: 1, branch: 1 }),
        [],
        "nor a late connect"
    );
    assert_eq!(camera.lc.branch_of(1, "answer"), Ok(2));

    // Also across a pipeline rebuild: branches of the old pipeline are gone.
    camera.input(failed(FailureOrigin::Encoder, "boom"));
    camera.input(Input::Started);
    let stale = Input::AttachFailed {
        conn: 1,
        branch: 2,
        error: CameraError::Branch("x".into()),
    };
    assert_eq!(camera.input(stale), []);
}

#[test]
fn a_viewer_failure_ends_that_viewer_only() {
    let mut camera = Camera::streaming(&["x264", "openh264"]);
    camera.input(join(1));
    camera.input(join(2));
    for round in 0..100 {
        let conn = 10 + round;
        let branch = 3 + round;
        assert_eq!(
            camera.input(join(conn)),
            [Effect::Attach {
                conn,
                branch,
                encoding: EncodingKey::MAIN,
                offer: None,
            }]
        );
        let effects = camera.input(Input::ViewerFailed {
            conn,
            branch,
            error: CameraError::ViewerFailed("DTLS alert".into()),
        });
        assert_eq!(
            effects,
            [
                Effect::Notify {
                    conn,
                    error: CameraError::ViewerFailed("DTLS alert".into())
                },
                Effect::Detach { conn }
            ]
        );
    }
    assert_eq!((camera.state(), camera.lc.viewers()), (CameraState::Streaming, 2));
    assert_eq!(
        camera.lc.current_plan().unwrap().profile,
        "x264",
        "still on its first encoder"
    );
}

#[test]
fn codecs_decide_h264_vp8_or_an_error_and_vp8_stops_with_its_last_viewer() {
    let mut camera = Camera::streaming(&["x264"]);
    let vp8 = |conn| Input::Join {
        conn,
        codecs: Some(vec!["VP8".into(), "AV1".into()]),
        offer: None,
    };
    assert_eq!(
        camera.input(vp8(1)),
        [Effect::Attach {
            conn: 1,
            branch: 1,
            encoding: EncodingKey::VP8,
            offer: None,
        }]
    );
    assert_eq!(
        camera.input(vp8(2)),
        [Effect::Attach {
            conn: 2,
            branch: 2,
            encoding: EncodingKey::VP8,
            offer: None,
        }]
    );
    let both = Input::Join {
        conn: 3,
        codecs: Some(vec!["vp8".into(), "h264".into()]),
        offer: None,
    };
    assert_eq!(
        camera.input(both),
        [Effect::Attach {
            conn: 3,
            branch: 3,
            encoding: EncodingKey::MAIN,
            offer: None,
        }]
    );

    let av1 = camera.input(Input::Join {
        conn: 4,
        codecs: Some(vec!["AV1".into()]),
        offer: None,
    });
    let [Effect::Notify { conn: 4, error }] = &av1[..] else {
        panic!("{av1:?}")
    };
    assert_eq!(
        error.to_string(),
        "no codec in common: this camera sends H.264 or VP8, the browser takes AV1"
    );
    assert_eq!(camera.lc.viewers(), 3, "the refused viewer is not kept");

    assert_eq!(camera.input(Input::Leave { conn: 1 }), [Effect::Detach { conn: 1 }]);
    assert_eq!(
        camera.input(Input::Leave { conn: 2 }),
        [Effect::Detach { conn: 2 }, Effect::StopEncoding(EncodingKey::VP8)]
    );
}

#[test]
fn a_branch_that_cannot_be_added_is_reported_to_its_viewer() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(join(1));
    let error = CameraError::Branch("could not start the extra encoding".into());
    let effects = camera.input(Input::AttachFailed {
        conn: 1,
        branch: 1,
        error: error.clone(),
    });
    assert_eq!(
        effects,
        [Effect::Notify { conn: 1, error }],
        "nothing to detach: the branch never came to be"
    );
    assert_eq!(camera.lc.viewers(), 0);
    assert_eq!(
        camera.lc.branch_of(1, "candidate"),
        Err(CameraError::NoSuchViewer("candidate"))
    );
}

#[test]
fn viewers_and_negotiations_are_capped_and_a_refused_viewer_costs_nothing() {
    let mut camera = Camera::streaming(&["x264"]);
    for conn in 1..=MAX_NEGOTIATING as ConnId {
        assert!(matches!(camera.input(join(conn))[..], [Effect::Attach { .. }]));
    }
    let refused = camera.input(join(100));
    let [Effect::Notify { conn: 100, error }] = &refused[..] else {
        panic!("{refused:?}")
    };
    assert_eq!(
        *error,
        CameraError::TooMany {
            what: "viewers still connecting",
            limit: MAX_NEGOTIATING
        }
    );
    assert_eq!(error.http_status(), 503);

    // Connected viewers no longer count as negotiating, up to the viewer cap.
    for (conn, branch) in (1..=MAX_NEGOTIATING as ConnId).zip(1..) {
        camera.input(Input::ViewerConnected { conn, branch });
    }
    let mut conn = 200;
    let mut branch = MAX_NEGOTIATING as BranchId;
    while camera.lc.viewers() < MAX_VIEWERS {
        conn += 1;
        branch += 1;
        assert!(
            matches!(camera.input(join(conn))[..], [Effect::Attach { .. }]),
            "viewer {}",
            camera.lc.viewers()
        );
        camera.input(Input::ViewerConnected { conn, branch });
    }
    let refused = camera.input(join(999));
    assert!(matches!(
        &refused[..],
        [Effect::Notify {
            error: CameraError::TooMany { what: "viewers", .. },
            ..
        }]
    ));
    assert_eq!(camera.lc.viewers(), MAX_VIEWERS);
    assert_eq!(camera.state(), CameraState::Streaming);
}

fn link(conn: ConnId, branch: BranchId, estimate_kbps: u32) -> Input {
    Input::LinkReport {
        conn,
        branch,
        report: LinkReport {
            estimate_kbps,
            loss: 0.0,
            rtt_ms: 30,
        },
    }
}

#[test]
fn the_encode_follows_a_single_viewers_link() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(join(1));
    assert_eq!(
        camera.input(link(1, 1, 400)),
        [Effect::SetBitrate {
            encoding: EncodingKey::MAIN,
            kbps: 340
        }]
    );
    assert_eq!(
        camera.input(link(1, 1, 420)),
        [],
        "a 5 % change is not worth a reconfiguration"
    );
    assert_eq!(
        camera.input(link(1, 1, 3000)),
        [],
        "GCC's climb alone is not followed (camera/probe.rs)"
    );
    // Clean for 2 s: probes lift it, and never above the configured bitrate.
    camera.after(Duration::from_secs(1), link(1, 1, 3000));
    let mut rates = Vec::new();
    for _ in 0..12 {
        for effect in camera.after(Duration::from_secs(1), link(1, 1, 3000)) {
            if let Effect::SetBitrate { kbps, .. } = effect {
                rates.push(kbps);
            }
        }
    }
    assert_eq!(rates, [425, 531, 663, 829, 1000], "1.25x steps, then the ceiling");
    assert_eq!(
        camera.input(link(1, 7, 100)),
        [],
        "a replaced branch's report is ignored"
    );
}

#[test]
fn a_weak_viewer_gets_the_low_tier_and_the_camera_returns_to_one_encode_when_it_leaves() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(join(1));
    camera.input(join(2));
    assert_eq!(camera.input(link(1, 1, 2500)), []);
    assert_eq!(
        camera.input(link(2, 2, 300)),
        [
            Effect::ChangeTier {
                conn: 2,
                to: Tier::Low,
                capacity_kbps: 255,
                best_kbps: 1000
            },
            Effect::Detach { conn: 2 },
            Effect::Attach {
                conn: 2,
                branch: 3,
                encoding: EncodingKey::LOW,
                offer: None,
            },
            Effect::SetBitrate {
                encoding: EncodingKey::LOW,
                kbps: 255
            }
        ],
        "a new session on the low tier; the clean viewer keeps the full rate"
    );
    assert_eq!(camera.lc.rates()[&EncodingKey::MAIN], 1000);
    // Recovered, but it stays put for the hold time: every move costs it a new session.
    assert_eq!(
        camera.input(link(2, 3, 2000)),
        [Effect::SetBitrate {
            encoding: EncodingKey::LOW,
            kbps: 400
        }]
    );
    let back = camera.after(TIER_HOLD, link(2, 3, 2000));
    assert_eq!(
        back,
        [
            Effect::ChangeTier {
                conn: 2,
                to: Tier::Main,
                capacity_kbps: 1700,
                best_kbps: 1000
            },
            Effect::Detach { conn: 2 },
            Effect::Attach {
                conn: 2,
                branch: 4,
                encoding: EncodingKey::MAIN,
                offer: None,
            },
            Effect::StopEncoding(EncodingKey::LOW)
        ]
    );
    camera.after(TIER_HOLD, link(2, 4, 300));
    assert_eq!(camera.lc.link_of(2).map(|(tier, _)| tier), Some(Tier::Low));
    let leave = camera.input(Input::Leave { conn: 2 });
    assert_eq!(
        leave,
        [Effect::Detach { conn: 2 }, Effect::StopEncoding(EncodingKey::LOW)]
    );
    assert_eq!(
        camera.lc.rates().keys().collect::<Vec<_>>(),
        [&EncodingKey::MAIN],
        "one encode again"
    );
}

#[test]
fn with_vp8_running_there_is_no_room_for_a_low_tier() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(Input::Join {
        conn: 1,
        codecs: Some(vec!["VP8".into()]),
        offer: None,
    });
    camera.input(join(2));
    camera.input(join(3));
    camera.input(link(2, 2, 2500));
    assert_eq!(
        camera.input(link(3, 3, 300)),
        [Effect::SetBitrate {
            encoding: EncodingKey::MAIN,
            kbps: 255
        }],
        "two encodings already (H.264 and VP8): the weak viewer drags the main one"
    );
    assert_eq!(
        camera.input(link(1, 1, 500)),
        [Effect::SetBitrate {
            encoding: EncodingKey::VP8,
            kbps: 425
        }],
        "VP8 follows its own viewers"
    );
}

#[test]
fn with_one_encoding_allowed_a_weak_viewer_drags_the_main_encode() {
    let mut camera = Camera::streaming_with(Box::new(Setup {
        max_encodings: 1,
        ..*setup(&["x264"])
    }));
    camera.input(join(1));
    camera.input(join(2));
    camera.input(link(1, 1, 2500));
    assert_eq!(
        camera.input(link(2, 2, 300)),
        [Effect::SetBitrate {
            encoding: EncodingKey::MAIN,
            kbps: 255
        }],
        "max_encodings: 1 means no low tier"
    );
}

#[test]
fn a_clean_link_is_probed_with_the_encode_and_a_probe_that_failed_is_undone() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(join(1));
    assert_eq!(
        camera.input(link(1, 1, 400)),
        [Effect::SetBitrate {
            encoding: EncodingKey::MAIN,
            kbps: 340
        }]
    );
    assert_eq!(camera.after(Duration::from_secs(1), link(1, 1, 400)), []);
    // Clean for 2 s: a probe lifts the estimate, and the encode with it at once.
    assert_eq!(
        camera.after(Duration::from_secs(1), link(1, 1, 400)),
        [
            Effect::SetEstimate {
                conn: 1,
                estimate_kbps: 500,
            },
            Effect::SetBitrate {
                encoding: EncodingKey::MAIN,
                kbps: 425
            }
        ]
    );
    // The link could not carry it: GCC came down only part of the way, the probe is undone.
    let lossy = Input::LinkReport {
        conn: 1,
        branch: 1,
        report: LinkReport {
            estimate_kbps: 470,
            loss: 0.05,
            rtt_ms: 200,
        },
    };
    assert_eq!(
        camera.after(Duration::from_secs(2), lossy),
        [Effect::SetBitrate {
            encoding: EncodingKey::MAIN,
            kbps: 340
        }]
    );
    // GCC climbing on its own (it cannot see the link's limit while less is sent) does not lift the encode.
    assert_eq!(camera.after(Duration::from_secs(1), link(1, 1, 900)), []);
}

fn join_offering(conn: ConnId) -> Input {
    Input::Join {
        conn,
        codecs: Some(vec!["H264".into()]),
        offer: Some(format!("v=0 offer of {conn}")),
    }
}

#[test]
fn a_viewers_offer_reaches_its_branch_and_an_offline_camera_refuses_it_at_once() {
    let mut camera = Camera::new(IdlePolicy::Stop);
    assert_eq!(
        camera.input(join_offering(1)),
        [Effect::Notify {
            conn: 1,
            error: CameraError::Offline("not plugged in".into())
        }],
        "nobody holds a request open for a camera that is not there"
    );
    assert_eq!(camera.lc.viewers(), 0);

    assert_eq!(camera.input(Input::Online(setup(&["x264"]))), []);
    assert_eq!(camera.state(), CameraState::Idle);
    assert_eq!(
        camera.input(join_offering(2)),
        [Effect::StartPipeline { encoder: 0 }],
        "an idle camera starts for it"
    );
    assert_eq!(
        camera.input(Input::Started),
        [Effect::Attach {
            conn: 2,
            branch: 1,
            encoding: EncodingKey::MAIN,
            offer: Some("v=0 offer of 2".into()),
        }]
    );
    // Its negotiation is bounded like any other's.
    let effects = camera.tick(TIMEOUT);
    assert!(
        effects.contains(&Effect::Notify {
            conn: 2,
            error: CameraError::NegotiationTimeout(TIMEOUT.as_secs())
        }),
        "{effects:?}"
    );
}

#[test]
fn a_rebuilt_pipeline_drops_answered_viewers_and_offers_anew_to_the_others() {
    let mut camera = Camera::streaming(&["x264", "openh264"]);
    camera.input(join(1));
    camera.input(join_offering(2));
    camera.input(Input::ViewerConnected { conn: 2, branch: 2 });
    let effects = camera.input(failed(FailureOrigin::Encoder, "x264 crashed"));
    assert_eq!(
        effects,
        [
            Effect::StopPipeline,
            Effect::Notify {
                conn: 2,
                error: CameraError::ViewerFailed("the camera's stream stopped; connect again".into())
            },
            Effect::StartPipeline { encoder: 1 },
        ]
    );
    assert_eq!(camera.lc.viewers(), 1);
    assert_eq!(
        camera.input(Input::Started),
        [Effect::Attach {
            conn: 1,
            branch: 3,
            encoding: EncodingKey::MAIN,
            offer: None,
        }],
        "the page's viewer gets a new offer"
    );
}

#[test]
fn an_offer_its_branch_cannot_answer_ends_that_viewer_with_the_reason() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(join(1));
    camera.input(join_offering(2));
    let error = CameraError::Unanswerable("no video".into());
    assert_eq!(
        camera.input(Input::ViewerFailed {
            conn: 2,
            branch: 2,
            error: error.clone(),
        }),
        [Effect::Notify { conn: 2, error }, Effect::Detach { conn: 2 }]
    );
    assert_eq!(camera.lc.viewers(), 1, "the other viewer stays");
    assert_eq!(camera.lc.branch_of(1, "answer"), Ok(1));
}

#[test]
fn when_the_weak_viewer_leaves_the_encode_goes_back_up() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(join(1));
    camera.input(link(1, 1, 400));
    assert_eq!(
        camera.input(Input::Leave { conn: 1 }),
        [
            Effect::Detach { conn: 1 },
            Effect::SetBitrate {
                encoding: EncodingKey::MAIN,
                kbps: 1000
            }
        ],
        "nobody watching: the configured bitrate"
    );
}

fn lossy_link(conn: ConnId, branch: BranchId, estimate_kbps: u32, loss: f64) -> Input {
    Input::LinkReport {
        conn,
        branch,
        report: LinkReport {
            estimate_kbps,
            loss,
            rtt_ms: 30,
        },
    }
}

fn fec_effects(effects: &[Effect]) -> Vec<(ConnId, u32)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SetFec { conn, percent } => Some((*conn, *percent)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lossy_viewer_with_room_gets_fec_for_itself_and_a_new_branch_starts_without() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(join(1));
    camera.input(join(2));
    // The camera sends its configured 1000 kbit/s; viewer 1 loses 3 % on a link that carries 2 Mbit/s.
    let on = camera.input(lossy_link(1, 1, 2000, 0.03));
    assert_eq!(fec_effects(&on), [(1, 20)]);
    assert_eq!(camera.lc.fec_percent(1), 20);
    assert_eq!(camera.lc.fec_percent(2), 0, "the clean viewer pays nothing");
    assert_eq!(fec_effects(&camera.input(lossy_link(2, 2, 2000, 0.0))), []);
    // Loss on a link with no room for more bits (a rate cap overflowing) gets no FEC.
    assert_eq!(fec_effects(&camera.input(lossy_link(2, 2, 1100, 0.05))), []);
    // Viewer 1's session is replaced (its branch failed and it joins again): the new branch has no FEC.
    camera.input(Input::ViewerFailed {
        conn: 1,
        branch: 1,
        error: CameraError::ViewerFailed("ice".into()),
    });
    camera.input(join(1));
    assert_eq!(camera.lc.fec_percent(1), 0);
    assert_eq!(
        fec_effects(&camera.input(lossy_link(1, 1, 2000, 0.03))),
        [],
        "the old branch's report"
    );
}

#[test]
fn fec_goes_off_when_the_link_stays_clean() {
    let mut camera = Camera::streaming(&["x264"]);
    camera.input(join(1));
    assert_eq!(fec_effects(&camera.input(lossy_link(1, 1, 2000, 0.03))), [(1, 20)]);
    let mut off = Vec::new();
    for _ in 0..12 {
        off.extend(fec_effects(
            &camera.after(Duration::from_secs(1), lossy_link(1, 1, 2000, 0.0)),
        ));
    }
    assert_eq!(off, [(1, 0)]);
}

#[test]
fn a_snapshot_attaches_its_branch_once_and_it_goes_after_a_quiet_while() {
    let mut camera = Camera::streaming(&["x264"]);
    assert_eq!(camera.input(Input::SnapshotWanted), [Effect::AttachSnapshot]);
    assert_eq!(
        camera.input(Input::SnapshotWanted),
        [],
        "one branch serves every request"
    );
    assert_eq!(camera.tick(SNAPSHOT_IDLE - Duration::from_secs(5)), []);
    assert_eq!(camera.input(Input::SnapshotWanted), [], "a request keeps it");
    assert_eq!(camera.tick(SNAPSHOT_IDLE - Duration::from_secs(1)), []);
    assert_eq!(camera.tick(Duration::from_secs(1)), [Effect::DetachSnapshot]);
    assert_eq!(camera.tick(SNAPSHOT_IDLE), [], "detached once");
    assert_eq!(
        camera.state(),
        CameraState::Streaming,
        "keep-encoding: the camera runs on"
    );
    assert_eq!(camera.input(Input::SnapshotWanted), [Effect::AttachSnapshot]);

    // A branch that failed is tried again on the next request.
    assert_eq!(camera.input(Input::SnapshotFailed), []);
    assert_eq!(camera.input(Input::SnapshotWanted), [Effect::AttachSnapshot]);

    // A rebuilt pipeline (encoder fallback) gets a new branch while snapshots are wanted.
    let mut camera = Camera::streaming(&["a", "b"]);
    camera.input(Input::SnapshotWanted);
    camera.input(failed(FailureOrigin::Encoder, "boom"));
    assert_eq!(camera.input(Input::Started), [Effect::AttachSnapshot]);
}

#[test]
fn under_idle_stop_a_snapshot_starts_the_camera_which_goes_idle_again_without_requests() {
    let mut camera = Camera::new(IdlePolicy::Stop);
    camera.input(Input::Online(setup(&["x264"])));
    assert_eq!(
        camera.input(Input::SnapshotWanted),
        [Effect::StartPipeline { encoder: 0 }]
    );
    assert_eq!(camera.input(Input::Started), [Effect::AttachSnapshot]);
    assert_eq!(
        camera.tick(SNAPSHOT_IDLE),
        [Effect::StopPipeline],
        "the branch goes with it"
    );
    assert_eq!(camera.state(), CameraState::Idle);

    // A viewer leaving while snapshots are still wanted leaves the camera running for them.
    assert_eq!(camera.input(join(1)), [Effect::StartPipeline { encoder: 0 }]);
    camera.input(Input::Started);
    assert_eq!(camera.input(Input::SnapshotWanted), [Effect::AttachSnapshot]);
    assert_eq!(camera.input(Input::Leave { conn: 1 }), [Effect::Detach { conn: 1 }]);
    assert_eq!(camera.state(), CameraState::Streaming);
    assert_eq!(camera.tick(SNAPSHOT_IDLE), [Effect::StopPipeline]);
    assert_eq!(camera.state(), CameraState::Idle);
}

#[test]
fn a_snapshot_is_refused_by_a_camera_that_is_down_or_has_no_pictures() {
    let mut camera = Camera::new(IdlePolicy::KeepEncoding);
    assert_eq!(
        camera.input(Input::SnapshotWanted),
        [Effect::RefuseSnapshot(CameraError::Offline("not plugged in".into()))]
    );
    let mut passthrough = setup(&["passthrough"]);
    passthrough.encoders[0].raw_input = None;
    camera.input(Input::Online(passthrough));
    camera.input(Input::Started);
    let refused = camera.input(Input::SnapshotWanted);
    assert!(
        matches!(refused.as_slice(), [Effect::RefuseSnapshot(CameraError::NoSnapshot(_))]),
        "{refused:?}"
    );
    assert_eq!(camera.tick(SNAPSHOT_IDLE), [], "nothing to detach");
}

// ---- The push to a media server (`push:`): a viewer the camera keeps joined itself.

/// The push's viewer id, as `push::whip` gives it.
const PUSH: ConnId = 0;

struct Nowhere;

impl crate::camera::ViewerSink for Nowhere {
    fn deliver(&self, _: crate::camera::ToViewer) {}
}

fn pushing(encoders: &[&str]) -> Box<Setup> {
    let mut setup = setup(encoders);
    setup.push = Some(crate::camera::ViewerPort::new(
        PUSH,
        crate::camera::Transport::Whip,
        std::sync::Arc::new(Nowhere),
    ));
    setup
}

fn push_attach(branch: BranchId) -> Effect {
    Effect::Attach {
        conn: PUSH,
        branch,
        encoding: EncodingKey::MAIN,
        offer: None,
    }
}

fn push_failed(branch: BranchId, why: &str) -> Input {
    Input::ViewerFailed {
        conn: PUSH,
        branch,
        error: CameraError::ViewerFailed(why.into()),
    }
}

impl Camera {
    fn push(&self) -> PushStatus {
        self.lc.push_status(self.now).expect("the camera pushes")
    }

    /// Online with a push, started, the push's first branch connected.
    fn pushing() -> Self {
        let mut camera = Self::new(IdlePolicy::KeepEncoding);
        camera.input(Input::Online(pushing(&["x264"])));
        assert_eq!(camera.push().state, PushState::Waiting, "no stream yet");
        assert_eq!(
            camera.input(Input::Started),
            [push_attach(1)],
            "the push offers once streaming"
        );
        assert_eq!(camera.push().state, PushState::Connecting);
        camera.input(Input::ViewerConnected { conn: PUSH, branch: 1 });
        assert_eq!(camera.push().state, PushState::Connected);
        camera
    }
}

#[test]
fn a_camera_without_push_reports_none() {
    let camera = Camera::streaming(&["x264"]);
    assert_eq!(camera.lc.push_status(camera.now), None);
}

#[test]
fn the_push_joins_by_itself_and_counts_as_a_viewer() {
    let mut camera = Camera::pushing();
    assert_eq!(camera.lc.viewers(), 1);
    // Others join beside it; the push keeps its branch.
    assert_eq!(
        camera.input(join(1)),
        [Effect::Attach {
            conn: 1,
            branch: 2,
            encoding: EncodingKey::MAIN,
            offer: None
        }]
    );
    assert_eq!(camera.lc.branch_of(PUSH, "test"), Ok(1));
    assert_eq!(camera.push().last_error, None);
}

#[test]
fn a_failed_push_is_retried_with_a_doubling_delay_reset_by_a_connected_session() {
    let mut camera = Camera::pushing();
    let effects = camera.input(push_failed(1, "ICE failed"));
    assert!(effects.contains(&Effect::Detach { conn: PUSH }), "{effects:?}");
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Notify { conn: PUSH, .. })),
        "the transport is told, so it ends its session: {effects:?}"
    );
    let status = camera.push();
    assert_eq!(status.state, PushState::Retrying);
    assert_eq!(status.retry_in, Some(PUSH_RETRY));
    assert!(status.last_error.as_deref().unwrap().contains("ICE failed"));
    assert_eq!(camera.lc.viewers(), 0, "no branch while waiting");

    // Sessions that never connect: 1 s, 2 s, 4 s, ... up to the cap.
    let mut branch = 1;
    let mut delay = PUSH_RETRY;
    for _ in 0..10 {
        assert_eq!(
            camera.tick(delay - Duration::from_millis(100)),
            [],
            "not before {delay:?}"
        );
        branch += 1;
        assert_eq!(camera.tick(Duration::from_millis(100)), [push_attach(branch)]);
        camera.input(Input::AttachFailed {
            conn: PUSH,
            branch,
            error: CameraError::Branch("refused".into()),
        });
        delay = (delay * 2).min(PUSH_RETRY_MAX);
        assert_eq!(camera.push().retry_in, Some(delay));
    }
    assert_eq!(delay, PUSH_RETRY_MAX);

    // A session that connects resets the backoff.
    branch += 1;
    assert_eq!(camera.tick(delay), [push_attach(branch)]);
    camera.input(Input::ViewerConnected { conn: PUSH, branch });
    assert_eq!(camera.push().state, PushState::Connected);
    assert!(
        camera.push().last_error.is_some(),
        "the last error stays for the record"
    );
    camera.input(push_failed(branch, "connection failed (DTLS)"));
    assert_eq!(camera.push().retry_in, Some(PUSH_RETRY));
}

#[test]
fn a_push_whose_server_goes_silent_is_ended_and_retried() {
    let mut camera = Camera::pushing();
    // RTCP keeps coming for a while: nothing happens.
    for n in 1..=10 {
        camera.after(
            Duration::from_secs(1),
            Input::PushHeard {
                branch: 1,
                rtcp_packets: n,
            },
        );
        assert_eq!(camera.tick(Duration::ZERO), []);
    }
    // The server is gone: the count stops growing.
    for _ in 1..PUSH_SILENCE_LIMIT.as_secs() {
        camera.after(
            Duration::from_secs(1),
            Input::PushHeard {
                branch: 1,
                rtcp_packets: 10,
            },
        );
        assert_eq!(camera.tick(Duration::ZERO), []);
    }
    let effects = camera.tick(Duration::from_secs(1));
    assert!(effects.contains(&Effect::Detach { conn: PUSH }), "{effects:?}");
    let status = camera.push();
    assert_eq!(status.state, PushState::Retrying);
    assert!(status.last_error.unwrap().contains("no RTCP"));
    assert_eq!(camera.tick(PUSH_RETRY), [push_attach(2)]);
}

#[test]
fn a_push_still_negotiating_is_not_judged_silent_but_times_out_and_retries() {
    let mut camera = Camera::new(IdlePolicy::KeepEncoding);
    camera.input(Input::Online(pushing(&["x264"])));
    camera.input(Input::Started);
    assert_eq!(camera.tick(PUSH_SILENCE_LIMIT * 2 - Duration::from_secs(1)), []);
    let effects = camera.tick(TIMEOUT);
    assert!(effects.contains(&Effect::Detach { conn: PUSH }), "{effects:?}");
    assert_eq!(camera.push().state, PushState::Retrying);
    assert_eq!(camera.tick(PUSH_RETRY), [push_attach(2)]);
}

#[test]
fn a_late_failure_of_an_old_push_branch_is_ignored() {
    let mut camera = Camera::pushing();
    camera.input(push_failed(1, "ICE failed"));
    camera.tick(PUSH_RETRY);
    assert_eq!(camera.input(push_failed(1, "ICE failed again")), []);
    assert_eq!(camera.push().state, PushState::Connecting);
}

#[test]
fn the_push_keeps_an_idle_stop_camera_running_and_waits_through_an_unplug() {
    let mut camera = Camera::new(IdlePolicy::Stop);
    assert_eq!(
        camera.input(Input::Online(pushing(&["x264"]))),
        [Effect::StartPipeline { encoder: 0 }],
        "a pushed camera always has a viewer"
    );
    assert_eq!(camera.input(Input::Started), [push_attach(1)]);
    assert_eq!(camera.input(Input::Offline), [Effect::StopPipeline]);
    assert_eq!(camera.push().state, PushState::Waiting, "no retry: nothing to push");
    assert_eq!(camera.tick(PUSH_RETRY_MAX), []);
    camera.input(Input::Online(pushing(&["x264"])));
    assert_eq!(
        camera.input(Input::Started),
        [push_attach(2)],
        "a new session on the new pipeline"
    );
}

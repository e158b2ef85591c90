//! How much of a viewer's link the encode may use: down with GCC's estimate at once, up only by probes.
//!
//! While the encode sends less than GCC's estimate, GCC cannot see the link's limit, and its loss-based
//! side keeps raising the estimate (5 % every 200 ms under 2 % loss): followed as is, the encode climbed
//! past a 250 kbit/s cap until the router's queue overflowed, lost a third of its packets and froze the
//! picture, every ten seconds. So the encode's share rises in probes instead: once the link has been
//! clean for a while, one `STEP` (GCC's estimate lifted with it, so its pacer lets the step through),
//! kept once it still holds two reports later, undone on the first report that shows it failing, after
//! which the next waits `RETRY`. The climb back after a cap lifts is slow (~20 s from 300 kbit/s to
//! 1 Mbit/s; README, Known issues).

use std::time::{Duration, Instant};

use super::bitrate::LinkReport;

/// A link must be clean this long before the first probe (the estimate settles after a join or a drop).
const CLEAN_BEFORE: Duration = Duration::from_secs(2);
/// After a probe that did not hold, the next one waits this long.
const RETRY: Duration = Duration::from_secs(3);
/// A probe is judged on the first report at least this long after it (reports come once a second).
/// x264 takes about a second to fill a new bitrate and GCC about half of one to see the queue it
/// builds: judged after one report, a 1.5x step over a 250 kbit/s cap "held", and the 2x after it lost
/// a third of the packets (tests/shaped_policy.rs).
const JUDGE_AFTER: Duration = Duration::from_millis(1900);
/// Each step: 1.25x over a link's capacity builds a queue a home router holds without loss until the
/// step is judged. Bigger steps were tried and lost packets: a 2x step after one that held by chance
/// (the queue grows too slowly to show within two reports) reached 964 kbit/s on a 300 kbit/s link, and
/// 1.5x ones froze a 250 kbit/s link; the price of 1.25x is a slow climb back after a cap lifts
/// (README, Known issues).
const STEP: f64 = 1.25;
/// GCC's estimate falling by more than this share in a report is congestion, whatever loss and round
/// trip say yet (receiver reports lag a second or more): the link is not clean. A probe right after
/// the cap of a 2 Mbit/s link dropped to 300 kbit/s lost 60 % of the packets (tests/shaped_policy.rs).
const FALLING: f64 = 0.9;
/// A probe held if GCC's estimate is still at least this share of the probed rate.
const HELD: f64 = 0.9;
/// Loss at or above this is not a clean link.
const CLEAN_LOSS: f64 = 0.02;
/// A round trip this much over the link's best means a queue is building: not clean.
const RTT_SLACK_MS: u32 = 50;

/// What a report decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// The estimate the bitrate policy works from (kbit/s).
    pub allowed_kbps: u32,
    /// GCC's estimate to set (kbit/s): a probe lifts it when it is below the step.
    pub set_estimate: Option<u32>,
}

/// One viewer's probing state.
#[derive(Debug, Default)]
pub struct Probe {
    allowed_kbps: Option<u32>,
    best_rtt_ms: Option<u32>,
    clean_since: Option<Instant>,
    not_before: Option<Instant>,
    /// When the probe under way was made, the allowed estimate before it, and the probed one.
    pending: Option<(Instant, u32, u32)>,
    /// GCC's estimate in the last report.
    last_gcc_kbps: Option<u32>,
}

impl Probe {
    /// Takes a link report (with GCC's estimate); `wanted_kbps` is the estimate at which the viewer
    /// would get everything the camera sends.
    pub fn on_report(&mut self, now: Instant, report: &LinkReport, wanted_kbps: u32) -> Share {
        let gcc = report.estimate_kbps;
        let allowed = self.allowed_kbps.map_or(gcc, |a| a.min(gcc));
        let (allowed, set_estimate) = self.decide(now, report, allowed, wanted_kbps);
        self.allowed_kbps = Some(allowed);
        Share {
            allowed_kbps: allowed,
            set_estimate,
        }
    }

    fn decide(&mut self, now: Instant, report: &LinkReport, allowed: u32, wanted: u32) -> (u32, Option<u32>) {
        // 0: no receiver report with a round trip yet, which says nothing about the link.
        let rtt = (report.rtt_ms > 0).then_some(report.rtt_ms);
        if let Some(rtt) = rtt {
            self.best_rtt_ms = Some(self.best_rtt_ms.map_or(rtt, |best| best.min(rtt)));
        }
        let falling = self
            .last_gcc_kbps
            .is_some_and(|last| f64::from(report.estimate_kbps) < f64::from(last) * FALLING);
        self.last_gcc_kbps = Some(report.estimate_kbps);
        let clean = !falling
            && report.loss < CLEAN_LOSS
            && rtt
                .zip(self.best_rtt_ms)
                .is_some_and(|(rtt, best)| rtt <= best + RTT_SLACK_MS);
        if let Some((at, before, probed)) = self.pending {
            let held = clean && f64::from(report.estimate_kbps) >= f64::from(probed) * HELD;
            // A step that fails shows within a report (GCC pulls back, loss): undone at once. One that
            // holds has to keep holding until it has really been sent.
            if held && now.duration_since(at) < JUDGE_AFTER {
                return (allowed, None);
            }
            self.pending = None;
            if !held {
                self.not_before = Some(now + RETRY);
                self.clean_since = None;
                return (allowed.min(before), None);
            }
        }
        if !clean {
            self.clean_since = None;
            return (allowed, None);
        }
        let since = *self.clean_since.get_or_insert(now);
        let waited = now.duration_since(since) >= CLEAN_BEFORE && self.not_before.map_or(true, |t| now >= t);
        if allowed >= wanted || !waited {
            return (allowed, None);
        }
        let to = ((f64::from(allowed) * STEP) as u32).min(wanted);
        self.pending = Some((now, allowed, to));
        let lift = (report.estimate_kbps < to).then_some(to);
        (to, lift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(estimate_kbps: u32, loss: f64, rtt_ms: u32) -> LinkReport {
        LinkReport {
            estimate_kbps,
            loss,
            rtt_ms,
        }
    }

    /// Feeds one report a second from `start`; returns the allowed estimate after each.
    fn run(probe: &mut Probe, start: Instant, reports: &[LinkReport], wanted: u32) -> Vec<u32> {
        reports
            .iter()
            .enumerate()
            .map(|(i, r)| {
                probe
                    .on_report(start + Duration::from_secs(i as u64), r, wanted)
                    .allowed_kbps
            })
            .collect()
    }

    #[test]
    fn a_clean_link_is_probed_in_steps_each_judged_before_the_next() {
        let mut probe = Probe::default();
        let t = Instant::now();
        // Clean for 2 s, then each probe holds (GCC keeps the probed estimate or goes above it); each is
        // judged two reports after it was made.
        let got = run(
            &mut probe,
            t,
            &[
                report(200, 0.0, 10),
                report(200, 0.0, 10),
                report(200, 0.0, 12),
                report(250, 0.0, 11),
                report(250, 0.0, 11),
                report(400, 0.0, 12),
                report(400, 0.0, 12),
                report(800, 0.0, 12),
                report(800, 0.0, 12),
                report(2000, 0.0, 12),
                report(2000, 0.0, 12),
            ],
            1176,
        );
        assert_eq!(
            got,
            [200, 200, 250, 250, 312, 312, 390, 390, 487, 487, 608],
            "1.25x steps, each judged two reports later"
        );
    }

    #[test]
    fn gccs_own_climb_is_not_followed_but_its_fall_is() {
        let mut probe = Probe::default();
        let t = Instant::now();
        // Lossy, so no probe: GCC's estimate rising says nothing about the link while less is sent.
        let got = run(
            &mut probe,
            t,
            &[
                report(200, 0.05, 10),
                report(300, 0.05, 10),
                report(400, 0.05, 10),
                report(150, 0.05, 10),
            ],
            1176,
        );
        assert_eq!(got, [200, 200, 200, 150]);
    }

    #[test]
    fn a_probe_that_does_not_hold_is_undone_and_the_next_waits() {
        let mut probe = Probe::default();
        let t = Instant::now();
        let start = probe.on_report(t, &report(240, 0.0, 5), 1176);
        assert_eq!(start.set_estimate, None);
        probe.on_report(t + Duration::from_secs(1), &report(240, 0.0, 5), 1176);
        let lift = probe.on_report(t + Duration::from_secs(2), &report(240, 0.0, 5), 1176);
        assert_eq!(
            lift,
            Share {
                allowed_kbps: 300,
                set_estimate: Some(300)
            },
            "GCC lifted with the step"
        );
        let got = run(
            &mut probe,
            t + Duration::from_secs(3),
            &[
                // The queue grew: the probe failed.
                report(290, 0.0, 120),
                report(240, 0.0, 8),
                report(240, 0.0, 8),
                report(240, 0.0, 8),
                report(240, 0.0, 8),
                report(240, 0.0, 8),
            ],
            1176,
        );
        assert_eq!(
            got,
            [240, 240, 240, 240, 300, 240],
            "undone on the first report that shows it; GCC's fall is not clean either; then a clean spell and the next"
        );
    }

    #[test]
    fn loss_or_a_growing_queue_stops_probing() {
        let t = Instant::now();
        let mut probe = Probe::default();
        let lossy = run(&mut probe, t, &[report(300, 0.05, 10); 6], 1176);
        assert!(lossy.iter().all(|&k| k == 300), "{lossy:?}");
        let mut probe = Probe::default();
        let queued = run(
            &mut probe,
            t,
            &[
                report(300, 0.0, 10),
                report(300, 0.0, 90),
                report(300, 0.0, 95),
                report(300, 0.0, 90),
            ],
            1176,
        );
        assert!(queued.iter().all(|&k| k == 300), "{queued:?}");
        let mut probe = Probe::default();
        let unknown = run(&mut probe, t, &[report(300, 0.0, 0); 6], 1176);
        assert!(
            unknown.iter().all(|&k| k == 300),
            "no round trip known yet: {unknown:?}"
        );
    }

    #[test]
    fn no_probe_right_after_gcc_fell() {
        let mut probe = Probe::default();
        // Loss and round trip still look clean (receiver reports lag), but GCC fell: a cap came down.
        let got = run(
            &mut probe,
            Instant::now(),
            &[
                report(4000, 0.0, 1),
                report(600, 0.0, 1),
                report(600, 0.0, 1),
                report(600, 0.0, 1),
                report(600, 0.0, 1),
            ],
            1176,
        );
        assert_eq!(
            got,
            [4000, 600, 600, 600, 750],
            "2 s without a fall before the first probe"
        );
    }

    #[test]
    fn a_link_that_carries_the_camera_is_left_alone() {
        let mut probe = Probe::default();
        let t = Instant::now();
        let sets: Vec<_> = (0..6)
            .map(|i| probe.on_report(t + Duration::from_secs(i), &report(1500, 0.0, 3), 1176))
            .collect();
        assert!(
            sets.iter().all(|s| s.allowed_kbps == 1500 && s.set_estimate.is_none()),
            "{sets:?}"
        );
    }
}

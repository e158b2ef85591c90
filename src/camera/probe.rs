//! Probing a viewer's link for room to grow. GCC raises its estimate by about 8 % a second, and with
//! one shared encode that follows the estimate nothing is ever sent above it, so a link that recovered
//! from 300 kbit/s to 2 Mbit/s took ~20 s to get its full picture back. libwebrtc probes with padding
//! bursts; here a probe lifts the viewer's estimate (and with it the encode) one step while the link is
//! clean, and is judged on the next report: the estimate held and the link stayed clean, or the probe
//! is undone at once (GCC alone took seconds of loss to come down) and the next one waits `RETRY`.
//! Steps grow only after probes in a row held, so a capped link sees a small excess every few seconds.

use std::time::{Duration, Instant};

use super::bitrate::LinkReport;

/// A link must be clean this long before the first probe (the estimate settles after a join or a drop).
const CLEAN_BEFORE: Duration = Duration::from_secs(2);
/// After a probe that did not hold, the next one waits this long.
const RETRY: Duration = Duration::from_secs(3);
/// A probe is judged on the first report at least this long after it (reports come once a second).
const JUDGE_AFTER: Duration = Duration::from_millis(900);
/// Steps above the estimate, by how many probes in a row held: 1.25x over a link's capacity builds a
/// queue a home router holds without loss in the second before the probe is judged; bigger steps are
/// earned. 1.5x and 2x steps straight away lost 35-60 % on a 250 kbit/s link whenever a step that held
/// by chance (the queue grows too slowly to show within a report) was followed by a bigger one
/// (tests/shaped_policy.rs).
fn step(held_in_a_row: u32) -> f64 {
    match held_in_a_row {
        0 | 1 => 1.25,
        2 | 3 => 1.5,
        _ => 2.0,
    }
}
/// A probe held if the estimate is still at least this share of the probed rate.
const HELD: f64 = 0.9;
/// Loss at or above this is not a clean link.
const CLEAN_LOSS: f64 = 0.02;
/// A round trip this much over the link's best means a queue is building: not clean.
const RTT_SLACK_MS: u32 = 50;

pub(super) const PROBING: &str = "probing the link for room";
pub(super) const UNDONE: &str = "the probe did not hold: back to what the link carried";

/// One viewer's probing state.
#[derive(Debug, Default)]
pub struct Probe {
    best_rtt_ms: Option<u32>,
    clean_since: Option<Instant>,
    not_before: Option<Instant>,
    held_in_a_row: u32,
    /// When the probe under way was made, the estimate before it, and the probed one.
    pending: Option<(Instant, u32, u32)>,
}

impl Probe {
    /// Takes a link report; `wanted_kbps` is the estimate at which the viewer would get everything the
    /// camera sends. Returns the estimate to set (kbit/s) and why: a probe, or the undoing of one that failed.
    pub fn on_report(&mut self, now: Instant, report: &LinkReport, wanted_kbps: u32) -> Option<(u32, &'static str)> {
        // 0: no receiver report with a round trip yet, which says nothing about the link.
        let rtt = (report.rtt_ms > 0).then_some(report.rtt_ms);
        if let Some(rtt) = rtt {
            self.best_rtt_ms = Some(self.best_rtt_ms.map_or(rtt, |best| best.min(rtt)));
        }
        let clean = report.loss < CLEAN_LOSS
            && rtt
                .zip(self.best_rtt_ms)
                .is_some_and(|(rtt, best)| rtt <= best + RTT_SLACK_MS);
        if let Some((at, before, probed)) = self.pending {
            if now.duration_since(at) < JUDGE_AFTER {
                return None;
            }
            self.pending = None;
            if clean && f64::from(report.estimate_kbps) >= f64::from(probed) * HELD {
                self.held_in_a_row += 1;
            } else {
                self.held_in_a_row = 0;
                self.not_before = Some(now + RETRY);
                self.clean_since = None;
                return (before < report.estimate_kbps).then_some((before, UNDONE));
            }
        }
        if !clean {
            self.clean_since = None;
            return None;
        }
        let since = *self.clean_since.get_or_insert(now);
        let waited = now.duration_since(since) >= CLEAN_BEFORE && self.not_before.map_or(true, |t| now >= t);
        if report.estimate_kbps >= wanted_kbps || !waited {
            return None;
        }
        let to = ((f64::from(report.estimate_kbps) * step(self.held_in_a_row)) as u32).min(wanted_kbps);
        self.pending = Some((now, report.estimate_kbps, to));
        Some((to, PROBING))
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

    /// Feeds one report a second from `start`; returns what each one answered.
    fn run(probe: &mut Probe, start: Instant, reports: &[LinkReport], wanted: u32) -> Vec<Option<u32>> {
        reports
            .iter()
            .enumerate()
            .map(|(i, r)| probe.on_report(start + Duration::from_secs(i as u64), r, wanted))
            .map(|set| set.map(|(kbps, _)| kbps))
            .collect()
    }

    #[test]
    fn a_clean_link_is_probed_in_growing_steps_until_it_carries_the_camera() {
        let mut probe = Probe::default();
        let t = Instant::now();
        // Clean for 2 s, then each probe holds (GCC keeps the probed estimate).
        let got = run(
            &mut probe,
            t,
            &[
                report(200, 0.0, 10),
                report(200, 0.0, 10),
                report(200, 0.0, 12),
                report(250, 0.0, 11),
                report(315, 0.0, 12),
                report(480, 0.0, 12),
                report(720, 0.0, 12),
                report(1200, 0.0, 12),
            ],
            1176,
        );
        assert_eq!(
            got,
            vec![None, None, Some(250), Some(312), Some(472), Some(720), Some(1176), None],
            "1.25x, 1.25x, then 1.5x steps"
        );
    }

    #[test]
    fn a_probe_that_does_not_hold_waits_and_starts_small_again() {
        let mut probe = Probe::default();
        let t = Instant::now();
        let got = run(
            &mut probe,
            t,
            &[
                report(240, 0.0, 5),
                report(240, 0.0, 5),
                report(240, 0.0, 5),
                // The queue grew: the probe failed, and is undone at once.
                report(290, 0.0, 120),
                report(240, 0.0, 8),
                report(240, 0.0, 8),
                report(240, 0.0, 8),
                report(240, 0.0, 8),
            ],
            1176,
        );
        assert_eq!(got, vec![None, None, Some(300), Some(240), None, None, Some(300), None]);
    }

    #[test]
    fn loss_or_a_growing_queue_stops_probing() {
        let mut probe = Probe::default();
        let t = Instant::now();
        let lossy = run(&mut probe, t, &[report(300, 0.05, 10); 6], 1176);
        assert!(lossy.iter().all(Option::is_none), "{lossy:?}");
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
        assert!(queued.iter().all(Option::is_none), "{queued:?}");
        let mut probe = Probe::default();
        let unknown = run(&mut probe, t, &[report(300, 0.0, 0); 6], 1176);
        assert!(
            unknown.iter().all(Option::is_none),
            "no round trip known yet: {unknown:?}"
        );
    }

    #[test]
    fn a_link_that_carries_the_camera_is_left_alone() {
        let mut probe = Probe::default();
        let got = run(&mut probe, Instant::now(), &[report(1500, 0.0, 3); 6], 1176);
        assert!(got.iter().all(Option::is_none), "{got:?}");
    }
}

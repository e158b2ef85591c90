//! Forward error correction per viewer: on while its link loses packets and has room for the extra
//! bits, off once the link has been clean for a while.
//!
//! NACK with RTX repairs a loss within about a round trip, unless the retransmission is lost too: at 3 %
//! loss that happened a few times in each 30 s window and froze Chromium's picture for ~200 ms about once
//! a window (tests/lossy_link.rs). ULP-FEC at `FEC_PERCENT` repairs most losses without a round trip and
//! took those freezes away, but costs ~25 % more bits (bench/results/lossy_link.md), so a clean link
//! never pays for it.

use std::time::{Duration, Instant};

/// Redundancy while FEC is on, as webrtcbin's `fec-percentage`.
pub const FEC_PERCENT: u32 = 20;
/// Reported loss at or above which FEC is turned on: below it, NACK alone repaired every window.
const ON_LOSS: f64 = 0.01;
/// Reported loss under which the link counts as clean.
const OFF_LOSS: f64 = 0.002;
/// How long a link must stay clean before FEC goes off again (Wi-Fi loss comes in bursts).
const CLEAN_FOR: Duration = Duration::from_secs(10);

/// One viewer's FEC state.
#[derive(Debug, Default)]
pub struct Fec {
    on: bool,
    clean_since: Option<Instant>,
}

impl Fec {
    /// Takes a link report: its loss (0..1) and whether the link has room for `FEC_PERCENT` more bits
    /// than it gets now (on a rate cap, loss is queue overflow and more bits would only add to it).
    /// Returns the new `fec-percentage` when it changes.
    pub fn on_report(&mut self, now: Instant, loss: f64, has_room: bool) -> Option<u32> {
        // A link that filled up (its estimate fell to what is sent) loses to its queue: FEC would add to it.
        if self.on && !has_room {
            self.on = false;
            self.clean_since = None;
            return Some(0);
        }
        if loss >= ON_LOSS && has_room {
            self.clean_since = None;
            return (!std::mem::replace(&mut self.on, true)).then_some(FEC_PERCENT);
        }
        if loss >= OFF_LOSS {
            self.clean_since = None;
            return None;
        }
        let since = *self.clean_since.get_or_insert(now);
        if self.on && now.duration_since(since) >= CLEAN_FOR {
            self.on = false;
            return Some(0);
        }
        None
    }

    pub fn percent(&self) -> u32 {
        if self.on {
            FEC_PERCENT
        } else {
            0
        }
    }
}

/// Whether a link estimated at `estimate_kbps` can carry an encoding sent at `sending_kbps` with FEC
/// on top.
pub fn has_room(estimate_kbps: u32, sending_kbps: u32) -> bool {
    f64::from(estimate_kbps) >= f64::from(sending_kbps) * (1.0 + f64::from(FEC_PERCENT) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn loss_with_room_turns_it_on_once() {
        let t0 = Instant::now();
        let mut fec = Fec::default();
        assert_eq!(fec.on_report(t0, 0.0, true), None);
        assert_eq!(fec.on_report(at(t0, 1), 0.03, true), Some(FEC_PERCENT));
        assert_eq!(fec.on_report(at(t0, 2), 0.03, true), None, "already on");
        assert_eq!(fec.percent(), FEC_PERCENT);
    }

    #[test]
    fn loss_on_a_full_link_does_not() {
        let t0 = Instant::now();
        let mut fec = Fec::default();
        assert_eq!(fec.on_report(t0, 0.05, false), None);
        assert_eq!(fec.percent(), 0);
    }

    #[test]
    fn it_goes_off_when_the_link_fills_up() {
        let t0 = Instant::now();
        let mut fec = Fec::default();
        fec.on_report(t0, 0.03, true);
        assert_eq!(
            fec.on_report(at(t0, 1), 0.05, false),
            Some(0),
            "seen with a capped viewer: FEC on, 154 kbit/s estimated, 142 sent"
        );
        assert_eq!(fec.percent(), 0);
    }

    #[test]
    fn it_goes_off_after_a_clean_spell_and_a_loss_restarts_the_spell() {
        let t0 = Instant::now();
        let mut fec = Fec::default();
        fec.on_report(t0, 0.03, true);
        assert_eq!(fec.on_report(at(t0, 1), 0.0, true), None);
        assert_eq!(fec.on_report(at(t0, 9), 0.0, true), None, "clean for 8 s only");
        // Some loss, too little to turn FEC on, still means the link is not clean.
        assert_eq!(fec.on_report(at(t0, 10), 0.005, true), None);
        assert_eq!(fec.on_report(at(t0, 11), 0.0, true), None);
        assert_eq!(fec.on_report(at(t0, 20), 0.0, true), None, "clean for 9 s");
        assert_eq!(fec.on_report(at(t0, 21), 0.0, true), Some(0));
        assert_eq!(fec.percent(), 0);
        assert_eq!(fec.on_report(at(t0, 40), 0.0, true), None, "off stays off");
    }

    #[test]
    fn room_means_the_estimate_covers_the_extra_bits() {
        assert!(has_room(1300, 1000));
        assert!(!has_room(1100, 1000));
    }
}

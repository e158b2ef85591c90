//! Which bitrate each of a camera's encodings gets, and which viewers watch the low tier: the policy
//! that lets one shared encode serve viewers on links of different capacity. Plain arithmetic on the
//! viewers' latest reports, so it is tested with scripted estimates.
//!
//! - A viewer's capacity is its bandwidth estimate with headroom, cut further while it reports heavy loss.
//! - The main encoding follows the weakest viewer on it, between the camera's floor and ceiling.
//! - A viewer far below the best link (under `LOW_TIER_RATIO` of it) moves to a low tier (a second, smaller
//!   encoding) when the camera may run one, instead of dragging every viewer down; it comes back once its
//!   link carries `RETURN_RATIO` of the best one. With one viewer, the encode simply follows it.
//! - An encoding's bitrate is changed only when it moves by more than `CHANGE_THRESHOLD`: some hardware
//!   encoders force a keyframe or reconfigure on every change.

use std::collections::BTreeMap;

use super::sink::ConnId;
use crate::media::Tier;

/// Send at most this share of a viewer's estimate: the estimate itself is where queues start to grow.
const HEADROOM: f64 = 0.85;
/// Above this loss (fraction of packets, from receiver reports) the link is congested whatever the estimate says.
const HEAVY_LOSS: f64 = 0.10;
/// ... and the viewer's capacity is cut to this share of its estimate while it lasts.
const LOSS_BACKOFF: f64 = 0.6;
/// A viewer whose capacity is under this share of the best viewer's is moved to the low tier.
pub const LOW_TIER_RATIO: f64 = 0.5;
/// A low-tier viewer moves back once its capacity reaches this share of the best viewer's (hysteresis).
pub const RETURN_RATIO: f64 = 0.75;
/// Relative change below which an encoding's bitrate is left alone.
pub const CHANGE_THRESHOLD: f64 = 0.10;

/// What a viewer's branch reports about its link, about once a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkReport {
    pub estimate_kbps: u32,
    /// Fraction of packets lost (0..1), from the viewer's receiver reports.
    pub loss: f64,
    pub rtt_ms: u32,
}

impl LinkReport {
    /// What this link can take now.
    pub fn capacity_kbps(&self) -> u32 {
        let backoff = if self.loss > HEAVY_LOSS { LOSS_BACKOFF } else { 1.0 };
        (f64::from(self.estimate_kbps) * HEADROOM * backoff) as u32
    }
}

/// The estimate at which a clean link gets `kbps` (the inverse of `capacity_kbps`).
pub fn estimate_for(kbps: u32) -> u32 {
    (f64::from(kbps) / HEADROOM).ceil() as u32
}

/// The low tier's ceiling as a share of the camera's: it has a quarter of the pixels.
const LOW_TIER_SHARE: f64 = 0.4;

/// A camera's bitrate bounds, from its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub floor_kbps: u32,
    pub ceiling_kbps: u32,
    /// Ceiling of the low tier (it is smaller, so it needs less).
    pub low_ceiling_kbps: u32,
}

impl Limits {
    /// The bounds for a camera configured with `min_bitrate` and `bitrate` (a floor above the ceiling
    /// is the ceiling).
    pub fn new(floor_kbps: u32, ceiling_kbps: u32) -> Self {
        let floor_kbps = floor_kbps.min(ceiling_kbps);
        let low_ceiling_kbps = ((f64::from(ceiling_kbps) * LOW_TIER_SHARE) as u32).max(floor_kbps);
        Self {
            floor_kbps,
            ceiling_kbps,
            low_ceiling_kbps,
        }
    }
}

/// The policy's answer for one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub main_kbps: u32,
    /// None: nobody needs the low tier.
    pub low_kbps: Option<u32>,
    pub tiers: BTreeMap<ConnId, Tier>,
    /// The best viewer's capacity the tiers were decided against (kbit/s, at most the ceiling).
    pub best_kbps: u32,
}

/// Decides from every H.264 viewer's tier and latest report (None: no report yet, which never drags
/// the others down). `low_tier_allowed`: the camera may run one more encoding (or already runs the tier).
pub fn decide(
    viewers: &BTreeMap<ConnId, (Tier, Option<LinkReport>)>,
    limits: Limits,
    low_tier_allowed: bool,
) -> Decision {
    let capacity = |report: &Option<LinkReport>| report.map_or(limits.ceiling_kbps, |r| r.capacity_kbps());
    let best = viewers
        .values()
        .map(|(_, r)| capacity(r))
        .max()
        .unwrap_or(limits.ceiling_kbps);
    let best = f64::from(best.min(limits.ceiling_kbps));
    let tiers: BTreeMap<ConnId, Tier> = viewers
        .iter()
        .map(|(conn, (tier, report))| {
            let share = f64::from(capacity(report)) / best.max(1.0);
            let tier = match tier {
                _ if !low_tier_allowed => Tier::Main,
                Tier::Main if share < LOW_TIER_RATIO => Tier::Low,
                Tier::Low if share >= RETURN_RATIO => Tier::Main,
                unchanged => *unchanged,
            };
            (*conn, tier)
        })
        .collect();
    let placed: BTreeMap<ConnId, (Tier, Option<LinkReport>)> = viewers
        .iter()
        .map(|(conn, (_, report))| (*conn, (tiers[conn], *report)))
        .collect();
    let (main_kbps, low_kbps) = rates(&placed, limits);
    Decision {
        main_kbps,
        low_kbps,
        tiers,
        best_kbps: best as u32,
    }
}

/// The bitrate of the main encoding and of the low tier (None: nobody on it) for viewers where they are.
pub fn rates(viewers: &BTreeMap<ConnId, (Tier, Option<LinkReport>)>, limits: Limits) -> (u32, Option<u32>) {
    let weakest = |tier: Tier| {
        viewers
            .values()
            .filter(|(t, _)| *t == tier)
            .map(|(_, report)| report.map_or(limits.ceiling_kbps, |r| r.capacity_kbps()))
            .min()
    };
    let main_kbps = weakest(Tier::Main)
        .unwrap_or(limits.ceiling_kbps)
        .clamp(limits.floor_kbps, limits.ceiling_kbps);
    let low_ceiling = limits.low_ceiling_kbps.max(limits.floor_kbps);
    (
        main_kbps,
        weakest(Tier::Low).map(|k| k.clamp(limits.floor_kbps, low_ceiling)),
    )
}

/// Whether an encoding running at `current` should be told `wanted`.
pub fn worth_changing(current: u32, wanted: u32) -> bool {
    f64::from(current.abs_diff(wanted)) > f64::from(current.max(1)) * CHANGE_THRESHOLD
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        floor_kbps: 150,
        ceiling_kbps: 1000,
        low_ceiling_kbps: 400,
    };

    fn report(estimate_kbps: u32) -> Option<LinkReport> {
        Some(LinkReport {
            estimate_kbps,
            loss: 0.0,
            rtt_ms: 20,
        })
    }

    fn viewers(list: &[(ConnId, Tier, Option<LinkReport>)]) -> BTreeMap<ConnId, (Tier, Option<LinkReport>)> {
        list.iter().map(|(c, t, r)| (*c, (*t, *r))).collect()
    }

    #[test]
    fn one_viewer_is_followed_between_floor_and_ceiling() {
        let d = decide(&viewers(&[(1, Tier::Main, report(400))]), LIMITS, true);
        assert_eq!(
            (d.main_kbps, d.low_kbps, d.tiers[&1]),
            (340, None, Tier::Main),
            "85 % of its estimate, no tier"
        );
        assert_eq!(
            decide(&viewers(&[(1, Tier::Main, report(5000))]), LIMITS, true).main_kbps,
            1000
        );
        assert_eq!(
            decide(&viewers(&[(1, Tier::Main, report(50))]), LIMITS, true).main_kbps,
            150
        );
        assert_eq!(
            decide(&viewers(&[(1, Tier::Main, None)]), LIMITS, true).main_kbps,
            1000,
            "no report yet"
        );
        assert_eq!(
            decide(&viewers(&[]), LIMITS, true).main_kbps,
            1000,
            "nobody watching: the configured rate"
        );
    }

    #[test]
    fn heavy_loss_cuts_a_link_below_its_estimate() {
        let lossy = Some(LinkReport {
            estimate_kbps: 1000,
            loss: 0.2,
            rtt_ms: 80,
        });
        assert_eq!(decide(&viewers(&[(1, Tier::Main, lossy)]), LIMITS, true).main_kbps, 510);
        let light = Some(LinkReport {
            estimate_kbps: 1000,
            loss: 0.03,
            rtt_ms: 80,
        });
        assert_eq!(
            decide(&viewers(&[(1, Tier::Main, light)]), LIMITS, true).main_kbps,
            850,
            "3 % is repaired, not congestion"
        );
    }

    #[test]
    fn a_viewer_far_below_the_others_moves_to_the_low_tier_and_back() {
        let clean = (1, Tier::Main, report(2500));
        let d = decide(&viewers(&[clean, (2, Tier::Main, report(300))]), LIMITS, true);
        assert_eq!(d.tiers[&2], Tier::Low);
        assert_eq!(d.main_kbps, 1000, "the clean viewer keeps the full rate");
        assert_eq!(d.low_kbps, Some(255));

        // Recovering, but not enough to come back (hysteresis between 0.5 and 0.75 of the best).
        let d = decide(&viewers(&[clean, (2, Tier::Low, report(700))]), LIMITS, true);
        assert_eq!(
            (d.tiers[&2], d.low_kbps),
            (Tier::Low, Some(400)),
            "capped by the low tier's ceiling"
        );
        let d = decide(&viewers(&[clean, (2, Tier::Low, report(900))]), LIMITS, true);
        assert_eq!((d.tiers[&2], d.low_kbps, d.main_kbps), (Tier::Main, None, 765));
    }

    #[test]
    fn without_room_for_a_second_encoding_the_weak_viewer_drags_the_encode() {
        let d = decide(
            &viewers(&[(1, Tier::Main, report(2500)), (2, Tier::Low, report(300))]),
            LIMITS,
            false,
        );
        assert_eq!((d.tiers[&2], d.main_kbps, d.low_kbps), (Tier::Main, 255, None));
    }

    #[test]
    fn the_weakest_low_tier_viewer_sets_its_rate() {
        let d = decide(
            &viewers(&[
                (1, Tier::Main, report(3000)),
                (2, Tier::Low, report(250)),
                (3, Tier::Main, report(400)),
            ]),
            LIMITS,
            true,
        );
        assert_eq!(d.tiers[&3], Tier::Low, "also far below the best");
        assert_eq!(d.low_kbps, Some(212));
        assert_eq!(d.main_kbps, 1000);
    }

    #[test]
    fn small_changes_are_not_worth_an_encoder_reconfiguration() {
        assert!(!worth_changing(1000, 950));
        assert!(worth_changing(1000, 850));
        assert!(worth_changing(300, 1000));
        assert!(worth_changing(0, 150));
    }
}

//! Debouncing udev add/remove bursts. A USB camera brings its capture and metadata nodes
//! together, a flaky cable bounces, a driver rebinds: probing mid-burst sees half a device. So
//! events are collected until the bus has been quiet for a while, then settled per node; a node
//! that came and went inside the window yields nothing. Pure (time is passed in), so tested
//! without udev.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// uvcvideo registers a camera's nodes within a few ms of each other and udev rules take tens of
/// ms more per node; 300 ms of silence means the burst is over without making plugging feel slow.
pub const QUIET: Duration = Duration::from_millis(300);
/// A device that keeps chattering (a bad cable re-enumerating) must not hold back every other
/// node forever: after this long, whatever is pending is settled anyway.
pub const MAX_HOLD: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
}

/// What happened to one node over a settled window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled<K> {
    pub key: K,
    /// A remove was seen: whatever was known at that node is gone (even if it came back).
    pub removed: bool,
    /// The node exists at the end of the window (it should be probed).
    pub present: bool,
}

#[derive(Debug)]
pub struct Debouncer<K> {
    pending: BTreeMap<K, (bool, bool)>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl<K: Ord + Clone> Default for Debouncer<K> {
    fn default() -> Self {
        Self {
            pending: BTreeMap::new(),
            first: None,
            last: None,
        }
    }
}

impl<K: Ord + Clone> Debouncer<K> {
    pub fn push(&mut self, key: K, action: Action, now: Instant) {
        let (removed, present) = self.pending.entry(key).or_insert((false, false));
        match action {
            Action::Add => *present = true,
            Action::Remove => {
                *removed = true;
                *present = false;
            }
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending events settle, if any are pending.
    pub fn deadline(&self) -> Option<Instant> {
        Some((self.last? + QUIET).min(self.first? + MAX_HOLD))
    }

    /// Everything pending, once the deadline has passed; nothing before.
    pub fn take_settled(&mut self, now: Instant) -> Vec<Settled<K>> {
        match self.deadline() {
            Some(deadline) if now >= deadline => {
                self.first = None;
                self.last = None;
                std::mem::take(&mut self.pending)
                    .into_iter()
                    .map(|(key, (removed, present))| Settled { key, removed, present })
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_usb_camera_burst_settles_once_after_quiet() {
        let t0 = Instant::now();
        let mut d = Debouncer::default();
        d.push("video0", Action::Add, t0);
        d.push("video1", Action::Add, t0 + ms(40));
        assert!(d.take_settled(t0 + ms(300)).is_empty(), "only 260 ms of quiet");
        assert_eq!(d.deadline(), Some(t0 + ms(340)));
        let settled = d.take_settled(t0 + ms(340));
        assert_eq!(
            settled,
            vec![
                Settled {
                    key: "video0",
                    removed: false,
                    present: true
                },
                Settled {
                    key: "video1",
                    removed: false,
                    present: true
                }
            ]
        );
        assert_eq!(d.deadline(), None);
        assert!(d.take_settled(t0 + ms(5000)).is_empty());
    }

    #[test]
    fn a_node_that_comes_and_goes_inside_the_window_is_not_present() {
        let t0 = Instant::now();
        let mut d = Debouncer::default();
        d.push("video0", Action::Add, t0);
        d.push("video0", Action::Remove, t0 + ms(100));
        assert_eq!(
            d.take_settled(t0 + ms(400)),
            vec![Settled {
                key: "video0",
                removed: true,
                present: false
            }]
        );
    }

    #[test]
    fn a_fast_replug_is_a_remove_and_a_present_node() {
        let t0 = Instant::now();
        let mut d = Debouncer::default();
        d.push("video0", Action::Remove, t0);
        d.push("video0", Action::Add, t0 + ms(150));
        assert_eq!(
            d.take_settled(t0 + ms(450)),
            vec![Settled {
                key: "video0",
                removed: true,
                present: true
            }]
        );
    }

    #[test]
    fn endless_chatter_is_settled_after_max_hold() {
        let t0 = Instant::now();
        let mut d = Debouncer::default();
        let mut t = t0;
        while t < t0 + MAX_HOLD {
            d.push("video0", Action::Add, t);
            t += ms(100);
        }
        assert_eq!(d.deadline(), Some(t0 + MAX_HOLD));
        assert_eq!(d.take_settled(t0 + MAX_HOLD).len(), 1);
    }
}

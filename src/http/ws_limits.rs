//! What one client may hold of the websocket side: sockets (in total and per address), the rate of
//! `ready` messages and the ICE candidates it sends per viewer (count, size, m-line, syntax). Every limit is a named constant.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::signalling::candidate;

/// Websockets open at once. Each page holds one; a 2-core board streams to a few dozen viewers
/// (bench/), so this is headroom for idle pages while bounding tasks and file descriptors.
pub const MAX_SOCKETS: usize = 128;
/// Websockets per client address: a household or an office behind one NAT opens a few tabs each;
/// more from one address is a tool or a leak, not people watching.
pub const MAX_SOCKETS_PER_CLIENT: usize = 16;

/// `ready` messages a socket may send at once: a page joins every camera when it loads (a device
/// has at most a handful), then retries one at a time with backoff.
pub const READY_BURST: u32 = 32;
/// ... and refilled at this rate: faster than any page's retry backoff, far slower than a flood
/// that would make a camera build and tear down viewer branches all day.
pub const READY_PER_SECOND: u32 = 2;

/// Candidates one browser sends per viewer: a few per network interface and protocol, host, srflx
/// and relay, rarely more than 20.
pub const MAX_CANDIDATES_PER_VIEWER: u32 = 100;
/// One candidate line (RFC 8839) is 100-200 bytes; an IPv6 relay candidate with every extension stays under this.
pub const MAX_CANDIDATE_BYTES: usize = 512;
/// The offer has one m-line (video); candidates for any other index have nowhere to go.
pub const MAX_MLINE_INDEX: u32 = 0;

#[derive(Clone, Default)]
pub struct Sockets {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

pub enum Refused {
    Full,
    TooManyFromClient,
}

/// One socket's place; given back when dropped.
pub struct Slot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    client: IpAddr,
}

impl Sockets {
    /// Websockets open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap().values().sum()
    }

    pub fn admit(&self, client: IpAddr) -> Result<Slot, Refused> {
        let mut open = self.open.lock().unwrap();
        let total: usize = open.values().sum();
        if total >= MAX_SOCKETS {
            return Err(Refused::Full);
        }
        let mine = open.entry(client).or_insert(0);
        if *mine >= MAX_SOCKETS_PER_CLIENT {
            return Err(Refused::TooManyFromClient);
        }
        *mine += 1;
        Ok(Slot {
            open: self.open.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap();
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// A token bucket: `burst` at once, then `per_second` (for `ready` per socket, snapshots per camera).
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self {
            burst: burst.into(),
            per_second: per_second.into(),
            tokens: burst.into(),
            last: Instant::now(),
        }
    }

    pub fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a candidate is refused before it reaches the camera, or `None` if it may go.
pub fn candidate_problem(sent_for_viewer: u32, candidate: &str, mline: u32) -> Option<String> {
    if sent_for_viewer >= MAX_CANDIDATES_PER_VIEWER {
        Some(format!(
            "too many candidates for this viewer (limit {MAX_CANDIDATES_PER_VIEWER}); send ready again to restart"
        ))
    } else if candidate.len() > MAX_CANDIDATE_BYTES {
        Some(format!(
            "candidate too long ({} bytes, limit {MAX_CANDIDATE_BYTES})",
            candidate.len()
        ))
    } else if mline > MAX_MLINE_INDEX {
        Some(format!(
            "sdpMLineIndex {mline} does not exist (the offer has {} m-line)",
            MAX_MLINE_INDEX + 1
        ))
    } else {
        candidate::check(candidate).err()
    }
}

/// How often an idle socket is pinged, and how long it may stay silent (no message, no pong) before
/// it is closed: a page whose laptop went to sleep should not hold a socket and its viewers forever.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_counted_per_client_and_given_back() {
        let s = Sockets::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let slots: Vec<Slot> = (0..MAX_SOCKETS_PER_CLIENT).map(|_| s.admit(a).ok().unwrap()).collect();
        assert!(matches!(s.admit(a), Err(Refused::TooManyFromClient)));
        assert!(s.admit("192.0.2.2".parse().unwrap()).is_ok());
        drop(slots);
        assert!(s.admit(a).is_ok());
    }

    #[test]
    fn sockets_are_bounded_in_total() {
        let s = Sockets::default();
        let slots: Vec<Slot> = (0..MAX_SOCKETS)
            .map(|i| {
                s.admit(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]))
                    .ok()
                    .unwrap()
            })
            .collect();
        assert!(matches!(s.admit("192.0.2.9".parse().unwrap()), Err(Refused::Full)));
        drop(slots);
    }

    #[test]
    fn ready_rate_allows_a_burst_then_the_refill_rate() {
        let mut r = TokenBucket::new(READY_BURST, READY_PER_SECOND);
        let t0 = r.last;
        assert!((0..READY_BURST).all(|_| r.allow_at(t0)));
        assert!(!r.allow_at(t0));
        assert!(r.allow_at(t0 + Duration::from_millis(1000 / u64::from(READY_PER_SECOND))));
        assert!(!r.allow_at(t0 + Duration::from_millis(1000 / u64::from(READY_PER_SECOND))));
    }

    #[test]
    fn candidates() {
        assert!(candidate_problem(0, "candidate:1 1 UDP 1 1.2.3.4 5 typ host", 0).is_none());
        assert!(candidate_problem(MAX_CANDIDATES_PER_VIEWER, "c", 0)
            .unwrap()
            .contains("too many"));
        assert!(candidate_problem(0, &"x".repeat(MAX_CANDIDATE_BYTES + 1), 0)
            .unwrap()
            .contains("too long"));
        assert!(candidate_problem(0, "c", 1).unwrap().contains("sdpMLineIndex 1"));
        assert!(candidate_problem(0, "c", 0)
            .unwrap()
            .contains("starts with \"candidate:\""));
    }
}

//! systemd integration through sd_notify: READY once serving, WATCHDOG pings, STATUS lines.
//! Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

#[derive(Clone, Default)]
pub struct Service {
    ready_sent: Arc<AtomicBool>,
    http_bound: Arc<AtomicBool>,
    devices_scanned: Arc<AtomicBool>,
}

impl Service {
    /// Half the interval systemd expects pings at, as sd_watchdog_enabled(3) advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        let mut usec = 0;
        if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
            Some(Duration::from_micros(usec / 2))
        } else {
            None
        }
    }

    pub fn http_bound(&self) {
        self.http_bound.store(true, Ordering::SeqCst);
        self.maybe_ready();
    }

    /// The first device enumeration is done (or there is none to do).
    pub fn ready(&self) {
        self.devices_scanned.store(true, Ordering::SeqCst);
        self.maybe_ready();
    }

    /// READY=1 only when both the port is bound and the cameras present at start are known, so
    /// `systemctl start` returns with the page reachable and the cameras listed.
    fn maybe_ready(&self) {
        if self.http_bound.load(Ordering::SeqCst)
            && self.devices_scanned.load(Ordering::SeqCst)
            && !self.ready_sent.swap(true, Ordering::SeqCst)
        {
            tracing::info!("ready");
            notify(&[NotifyState::Ready]);
        }
    }

    pub fn watchdog(&self) {
        notify(&[NotifyState::Watchdog]);
    }

    pub fn status(&self, line: &str) {
        notify(&[NotifyState::Status(line)]);
    }

    pub fn stopping(&self) {
        notify(&[NotifyState::Stopping]);
    }
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

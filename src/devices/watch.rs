//! Discovery: cameras present at start, then cameras plugged in and out, as [`DeviceEvent`]s on a
//! tokio channel.
//!
//! One std thread owns the udev monitor (libudev objects are not Send) and waits in poll(2) on it
//! and on a stop socket. The monitor is opened before the existing nodes are listed, so a camera
//! plugged in meanwhile is seen either in the list or as an event (then deduplicated), never
//! lost. It listens to udev events, not kernel ones: udev's come after the rules ran, so
//! permissions, ID_* properties and /dev/v4l links exist by then.
//!
//! Without udevd (containers, this project's dev box: no /run/udev) the nodes present at start
//! are reported and hot-plug is not seen; the log says so once. That keeps a container given
//! `--device /dev/video0` working, where refusing to start would help nobody.

use super::camera::Camera;
use super::debounce::{Action, Debouncer};
use super::node::Node;
use super::report::NodeReport;
use super::udev_props::{from_udev, lookup, props_for_devnode, udevd_running, video_nodes};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    Added(Camera),
    /// `id` is the one sent in `Added`: a remove event no longer carries what the id was made of.
    Removed {
        id: String,
        devnode: PathBuf,
    },
    /// A node that is not a camera (or could not be probed), with the reason.
    Skipped(NodeReport),
    /// Every node present at start has been reported.
    InitialScanDone,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot open the udev monitor for video4linux: {0}")]
    Monitor(#[source] io::Error),
    #[error("cannot create the device watcher's stop socket: {0}")]
    StopSocket(#[source] io::Error),
    #[error("cannot start the device watcher thread: {0}")]
    Thread(#[source] io::Error),
    #[error("the device watcher thread ended while starting")]
    Startup,
}

/// Dropping it stops the watcher thread (and waits for it: at most one probe in progress).
#[derive(Debug)]
pub struct WatchHandle {
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        // closing our end wakes the thread's poll with POLLHUP
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("device watcher thread panicked");
            }
        }
    }
}

/// Starts watching; returns once the udev monitor is open (or known to be unavailable).
pub fn spawn(tx: Sender<DeviceEvent>) -> Result<WatchHandle, WatchError> {
    let (stop, stop_rx) = UnixStream::pair().map_err(WatchError::StopSocket)?;
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("edgecam-devices".into())
        .spawn(move || {
            let monitor = match open_monitor() {
                Ok(monitor) => monitor,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            Watcher::new(tx).run(monitor, &stop_rx);
        })
        .map_err(WatchError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(WatchHandle {
            stop: Some(stop),
            thread: Some(thread),
        }),
        Ok(Err(e)) => Err(WatchError::Monitor(e)),
        Err(_) => Err(WatchError::Startup),
    }
}

fn open_monitor() -> io::Result<Option<udev::MonitorSocket>> {
    if !udevd_running() {
        tracing::warn!(
            "udevd is not running (no /run/udev/control): reporting the cameras present now, hot-plug will not be seen"
        );
        return Ok(None);
    }
    udev::MonitorBuilder::new()?
        .match_subsystem("video4linux")?
        .listen()
        .map(Some)
}

/// v4l2loopback (with exclusive_caps, as webcam emulations use it) says "video output" until a
/// producer streams into it and "video capture" from then on, without any uevent; so its nodes
/// are probed again this often. A QUERYCAP on a handful of nodes is nothing.
const LOOPBACK_RECHECK: Duration = Duration::from_secs(1);
const LOOPBACK_DRIVER: &str = "v4l2 loopback";

struct Watcher {
    tx: Sender<DeviceEvent>,
    /// Nodes reported so far, with the camera id sent for each camera.
    known: HashMap<PathBuf, Option<String>>,
    pending: Debouncer<PathBuf>,
    /// v4l2loopback nodes, and when to probe them again.
    loopbacks: BTreeSet<PathBuf>,
    next_recheck: Instant,
}

/// The receiver is gone: nobody is listening, stop.
struct Closed;

impl Watcher {
    fn new(tx: Sender<DeviceEvent>) -> Self {
        Self {
            tx,
            known: HashMap::new(),
            pending: Debouncer::default(),
            loopbacks: BTreeSet::new(),
            next_recheck: Instant::now() + LOOPBACK_RECHECK,
        }
    }

    fn run(mut self, monitor: Option<udev::MonitorSocket>, stop: &UnixStream) {
        if self.initial_scan(monitor.is_some()).is_err() {
            return;
        }
        loop {
            let recheck = (!self.loopbacks.is_empty()).then_some(self.next_recheck);
            let wake = [self.pending.deadline(), recheck].into_iter().flatten().min();
            let timeout = wake.map(|d| d.saturating_duration_since(Instant::now()));
            let (stop_ready, monitor_ready) =
                match wait(stop.as_raw_fd(), monitor.as_ref().map(|m| m.as_raw_fd()), timeout) {
                    Ok(ready) => ready,
                    Err(e) => {
                        tracing::error!("device watcher: poll failed, hot-plug is no longer seen: {e}");
                        return;
                    }
                };
            if stop_ready {
                return;
            }
            if let (true, Some(monitor)) = (monitor_ready, &monitor) {
                for event in monitor.iter() {
                    let action = match event.event_type() {
                        udev::EventType::Add => Action::Add,
                        udev::EventType::Remove => Action::Remove,
                        _ => continue,
                    };
                    if let Some(devnode) = event.devnode() {
                        tracing::debug!(devnode = %devnode.display(), ?action, "udev event");
                        self.pending.push(devnode.to_path_buf(), action, Instant::now());
                    }
                }
            }
            if self.settle().is_err() || self.recheck_loopbacks().is_err() {
                return;
            }
        }
    }

    fn initial_scan(&mut self, udevd: bool) -> Result<(), Closed> {
        for devnode in video_nodes() {
            let props = match lookup(&devnode) {
                // udev is still working on it (just plugged, or early boot): its add event,
                // with the properties the id needs, is on its way to the monitor
                Some(dev) if udevd && !dev.is_initialized() => continue,
                Some(dev) => from_udev(&dev),
                None => props_for_devnode(&devnode),
            };
            self.report(Node::examine(&devnode, props))?;
        }
        self.send(DeviceEvent::InitialScanDone)
    }

    fn settle(&mut self) -> Result<(), Closed> {
        let settled = self.pending.take_settled(Instant::now());
        for s in settled.iter().filter(|s| s.removed) {
            self.loopbacks.remove(&s.key);
            if let Some(Some(id)) = self.known.remove(&s.key) {
                tracing::info!(%id, devnode = %s.key.display(), "camera gone");
                self.send(DeviceEvent::Removed {
                    id,
                    devnode: s.key.clone(),
                })?;
            }
        }
        for s in settled.into_iter().filter(|s| s.present) {
            // known: an add for a node already reported (a coldplug trigger); gone: its remove
            // is still queued in the socket
            if !self.known.contains_key(&s.key) && s.key.exists() {
                self.report(Node::examine(&s.key, props_for_devnode(&s.key)))?;
            }
        }
        Ok(())
    }

    /// A loopback node that became a camera is added, one that stopped being one is removed.
    fn recheck_loopbacks(&mut self) -> Result<(), Closed> {
        if Instant::now() < self.next_recheck {
            return Ok(());
        }
        self.next_recheck = Instant::now() + LOOPBACK_RECHECK;
        for devnode in self.loopbacks.clone() {
            let node = Node::examine(&devnode, props_for_devnode(&devnode));
            match (self.known.get(&devnode), node.is_camera()) {
                (Some(Some(id)), false) => {
                    let id = id.clone();
                    tracing::info!(%id, devnode = %devnode.display(), "loopback camera lost its producer");
                    self.known.insert(devnode.clone(), None);
                    self.send(DeviceEvent::Removed { id, devnode })?;
                }
                (Some(None), true) => self.report(node)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn report(&mut self, node: Node) -> Result<(), Closed> {
        if node.driver() == LOOPBACK_DRIVER {
            self.loopbacks.insert(node.devnode.clone());
        }
        if node.is_camera() {
            let id = node.id_avoiding(|id| self.known.values().any(|k| k.as_deref() == Some(id)));
            if let Some(camera) = node.camera(id.clone()) {
                tracing::info!(id = %camera.id, devnode = %camera.devnode.display(), name = %camera.name, "camera added");
                self.known.insert(node.devnode.clone(), Some(id));
                return self.send(DeviceEvent::Added(camera));
            }
        }
        let report = node.report(node.id());
        tracing::info!(devnode = %report.devnode.display(), why = report.why.as_deref().unwrap_or(""), "V4L2 node skipped");
        self.known.insert(node.devnode.clone(), None);
        self.send(DeviceEvent::Skipped(report))
    }

    fn send(&self, event: DeviceEvent) -> Result<(), Closed> {
        self.tx.blocking_send(event).map_err(|_| Closed)
    }
}

/// poll(2) on the stop socket and the monitor; which of them are ready. `None` waits forever.
fn wait(stop: RawFd, monitor: Option<RawFd>, timeout: Option<Duration>) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
        // a negative fd is ignored by poll: no monitor without udevd
        libc::pollfd {
            fd: monitor.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // round up: waking a millisecond early would only poll again
    let timeout_ms = timeout.map_or(-1, |t| i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX));
    loop {
        // SAFETY: fds is a valid array of pollfd for the duration of the call, its length passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n >= 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok((fds[0].revents != 0, fds[1].revents != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_udev_it_reports_what_is_there_then_stops_on_drop() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let handle = spawn(tx).expect("spawn");
        // this box may or may not have video nodes; the scan always ends with InitialScanDone
        loop {
            match rx.recv().await {
                Some(DeviceEvent::InitialScanDone) => break,
                Some(_) => continue,
                None => panic!("channel closed before InitialScanDone"),
            }
        }
        drop(handle);
        assert!(rx.recv().await.is_none(), "the thread dropped its sender");
    }

    #[test]
    fn wait_wakes_on_the_stop_socket_closing() {
        let (stop, stop_rx) = UnixStream::pair().expect("pair");
        drop(stop);
        let (stop_ready, monitor_ready) = wait(stop_rx.as_raw_fd(), None, None).expect("poll");
        assert!(stop_ready && !monitor_ready);
    }

    #[test]
    fn wait_times_out() {
        let (_stop, stop_rx) = UnixStream::pair().expect("pair");
        let ready = wait(stop_rx.as_raw_fd(), None, Some(Duration::from_millis(5))).expect("poll");
        assert_eq!(ready, (false, false));
    }
}

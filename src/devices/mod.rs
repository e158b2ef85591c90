//! Cameras as hardware: discovery (udev), capabilities (V4L2), identity and mode choice.
//!
//! The public API is re-exported here: [`spawn`] a watcher for [`DeviceEvent`]s, [`scan`] for
//! `edgecam probe`, [`choose_mode`] / [`choose_passthrough_mode`] for a camera's capture mode.

pub mod bus;
pub mod caps;
pub mod classify;
mod debounce;
pub mod identity;
pub mod mode;
mod node;
pub mod probe;
pub mod report;
pub mod udev_props;
pub mod watch;

#[cfg(test)]
mod fixture;

pub use bus::Bus;
pub use caps::{CaptureMode, FormatCaps, Fraction, FrameIntervals, FrameSizes, PixelFormat, SizeCaps};
pub use classify::{classify, NodeKind, Querycap, SkipReason};
pub use identity::{camera_id, camera_name, DeviceProps};
pub use mode::{choose_mode, choose_passthrough_mode, Wanted};
pub use probe::{probe_node, NodeInfo, ProbeError};
pub use report::{printable, render_table, scan, NodeReport};
pub use watch::{spawn, Camera, DeviceEvent, WatchError, WatchHandle};

//! Cameras as hardware: discovery (udev), capabilities (V4L2), identity and mode choice.
//!
//! Layered bottom up, with no cycles: plain data (`caps`, `bus`, `classify`, `identity`, `camera`,
//! `report`), then the V4L2 ioctls (`probe`) and udev lookups (`udev_props`), then one node examined
//! (`node`), then its two users: the one-off [`scan`] for `edgecam probe` and the hot-plug watcher
//! ([`spawn`], [`DeviceEvent`]s). [`choose_mode`] picks a camera's capture mode from its formats.

pub(crate) mod bus;
mod camera;
pub(crate) mod caps;
mod classify;
mod debounce;
mod identity;
pub(crate) mod mode;
mod node;
mod probe;
mod report;
mod scan;
mod udev_props;
pub(crate) mod watch;

#[cfg(test)]
pub(crate) mod fixture;

pub use camera::Camera;
pub use classify::NodeKind;
pub use report::{printable, render_table, NodeReport};
pub use scan::scan;
pub use watch::{spawn, DeviceEvent, WatchError, WatchHandle};

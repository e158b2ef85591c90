//! A V4L2 node that is a camera, as discovery hands it to the supervisor: plain data, at the bottom
//! of `devices` so the node examination, the watcher and the scan can all name it.

use super::bus::Bus;
use super::caps::FormatCaps;
use serde::Serialize;
use std::path::PathBuf;

/// A V4L2 capture node that is a camera.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Camera {
    /// Stable id (see `identity::camera_id`).
    pub id: String,
    pub name: String,
    pub devnode: PathBuf,
    pub syspath: PathBuf,
    pub bus: Bus,
    pub serial: Option<String>,
    /// /dev/v4l/by-id/... and /dev/v4l/by-path/... links, for config entries that pin a path.
    pub links: Vec<PathBuf>,
    pub formats: Vec<FormatCaps>,
}

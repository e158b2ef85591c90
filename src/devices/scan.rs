//! Every /dev/video* node examined once, now: what `edgecam probe` lists. The watcher does the same
//! per node as they come and go; both go through [`Node`], so they agree on ids and on what is a camera.

use super::node::Node;
use super::report::NodeReport;
use super::udev_props::{props_for_devnode, video_nodes};
use std::collections::HashSet;

/// Probes every /dev/video* node now.
pub fn scan() -> Vec<NodeReport> {
    let mut ids = HashSet::new();
    video_nodes()
        .iter()
        .map(|devnode| {
            let node = Node::examine(devnode, props_for_devnode(devnode));
            let id = if node.is_camera() {
                node.id_avoiding(|id| ids.contains(id))
            } else {
                node.id()
            };
            if node.is_camera() {
                ids.insert(id.clone());
            }
            node.report(id)
        })
        .collect()
}

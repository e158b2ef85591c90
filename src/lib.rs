//! edgecam: every camera on an edge device, watchable in a browser over WebRTC.
//!
//! Organised by feature: `devices` (udev, V4L2), `encoders` (YAML profiles), `media` (all GStreamer),
//! `signalling` (the websocket protocol), `http` (the routes: websocket, API, web page), `push` (WHIP
//! to a media server); `planner`
//! decides each camera's mode and encoders; `supervisor` and `camera` tie them together as actors.
//! Modules are public only where the `edgecam` binary uses them.

pub mod camera;
pub mod config;
pub mod devices;
pub mod encoders;
#[cfg(test)]
mod fuzz;
pub mod http;
pub mod media;
mod planner;
pub mod probe_output;
mod push;
pub mod service;
mod signalling;
pub mod supervisor;

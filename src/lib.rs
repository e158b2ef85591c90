//! edgecam: every camera on an edge device, watchable in a browser over WebRTC.
//!
//! Organised by feature: `devices` (udev, V4L2), `encoders` (YAML profiles), `media` (all GStreamer),
//! `signalling` (the websocket protocol), `http` (the routes: websocket, API, web page); `supervisor` and `camera` tie them together as actors.

pub mod camera;
pub mod config;
pub mod devices;
pub mod encoders;
pub mod http;
pub mod media;
pub mod planner;
pub mod probe_output;
pub mod registry;
pub mod service;
pub mod signalling;
pub mod supervisor;

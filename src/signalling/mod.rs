//! The signalling protocol as plain data: what travels over the websocket, with no I/O and no
//! GStreamer, so it is tested on its own. The transports that speak it live in `http`.

pub mod candidate;
pub mod protocol;

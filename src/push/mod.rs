//! Pushing cameras to media servers, so that any number of viewers can watch through the server
//! while the device pays for one session. The camera treats its push as one more viewer
//! (`camera::lifecycle` joins it by itself, retries it with backoff and reports its state); this
//! module is that viewer's transport, WHIP (RFC 9725), as `http::whep` is the WHEP viewers'.

mod whip;

pub use whip::Pusher;

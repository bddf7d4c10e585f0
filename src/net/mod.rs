//! Sockets: opening listeners (before the runtime exists, so the master can
//! bind before forking) and the stream sockets connections are served on.

pub mod listen;
pub mod socket;

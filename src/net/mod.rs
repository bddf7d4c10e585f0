//! Sockets: opening listeners (before the runtime exists, so the master can
//! bind before forking), the stream sockets connections are served on, and
//! which peers a gateway listener accepts.

pub mod allow;
pub mod listen;
pub mod socket;
pub mod tls;

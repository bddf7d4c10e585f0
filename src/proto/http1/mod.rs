//! HTTP/1.0 and HTTP/1.1 (RFC 9112): pure parsing and encoding, no I/O.

pub mod chunked;
pub mod head;
pub mod response;

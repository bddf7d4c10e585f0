//! HTTP/1.0 and HTTP/1.1: pure parsing and encoding, no I/O.

pub mod body;
pub mod chars;
pub mod chunked;
pub mod head;
pub mod response;

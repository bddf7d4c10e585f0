//! Pure protocol code: bytes and limits in, values or typed errors out.
//! Nothing here touches sockets, tokio or Python, so every parser is
//! tested with byte strings, fed whole and in pieces, and can be fuzzed.
//!
//! `request` is the request head every front end produces; `error` the one
//! table from a client's mistake to its status; `app_head` what the
//! application gave `start_response`; `body` and `response` the
//! protocol-neutral body decoder and response framer; `chars` the token
//! rules of HTTP semantics (RFC 9110); one folder per wire protocol.

pub mod app_head;
pub mod body;
pub mod cgi;
pub mod chars;
pub mod error;
pub mod fastcgi;
pub mod forwarded;
pub mod http1;
pub mod http2;
pub mod proxy_protocol;
pub mod request;
pub mod response;
pub mod scgi;
pub mod static_file;
pub mod uwsgi;

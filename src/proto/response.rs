//! The framer that turns a response as the application gave it
//! (`AppHead`, then body pieces) into a protocol's bytes. The exchange and
//! the WSGI bridge speak only to `ResponseFramer`; each protocol adds a
//! variant with its own encoder.

use crate::proto::app_head::AppHead;
use crate::proto::fastcgi::FastCgiEncoder;
use crate::proto::http1::response::ResponseEncoder;

/// One response's framing, for the protocol the request came by: it writes
/// the head once, frames each piece of body, cuts output past a declared
/// Content-Length, writes the error response that replaces an unstarted
/// one, and decides whether the connection can carry another request.
/// An enum rather than a trait object: every call on the per-request path
/// is a direct, inlinable call.
#[derive(Debug, Clone)]
pub enum ResponseFramer {
    /// The encoder's bytes go on the connection as they are: HTTP/1.x to a
    /// client (RFC 9112), raw HTTP to a uwsgi gateway, a CGI-style response
    /// to an SCGI one (`HeadStyle`).
    Direct(ResponseEncoder),
    /// A CGI-style response carried in a FastCGI request's STDOUT records.
    FastCgi(FastCgiEncoder),
}

impl ResponseFramer {
    pub fn head_sent(&self) -> bool {
        match self {
            ResponseFramer::Direct(e) => e.head_sent(),
            ResponseFramer::FastCgi(e) => e.head_sent(),
        }
    }

    /// The status sent, for the access log (0 before the head).
    pub fn status(&self) -> u16 {
        match self {
            ResponseFramer::Direct(e) => e.status,
            ResponseFramer::FastCgi(e) => e.status(),
        }
    }

    /// Body bytes sent, after framing decisions and before chunk overhead.
    pub fn body_bytes(&self) -> u64 {
        match self {
            ResponseFramer::Direct(e) => e.body_bytes,
            ResponseFramer::FastCgi(e) => e.body_bytes(),
        }
    }

    /// Whether the connection may carry another request afterwards.
    pub fn keep_alive(&self) -> bool {
        match self {
            ResponseFramer::Direct(e) => e.keep_alive,
            ResponseFramer::FastCgi(e) => e.keep_alive(),
        }
    }

    /// Writes the head; `known_length` is the whole body's length when it
    /// is known before the head goes out.
    pub fn start(&mut self, out: &mut Vec<u8>, app: &AppHead, known_length: Option<u64>) {
        match self {
            ResponseFramer::Direct(e) => e.start(out, app, known_length),
            ResponseFramer::FastCgi(e) => e.start(out, app, known_length),
        }
    }

    /// Writes what precedes a piece of at most `len` body bytes; returns
    /// how many of them to send (fewer when the protocol's pieces are
    /// bounded or the body is cut at its Content-Length; 0 for none).
    pub fn piece_start(&mut self, out: &mut Vec<u8>, len: u64) -> u64 {
        match self {
            ResponseFramer::Direct(e) => e.piece_start(out, len),
            ResponseFramer::FastCgi(e) => e.piece_start(out, len),
        }
    }

    /// Ends a piece of `n` body bytes begun with `piece_start`.
    pub fn piece_end(&mut self, out: &mut Vec<u8>, n: u64) {
        match self {
            ResponseFramer::Direct(e) => e.piece_end(out, n),
            ResponseFramer::FastCgi(_) => {}
        }
    }

    /// Frames body bytes into `out`.
    pub fn body(&mut self, out: &mut Vec<u8>, data: &[u8]) {
        match self {
            ResponseFramer::Direct(e) => e.body(out, data),
            ResponseFramer::FastCgi(e) => e.body(out, data),
        }
    }

    /// Ends the body.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            ResponseFramer::Direct(e) => e.finish(out),
            ResponseFramer::FastCgi(e) => e.finish(out),
        }
    }

    /// Writes a complete error response in place of one not yet started,
    /// and closes the connection afterwards.
    pub fn error(&mut self, out: &mut Vec<u8>, status: u16, phrase: &str) {
        match self {
            ResponseFramer::Direct(e) => e.error(out, status, phrase),
            ResponseFramer::FastCgi(e) => e.error(out, status, phrase),
        }
    }

    /// Whether a body may go out as raw bytes from a file (sendfile(2)):
    /// not inside FastCGI records.
    pub fn allows_sendfile(&self) -> bool {
        matches!(self, ResponseFramer::Direct(_))
    }

    /// The bytes that tell a client waiting on `Expect: 100-continue` to
    /// send its body.
    pub fn continue_bytes(&self) -> &'static [u8] {
        match self {
            ResponseFramer::Direct(e) => e.continue_bytes(),
            // A gateway answers Expect: 100-continue itself.
            ResponseFramer::FastCgi(_) => b"",
        }
    }
}

//! HTTP/1.1 response framing (RFC 9112 §6, §7; RFC 9110 §6.4.1). Pure: the
//! caller supplies what the application said, this decides how the body is
//! delimited and writes the bytes of the head and of each chunk.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::proto::app_head::AppHead;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// 1xx, 204, 304 and responses to HEAD carry no body (RFC 9110 §6.4.1).
    NoBody,
    /// Content-Length: exactly this many bytes.
    Length(u64),
    /// Transfer-Encoding: chunked (HTTP/1.1 only).
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0, length unknown).
    UntilClose,
}

/// What the server knows about a response when its head goes out.
#[derive(Debug, Clone, Copy)]
pub struct ResponseShape {
    pub status: u16,
    pub minor_version: u8,
    pub is_head: bool,
    /// The Content-Length the application declared, if any.
    pub declared_length: Option<u64>,
    /// The whole body's length when every chunk was in hand before the head
    /// went out (a list result, or an iterator that ended).
    pub known_length: Option<u64>,
}

/// Whether a status forbids a body (RFC 9110 §6.4.1, §15.3.5, §15.4.5).
pub fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

impl ResponseShape {
    /// Chooses the framing, and whether the server adds a Content-Length
    /// header of its own.
    pub fn framing(&self) -> (ResponseFraming, Option<u64>) {
        if status_has_no_body(self.status) {
            return (ResponseFraming::NoBody, None);
        }
        let added = match (self.declared_length, self.known_length) {
            (None, Some(n)) => Some(n),
            _ => None,
        };
        if self.is_head {
            return (ResponseFraming::NoBody, added);
        }
        match (self.declared_length, self.known_length) {
            (Some(n), _) | (None, Some(n)) => (ResponseFraming::Length(n), added),
            (None, None) if self.minor_version >= 1 => (ResponseFraming::Chunked, None),
            (None, None) => (ResponseFraming::UntilClose, None),
        }
    }
}

/// Writes a response head.
///
/// `app_fields` holds the application's header fields already validated and
/// encoded as `Name: value\r\n` lines; `has_date`/`has_server` say whether
/// they include those two, so the server's own are not sent twice.
#[allow(clippy::too_many_arguments)]
pub fn write_head(
    out: &mut Vec<u8>,
    minor_version: u8,
    status_line: &[u8],
    app_fields: &[u8],
    has_date: bool,
    has_server: bool,
    framing: ResponseFraming,
    added_length: Option<u64>,
    keep_alive: bool,
) {
    out.extend_from_slice(if minor_version == 0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(app_fields);
    if !has_server {
        out.extend_from_slice(b"Server: ferrule\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"Date: ");
        with_http_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = added_length {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, n);
        out.extend_from_slice(b"\r\n");
    }
    if framing == ResponseFraming::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if minor_version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response head starts, for the peer that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadStyle {
    /// A client over HTTP/1.x: a status line, and the server's own Date,
    /// Server and Connection fields.
    Http,
    /// A gateway that reads raw HTTP (uwsgi): a status line and the
    /// application's fields only; the gateway writes its own Date and
    /// Server and delimits the body for its client.
    GatewayHttp,
    /// A gateway that reads CGI responses (RFC 3875 §6.3: SCGI, FastCGI,
    /// CGI): a `Status:` field in place of the status line, then the
    /// application's fields only.
    Cgi,
}

/// Writes a response head for a gateway (`HeadStyle::GatewayHttp` or
/// `Cgi`): the status after `prefix`, the application's fields, and the
/// Content-Length the server computed, if any.
fn write_gateway_head(
    out: &mut Vec<u8>,
    prefix: &[u8],
    status_line: &[u8],
    app_fields: &[u8],
    added_length: Option<u64>,
) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(app_fields);
    if let Some(n) = added_length {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, n);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The header fields of a response the server writes itself: a 503 (an
/// overloaded server) says when to try again (RFC 9110 §10.2.3).
fn error_fields(status: u16) -> &'static [u8] {
    if status == 503 {
        b"Content-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
    } else {
        b"Content-Type: text/plain; charset=utf-8\r\n"
    }
}

/// A complete plain-text response for a request the server refuses itself
/// (a malformed request, an application error before any output).
pub fn write_error_response(
    out: &mut Vec<u8>,
    status: u16,
    phrase: &str,
    minor_version: u8,
    keep_alive: bool,
) {
    let body = format!("{status} {phrase}\n");
    let status_line = format!("{status} {phrase}");
    let fields = error_fields(status);
    write_head(
        out,
        minor_version,
        status_line.as_bytes(),
        fields,
        false,
        false,
        ResponseFraming::Length(body.len() as u64),
        Some(body.len() as u64),
        keep_alive,
    );
    out.extend_from_slice(body.as_bytes());
}

/// The state of one response on an HTTP/1.x connection: it writes the head
/// once, frames each piece of body, cuts output past a declared
/// Content-Length, and decides whether the connection can be reused.
#[derive(Debug, Clone)]
pub struct ResponseEncoder {
    minor_version: u8,
    style: HeadStyle,
    is_head: bool,
    framing: ResponseFraming,
    head_sent: bool,
    /// Body bytes still allowed under Content-Length.
    remaining: u64,
    /// The status sent, for the access log.
    pub status: u16,
    /// Body bytes sent (after framing decisions, before chunk overhead).
    pub body_bytes: u64,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
    /// Set when the application wrote more than its Content-Length.
    pub overflowed: bool,
}

impl ResponseEncoder {
    pub fn new(minor_version: u8, is_head: bool, keep_alive: bool) -> Self {
        ResponseEncoder {
            minor_version,
            style: HeadStyle::Http,
            is_head,
            framing: ResponseFraming::NoBody,
            head_sent: false,
            remaining: 0,
            status: 0,
            body_bytes: 0,
            keep_alive,
            overflowed: false,
        }
    }

    /// An encoder of responses to a gateway (`HeadStyle::GatewayHttp` or
    /// `Cgi`): the body delimited by its length or by the end of the
    /// stream, never chunked, one response per connection (or per FastCGI
    /// request).
    pub fn gateway(style: HeadStyle, is_head: bool) -> Self {
        ResponseEncoder {
            style,
            ..ResponseEncoder::new(0, is_head, false)
        }
    }

    pub fn head_sent(&self) -> bool {
        self.head_sent
    }

    pub fn framing(&self) -> ResponseFraming {
        self.framing
    }

    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// Writes the head. `known_length` is the whole body's length when it is
    /// known before the head goes out.
    pub fn start(&mut self, out: &mut Vec<u8>, app: &AppHead, known_length: Option<u64>) {
        debug_assert!(!self.head_sent);
        let shape = ResponseShape {
            status: app.status,
            minor_version: self.minor_version,
            is_head: self.is_head,
            declared_length: app.declared_length,
            known_length,
        };
        let (framing, added) = shape.framing();
        self.framing = framing;
        if framing == ResponseFraming::UntilClose {
            self.keep_alive = false;
        }
        self.remaining = match framing {
            ResponseFraming::Length(n) => n,
            _ => 0,
        };
        self.status = app.status;
        self.head_sent = true;
        match self.style {
            HeadStyle::Http => {}
            HeadStyle::GatewayHttp => {
                let prefix = b"HTTP/1.1 ";
                return write_gateway_head(out, prefix, app.status_line(), app.fields(), added);
            }
            HeadStyle::Cgi => {
                let prefix = b"Status: ";
                return write_gateway_head(out, prefix, app.status_line(), app.fields(), added);
            }
        }
        write_head(
            out,
            self.minor_version,
            app.status_line(),
            app.fields(),
            app.has_date,
            app.has_server,
            framing,
            added,
            self.keep_alive,
        );
    }

    /// Starts a piece of `len` body bytes: writes what precedes it (a chunk
    /// size line) and returns how many of its bytes to send. Past a declared
    /// length the rest is cut, and the connection closed afterwards, since
    /// the application's idea of the body and the client's now differ.
    pub fn piece_start(&mut self, out: &mut Vec<u8>, len: u64) -> u64 {
        let n = match self.framing {
            ResponseFraming::NoBody => 0,
            ResponseFraming::Length(_) => {
                let n = len.min(self.remaining);
                self.remaining -= n;
                if n < len {
                    self.overflowed = true;
                }
                n
            }
            ResponseFraming::Chunked | ResponseFraming::UntilClose => len,
        };
        if self.framing == ResponseFraming::Chunked && n > 0 {
            push_hex(out, n);
            out.extend_from_slice(b"\r\n");
        }
        self.body_bytes += n;
        n
    }

    /// Ends a piece of `n` body bytes begun with `piece_start`.
    pub fn piece_end(&mut self, out: &mut Vec<u8>, n: u64) {
        if self.framing == ResponseFraming::Chunked && n > 0 {
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Frames body bytes into `out`.
    pub fn body(&mut self, out: &mut Vec<u8>, data: &[u8]) {
        let n = self.piece_start(out, data.len() as u64);
        out.extend_from_slice(&data[..n as usize]);
        self.piece_end(out, n);
    }

    /// Replaces the response with a complete error response that closes
    /// the connection (an application failure before any output, or the
    /// client error its body earned).
    pub fn error(&mut self, out: &mut Vec<u8>, status: u16, phrase: &str) {
        let prefix: &[u8] = match self.style {
            HeadStyle::Http => {
                write_error_response(out, status, phrase, self.minor_version, false);
                self.status = status;
                self.keep_alive = false;
                return;
            }
            HeadStyle::GatewayHttp => b"HTTP/1.1 ",
            HeadStyle::Cgi => b"Status: ",
        };
        let body = format!("{status} {phrase}\n");
        let status_line = format!("{status} {phrase}");
        write_gateway_head(
            out,
            prefix,
            status_line.as_bytes(),
            error_fields(status),
            Some(body.len() as u64),
        );
        out.extend_from_slice(body.as_bytes());
        self.status = status;
        self.keep_alive = false;
    }

    /// The interim response that tells a client waiting on
    /// `Expect: 100-continue` to send its body (RFC 9110 §10.1.1).
    pub fn continue_bytes(&self) -> &'static [u8] {
        b"HTTP/1.1 100 Continue\r\n\r\n"
    }

    /// Ends the body. A body shorter than its Content-Length cannot be
    /// completed honestly, so the connection is closed to tell the client.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self.framing {
            ResponseFraming::Chunked => out.extend_from_slice(LAST_CHUNK),
            ResponseFraming::Length(_) if self.remaining > 0 => self.keep_alive = false,
            _ => {}
        }
        if self.overflowed {
            self.keep_alive = false;
        }
    }
}

thread_local! {
    /// The Date value changes once a second; each thread formats it once a
    /// second instead of once per response.
    static DATE_CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Calls `f` with the current IMF-fixdate (RFC 9110 §5.6.7).
pub fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            let text = httpdate::fmt_http_date(now);
            cache.1.copy_from_slice(&text.as_bytes()[..29]);
            cache.0 = secs;
        }
        f(&cache.1)
    })
}

/// Appends `n` in decimal digits (a Content-Length value). By hand: the
/// formatting machinery cost about 250 instructions a number.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `n` in lowercase hexadecimal digits (a chunk size, RFC 9112
/// §7.1), by hand for the same reason as `push_decimal`.
fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(status: u16, declared: Option<u64>, known: Option<u64>) -> ResponseShape {
        ResponseShape {
            status,
            minor_version: 1,
            is_head: false,
            declared_length: declared,
            known_length: known,
        }
    }

    #[test]
    fn framing_choices() {
        assert_eq!(
            shape(200, Some(5), None).framing(),
            (ResponseFraming::Length(5), None)
        );
        assert_eq!(
            shape(200, None, Some(5)).framing(),
            (ResponseFraming::Length(5), Some(5))
        );
        assert_eq!(
            shape(200, Some(5), Some(3)).framing(),
            (ResponseFraming::Length(5), None)
        );
        assert_eq!(
            shape(200, None, None).framing(),
            (ResponseFraming::Chunked, None)
        );
        assert_eq!(
            shape(204, None, Some(0)).framing(),
            (ResponseFraming::NoBody, None)
        );
        assert_eq!(
            shape(304, Some(9), None).framing(),
            (ResponseFraming::NoBody, None)
        );
        assert_eq!(
            shape(101, None, None).framing(),
            (ResponseFraming::NoBody, None)
        );
        let http10 = ResponseShape {
            minor_version: 0,
            ..shape(200, None, None)
        };
        assert_eq!(http10.framing(), (ResponseFraming::UntilClose, None));
        let head = ResponseShape {
            is_head: true,
            ..shape(200, None, Some(13))
        };
        assert_eq!(head.framing(), (ResponseFraming::NoBody, Some(13)));
    }

    #[test]
    fn head_bytes() {
        let mut out = Vec::new();
        write_head(
            &mut out,
            1,
            b"200 OK",
            b"X-A: 1\r\n",
            true,
            false,
            ResponseFraming::Chunked,
            None,
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nServer: ferrule\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        write_head(
            &mut out,
            0,
            b"200 OK",
            b"",
            true,
            true,
            ResponseFraming::Length(3),
            Some(3),
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n"
        );
        let mut out = Vec::new();
        write_head(
            &mut out,
            1,
            b"404 Nope",
            b"",
            true,
            true,
            ResponseFraming::UntilClose,
            None,
            false,
        );
        assert_eq!(out, b"HTTP/1.1 404 Nope\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn chunks() {
        let mut enc = ResponseEncoder::new(1, false, true);
        let mut out = Vec::new();
        enc.start(&mut out, &app_head(200, None), None);
        out.clear();
        enc.body(&mut out, b"");
        enc.body(&mut out, &[b'a'; 26]);
        enc.finish(&mut out);
        let mut expected = b"1a\r\n".to_vec();
        expected.extend_from_slice(&[b'a'; 26]);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn date_is_imf_fixdate() {
        with_http_date(|d| {
            let s = std::str::from_utf8(d).unwrap();
            assert!(s.ends_with(" GMT"), "{s}");
            assert_eq!(s.len(), 29);
        });
    }

    fn app_head(status: u16, declared: Option<u64>) -> AppHead {
        AppHead {
            status,
            bytes: format!("{status} X").into_bytes(),
            status_len: 5,
            declared_length: declared,
            has_date: true,
            has_server: true,
        }
    }

    #[test]
    fn encoder_cuts_past_declared_length() {
        let mut enc = ResponseEncoder::new(1, false, true);
        let mut out = Vec::new();
        enc.start(&mut out, &app_head(200, Some(3)), None);
        out.clear();
        enc.body(&mut out, b"ab");
        enc.body(&mut out, b"cd");
        enc.finish(&mut out);
        assert_eq!(out, b"abc");
        assert!(!enc.keep_alive);
    }

    #[test]
    fn encoder_closes_when_short_of_declared_length() {
        let mut enc = ResponseEncoder::new(1, false, true);
        let mut out = Vec::new();
        enc.start(&mut out, &app_head(200, Some(3)), None);
        enc.body(&mut out, b"ab");
        enc.finish(&mut out);
        assert!(!enc.keep_alive);
    }

    #[test]
    fn encoder_chunks_unknown_length() {
        let mut enc = ResponseEncoder::new(1, false, true);
        let mut out = Vec::new();
        enc.start(&mut out, &app_head(200, None), None);
        out.clear();
        enc.body(&mut out, b"abc");
        enc.finish(&mut out);
        assert_eq!(out, b"3\r\nabc\r\n0\r\n\r\n");
        assert!(enc.keep_alive);
        assert_eq!(enc.body_bytes, 3);
    }

    #[test]
    fn encoder_drops_body_of_head_and_304() {
        for (is_head, status) in [(true, 200), (false, 304), (false, 204)] {
            let mut enc = ResponseEncoder::new(1, is_head, true);
            let mut out = Vec::new();
            enc.start(&mut out, &app_head(status, None), Some(3));
            out.clear();
            enc.body(&mut out, b"abc");
            enc.finish(&mut out);
            assert!(out.is_empty());
            assert!(enc.keep_alive);
        }
    }

    #[test]
    fn numbers_are_written_by_hand() {
        for n in [0u64, 1, 9, 10, 15, 16, 255, 4096, 1 << 40, u64::MAX] {
            let (mut dec, mut hex) = (Vec::new(), Vec::new());
            super::push_decimal(&mut dec, n);
            super::push_hex(&mut hex, n);
            assert_eq!(dec, n.to_string().into_bytes());
            assert_eq!(hex, format!("{n:x}").into_bytes());
        }
    }

    #[test]
    fn cgi_style_responses() {
        let mut e = ResponseEncoder::gateway(HeadStyle::Cgi, false);
        let mut out = Vec::new();
        e.start(&mut out, &app_head(200, None), None);
        e.body(&mut out, b"abc");
        e.finish(&mut out);
        assert_eq!(out, b"Status: 200 X\r\n\r\nabc");
        assert!(!e.keep_alive);

        let mut e = ResponseEncoder::gateway(HeadStyle::Cgi, false);
        let mut out = Vec::new();
        e.start(&mut out, &app_head(200, None), Some(3));
        assert_eq!(out, b"Status: 200 X\r\nContent-Length: 3\r\n\r\n");

        let mut e = ResponseEncoder::gateway(HeadStyle::Cgi, true);
        let mut out = Vec::new();
        e.start(&mut out, &app_head(200, Some(5)), None);
        e.body(&mut out, b"hello");
        assert_eq!(out, b"Status: 200 X\r\n\r\n", "no body for HEAD");

        let mut e = ResponseEncoder::gateway(HeadStyle::Cgi, false);
        let mut out = Vec::new();
        e.error(&mut out, 500, "Internal Server Error");
        assert!(out.starts_with(b"Status: 500 Internal Server Error\r\n"));
        assert!(out.ends_with(b"\r\n\r\n500 Internal Server Error\n"));

        let mut e = ResponseEncoder::gateway(HeadStyle::GatewayHttp, false);
        let mut out = Vec::new();
        e.start(&mut out, &app_head(404, None), Some(2));
        e.body(&mut out, b"no");
        e.finish(&mut out);
        assert_eq!(out, b"HTTP/1.1 404 X\r\nContent-Length: 2\r\n\r\nno");
    }
}

//! The request head every front-end produces and the one environ builder
//! consumes. Fields are spans into one owned buffer, so parsing a head costs
//! one copy and no allocation per header.

use std::fmt;
use std::ops::Range;

/// The limits a request head is held to; each one is a setting.
#[derive(Debug, Clone)]
pub struct HeadLimits {
    /// Longest request line, in bytes, without its CRLF (414 past it).
    pub max_request_line: usize,
    /// Most header fields (431 past it).
    pub max_fields: usize,
    /// Longest header field, name plus value, in bytes (431 past it).
    pub max_field_size: usize,
    /// Longest whole head, request line and fields, in bytes (431 past it).
    pub max_head_size: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_request_line: 8190,
            max_fields: 100,
            max_field_size: 8190,
            max_head_size: 65536,
        }
    }
}

/// How the request body is delimited (RFC 9112 §6; FastCGI's records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: no Content-Length (or 0) and no Transfer-Encoding.
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`; the length is known at the last chunk.
    Chunked,
    /// The STDIN records of this FastCGI request, to the empty one.
    FastCgiStdin { request_id: u16 },
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The head's bytes; every span below indexes into it.
    pub buf: Vec<u8>,
    pub method: Range<usize>,
    /// The request target exactly as sent (RAW_URI / REQUEST_URI).
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (and HTTP/2).
    pub minor_version: u8,
    /// 1 for HTTP/1.x, 2 for HTTP/2.
    pub major_version: u8,
    /// Header fields in the order received, values trimmed of OWS.
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    pub framing: BodyFraming,
    /// Whether the client allows the connection to stay open afterwards.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1: answered on the first body read.
    pub expect_continue: bool,
    /// The Host header value, or the authority of an absolute-form target.
    pub host: Option<Range<usize>>,
    /// The path part of the target, still percent-encoded; from a gateway,
    /// its PATH_INFO, already decoded.
    pub path: Range<usize>,
    /// The query part of the target, without the '?'.
    pub query: Option<Range<usize>>,
    /// The request carries a field by which a proxy tells of the client
    /// (X-Forwarded-*, Forwarded: `forwarded::is_marked_name`); the environ
    /// builder reads them from trusted peers only.
    pub proxy_fields: bool,
    /// The CGI variables a gateway sent (uwsgi, FastCGI, SCGI, CGI), in the
    /// order received; empty for HTTP. When there are any, the environ is
    /// built from them (`wsgi::environ`), not from the fields above.
    pub cgi: Vec<(Range<usize>, Range<usize>)>,
}

impl RequestHead {
    pub fn method(&self) -> &[u8] {
        &self.buf[self.method.clone()]
    }

    pub fn target(&self) -> &[u8] {
        &self.buf[self.target.clone()]
    }

    pub fn path(&self) -> &[u8] {
        &self.buf[self.path.clone()]
    }

    pub fn query(&self) -> Option<&[u8]> {
        self.query.clone().map(|q| &self.buf[q])
    }

    pub fn host(&self) -> Option<&[u8]> {
        self.host.clone().map(|h| &self.buf[h])
    }

    pub fn protocol(&self) -> &'static str {
        if self.major_version == 2 {
            "HTTP/2"
        } else if self.minor_version == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
    }

    pub fn is_head(&self) -> bool {
        self.method() == b"HEAD"
    }

    /// Header fields as (name, value) byte slices, in the order received.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (&self.buf[n.clone()], &self.buf[v.clone()]))
    }

    /// The CGI variables a gateway sent, as (name, value) byte slices.
    pub fn cgi_vars(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.cgi
            .iter()
            .map(|(n, v)| (&self.buf[n.clone()], &self.buf[v.clone()]))
    }

    /// The last value a gateway sent for the CGI variable `name`.
    pub fn cgi_var(&self, name: &[u8]) -> Option<&[u8]> {
        self.cgi_vars()
            .filter(|(n, _)| *n == name)
            .last()
            .map(|(_, v)| v)
    }

    /// A request header by its lower-case HTTP name, whether it came as a
    /// header field or as a gateway's `HTTP_*` variable (for the log).
    pub fn header(&self, name: &[u8], cgi_name: &[u8]) -> Option<&[u8]> {
        if self.cgi.is_empty() {
            self.field(name)
        } else {
            self.cgi_var(cgi_name)
        }
    }

    /// The first value of a header field, by case-insensitive name.
    pub fn field(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// `METHOD target` of a request, for log messages; formatted only when a
/// message is written.
#[derive(Clone, Copy)]
pub struct RequestLabel<'a>(pub &'a RequestHead);

impl fmt::Display for RequestLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            String::from_utf8_lossy(self.0.method()),
            String::from_utf8_lossy(self.0.target())
        )
    }
}

/// A decimal length (a Content-Length or CONTENT_LENGTH value): digits
/// only, at most 19 of them, so it fits a u64.
pub fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Splits an authority, `host[:port]` (RFC 3986 §3.2), where host may be a
/// bracketed IPv6 literal: a Host header, or an absolute target's.
pub fn split_host_port(value: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    if value.first() == Some(&b'[') {
        let close = memchr::memchr(b']', value)?;
        let (host, rest) = value.split_at(close + 1);
        return match rest {
            [] => Some((host, None)),
            [b':', port @ ..] => Some((host, Some(port))),
            _ => None,
        };
    }
    match memchr::memchr(b':', value) {
        None => Some((value, None)),
        Some(colon) => Some((&value[..colon], Some(&value[colon + 1..]))),
    }
}

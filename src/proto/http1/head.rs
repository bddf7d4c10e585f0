//! HTTP/1.1 request head parsing (RFC 9112 §2–§7), strict wherever the RFC
//! lets a server be strict, because every leniency is a request-smuggling
//! vector when a proxy in front parses differently.
//!
//! Pure: bytes and limits in, `Ok(Some(head))`, `Ok(None)` (need more bytes)
//! or a `ClientError` out. Tokenising is delegated to `httparse`; this module
//! adds the line-ending rules httparse is lenient about and the framing
//! semantics (Content-Length, Transfer-Encoding, Host, Connection, Expect).

use std::mem::MaybeUninit;
use std::ops::Range;

use memchr::memchr_iter;

use crate::proto::chars::is_reg_name_char;
use crate::proto::error::{ClientError, ClientErrorKind};
use crate::proto::forwarded;
use crate::proto::request::{split_host_port, BodyFraming, HeadLimits, RequestHead};

/// Header field slots kept on the stack; a larger `max_fields` uses the heap.
const STACK_FIELD_SLOTS: usize = 128;

/// Incremental head parser: remembers how far it has scanned, so a head that
/// arrives one byte at a time is scanned once, not once per byte. A
/// connection keeps one, and gives each head back when done with it
/// (`recycle`), so the next head reuses its buffers instead of allocating.
#[derive(Debug, Default)]
pub struct HeadParser {
    scanned: usize,
    spare: Option<RequestHead>,
}

fn bad(reason: &'static str) -> ClientError {
    ClientError::bad_request(reason)
}

impl HeadParser {
    pub fn new() -> Self {
        HeadParser::default()
    }

    /// Takes back a head's buffers for the next head. They are bounded by
    /// the limits the head was parsed under.
    pub fn recycle(&mut self, head: RequestHead) {
        self.spare = Some(head);
    }

    /// Parses the head at the start of `buf`. On success returns the head and
    /// how many bytes of `buf` it occupied; the body, if any, follows.
    pub fn parse(
        &mut self,
        buf: &[u8],
        limits: &HeadLimits,
    ) -> Result<Option<(RequestHead, usize)>, ClientError> {
        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line (CRLF)
        // received prior to the request-line.
        let mut start = 0;
        while buf.len() >= start + 2 && &buf[start..start + 2] == b"\r\n" {
            start += 2;
        }
        if start > limits.max_head_size {
            return Err(ClientError::new(
                ClientErrorKind::HeadersTooLarge,
                "too many empty lines before the request line",
            ));
        }
        let scan_from = self.scanned.max(start);
        let Some(end) = find_head_end(buf, start, scan_from)? else {
            self.scanned = buf.len();
            check_incomplete(&buf[start..], limits)?;
            return Ok(None);
        };
        self.scanned = 0;
        let (mut bytes, mut fields) = match self.spare.take() {
            Some(spare) => (spare.buf, spare.headers),
            None => (Vec::new(), Vec::new()),
        };
        bytes.clear();
        bytes.extend_from_slice(&buf[start..end]);
        fields.clear();
        let head = parse_complete_head(bytes, fields, limits)?;
        Ok(Some((head, end)))
    }
}

/// Finds the end of the head (just past the CRLF CRLF), rejecting any LF that
/// is not preceded by CR (RFC 9112 §2.2 lets a server refuse bare LF).
fn find_head_end(buf: &[u8], start: usize, scan_from: usize) -> Result<Option<usize>, ClientError> {
    for lf in memchr_iter(b'\n', &buf[scan_from..]).map(|i| i + scan_from) {
        if lf == start || buf[lf - 1] != b'\r' {
            return Err(bad("bare LF line ending"));
        }
        if lf >= start + 3 && buf[lf - 3..=lf] == *b"\r\n\r\n" {
            return Ok(Some(lf + 1));
        }
    }
    Ok(None)
}

/// Applies the length limits to a head that has not ended yet, so an
/// oversized head is refused as soon as it crosses a limit, not at its end.
fn check_incomplete(partial: &[u8], limits: &HeadLimits) -> Result<(), ClientError> {
    match memchr::memchr(b'\n', partial) {
        None if partial.len() > limits.max_request_line + 1 => Err(ClientError::new(
            ClientErrorKind::UriTooLong,
            "request line longer than limit_request_line",
        )),
        Some(lf) if lf.saturating_sub(1) > limits.max_request_line => Err(ClientError::new(
            ClientErrorKind::UriTooLong,
            "request line longer than limit_request_line",
        )),
        _ if partial.len() > limits.max_head_size => Err(ClientError::new(
            ClientErrorKind::HeadersTooLarge,
            "request head larger than limit_request_head",
        )),
        _ => Ok(()),
    }
}

fn span(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// Parses `bytes`, a whole head, into a `RequestHead` that owns them;
/// `fields` is an empty vector to hold the field spans.
fn parse_complete_head(
    bytes: Vec<u8>,
    fields: Vec<(Range<usize>, Range<usize>)>,
    limits: &HeadLimits,
) -> Result<RequestHead, ClientError> {
    let head = &bytes[..];
    let line_end = memchr::memchr(b'\n', head).expect("a complete head has a request line") - 1;
    if line_end > limits.max_request_line {
        return Err(ClientError::new(
            ClientErrorKind::UriTooLong,
            "request line longer than limit_request_line",
        ));
    }
    if head.len() > limits.max_head_size {
        return Err(ClientError::new(
            ClientErrorKind::HeadersTooLarge,
            "request head larger than limit_request_head",
        ));
    }

    // Field slots for httparse: on the stack up to the default limit, so a
    // typical head costs no allocation and no initialisation of the slots.
    let mut stack_slots = [const { MaybeUninit::<httparse::Header>::uninit() }; STACK_FIELD_SLOTS];
    let mut heap_slots = Vec::new();
    let slots = if limits.max_fields <= STACK_FIELD_SLOTS {
        &mut stack_slots[..limits.max_fields]
    } else {
        heap_slots.resize_with(limits.max_fields, MaybeUninit::uninit);
        &mut heap_slots[..]
    };
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, slots) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("incomplete request head")),
        Err(e) => return Err(httparse_error(e, head)),
    }
    let method = span(head, req.method.unwrap_or_default().as_bytes());
    let target = span(head, req.path.unwrap_or_default().as_bytes());
    let minor_version = req.version.unwrap_or(1);

    let mut parsed = RequestHead {
        buf: Vec::new(),
        method,
        target: target.clone(),
        minor_version,
        major_version: 1,
        headers: fields,
        framing: BodyFraming::Empty,
        keep_alive: minor_version == 1,
        expect_continue: false,
        host: None,
        path: 0..0,
        query: None,
        proxy_fields: false,
        cgi: Vec::new(),
    };

    let mut content_length: Option<u64> = None;
    let mut transfer_codings: Vec<Range<usize>> = Vec::new();
    let mut host_count = 0;
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        if name.len() + field.value.len() > limits.max_field_size {
            return Err(ClientError::new(
                ClientErrorKind::HeadersTooLarge,
                "header field larger than limit_request_field_size",
            ));
        }
        let value = trim_ows(field.value);
        let name_span = span(head, name);
        let value_span = span(head, value);
        if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Err(bad("more than one Content-Length"));
            }
            content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|&b| b == b',') {
                let coding = trim_ows(coding);
                if coding.is_empty() {
                    return Err(bad("empty transfer coding"));
                }
                transfer_codings.push(span(head, coding));
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            host_count += 1;
            validate_host(value)?;
            parsed.host = Some(value_span.clone());
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                if token.eq_ignore_ascii_case(b"close") {
                    parsed.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && minor_version == 0 {
                    parsed.keep_alive = true;
                }
            }
        } else if forwarded::is_marked_name(name) {
            parsed.proxy_fields = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                parsed.expect_continue = minor_version == 1;
            } else {
                return Err(ClientError::new(
                    ClientErrorKind::ExpectationFailed,
                    "unsupported Expect value",
                ));
            }
        }
        parsed.headers.push((name_span, value_span));
    }
    // A Connection: close seen before Connection: keep-alive on HTTP/1.0 wins.
    if parsed.headers.iter().any(|(n, v)| {
        head[n.clone()].eq_ignore_ascii_case(b"connection")
            && head[v.clone()]
                .split(|&b| b == b',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case(b"close"))
    }) {
        parsed.keep_alive = false;
    }

    // RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request that
    // lacks a Host header field or has more than one.
    if host_count > 1 {
        return Err(bad("more than one Host header"));
    }
    if host_count == 0 && minor_version == 1 {
        return Err(bad("missing Host header"));
    }

    parsed.framing = body_framing(head, minor_version, content_length, &transfer_codings)?;
    split_target(&mut parsed, head)?;
    parsed.buf = bytes;
    Ok(parsed)
}

fn httparse_error(e: httparse::Error, head: &[u8]) -> ClientError {
    match e {
        httparse::Error::TooManyHeaders => ClientError::new(
            ClientErrorKind::HeadersTooLarge,
            "more header fields than limit_request_fields",
        ),
        httparse::Error::Version => {
            // "HTTP/2.0" is a version we do not speak; "HTPT/1.1" is garbage.
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
            let looks_like_http = version.len() == 8
                && version.starts_with(b"HTTP/")
                && version[5].is_ascii_digit()
                && version[6] == b'.'
                && version[7].is_ascii_digit();
            if looks_like_http {
                ClientError::new(
                    ClientErrorKind::VersionNotSupported,
                    "HTTP version not supported",
                )
            } else {
                bad("malformed HTTP version")
            }
        }
        httparse::Error::HeaderName => bad("invalid header field name"),
        httparse::Error::HeaderValue => bad("invalid character in header field value"),
        httparse::Error::Token => bad("invalid method"),
        httparse::Error::NewLine => bad("invalid line ending"),
        httparse::Error::Status => bad("invalid request line"),
    }
}

/// RFC 9112 §6.3: Content-Length is 1*DIGIT; anything else (signs, spaces,
/// lists such as "5, 5") is invalid framing and refused.
fn parse_content_length(value: &[u8]) -> Result<u64, ClientError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad("invalid Content-Length"));
    }
    value
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or_else(|| bad("invalid Content-Length"))
}

/// RFC 9112 §6.1 and §6.3: the only transfer coding accepted is a single,
/// final `chunked`; Transfer-Encoding with Content-Length, or on HTTP/1.0,
/// is refused as a smuggling attempt.
fn body_framing(
    head: &[u8],
    minor_version: u8,
    content_length: Option<u64>,
    codings: &[Range<usize>],
) -> Result<BodyFraming, ClientError> {
    if codings.is_empty() {
        return Ok(match content_length {
            None | Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
        });
    }
    if content_length.is_some() {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if minor_version == 0 {
        return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    let is_chunked = |r: &Range<usize>| head[r.clone()].eq_ignore_ascii_case(b"chunked");
    let (last, before) = codings.split_last().expect("not empty");
    if before.iter().any(is_chunked) {
        return Err(bad(
            "chunked is not the final transfer coding, or is applied twice",
        ));
    }
    if !before.is_empty() {
        return Err(ClientError::new(
            ClientErrorKind::NotImplemented,
            "unsupported transfer coding",
        ));
    }
    if !is_chunked(last) {
        return Err(ClientError::new(
            ClientErrorKind::NotImplemented,
            "unsupported transfer coding",
        ));
    }
    Ok(BodyFraming::Chunked)
}

/// Host is `uri-host [ ":" port ]` (RFC 9110 §7.2); anything that cannot be
/// one (spaces, '/', '@', a bad port) is refused rather than passed on to
/// applications that build URLs from it.
fn validate_host(value: &[u8]) -> Result<(), ClientError> {
    let (host, port) = split_host_port(value).ok_or_else(|| bad("invalid Host header"))?;
    let host_ok = if host.first() == Some(&b'[') {
        host.len() > 2
            && host.last() == Some(&b']')
            && host[1..host.len() - 1]
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        host.iter().all(|&b| is_reg_name_char(b))
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(bad("invalid Host header"))
    }
}

/// Splits the request target into path and query (RFC 9112 §3.2): origin-form
/// `/path?query`, absolute-form `http://host/path?query` (whose authority then
/// stands in for Host), and asterisk-form `*` for OPTIONS only.
fn split_target(parsed: &mut RequestHead, head: &[u8]) -> Result<(), ClientError> {
    let target = parsed.target.clone();
    let raw = &head[target.clone()];
    let mut path_start = target.start;
    if raw == b"*" {
        if &head[parsed.method.clone()] != b"OPTIONS" {
            return Err(bad("asterisk-form target on a method other than OPTIONS"));
        }
        // No path: PATH_INFO is empty (and RAW_URI says "*").
        parsed.path = target.end..target.end;
        return Ok(());
    }
    if raw.first() != Some(&b'/') {
        let lower: Vec<u8> = raw.iter().take(8).map(u8::to_ascii_lowercase).collect();
        let scheme_len = if lower.starts_with(b"http://") {
            7
        } else if lower.starts_with(b"https://") {
            8
        } else {
            return Err(bad("request target is not origin-form or absolute-form"));
        };
        let after_scheme = &raw[scheme_len..];
        let authority_len = after_scheme
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(after_scheme.len());
        let authority = &after_scheme[..authority_len];
        if authority.is_empty() || authority.contains(&b'@') {
            return Err(bad("invalid authority in absolute-form target"));
        }
        validate_host(authority)?;
        // RFC 9112 §3.2.2: the target's authority overrides Host.
        parsed.host = Some(span(head, authority));
        path_start = target.start + scheme_len + authority_len;
    }
    let rest = &head[path_start..target.end];
    match memchr::memchr(b'?', rest) {
        Some(q) => {
            parsed.path = path_start..path_start + q;
            parsed.query = Some(path_start + q + 1..target.end);
        }
        None => parsed.path = path_start..target.end,
    }
    Ok(())
}

/// Strips optional whitespace (SP / HTAB) from both ends (RFC 9110 §5.6.3).
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<(RequestHead, usize)>, ClientError> {
        HeadParser::new().parse(bytes, &HeadLimits::default())
    }

    fn parse_ok(bytes: &[u8]) -> RequestHead {
        parse(bytes).unwrap().expect("complete").0
    }

    fn status_of(bytes: &[u8]) -> u16 {
        parse(bytes).unwrap_err().status().0
    }

    #[test]
    fn simple_get() {
        let head =
            parse_ok(b"GET /a%20b?x=1&y HTTP/1.1\r\nHost: example.com:8080\r\nX-A: 1\r\n\r\n");
        assert_eq!(head.method(), b"GET");
        assert_eq!(head.path(), b"/a%20b");
        assert_eq!(head.query(), Some(&b"x=1&y"[..]));
        assert_eq!(head.host(), Some(&b"example.com:8080"[..]));
        assert_eq!(head.minor_version, 1);
        assert!(head.keep_alive);
        assert_eq!(head.framing, BodyFraming::Empty);
        assert_eq!(head.headers.len(), 2);
    }

    #[test]
    fn reports_consumed_length_and_leaves_body() {
        let bytes = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let (head, used) = parse(bytes).unwrap().unwrap();
        assert_eq!(&bytes[used..], b"abc");
        assert_eq!(head.framing, BodyFraming::Length(3));
    }

    #[test]
    fn needs_more_until_blank_line() {
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut parser = HeadParser::new();
        for end in 0..full.len() {
            assert!(
                parser
                    .parse(&full[..end], &HeadLimits::default())
                    .unwrap()
                    .is_none(),
                "{end}"
            );
        }
        assert!(parser
            .parse(full, &HeadLimits::default())
            .unwrap()
            .is_some());
    }

    #[test]
    fn skips_leading_empty_lines() {
        let head = parse_ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(head.method(), b"GET");
    }

    #[test]
    fn http10_keep_alive_rules() {
        assert!(!parse_ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(parse_ok(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!parse_ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!parse_ok(b"GET / HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn chunked_framing() {
        let head = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(head.framing, BodyFraming::Chunked);
        let head = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n");
        assert_eq!(head.framing, BodyFraming::Chunked);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases: &[(&[u8], u16)] = &[
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX\t: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX(: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
            (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTPT/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
        ];
        for (bytes, status) in cases {
            assert_eq!(
                status_of(bytes),
                *status,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn absolute_form_authority_overrides_host() {
        let head = parse_ok(b"GET http://Example.org:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(head.host(), Some(&b"Example.org:81"[..]));
        assert_eq!(head.path(), b"/p");
        assert_eq!(head.query(), Some(&b"q"[..]));
        let head = parse_ok(b"GET http://a HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(head.path(), b"");
    }

    #[test]
    fn options_asterisk() {
        let head = parse_ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(head.path(), b"");
        assert_eq!(head.target(), b"*");
    }

    #[test]
    fn ipv6_host_and_empty_host() {
        assert_eq!(
            parse_ok(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").host(),
            Some(&b"[::1]:80"[..])
        );
        assert_eq!(
            parse_ok(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").host(),
            Some(&b""[..])
        );
    }

    #[test]
    fn expect_continue() {
        assert!(
            parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n").expect_continue
        );
    }

    #[test]
    fn header_value_whitespace_is_trimmed() {
        let head = parse_ok(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \t v w \t\r\n\r\n");
        let (_, v) = &head.headers[1];
        assert_eq!(&head.buf[v.clone()], b"v w");
    }

    /// `at` parses under `limits`; `past` (one byte more) gets `status`.
    fn assert_limit(limits: HeadLimits, at: &[u8], past: &[u8], status: u16) {
        assert!(HeadParser::new().parse(at, &limits).unwrap().is_some());
        let err = HeadParser::new().parse(past, &limits).unwrap_err();
        assert_eq!(err.status().0, status, "{err}");
    }

    #[test]
    fn request_line_limit_at_and_past() {
        let limits = HeadLimits {
            max_request_line: 31,
            ..HeadLimits::default()
        };
        let at = b"GET /aaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(at.iter().position(|&b| b == b'\r'), Some(31));
        let past = b"GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_limit(limits.clone(), at, past, 414);
        // Refused before the line ends, too.
        let err = HeadParser::new().parse(&past[..33], &limits).unwrap_err();
        assert_eq!(err.status().0, 414);
    }

    #[test]
    fn field_count_limit_at_and_past() {
        assert_limit(
            HeadLimits {
                max_fields: 3,
                ..HeadLimits::default()
            },
            b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
            431,
        );
    }

    #[test]
    fn field_size_limit_at_and_past() {
        assert_limit(
            HeadLimits {
                max_field_size: 10,
                ..HeadLimits::default()
            },
            b"GET / HTTP/1.1\r\nHost: a\r\nAbcd: 123456\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nAbcd: 1234567\r\n\r\n",
            431,
        );
    }

    #[test]
    fn head_size_limit_at_and_past() {
        let at = b"GET / HTTP/1.1\r\nHost: a\r\nA: 12\r\n\r\n";
        let limits = HeadLimits {
            max_head_size: at.len(),
            ..HeadLimits::default()
        };
        assert_limit(
            limits.clone(),
            at,
            b"GET / HTTP/1.1\r\nHost: a\r\nA: 123\r\n\r\n",
            431,
        );
        // An endless head is refused once it crosses the limit.
        let endless = b"GET / HTTP/1.1\r\nHost: a\r\nA: 123456789012345678901234567890";
        let err = HeadParser::new().parse(endless, &limits).unwrap_err();
        assert_eq!(err.status().0, 431);
    }
}

//! HTTP/2 requests and responses as the driver sees them (RFC 9113 §8).
//! The `h2` crate reads and writes the frames; this turns a stream's
//! request into the request head every front end produces, and the
//! response the driver framed as HTTP/1.1 (`runtime::http2` relays it)
//! back into a head for `h2`. Pure: no sockets, tokio or Python.

use std::ops::Range;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::proto::error::{ClientError, ClientErrorKind};
use crate::proto::forwarded;
use crate::proto::request::{parse_length, split_host_port, BodyFraming, HeadLimits, RequestHead};

/// The HTTP/2 settings ferrule announces and holds clients to.
#[derive(Debug, Clone, Copy)]
pub struct Http2Limits {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE, each stream's receive window.
    pub initial_window_size: u32,
    /// SETTINGS_MAX_FRAME_SIZE.
    pub max_frame_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §6.5.2).
    pub max_header_list_size: u32,
    /// Most streams a client may reset before their response, within the
    /// window the front end counts them in, before it is cut off.
    pub max_reset_streams: u32,
}

impl Http2Limits {
    /// The connection's receive window: room for every stream's window, so
    /// that one stream whose application reads nothing cannot stop the
    /// uploads of the others.
    pub fn connection_window_size(&self) -> u32 {
        let all = u64::from(self.initial_window_size) * u64::from(self.max_concurrent_streams);
        all.clamp(65_535, i32::MAX as u64) as u32
    }
}

fn bad(reason: &'static str) -> ClientError {
    ClientError::bad_request(reason)
}

fn too_large(reason: &'static str) -> ClientError {
    ClientError::new(ClientErrorKind::HeadersTooLarge, reason)
}

/// Appends `bytes` to `buf`, returning their span.
fn push(buf: &mut Vec<u8>, bytes: &[u8]) -> Range<usize> {
    let start = buf.len();
    buf.extend_from_slice(bytes);
    start..buf.len()
}

/// A field value RFC 9113 §8.2.1 forbids: one with NUL, CR or LF, or with
/// white space at either end.
fn malformed_value(value: &[u8]) -> bool {
    value.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n'))
        || value.first().is_some_and(|b| matches!(b, b' ' | b'\t'))
        || value.last().is_some_and(|b| matches!(b, b' ' | b'\t'))
}

/// The request head of a stream whose request is `method`, `uri` and
/// `headers` (pseudo-header fields checked by `h2` already, RFC 9113
/// §8.3.1); `end_of_stream` when its HEADERS frame ended the stream (no
/// body). Header fields are held to the same limits as HTTP/1's (431).
pub fn request_head(
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    end_of_stream: bool,
    limits: &HeadLimits,
) -> Result<RequestHead, ClientError> {
    if method == Method::CONNECT {
        // RFC 9113 §8.5: a tunnel, which a WSGI application cannot serve.
        return Err(bad("CONNECT is not served"));
    }
    let mut buf = Vec::with_capacity(256);
    let method = push(&mut buf, method.as_str().as_bytes());
    let target_text = uri.path_and_query().map_or("/", |p| p.as_str());
    if target_text.len() > limits.max_request_line {
        return Err(ClientError::new(
            ClientErrorKind::UriTooLong,
            ":path longer than limit_request_line",
        ));
    }
    let target = push(&mut buf, target_text.as_bytes());
    let (path, query) = match memchr::memchr(b'?', target_text.as_bytes()) {
        Some(q) => (
            target.start..target.start + q,
            Some(target.start + q + 1..target.end),
        ),
        None => (target.clone(), None),
    };
    let authority = uri.authority().map(|a| a.as_str().as_bytes());
    if authority.is_some_and(|a| a.contains(&b'@')) {
        // RFC 9113 §8.3.1: no userinfo in :authority.
        return Err(bad(":authority with userinfo"));
    }
    let mut fields = Vec::with_capacity(headers.len() + 1);
    let mut host = None;
    let mut proxy_fields = false;
    let mut content_length: Option<u64> = None;
    let mut cookie: Option<Range<usize>> = None;
    for (name, value) in headers {
        let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
        if malformed_value(value) {
            return Err(bad(
                "header field value with NUL, CR, LF or surrounding white space",
            ));
        }
        if name.len() + value.len() > limits.max_field_size {
            return Err(too_large(
                "header field larger than limit_request_field_size",
            ));
        }
        match name {
            // RFC 9113 §8.2.3: cookie-pairs sent as fields of their own
            // are joined with "; " into one, as HTTP/1 carries them.
            b"cookie" => {
                match &mut cookie {
                    None => cookie = Some(push(&mut buf, value)),
                    Some(joined) => {
                        // The joined value is always the last bytes pushed.
                        debug_assert_eq!(joined.end, buf.len());
                        buf.extend_from_slice(b"; ");
                        buf.extend_from_slice(value);
                        joined.end = buf.len();
                    }
                }
                continue;
            }
            b"host" => {
                // RFC 9113 §8.3.1: a Host naming another entity than
                // :authority makes the request malformed.
                if authority.is_some_and(|a| !a.eq_ignore_ascii_case(value)) {
                    return Err(bad("Host differs from :authority"));
                }
                if host.is_some() {
                    return Err(bad("more than one Host"));
                }
            }
            b"content-length" => {
                let n = parse_length(value).ok_or_else(|| bad("invalid Content-Length"))?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(bad("differing Content-Length values"));
                }
                content_length = Some(n);
            }
            _ => {}
        }
        proxy_fields |= forwarded::is_marked_name(name);
        let name = push(&mut buf, name);
        let value = push(&mut buf, value);
        if &buf[name.clone()] == b"host" {
            host = Some(value.clone());
        }
        fields.push((name, value));
    }
    if let Some(joined) = cookie {
        let name = push(&mut buf, b"cookie");
        fields.push((name, joined));
    }
    if host.is_none() {
        // The environ's HTTP_HOST (and SERVER_NAME) come from :authority
        // when no Host field came with it (RFC 9113 §8.3.1).
        if let Some(authority) = authority {
            let name = push(&mut buf, b"host");
            let value = push(&mut buf, authority);
            host = Some(value.clone());
            fields.push((name, value));
        }
    }
    if let Some(h) = &host {
        if split_host_port(&buf[h.clone()]).is_none() {
            return Err(bad("invalid :authority"));
        }
    }
    if fields.len() > limits.max_fields {
        return Err(too_large("more header fields than limit_request_fields"));
    }
    let framing = match (end_of_stream, content_length) {
        (true, None | Some(0)) => BodyFraming::Empty,
        (true, Some(_)) => return Err(bad("Content-Length with no DATA frames")),
        (false, Some(0)) => BodyFraming::Empty,
        (false, Some(n)) => BodyFraming::Length(n),
        // The DATA frames, however many, are relayed as HTTP/1 chunks.
        (false, None) => BodyFraming::Chunked,
    };
    Ok(RequestHead {
        buf,
        method,
        target,
        minor_version: 1,
        major_version: 2,
        headers: fields,
        framing,
        keep_alive: false,
        expect_continue: false,
        host,
        path,
        query,
        proxy_fields,
        cgi: Vec::new(),
    })
}

/// Writes the chunk-size line of an HTTP/1 chunk of `len` bytes (RFC 9112
/// §7.1), as a stream's DATA frames are relayed to the driver.
pub fn chunk_size_line(out: &mut Vec<u8>, len: usize) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// The last chunk of a relayed body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The head of a response the driver framed as HTTP/1.1, for `h2`.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// How its body is delimited in the relayed bytes.
    pub framing: BodyFraming,
}

/// Most header fields of a relayed response head.
const MAX_RESPONSE_FIELDS: usize = 1024;

/// Parses the HTTP/1.1 response head at the start of `buf`: the head and
/// its length, `Ok(None)` if it is not whole yet. The fields HTTP/2 does
/// not carry (RFC 9113 §8.2.2: Connection and the fields it names,
/// Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade) are left out.
/// `is_head` when the request was HEAD: no body follows, whatever the head
/// says.
pub fn parse_response_head(
    buf: &[u8],
    is_head: bool,
) -> Result<Option<(ResponseHead, usize)>, &'static str> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut many;
    let mut response = httparse::Response::new(&mut slots);
    let used = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            many = vec![httparse::EMPTY_HEADER; MAX_RESPONSE_FIELDS];
            response = httparse::Response::new(&mut many);
            match response.parse(buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err("response head with too many fields"),
            }
        }
        Err(_) => return Err("malformed response head"),
    };
    let code = response.code.ok_or("response head without a status")?;
    let status = StatusCode::from_u16(code).map_err(|_| "invalid response status")?;
    if status.is_informational() {
        return Err("an informational status as the final response");
    }
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    let mut length = None;
    let mut chunked = false;
    for field in response.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = field.value.eq_ignore_ascii_case(b"chunked");
            continue;
        }
        if name.eq_ignore_ascii_case(b"connection")
            || name.eq_ignore_ascii_case(b"keep-alive")
            || name.eq_ignore_ascii_case(b"proxy-connection")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            length = parse_length(field.value);
        }
        let name = HeaderName::from_bytes(name).map_err(|_| "invalid response field name")?;
        let value =
            HeaderValue::from_bytes(field.value).map_err(|_| "invalid response field value")?;
        headers.append(name, value);
    }
    let bodiless = is_head
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || length == Some(0);
    let framing = if bodiless {
        BodyFraming::Empty
    } else if chunked {
        BodyFraming::Chunked
    } else {
        match length {
            Some(n) => BodyFraming::Length(n),
            None => return Err("response body without a length or chunks"),
        }
    };
    Ok(Some((
        ResponseHead {
            status,
            headers,
            framing,
        },
        used,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(uri: &str, fields: &[(&str, &str)], end: bool) -> Result<RequestHead, ClientError> {
        let mut headers = HeaderMap::new();
        for (n, v) in fields {
            headers.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        let uri: http::Uri = uri.parse().unwrap();
        request_head(&Method::GET, &uri, &headers, end, &HeadLimits::default())
    }

    #[test]
    fn authority_becomes_the_host_field_and_the_target_splits() {
        let h = head(
            "https://example.com:8443/a%20b?x=1",
            &[("accept", "*/*")],
            true,
        )
        .unwrap();
        assert_eq!(h.method(), b"GET");
        assert_eq!(h.target(), b"/a%20b?x=1");
        assert_eq!(h.path(), b"/a%20b");
        assert_eq!(h.query(), Some(&b"x=1"[..]));
        assert_eq!(h.host(), Some(&b"example.com:8443"[..]));
        assert_eq!(h.field(b"host"), Some(&b"example.com:8443"[..]));
        assert_eq!(h.protocol(), "HTTP/2");
        assert_eq!(h.framing, BodyFraming::Empty);
    }

    #[test]
    fn cookies_are_joined_with_semicolons() {
        let h = head(
            "https://a/",
            &[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")],
            true,
        )
        .unwrap();
        assert_eq!(h.field(b"cookie"), Some(&b"a=1; b=2; c=3"[..]));
        assert_eq!(h.fields().filter(|(n, _)| *n == b"cookie").count(), 1);
    }

    #[test]
    fn body_framing_follows_content_length_and_end_of_stream() {
        assert_eq!(
            head("https://a/", &[("content-length", "5")], false)
                .unwrap()
                .framing,
            BodyFraming::Length(5)
        );
        assert_eq!(
            head("https://a/", &[], false).unwrap().framing,
            BodyFraming::Chunked
        );
        assert!(head("https://a/", &[("content-length", "5")], true).is_err());
        assert!(head("https://a/", &[("content-length", "x")], false).is_err());
        assert!(head(
            "https://a/",
            &[("content-length", "5"), ("content-length", "6")],
            false
        )
        .is_err());
    }

    #[test]
    fn a_host_naming_another_authority_is_refused() {
        assert!(head("https://a/", &[("host", "b")], true).is_err());
        assert!(head("https://a/", &[("host", "A")], true).is_ok());
        assert_eq!(
            head("/x", &[("host", "b:81")], true).unwrap().host(),
            Some(&b"b:81"[..])
        );
    }

    #[test]
    fn connect_and_bad_values_are_refused() {
        let uri: http::Uri = "https://a/".parse().unwrap();
        let limits = HeadLimits::default();
        assert!(request_head(&Method::CONNECT, &uri, &HeaderMap::new(), true, &limits).is_err());
        assert!(head("https://a/", &[("x", " padded")], true).is_err());
    }

    #[test]
    fn field_limits_are_http1s() {
        let limits = HeadLimits {
            max_fields: 2,
            ..HeadLimits::default()
        };
        let uri: http::Uri = "https://a/".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        // Two fields: x-a and the host made from :authority.
        let at_limit = request_head(&Method::GET, &uri, &headers, true, &limits);
        assert!(at_limit.is_ok());
        headers.append("x-b", HeaderValue::from_static("2"));
        let past = request_head(&Method::GET, &uri, &headers, true, &limits).unwrap_err();
        assert_eq!(past.kind, ClientErrorKind::HeadersTooLarge);
    }

    #[test]
    fn response_heads_lose_connection_specific_fields() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let (h, used) = parse_response_head(raw, false).unwrap().unwrap();
        assert_eq!(&raw[used..used + 3], b"5\r\n");
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert!(h.headers.get("connection").is_none());
        assert!(h.headers.get("transfer-encoding").is_none());
        assert_eq!(h.headers["x-a"], "1");
        assert_eq!(h.headers["content-type"], "text/plain");
    }

    #[test]
    fn response_body_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        let (h, _) = parse_response_head(raw, false).unwrap().unwrap();
        assert_eq!(h.framing, BodyFraming::Length(3));
        let (h, _) = parse_response_head(raw, true).unwrap().unwrap();
        assert_eq!(h.framing, BodyFraming::Empty);
        assert_eq!(h.headers["content-length"], "3");
        let raw = b"HTTP/1.1 304 Not Modified\r\n\r\n";
        let (h, _) = parse_response_head(raw, false).unwrap().unwrap();
        assert_eq!(h.framing, BodyFraming::Empty);
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nX: 1\r\n", false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn connection_window_covers_every_stream() {
        let limits = Http2Limits {
            max_concurrent_streams: 100,
            initial_window_size: 65_535,
            max_frame_size: 16_384,
            max_header_list_size: 16_384,
            max_reset_streams: 100,
        };
        assert_eq!(limits.connection_window_size(), 6_553_500);
        let huge = Http2Limits {
            initial_window_size: i32::MAX as u32,
            ..limits
        };
        assert_eq!(huge.connection_window_size(), i32::MAX as u32);
    }
}

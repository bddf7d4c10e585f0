//! A request head from CGI variables (RFC 3875 §4.1), as the gateway
//! protocols (uwsgi, FastCGI, SCGI) and a CGI script's environment carry
//! them. Pure: the variables are spans into the head's buffer, and this
//! fills in what the driver needs (method, body length, target for the
//! log); the environ is built from the variables themselves
//! (`wsgi::environ`).

use std::ops::Range;

use crate::proto::error::ClientError;
use crate::proto::request::{parse_length, BodyFraming, RequestHead};

/// A variable's name and value, as spans of a head's buffer.
pub type VarSpans = (Range<usize>, Range<usize>);

/// The request head for the variables `vars` (spans of `buf`), in the
/// order the gateway sent them. The connection carries this one request
/// only (`keep_alive` false) unless its front end says otherwise.
pub fn head_from_vars(buf: Vec<u8>, vars: Vec<VarSpans>) -> Result<RequestHead, ClientError> {
    // One pass; a variable sent twice counts as its last value, as it does
    // in the environ.
    let (mut method, mut path, mut query, mut uri) = (None, None, None, None);
    let (mut protocol, mut length, mut host) = (None, None, None);
    for (name, value) in &vars {
        let slot = match &buf[name.clone()] {
            b"REQUEST_METHOD" => &mut method,
            b"PATH_INFO" => &mut path,
            b"QUERY_STRING" => &mut query,
            b"REQUEST_URI" => &mut uri,
            b"SERVER_PROTOCOL" => &mut protocol,
            b"CONTENT_LENGTH" => &mut length,
            b"HTTP_HOST" => &mut host,
            _ => continue,
        };
        *slot = Some(value.clone());
    }
    let method = method
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ClientError::bad_request("the gateway sent no REQUEST_METHOD"))?;
    let path = path.unwrap_or(0..0);
    let target = uri.unwrap_or_else(|| path.clone());
    let minor_version = match protocol {
        Some(p) if &buf[p.clone()] == b"HTTP/1.0" => 0,
        _ => 1,
    };
    let framing = match length.map(|v| &buf[v]) {
        None | Some(b"") => BodyFraming::Empty,
        Some(digits) => match parse_length(digits) {
            Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
            None => return Err(ClientError::bad_request("invalid CONTENT_LENGTH")),
        },
    };
    Ok(RequestHead {
        buf,
        method,
        target,
        minor_version,
        major_version: 1,
        headers: Vec::new(),
        framing,
        keep_alive: false,
        expect_continue: false,
        host,
        path,
        query,
        proxy_fields: false,
        cgi: vars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(vars: &[(&str, &str)]) -> Result<RequestHead, ClientError> {
        let mut buf = Vec::new();
        let mut spans = Vec::new();
        for (n, v) in vars {
            let ns = buf.len()..buf.len() + n.len();
            buf.extend_from_slice(n.as_bytes());
            let vs = buf.len()..buf.len() + v.len();
            buf.extend_from_slice(v.as_bytes());
            spans.push((ns, vs));
        }
        head_from_vars(buf, spans)
    }

    #[test]
    fn fills_the_head_from_variables() {
        let h = head(&[
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/a%20b?x=1"),
            ("PATH_INFO", "/a b"),
            ("QUERY_STRING", "x=1"),
            ("CONTENT_LENGTH", "12"),
            ("SERVER_PROTOCOL", "HTTP/1.0"),
            ("HTTP_HOST", "example.com"),
        ])
        .unwrap();
        assert_eq!(h.method(), b"POST");
        assert_eq!(h.target(), b"/a%20b?x=1");
        assert_eq!(h.path(), b"/a b");
        assert_eq!(h.query(), Some(&b"x=1"[..]));
        assert_eq!(h.framing, BodyFraming::Length(12));
        assert_eq!(h.minor_version, 0);
        assert_eq!(h.host(), Some(&b"example.com"[..]));
        assert_eq!(h.cgi_var(b"PATH_INFO"), Some(&b"/a b"[..]));
        assert!(!h.keep_alive);
    }

    #[test]
    fn content_length_forms() {
        let framing = |cl: &str| {
            head(&[("REQUEST_METHOD", "GET"), ("CONTENT_LENGTH", cl)]).map(|h| h.framing)
        };
        assert_eq!(framing(""), Ok(BodyFraming::Empty));
        assert_eq!(framing("0"), Ok(BodyFraming::Empty));
        assert_eq!(framing("5"), Ok(BodyFraming::Length(5)));
        for bad in ["-1", "1e3", " 5", "99999999999999999999", "0x10"] {
            assert_eq!(framing(bad).unwrap_err().status().0, 400, "{bad}");
        }
    }

    #[test]
    fn request_method_is_required() {
        assert_eq!(head(&[("PATH_INFO", "/")]).unwrap_err().status().0, 400);
        assert_eq!(head(&[("REQUEST_METHOD", "")]).unwrap_err().status().0, 400);
    }
}

//! What a trusted proxy's header fields say of the client: its scheme
//! (gunicorn's secure_scheme_headers, RFC 7239 `Forwarded: proto=`), its
//! address (X-Forwarded-For, RFC 7239 `for=`) and the URL prefix it strips
//! (X-Forwarded-Prefix). Pure: fields in, answers out. Whether the peer is
//! trusted is the caller's decision; these functions are only asked then.

use std::net::IpAddr;

use crate::proto::request::RequestHead;

/// One of them: a header name (lower case) and the value meaning https.
pub type SchemeHeader = (Vec<u8>, Vec<u8>);

/// Header fields whose value says the client used https: a name (lower
/// case) and the value that means so. gunicorn's secure_scheme_headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureSchemeHeaders(pub Vec<SchemeHeader>);

impl Default for SecureSchemeHeaders {
    /// gunicorn's default.
    fn default() -> Self {
        SecureSchemeHeaders(vec![
            (b"x-forwarded-protocol".to_vec(), b"ssl".to_vec()),
            (b"x-forwarded-proto".to_vec(), b"https".to_vec()),
            (b"x-forwarded-ssl".to_vec(), b"on".to_vec()),
        ])
    }
}

impl SecureSchemeHeaders {
    /// Parses `NAME=VALUE`.
    pub fn parse_entry(s: &str) -> Result<SchemeHeader, String> {
        match s.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => Ok((
                name.trim().to_ascii_lowercase().into_bytes(),
                value.trim().as_bytes().to_vec(),
            )),
            _ => Err(format!(
                "'{s}' is not HEADER=VALUE (X-Forwarded-Proto=https)"
            )),
        }
    }

    /// Whether every name is one the HTTP parser marks (`x-forwarded-*`),
    /// so that a request without such a field needs no look.
    pub fn all_marked(&self) -> bool {
        self.0.iter().all(|(name, _)| is_marked_name(name))
    }
}

/// Header names the HTTP/1 parser marks as a proxy's (`proxy_fields`).
pub fn is_marked_name(name: &[u8]) -> bool {
    name.len() > 12 && name[..12].eq_ignore_ascii_case(b"x-forwarded-")
        || name.eq_ignore_ascii_case(b"forwarded")
}

/// Whether the proxy's fields say the client used https: one of `secure`
/// with its value. An entry named `Forwarded` means RFC 7239's `proto=`
/// (`Forwarded=https`), read in the last element, the one the nearest
/// proxy appended (RFC 7239 §4): an element a client sent comes before it.
/// Like any of them, it is honoured only when configured, since a proxy
/// that does not set a field passes the client's on untouched.
pub fn says_https(head: &RequestHead, secure: &SecureSchemeHeaders) -> bool {
    let forwarded = secure.0.iter().find(|(n, _)| n.as_slice() == b"forwarded");
    if let Some((_, expected)) = forwarded {
        let last = head
            .fields()
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"forwarded"))
            .last()
            .and_then(|(_, value)| value.rsplit(|&b| b == b',').next());
        if last
            .and_then(|element| forwarded_param(element, b"proto"))
            .is_some_and(|p| p.eq_ignore_ascii_case(expected))
        {
            return true;
        }
    }
    head.fields().any(|(name, value)| {
        let value = value.trim_ascii();
        !name.eq_ignore_ascii_case(b"forwarded")
            && secure
                .0
                .iter()
                .any(|(n, v)| name.eq_ignore_ascii_case(n) && value.eq_ignore_ascii_case(v))
    })
}

/// The client's address as the proxies say: the addresses of
/// X-Forwarded-For, in order, walked from the nearest proxy's end; the
/// first one that is not itself a trusted proxy is the client. None when
/// there is no such field, or an entry is not an address (`unknown`): the
/// connection's peer stays the client. Only X-Forwarded-For, the field
/// nginx (`$proxy_add_x_forwarded_for`), HAProxy (`option forwardfor`) and
/// the cloud balancers append to: a `Forwarded` field they do not set
/// reaches the server as the client wrote it, so taking it, or choosing
/// between the two by which is present, would let a client name itself.
pub fn client_address(
    head: &RequestHead,
    trusted: impl Fn(IpAddr) -> bool,
) -> Option<(IpAddr, Option<u16>)> {
    let hops: Vec<&[u8]> = head
        .fields()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"x-forwarded-for"))
        .flat_map(|(_, value)| value.split(|&b| b == b',').map(<[u8]>::trim_ascii))
        .collect();
    let mut client = None;
    for hop in hops.iter().rev() {
        let (ip, port) = parse_node(hop)?;
        client = Some((ip, port));
        if !trusted(ip) {
            break;
        }
    }
    client
}

/// X-Forwarded-Prefix: the path prefix the proxy took off, as SCRIPT_NAME
/// (`/app`, no trailing slash). None when absent, or not a plain absolute
/// path (no `..`, `.`, `//`, query, control bytes or backslash).
pub fn prefix(head: &RequestHead) -> Option<&[u8]> {
    let value = head.field(b"x-forwarded-prefix")?.trim_ascii();
    let value = first_element(value).trim_ascii();
    let trimmed = value.strip_suffix(b"/").unwrap_or(value);
    let plain = value.first() == Some(&b'/')
        && trimmed
            .split(|&b| b == b'/')
            .skip(1)
            .all(|segment| !segment.is_empty() && segment != b"." && segment != b"..")
        && value
            .iter()
            .all(|&b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'\\'));
    plain.then_some(trimmed)
}

fn first_element(value: &[u8]) -> &[u8] {
    value.split(|&b| b == b',').next().unwrap_or(value)
}

/// The value of parameter `param` in one Forwarded element (RFC 7239 §4),
/// unquoted.
fn forwarded_param<'a>(element: &'a [u8], param: &[u8]) -> Option<&'a [u8]> {
    element.split(|&b| b == b';').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (name, val) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        if !name.eq_ignore_ascii_case(param) {
            return None;
        }
        Some(
            val.strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(val),
        )
    })
}

/// A node (RFC 7239 §6): `192.0.2.43`, `192.0.2.43:47011`, `2001:db8::1`
/// (X-Forwarded-For's bare form) or `[2001:db8::1]:4711`.
fn parse_node(node: &[u8]) -> Option<(IpAddr, Option<u16>)> {
    let node = std::str::from_utf8(node).ok()?.trim();
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some((ip, None));
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((ip.parse().ok()?, port));
    }
    let (ip, port) = node.rsplit_once(':')?;
    Some((IpAddr::V4(ip.parse().ok()?), Some(port.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1::head::HeadParser;
    use crate::proto::request::HeadLimits;

    fn head(fields: &str) -> RequestHead {
        let text = format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}\r\n");
        let parsed = HeadParser::new().parse(text.as_bytes(), &HeadLimits::default());
        parsed.ok().flatten().expect("a complete head").0
    }

    fn loopback(ip: IpAddr) -> bool {
        ip.is_loopback() || ip == "10.0.0.2".parse::<IpAddr>().unwrap()
    }

    #[test]
    fn scheme() {
        let default = SecureSchemeHeaders::default();
        assert!(says_https(&head("X-Forwarded-Proto: HTTPS\r\n"), &default));
        assert!(says_https(&head("X-Forwarded-Ssl: on\r\n"), &default));
        // Forwarded counts only when configured, in its last element.
        assert!(!says_https(&head("Forwarded: proto=https\r\n"), &default));
        let with_forwarded = SecureSchemeHeaders(vec![(b"forwarded".to_vec(), b"https".to_vec())]);
        let https = |f: &str| says_https(&head(f), &with_forwarded);
        assert!(https("Forwarded: for=1.2.3.4, proto=https\r\n"));
        assert!(!https("Forwarded: proto=https, for=1.2.3.4;proto=http\r\n"));
        assert!(https(
            "Forwarded: proto=http\r\nForwarded: proto=\"https\"\r\n"
        ));
        assert!(!says_https(&head("X-Forwarded-Proto: http\r\n"), &default));
        let custom = SecureSchemeHeaders(vec![(b"x-scheme".to_vec(), b"https".to_vec())]);
        assert!(says_https(&head("X-Scheme: https\r\n"), &custom));
        assert!(!says_https(&head("X-Forwarded-Proto: https\r\n"), &custom));
        assert!(!custom.all_marked() && default.all_marked());
        assert!(SecureSchemeHeaders::parse_entry("X-Forwarded-Proto").is_err());
    }

    #[test]
    fn client() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let at = |f: &str| client_address(&head(f), loopback);
        assert_eq!(
            at("X-Forwarded-For: 203.0.113.7\r\n"),
            Some((ip("203.0.113.7"), None))
        );
        // Walked from the right: trusted proxies are skipped, a spoofed
        // left-most entry is not reached.
        assert_eq!(
            at("X-Forwarded-For: 6.6.6.6, 203.0.113.7, 10.0.0.2\r\n"),
            Some((ip("203.0.113.7"), None))
        );
        assert_eq!(
            at("X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.7\r\n"),
            Some((ip("203.0.113.7"), None))
        );
        // A Forwarded field, which a proxy may pass on as the client wrote
        // it, never names the client.
        assert_eq!(
            at("Forwarded: for=6.6.6.6\r\nX-Forwarded-For: 203.0.113.9\r\n"),
            Some((ip("203.0.113.9"), None))
        );
        assert_eq!(at("Forwarded: for=192.0.2.60:80\r\n"), None);
        assert_eq!(
            at("X-Forwarded-For: [2001:db8::1]:4711\r\n"),
            Some((ip("2001:db8::1"), Some(4711)))
        );
        assert_eq!(
            at("X-Forwarded-For: 2001:db8::2\r\n"),
            Some((ip("2001:db8::2"), None))
        );
        assert_eq!(at("Forwarded: for=unknown\r\n"), None);
        assert_eq!(at("X-Forwarded-For: 203.0.113.7, garbage\r\n"), None);
        assert_eq!(at(""), None);
        assert_eq!(
            at("X-Forwarded-For: 127.0.0.1\r\n"),
            Some((ip("127.0.0.1"), None))
        );
    }

    #[test]
    fn prefixes() {
        let p = |f: &str| prefix(&head(f)).map(|p| String::from_utf8_lossy(p).into_owned());
        assert_eq!(p("X-Forwarded-Prefix: /app\r\n").as_deref(), Some("/app"));
        assert_eq!(p("X-Forwarded-Prefix: /a/b/\r\n").as_deref(), Some("/a/b"));
        assert_eq!(p("X-Forwarded-Prefix: /\r\n").as_deref(), Some(""));
        for bad in ["app", "/a/../b", "/a//b", "/a?x", "/a\\b", "/./a"] {
            assert_eq!(p(&format!("X-Forwarded-Prefix: {bad}\r\n")), None, "{bad}");
        }
        assert_eq!(p(""), None);
    }
}

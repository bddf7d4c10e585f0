//! Validation of what an application passes to `start_response` (PEP 3333,
//! "The start_response() Callable"), turning it into the encoded head the
//! HTTP front-end sends. Pure: strings in, `AppHead` or a reason out. A
//! refused status or header becomes a 500 with the reason in the error log,
//! never a malformed response on the wire.

use crate::proto::app_head::AppHead;
use crate::proto::chars::{is_tchar, is_text_byte};

/// PEP 3333 forbids applications from using hop-by-hop headers; the server
/// owns connection management (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

/// Appends a native string encoded as latin-1 (PEP 3333, "Unicode
/// Issues"), refusing characters beyond U+00FF and, unless `is_text_byte`
/// allows them, control characters. Leaves `out` as it was on failure.
fn push_latin1_text(out: &mut Vec<u8>, s: &str) -> Result<(), Latin1Error> {
    if s.is_ascii() {
        if !s.bytes().all(is_text_byte) {
            return Err(Latin1Error::Control);
        }
        out.extend_from_slice(s.as_bytes());
        return Ok(());
    }
    let start = out.len();
    for c in s.chars() {
        let Ok(b) = u8::try_from(u32::from(c)) else {
            out.truncate(start);
            return Err(Latin1Error::NotLatin1);
        };
        if !is_text_byte(b) {
            out.truncate(start);
            return Err(Latin1Error::Control);
        }
        out.push(b);
    }
    Ok(())
}

enum Latin1Error {
    NotLatin1,
    Control,
}

/// Starts an `AppHead` from a status such as `"200 OK"`, encoding it into
/// `buf` (emptied first), where the header fields will follow.
pub fn parse_status(status: &str, mut buf: Vec<u8>) -> Result<AppHead, String> {
    let bytes = status.as_bytes();
    let valid_shape = bytes.len() >= 4
        && bytes[..3].iter().all(u8::is_ascii_digit)
        && bytes[3] == b' '
        && (b'1'..=b'5').contains(&bytes[0]);
    if !valid_shape {
        return Err(format!(
            "status {status:?} is not a three-digit code (100-599), a space and a reason phrase"
        ));
    }
    buf.clear();
    buf.extend_from_slice(&bytes[..4]);
    match push_latin1_text(&mut buf, &status[4..]) {
        Ok(()) => {}
        Err(Latin1Error::NotLatin1) => {
            return Err(format!("status {status:?} is not latin-1 encodable"))
        }
        Err(Latin1Error::Control) => {
            return Err(format!("status {status:?} contains a control character"))
        }
    }
    let code = bytes[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Ok(AppHead {
        status: code,
        status_len: buf.len(),
        bytes: buf,
        declared_length: None,
        has_date: false,
        has_server: false,
    })
}

/// Header names the server treats specially.
enum FieldRole {
    /// Refused: see `HOP_BY_HOP`.
    HopByHop,
    ContentLength,
    Date,
    Server,
    Other,
}

fn field_role(name: &str) -> FieldRole {
    if name.eq_ignore_ascii_case("content-length") {
        FieldRole::ContentLength
    } else if name.eq_ignore_ascii_case("date") {
        FieldRole::Date
    } else if name.eq_ignore_ascii_case("server") {
        FieldRole::Server
    } else if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        FieldRole::HopByHop
    } else {
        FieldRole::Other
    }
}

/// Adds one `(name, value)` header to the head.
pub fn add_field(head: &mut AppHead, name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(format!("header name {name:?} is not a valid token"));
    }
    let start = head.bytes.len();
    head.bytes.extend_from_slice(name.as_bytes());
    head.bytes.extend_from_slice(b": ");
    if let Err(e) = push_latin1_text(&mut head.bytes, value) {
        head.bytes.truncate(start);
        return Err(match e {
            Latin1Error::NotLatin1 => format!("header value {value:?} is not latin-1 encodable"),
            Latin1Error::Control => format!(
                "header {name:?} has a control character (CR, LF, NUL...) in its value {value:?}"
            ),
        });
    }
    head.bytes.extend_from_slice(b"\r\n");
    let refused = match field_role(name) {
        FieldRole::HopByHop => Some(format!(
            "header {name:?} is hop-by-hop, which PEP 3333 forbids applications to set"
        )),
        FieldRole::ContentLength => match content_length(head, value) {
            Ok(Some(n)) => {
                head.declared_length = Some(n);
                None
            }
            Ok(None) => {
                // RFC 9110 §8.6: no Content-Length in 1xx or 204 responses.
                head.bytes.truncate(start);
                None
            }
            Err(reason) => Some(reason),
        },
        FieldRole::Date => {
            head.has_date = true;
            None
        }
        FieldRole::Server => {
            head.has_server = true;
            None
        }
        FieldRole::Other => None,
    };
    match refused {
        Some(reason) => {
            head.bytes.truncate(start);
            Err(reason)
        }
        None => Ok(()),
    }
}

/// The value of an application's Content-Length, or `None` when the status
/// allows none.
fn content_length(head: &AppHead, value: &str) -> Result<Option<u64>, String> {
    if head.declared_length.is_some() {
        return Err("more than one Content-Length header".to_string());
    }
    let digits_only =
        !value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit());
    if !digits_only {
        return Err(format!(
            "Content-Length {value:?} is not a non-negative integer"
        ));
    }
    let n: u64 = value
        .parse()
        .map_err(|_| format!("Content-Length {value:?} is out of range"))?;
    if head.status == 204 || (100..200).contains(&head.status) {
        return Ok(None);
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_kept_with_its_reason() {
        let head = parse_status("299 Very Custom", Vec::new()).unwrap();
        assert_eq!(head.status, 299);
        assert_eq!(head.status_line(), b"299 Very Custom");
        assert!(parse_status("200 ", Vec::new()).is_ok());
        assert_eq!(
            parse_status("200 Caf\u{e9}", Vec::new())
                .unwrap()
                .status_line(),
            b"200 Caf\xe9"
        );
    }

    #[test]
    fn bad_statuses() {
        for bad in [
            "200",
            "200OK",
            "OK 200",
            "2000 OK",
            "600 X",
            "099 X",
            "200 O\r\nX: y",
            "200 \0",
            "200 \u{2603}",
            "",
        ] {
            assert!(parse_status(bad, Vec::new()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fields_encoded_and_flags_set() {
        let mut head = parse_status("200 OK", Vec::new()).unwrap();
        add_field(&mut head, "Content-Type", "text/plain").unwrap();
        add_field(&mut head, "content-length", "12").unwrap();
        add_field(&mut head, "Date", "x").unwrap();
        add_field(&mut head, "X-Latin", "\u{e9}").unwrap();
        assert_eq!(
            head.fields(),
            b"Content-Type: text/plain\r\ncontent-length: 12\r\nDate: x\r\nX-Latin: \xe9\r\n"
        );
        assert_eq!(head.declared_length, Some(12));
        assert!(head.has_date && !head.has_server);
    }

    #[test]
    fn bad_fields() {
        let cases = [
            ("X-A", "a\r\nSet-Cookie: x"),
            ("X-A", "a\nb"),
            ("X-A", "a\0b"),
            ("X A", "a"),
            ("X:A", "a"),
            ("", "a"),
            ("X-A", "\u{2603}"),
            ("Connection", "close"),
            ("Transfer-Encoding", "chunked"),
            ("Keep-Alive", "timeout=5"),
            ("Upgrade", "websocket"),
            ("Content-Length", "-1"),
            ("Content-Length", "1 2"),
        ];
        for (name, value) in cases {
            let mut head = parse_status("200 OK", Vec::new()).unwrap();
            assert!(
                add_field(&mut head, name, value).is_err(),
                "{name:?}: {value:?}"
            );
        }
        let mut head = parse_status("200 OK", Vec::new()).unwrap();
        add_field(&mut head, "Content-Length", "1").unwrap();
        assert!(add_field(&mut head, "Content-Length", "1").is_err());
    }

    #[test]
    fn no_content_length_on_204() {
        let mut head = parse_status("204 No Content", Vec::new()).unwrap();
        add_field(&mut head, "Content-Length", "0").unwrap();
        assert!(head.fields().is_empty());
        assert_eq!(head.declared_length, None);
    }
}

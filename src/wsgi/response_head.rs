//! Validation of what an application passes to `start_response` (PEP 3333,
//! "The start_response() Callable"), turning it into the encoded head the
//! HTTP front-end sends. Pure: strings in, `AppHead` or a reason out. A
//! refused status or header becomes a 500 with the reason in the error log,
//! never a malformed response on the wire.

use crate::http1::chunked::is_tchar;
use crate::http1::response::AppHead;

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

/// Encodes a native string as latin-1, refusing characters beyond U+00FF
/// (PEP 3333, "Unicode Issues").
fn latin1(s: &str, what: &str) -> Result<Vec<u8>, String> {
    s.chars()
        .map(|c| {
            u8::try_from(u32::from(c)).map_err(|_| format!("{what} {s:?} is not latin-1 encodable"))
        })
        .collect()
}

/// Field-value and reason-phrase characters: no control characters but HTAB
/// (RFC 9110 §5.5), which rules out CR, LF and NUL.
fn is_text_byte(b: u8) -> bool {
    b == b'\t' || (b' '..0x7f).contains(&b) || b >= 0x80
}

/// Starts an `AppHead` from a status such as `"200 OK"`.
pub fn parse_status(status: &str) -> Result<AppHead, String> {
    let bytes = latin1(status, "status")?;
    let valid_shape = bytes.len() >= 4
        && bytes[..3].iter().all(u8::is_ascii_digit)
        && bytes[3] == b' '
        && (b'1'..=b'5').contains(&bytes[0]);
    if !valid_shape {
        return Err(format!(
            "status {status:?} is not a three-digit code (100-599), a space and a reason phrase"
        ));
    }
    if !bytes[4..].iter().all(|&b| is_text_byte(b)) {
        return Err(format!("status {status:?} contains a control character"));
    }
    let code = bytes[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Ok(AppHead {
        status: code,
        status_line: bytes,
        fields: Vec::with_capacity(128),
        declared_length: None,
        has_date: false,
        has_server: false,
    })
}

/// Adds one `(name, value)` header to the head.
pub fn add_field(head: &mut AppHead, name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(format!("header name {name:?} is not a valid token"));
    }
    let value_bytes = latin1(value, "header value")?;
    if !value_bytes.iter().all(|&b| is_text_byte(b)) {
        return Err(format!(
            "header {name:?} has a control character (CR, LF, NUL...) in its value {value:?}"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if HOP_BY_HOP.contains(&lower.as_str()) {
        return Err(format!(
            "header {name:?} is hop-by-hop, which PEP 3333 forbids applications to set"
        ));
    }
    match lower.as_str() {
        "content-length" => {
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
                // RFC 9110 §8.6: no Content-Length in 1xx or 204 responses.
                return Ok(());
            }
            head.declared_length = Some(n);
        }
        "date" => head.has_date = true,
        "server" => head.has_server = true,
        _ => {}
    }
    head.fields.extend_from_slice(name.as_bytes());
    head.fields.extend_from_slice(b": ");
    head.fields.extend_from_slice(&value_bytes);
    head.fields.extend_from_slice(b"\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_kept_with_its_reason() {
        let head = parse_status("299 Very Custom").unwrap();
        assert_eq!(head.status, 299);
        assert_eq!(head.status_line, b"299 Very Custom");
        assert!(parse_status("200 ").is_ok());
        assert_eq!(
            parse_status("200 Caf\u{e9}").unwrap().status_line,
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
            assert!(parse_status(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fields_encoded_and_flags_set() {
        let mut head = parse_status("200 OK").unwrap();
        add_field(&mut head, "Content-Type", "text/plain").unwrap();
        add_field(&mut head, "content-length", "12").unwrap();
        add_field(&mut head, "Date", "x").unwrap();
        add_field(&mut head, "X-Latin", "\u{e9}").unwrap();
        assert_eq!(
            head.fields,
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
            let mut head = parse_status("200 OK").unwrap();
            assert!(
                add_field(&mut head, name, value).is_err(),
                "{name:?}: {value:?}"
            );
        }
        let mut head = parse_status("200 OK").unwrap();
        add_field(&mut head, "Content-Length", "1").unwrap();
        assert!(add_field(&mut head, "Content-Length", "1").is_err());
    }

    #[test]
    fn no_content_length_on_204() {
        let mut head = parse_status("204 No Content").unwrap();
        add_field(&mut head, "Content-Length", "0").unwrap();
        assert!(head.fields.is_empty());
        assert_eq!(head.declared_length, None);
    }
}

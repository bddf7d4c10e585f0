//! SCGI (the SCGI protocol specification, Neil Schemenauer, 2008), as
//! nginx's `scgi_pass`, Apache's mod_proxy_scgi and lighttpd's mod_scgi
//! speak it: the request's variables as one netstring,
//! `<length>:<name>\0<value>\0...,`, CONTENT_LENGTH first and `SCGI` = `1`
//! among them, no name twice; then the body, CONTENT_LENGTH bytes. The
//! response is CGI-style (a `Status:` field, header fields, the body) and
//! the connection carries one request.
//!
//! Pure: bytes and a limit in, `Ok(Some((head, used)))`, `Ok(None)` (need
//! more bytes) or a `ClientError` out.

use crate::proto::cgi::{head_from_vars, VarSpans};
use crate::proto::error::{ClientError, ClientErrorKind};
use crate::proto::request::RequestHead;

/// Most digits a netstring length may have before its ':' (a length of
/// ten digits is already past any sensible buffer_size).
const MAX_LENGTH_DIGITS: usize = 10;

fn bad(reason: &'static str) -> ClientError {
    ClientError::bad_request(reason)
}

/// Parses the SCGI netstring of variables at the start of `buf`; one
/// longer than `max_vars` bytes is refused (431).
pub fn parse(buf: &[u8], max_vars: usize) -> Result<Option<(RequestHead, usize)>, ClientError> {
    let Some(colon) = buf
        .iter()
        .take(MAX_LENGTH_DIGITS + 1)
        .position(|&b| b == b':')
    else {
        if buf.len() > MAX_LENGTH_DIGITS || !buf.iter().all(u8::is_ascii_digit) {
            return Err(bad("SCGI netstring length is not a number"));
        }
        return Ok(None);
    };
    let digits = &buf[..colon];
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return Err(bad("SCGI netstring length is not a number"));
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| bad("SCGI netstring length is not a number"))?;
    if len > max_vars {
        return Err(ClientError::new(
            ClientErrorKind::HeadersTooLarge,
            "SCGI variables larger than buffer_size",
        ));
    }
    let start = colon + 1;
    let end = start + len;
    if buf.len() < end + 1 {
        return Ok(None);
    }
    if buf[end] != b',' {
        return Err(bad("SCGI netstring does not end with ','"));
    }
    let block = buf[start..end].to_vec();
    let vars = parse_vars(&block)?;
    Ok(Some((head_from_vars(block, vars)?, end + 1)))
}

/// The (name, value) spans of the NUL-separated variables, checked as the
/// specification requires.
fn parse_vars(block: &[u8]) -> Result<Vec<VarSpans>, ClientError> {
    if block.last() != Some(&0) {
        return Err(bad("SCGI variables do not end with a NUL"));
    }
    let mut vars: Vec<VarSpans> = Vec::with_capacity(16);
    // Names seen, to refuse one sent twice without comparing every pair.
    let mut seen = std::collections::HashSet::with_capacity(16);
    let mut at = 0;
    while at < block.len() {
        let name_end = at + memchr::memchr(0, &block[at..]).unwrap_or(block.len() - at);
        let value_start = name_end + 1;
        let Some(value_len) = block
            .get(value_start..)
            .and_then(|rest| memchr::memchr(0, rest))
        else {
            return Err(bad("SCGI variable without a value"));
        };
        let name = at..name_end;
        let value = value_start..value_start + value_len;
        if name.is_empty() {
            return Err(bad("SCGI variable with an empty name"));
        }
        if !seen.insert(&block[name.clone()]) {
            return Err(bad("SCGI variable sent twice"));
        }
        vars.push((name, value));
        at = value_start + value_len + 1;
    }
    match vars.first() {
        Some((n, _)) if &block[n.clone()] == b"CONTENT_LENGTH" => {}
        _ => return Err(bad("SCGI variables do not begin with CONTENT_LENGTH")),
    }
    if !vars
        .iter()
        .any(|(n, v)| &block[n.clone()] == b"SCGI" && &block[v.clone()] == b"1")
    {
        return Err(bad("SCGI variables lack SCGI=1"));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes an SCGI request head (for tests of the parser).
    fn encode(vars: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in vars {
            block.extend_from_slice(name);
            block.push(0);
            block.extend_from_slice(value);
            block.push(0);
        }
        let mut out = format!("{}:", block.len()).into_bytes();
        out.extend_from_slice(&block);
        out.push(b',');
        out
    }
    use crate::proto::request::BodyFraming;

    /// The example request of the specification.
    const SPEC_EXAMPLE: &[u8] = b"70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/deepthought\x00,What is the answer to life?";

    #[test]
    fn the_specification_example() {
        let (head, used) = parse(SPEC_EXAMPLE, 4096).unwrap().unwrap();
        assert_eq!(&SPEC_EXAMPLE[used..], b"What is the answer to life?");
        assert_eq!(head.method(), b"POST");
        assert_eq!(head.target(), b"/deepthought");
        assert_eq!(head.framing, BodyFraming::Length(27));
        for n in 0..used {
            assert!(
                parse(&SPEC_EXAMPLE[..n], 4096).unwrap().is_none(),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn limit_at_and_past() {
        assert!(parse(SPEC_EXAMPLE, 70).unwrap().is_some());
        assert_eq!(parse(SPEC_EXAMPLE, 69).unwrap_err().status().0, 431);
    }

    #[test]
    fn malformed_netstrings_are_refused() {
        let status = |b: &[u8]| parse(b, 4096).unwrap_err().status().0;
        assert_eq!(status(b"x:"), 400);
        assert_eq!(status(b"07:"), 400);
        assert_eq!(status(b"12345678901"), 400);
        let mut no_comma = SPEC_EXAMPLE[..73].to_vec();
        no_comma.push(b';');
        assert_eq!(status(&no_comma), 400);
        let cl = (&b"CONTENT_LENGTH"[..], &b"0"[..]);
        let scgi = (&b"SCGI"[..], &b"1"[..]);
        let get = (&b"REQUEST_METHOD"[..], &b"GET"[..]);
        assert!(parse(&encode(&[cl, scgi, get]), 4096).unwrap().is_some());
        // CONTENT_LENGTH not first, SCGI missing, a name twice.
        assert_eq!(status(&encode(&[scgi, cl, get])), 400);
        assert_eq!(status(&encode(&[cl, get])), 400);
        assert_eq!(status(&encode(&[cl, scgi, get, get])), 400);
        // A name with no value before the end.
        assert_eq!(status(b"6:A\x00B\x00C\x00,"), 400);
    }
}

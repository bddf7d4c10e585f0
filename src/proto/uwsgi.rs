//! The uwsgi protocol, as nginx's `uwsgi_pass` and Apache's
//! mod_proxy_uwsgi speak it (uWSGI's "The uwsgi protocol" document): a
//! 4-byte header (modifier1, datasize as 16-bit little-endian, modifier2),
//! then `datasize` bytes of variables, each a 16-bit little-endian length
//! and the name, then the same for the value; the body follows, as long as
//! CONTENT_LENGTH says. The response is raw HTTP (a status line, header
//! fields, the body) and the connection carries one request.
//!
//! Pure: bytes and a limit in, `Ok(Some((head, used)))`, `Ok(None)` (need
//! more bytes) or a `ClientError` out.

use crate::proto::cgi::{head_from_vars, VarSpans};
use crate::proto::error::{ClientError, ClientErrorKind};
use crate::proto::request::RequestHead;

/// modifier1 for a WSGI request (uWSGI's default).
pub const MODIFIER_WSGI: u8 = 0;
/// modifier1 30: a WSGI request whose SCRIPT_NAME is to be removed from
/// PATH_INFO (nginx's `uwsgi_modifier1 30`). ferrule removes it whenever
/// PATH_INFO starts with SCRIPT_NAME, so both mean the same here.
pub const MODIFIER_WSGI_STRIP: u8 = 30;

const HEADER_LEN: usize = 4;

/// Parses the uwsgi packet header and variables at the start of `buf`;
/// a variables block larger than `max_vars` bytes is refused (431).
pub fn parse(buf: &[u8], max_vars: usize) -> Result<Option<(RequestHead, usize)>, ClientError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let modifier1 = buf[0];
    if modifier1 != MODIFIER_WSGI && modifier1 != MODIFIER_WSGI_STRIP {
        return Err(ClientError::bad_request(
            "uwsgi modifier1 is not 0 or 30 (a WSGI request)",
        ));
    }
    let size = usize::from(u16::from_le_bytes([buf[1], buf[2]]));
    if size > max_vars {
        return Err(ClientError::new(
            ClientErrorKind::HeadersTooLarge,
            "uwsgi variables larger than buffer_size",
        ));
    }
    let end = HEADER_LEN + size;
    if buf.len() < end {
        return Ok(None);
    }
    let block = buf[HEADER_LEN..end].to_vec();
    let vars = parse_vars(&block)?;
    Ok(Some((head_from_vars(block, vars)?, end)))
}

/// The (name, value) spans of a uwsgi variables block.
fn parse_vars(block: &[u8]) -> Result<Vec<VarSpans>, ClientError> {
    let mut vars = Vec::with_capacity(16);
    let mut at = 0;
    let field = |at: &mut usize| {
        let len_end = *at + 2;
        if len_end > block.len() {
            return Err(ClientError::bad_request(
                "uwsgi variable length overruns the variables block",
            ));
        }
        let len = usize::from(u16::from_le_bytes([block[*at], block[*at + 1]]));
        let end = len_end + len;
        if end > block.len() {
            return Err(ClientError::bad_request(
                "uwsgi variable overruns the variables block",
            ));
        }
        *at = end;
        Ok(len_end..end)
    };
    while at < block.len() {
        let name = field(&mut at)?;
        let value = field(&mut at)?;
        if name.is_empty() {
            return Err(ClientError::bad_request(
                "uwsgi variable with an empty name",
            ));
        }
        vars.push((name, value));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a uwsgi request (for tests and benchmarks of the parser).
    fn encode(modifier1: u8, vars: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in vars {
            for part in [name, value] {
                block.extend_from_slice(&(part.len() as u16).to_le_bytes());
                block.extend_from_slice(part);
            }
        }
        let mut out = vec![modifier1];
        out.extend_from_slice(&(block.len() as u16).to_le_bytes());
        out.push(0);
        out.extend_from_slice(&block);
        out
    }
    use crate::proto::request::BodyFraming;

    fn request() -> Vec<u8> {
        let mut r = encode(
            0,
            &[
                (b"QUERY_STRING", b"a=1"),
                (b"REQUEST_METHOD", b"POST"),
                (b"CONTENT_LENGTH", b"5"),
                (b"REQUEST_URI", b"/x?a=1"),
                (b"PATH_INFO", b"/x"),
                (b"SERVER_PROTOCOL", b"HTTP/1.1"),
                (b"HTTP_HOST", b"example.com"),
            ],
        );
        r.extend_from_slice(b"hello");
        r
    }

    #[test]
    fn parses_whole_and_in_pieces() {
        let bytes = request();
        let (head, used) = parse(&bytes, 4096).unwrap().unwrap();
        assert_eq!(&bytes[used..], b"hello");
        assert_eq!(head.method(), b"POST");
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert_eq!(head.cgi_var(b"HTTP_HOST"), Some(&b"example.com"[..]));
        assert_eq!(head.cgi.len(), 7);
        // Every prefix short of the variables' end asks for more.
        for n in 0..used {
            assert!(parse(&bytes[..n], 4096).unwrap().is_none(), "{n} bytes");
        }
    }

    #[test]
    fn byte_layout_of_the_specification() {
        // modifier1 0, datasize 21 as little-endian 16 bits, modifier2 0;
        // then the name's length (14) and "REQUEST_METHOD", the value's (3)
        // and "GET".
        let bytes = b"\x00\x15\x00\x00\x0e\x00REQUEST_METHOD\x03\x00GET";
        let (head, used) = parse(bytes, 4096).unwrap().unwrap();
        assert_eq!(used, 25);
        assert_eq!(head.method(), b"GET");
        // The same with an empty name after it is refused.
        let empty_name = b"\x00\x19\x00\x00\x0e\x00REQUEST_METHOD\x03\x00GET\x00\x00\x00\x00";
        assert_eq!(parse(empty_name, 4096).unwrap_err().status().0, 400);
    }

    #[test]
    fn limit_at_and_past() {
        let bytes = request();
        let size = usize::from(u16::from_le_bytes([bytes[1], bytes[2]]));
        assert!(parse(&bytes, size).unwrap().is_some());
        assert_eq!(parse(&bytes, size - 1).unwrap_err().status().0, 431);
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let status = |b: &[u8]| parse(b, 4096).unwrap_err().status().0;
        // A value length past the block's end.
        assert_eq!(status(b"\x00\x08\x00\x00\x01\x00A\x09\x00BCD"), 400);
        // A name length cut in half.
        assert_eq!(status(b"\x00\x01\x00\x00\x01"), 400);
        // modifier1 5 (PSGI) is not a WSGI request.
        assert_eq!(status(b"\x05\x00\x00\x00"), 400);
        // No REQUEST_METHOD.
        assert_eq!(status(&encode(0, &[(b"PATH_INFO", b"/")])), 400);
        // modifier1 30 is accepted.
        assert!(parse(&encode(30, &[(b"REQUEST_METHOD", b"GET")]), 4096)
            .unwrap()
            .is_some());
    }
}

//! Chunked transfer coding, request side (RFC 9112 §7.1).
//!
//! Pure: the decoder is fed the bytes at hand and says how many it used and
//! which of them are body data. It consumes control lines (chunk sizes,
//! trailers) only once they are complete, so the caller keeps unconsumed bytes
//! and feeds them again with more. Trailer fields are checked and discarded,
//! never merged into the header fields.

use std::ops::Range;

use crate::proto::chars::{is_tchar, is_text_byte};
use crate::proto::error::{ClientError, ClientErrorKind};

/// Longest chunk-size line, extensions included. Extensions carry nothing a
/// WSGI application can see, so a small bound costs nothing.
pub const MAX_CHUNK_LINE: usize = 4096;

/// What one call to `decode` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body data at this range of the input.
    Data(Range<usize>),
    /// Every byte given was used (or an incomplete line was left): feed more.
    NeedMore,
    /// The last chunk and the trailer section have been read.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data,
    DataEnd,
    Trailers,
    Done,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    chunk_remaining: u64,
    /// Body bytes decoded so far, held to `max_body`.
    total: u64,
    max_body: u64,
    /// Trailer bytes so far, held to `max_trailers`.
    trailer_bytes: usize,
    max_trailers: usize,
}

fn bad(reason: &'static str) -> ClientError {
    ClientError::bad_request(reason)
}

impl ChunkedDecoder {
    pub fn new(max_body: u64, max_trailers: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            chunk_remaining: 0,
            total: 0,
            max_body,
            trailer_bytes: 0,
            max_trailers,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input`; returns how many bytes were used and
    /// what they were.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Chunk), ClientError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => return Ok((pos, Chunk::Done)),
                State::Size => {
                    let Some(line) =
                        complete_line(rest, MAX_CHUNK_LINE, "chunk size line too long")?
                    else {
                        return Ok((pos, Chunk::NeedMore));
                    };
                    let size = parse_chunk_size(&rest[..line])?;
                    pos += line + 2;
                    if size == 0 {
                        self.state = State::Trailers;
                        continue;
                    }
                    self.total = self
                        .total
                        .checked_add(size)
                        .filter(|&t| t <= self.max_body)
                        .ok_or(ClientError::new(
                            ClientErrorKind::PayloadTooLarge,
                            "chunked body larger than limit_request_body",
                        ))?;
                    self.chunk_remaining = size;
                    self.state = State::Data;
                }
                State::Data => {
                    if rest.is_empty() {
                        return Ok((pos, Chunk::NeedMore));
                    }
                    let take = rest
                        .len()
                        .min(usize::try_from(self.chunk_remaining).unwrap_or(usize::MAX));
                    self.chunk_remaining -= take as u64;
                    if self.chunk_remaining == 0 {
                        self.state = State::DataEnd;
                    }
                    return Ok((pos + take, Chunk::Data(pos..pos + take)));
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|&b| b != b'\r') {
                            return Err(bad("chunk data not followed by CRLF"));
                        }
                        return Ok((pos, Chunk::NeedMore));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(bad("chunk data not followed by CRLF"));
                    }
                    pos += 2;
                    self.state = State::Size;
                }
                State::Trailers => {
                    let room = self.max_trailers.saturating_sub(self.trailer_bytes);
                    let Some(line) = complete_line(rest, room, "trailer section too large")? else {
                        return Ok((pos, Chunk::NeedMore));
                    };
                    if line == 0 {
                        pos += 2;
                        self.state = State::Done;
                        continue;
                    }
                    validate_trailer_field(&rest[..line])?;
                    self.trailer_bytes += line + 2;
                    if self.trailer_bytes > self.max_trailers {
                        return Err(ClientError::new(
                            ClientErrorKind::HeadersTooLarge,
                            "trailer section larger than limit_request_head",
                        ));
                    }
                    pos += line + 2;
                }
            }
        }
    }
}

/// The length of the CRLF-terminated line at the start of `bytes`, without its
/// CRLF; `None` if the line is not complete yet. A bare LF or CR is refused.
fn complete_line(
    bytes: &[u8],
    max: usize,
    too_long: &'static str,
) -> Result<Option<usize>, ClientError> {
    match memchr::memchr(b'\n', bytes) {
        None if bytes.len() > max + 1 => {
            Err(ClientError::new(ClientErrorKind::BadRequest, too_long))
        }
        None => Ok(None),
        Some(lf) if lf == 0 || bytes[lf - 1] != b'\r' => Err(bad("bare LF in chunked body")),
        Some(lf) if lf - 1 > max => Err(ClientError::new(ClientErrorKind::BadRequest, too_long)),
        Some(lf) => {
            if memchr::memchr(b'\r', &bytes[..lf - 1]).is_some() {
                return Err(bad("bare CR in chunked body"));
            }
            Ok(Some(lf - 1))
        }
    }
}

/// `chunk-size [ chunk-ext ]` where chunk-size is 1*HEXDIG (RFC 9112 §7.1).
fn parse_chunk_size(line: &[u8]) -> Result<u64, ClientError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(bad("invalid chunk size"));
    }
    let ext = &line[digits..];
    // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    let after_bws = ext
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map(|i| &ext[i..]);
    match after_bws {
        None if ext.is_empty() => {}
        Some([b';', rest @ ..])
            if rest
                .iter()
                .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b) || b >= 0x80) => {}
        _ => return Err(bad("invalid chunk extension")),
    }
    let mut size: u64 = 0;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).expect("hex digit") as u64;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(v))
            .ok_or_else(|| bad("chunk size overflows"))?;
    }
    Ok(size)
}

/// A trailer field must at least look like a header field: a token name, a
/// colon, and a value free of control characters.
fn validate_trailer_field(line: &[u8]) -> Result<(), ClientError> {
    let colon = memchr::memchr(b':', line).ok_or_else(|| bad("invalid trailer field"))?;
    let name_ok = colon > 0 && line[..colon].iter().all(|&b| is_tchar(b));
    let value_ok = line[colon + 1..].iter().all(|&b| is_text_byte(b));
    if name_ok && value_ok {
        Ok(())
    } else {
        Err(bad("invalid trailer field"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes, the way a socket might
    /// deliver it; returns the body or the first error.
    fn decode_in_steps(input: &[u8], step: usize, max_body: u64) -> Result<Vec<u8>, ClientError> {
        let mut dec = ChunkedDecoder::new(max_body, 1024);
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            let (used, chunk) = dec.decode(&pending)?;
            match chunk {
                Chunk::Data(r) => body.extend_from_slice(&pending[r]),
                Chunk::Done => {
                    assert_eq!(
                        used,
                        pending.len(),
                        "nothing after the trailers in these cases"
                    );
                    return Ok(body);
                }
                Chunk::NeedMore => {
                    if fed == input.len() {
                        return Err(bad("test input ended early"));
                    }
                    let end = (fed + step).min(input.len());
                    pending.drain(..used);
                    pending.extend_from_slice(&input[fed..end]);
                    fed = end;
                    continue;
                }
            }
            pending.drain(..used);
        }
    }

    fn decode_all_ways(input: &[u8]) -> Result<Vec<u8>, ClientError> {
        let whole = decode_in_steps(input, input.len().max(1), u64::MAX);
        for step in [1, 2, 3, 7] {
            assert_eq!(decode_in_steps(input, step, u64::MAX), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn decodes_chunks_and_discards_trailers() {
        let body =
            decode_all_ways(b"5\r\nhello\r\n6;name=val\r\n world\r\n0\r\nX-T: 1\r\n\r\n").unwrap();
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn upper_and_lower_hex() {
        let data = vec![b'x'; 0x1a];
        let mut input = b"1A\r\n".to_vec();
        input.extend_from_slice(&data);
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(decode_all_ways(&input).unwrap(), data);
    }

    #[test]
    fn bad_framing_is_refused() {
        let cases: &[&[u8]] = &[
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"x\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5;a\x00b\r\nhello\r\n0\r\n\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            b"0\r\nX: a\x01\r\n\r\n",
        ];
        for case in cases {
            let err = decode_all_ways(case).unwrap_err();
            assert_eq!(
                err.status().0,
                400,
                "{}: {err}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn chunk_size_line_limit() {
        let mut at =
            format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(MAX_CHUNK_LINE - 2)).into_bytes();
        assert_eq!(decode_all_ways(&at).unwrap(), b"hello");
        at.insert(3, b'a');
        assert_eq!(decode_all_ways(&at).unwrap_err().status().0, 400);
    }

    #[test]
    fn body_limit_at_and_past() {
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(decode_in_steps(input, 4, 11).unwrap(), b"hello world");
        assert_eq!(decode_in_steps(input, 4, 10).unwrap_err().status().0, 413);
    }

    #[test]
    fn trailer_limit() {
        let mut dec = ChunkedDecoder::new(u64::MAX, 8);
        assert_eq!(
            dec.decode(b"0\r\nA: 123\r\n\r\n").unwrap(),
            (13, Chunk::Done)
        );
        let mut dec = ChunkedDecoder::new(u64::MAX, 8);
        assert_eq!(
            dec.decode(b"0\r\nA: 1234\r\n\r\n").unwrap_err().status().0,
            431
        );
    }

    #[test]
    fn leaves_following_bytes_alone() {
        let mut dec = ChunkedDecoder::new(u64::MAX, 64);
        let input = b"1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (used, chunk) = dec.decode(input).unwrap();
        assert_eq!(chunk, Chunk::Data(3..4));
        let (used2, chunk) = dec.decode(&input[used..]).unwrap();
        assert_eq!(chunk, Chunk::Done);
        assert_eq!(&input[used + used2..], b"GET / HTTP/1.1\r\n");
    }
}

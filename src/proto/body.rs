//! Request body decoding over any framing: a length, HTTP/1 chunked
//! (RFC 9112 §6.3), or a FastCGI request's STDIN records. Pure: the same
//! decoder serves the application's blocking reads of `wsgi.input` and the
//! connection's asynchronous draining of an unread body.

use crate::proto::error::{ClientError, ClientErrorKind};
use crate::proto::fastcgi::StdinDecoder;
pub use crate::proto::http1::chunked::Chunk;
use crate::proto::http1::chunked::ChunkedDecoder;
use crate::proto::request::BodyFraming;

#[derive(Debug)]
pub enum BodyDecoder {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
    FastCgi(StdinDecoder),
    Done,
}

impl BodyDecoder {
    /// A decoder for `framing`, refusing a declared length over `max_body`
    /// before any of the body is read (413).
    pub fn new(
        framing: BodyFraming,
        max_body: u64,
        max_trailers: usize,
    ) -> Result<Self, ClientError> {
        Ok(match framing {
            BodyFraming::Empty => BodyDecoder::Done,
            BodyFraming::Length(n) if n > max_body => {
                return Err(ClientError::new(
                    ClientErrorKind::PayloadTooLarge,
                    "Content-Length larger than limit_request_body",
                ))
            }
            BodyFraming::Length(n) => BodyDecoder::Length { remaining: n },
            BodyFraming::Chunked => {
                BodyDecoder::Chunked(ChunkedDecoder::new(max_body, max_trailers))
            }
            BodyFraming::FastCgiStdin { request_id } => {
                BodyDecoder::FastCgi(StdinDecoder::new(request_id, max_body))
            }
        })
    }

    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Done => true,
            BodyDecoder::Length { remaining } => *remaining == 0,
            BodyDecoder::Chunked(c) => c.is_done(),
            BodyDecoder::FastCgi(f) => f.is_done(),
        }
    }

    /// Decodes from the start of `input`: how many bytes were used and what
    /// they were. Bytes past the body's end are never used.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Chunk), ClientError> {
        match self {
            BodyDecoder::Done => Ok((0, Chunk::Done)),
            BodyDecoder::Length { remaining: 0 } => Ok((0, Chunk::Done)),
            BodyDecoder::Length { remaining } => {
                if input.is_empty() {
                    return Ok((0, Chunk::NeedMore));
                }
                let take = input
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= take as u64;
                Ok((take, Chunk::Data(0..take)))
            }
            BodyDecoder::Chunked(c) => c.decode(input),
            BodyDecoder::FastCgi(f) => f.decode(input),
        }
    }

    /// Bytes the protocol owes the peer for what came with the body (a
    /// FastCGI gateway's refused BEGIN_REQUEST); empty for the others.
    pub fn take_replies(&mut self) -> Vec<u8> {
        match self {
            BodyDecoder::FastCgi(f) => f.take_replies(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_stops_at_body_end() {
        let mut d = BodyDecoder::new(BodyFraming::Length(3), 10, 0).unwrap();
        assert_eq!(d.decode(b"ab").unwrap(), (2, Chunk::Data(0..2)));
        assert_eq!(d.decode(b"cGET").unwrap(), (1, Chunk::Data(0..1)));
        assert!(d.is_done());
        assert_eq!(d.decode(b"GET").unwrap(), (0, Chunk::Done));
    }

    #[test]
    fn length_limit_at_and_past() {
        assert!(BodyDecoder::new(BodyFraming::Length(10), 10, 0).is_ok());
        let err = BodyDecoder::new(BodyFraming::Length(11), 10, 0).unwrap_err();
        assert_eq!(err.status().0, 413);
    }

    #[test]
    fn empty_is_done() {
        assert!(BodyDecoder::new(BodyFraming::Empty, 0, 0)
            .unwrap()
            .is_done());
    }
}

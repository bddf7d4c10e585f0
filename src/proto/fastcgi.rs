//! FastCGI 1.0 (the FastCGI Specification, Open Market, 1996), responder
//! role, as nginx's `fastcgi_pass`, Apache's mod_proxy_fcgi and lighttpd's
//! mod_fastcgi speak it. Pure: records in, requests, replies and body
//! bytes out; records out for the response (`FastCgiEncoder`).
//!
//! A record is an 8-byte header (version 1, type, request id and content
//! length as 16-bit big-endian, padding length, a reserved byte), then the
//! content and the padding. A request is BEGIN_REQUEST, a PARAMS stream of
//! name-value pairs ended by an empty PARAMS record, and a STDIN stream
//! ended by an empty STDIN record; the response is a STDOUT stream (a
//! CGI-style response) ended the same way, then END_REQUEST. ferrule runs
//! one request at a time per connection (FCGI_MPXS_CONNS is 0): another
//! request id that begins meanwhile gets END_REQUEST with CANT_MPX_CONN.

use crate::proto::app_head::AppHead;
use crate::proto::cgi::{head_from_vars, VarSpans};
use crate::proto::error::{ClientError, ClientErrorKind};
use crate::proto::http1::chunked::Chunk;
use crate::proto::http1::response::{HeadStyle, ResponseEncoder};
use crate::proto::request::RequestHead;

pub const VERSION_1: u8 = 1;
pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

/// BEGIN_REQUEST's role: the only one served.
pub const RESPONDER: u16 = 1;
/// BEGIN_REQUEST's flag: keep the connection open after the request.
pub const KEEP_CONN: u8 = 1;

/// END_REQUEST's protocol status.
pub const REQUEST_COMPLETE: u8 = 0;
pub const CANT_MPX_CONN: u8 = 1;
pub const UNKNOWN_ROLE: u8 = 3;

const HEADER_LEN: usize = 8;
/// The most content one record carries.
pub const MAX_CONTENT: usize = 65535;

fn bad(reason: &'static str) -> ClientError {
    ClientError::bad_request(reason)
}

/// A record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub request_id: u16,
    pub content_len: usize,
    pub padding_len: usize,
}

impl Header {
    /// The header at the start of `buf`, if all of it is there.
    pub fn parse(buf: &[u8]) -> Result<Option<Header>, ClientError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        if buf[0] != VERSION_1 {
            return Err(bad("FastCGI record version is not 1"));
        }
        Ok(Some(Header {
            kind: buf[1],
            request_id: u16::from_be_bytes([buf[2], buf[3]]),
            content_len: usize::from(u16::from_be_bytes([buf[4], buf[5]])),
            padding_len: usize::from(buf[6]),
        }))
    }

    fn record_len(&self) -> usize {
        HEADER_LEN + self.content_len + self.padding_len
    }
}

/// Appends a record header for `content_len` bytes (no padding).
pub fn push_header(out: &mut Vec<u8>, kind: u8, request_id: u16, content_len: usize) {
    debug_assert!(content_len <= MAX_CONTENT);
    let id = request_id.to_be_bytes();
    let len = (content_len as u16).to_be_bytes();
    out.extend_from_slice(&[VERSION_1, kind, id[0], id[1], len[0], len[1], 0, 0]);
}

/// Appends a whole record.
pub fn push_record(out: &mut Vec<u8>, kind: u8, request_id: u16, content: &[u8]) {
    push_header(out, kind, request_id, content.len());
    out.extend_from_slice(content);
}

/// Appends END_REQUEST for `request_id`.
pub fn push_end_request(out: &mut Vec<u8>, request_id: u16, protocol_status: u8) {
    push_record(
        out,
        END_REQUEST,
        request_id,
        &[0, 0, 0, 0, protocol_status, 0, 0, 0],
    );
}

/// Rewrites `out[from..]` as records of `kind`, each of at most
/// `MAX_CONTENT` bytes.
fn wrap_in_records(out: &mut Vec<u8>, from: usize, kind: u8, request_id: u16) {
    let content = out.split_off(from);
    for piece in content.chunks(MAX_CONTENT) {
        push_record(out, kind, request_id, piece);
    }
}

/// A name-value pair length: one byte below 128, else four with the high
/// bit set (the specification's FCGI_NameValuePair*).
fn pair_len(block: &[u8], at: &mut usize) -> Result<usize, ClientError> {
    let first = *block
        .get(*at)
        .ok_or_else(|| bad("FastCGI name-value length overruns the params"))?;
    if first < 0x80 {
        *at += 1;
        return Ok(usize::from(first));
    }
    let bytes = block
        .get(*at..*at + 4)
        .ok_or_else(|| bad("FastCGI name-value length overruns the params"))?;
    *at += 4;
    Ok((u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & 0x7fff_ffff) as usize)
}

/// The (name, value) spans of a PARAMS stream's name-value pairs.
pub fn parse_pairs(block: &[u8]) -> Result<Vec<VarSpans>, ClientError> {
    let mut vars = Vec::with_capacity(24);
    let mut at = 0;
    while at < block.len() {
        let name_len = pair_len(block, &mut at)?;
        let value_len = pair_len(block, &mut at)?;
        let name = at..at.checked_add(name_len).ok_or_else(|| bad("overflow"))?;
        let value = name.end
            ..name
                .end
                .checked_add(value_len)
                .ok_or_else(|| bad("overflow"))?;
        if value.end > block.len() {
            return Err(bad("FastCGI name-value pair overruns the params"));
        }
        if name.is_empty() {
            return Err(bad("FastCGI param with an empty name"));
        }
        at = value.end;
        vars.push((name, value));
    }
    Ok(vars)
}

/// Appends a name-value pair (for GET_VALUES_RESULT, and for tests).
pub fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for len in [name.len(), value.len()] {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// A request whose params are complete.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub request_id: u16,
    /// FCGI_KEEP_CONN: the gateway keeps the connection for more requests.
    pub keep_conn: bool,
}

/// What the server answers to GET_VALUES (FCGI_MAX_CONNS, FCGI_MAX_REQS).
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub max_conns: u32,
    pub max_reqs: u32,
}

/// The request being received on a connection.
#[derive(Debug)]
struct Active {
    request_id: u16,
    keep_conn: bool,
}

/// Reads records between requests until one request's params are complete,
/// answering management records and refused requests as it goes (the
/// replies wait in `replies` for the connection to send).
#[derive(Debug, Default)]
pub struct ConnParser {
    active: Option<Active>,
    params: Vec<u8>,
    /// Records to send the gateway now.
    pub replies: Vec<u8>,
}

impl ConnParser {
    pub fn new() -> Self {
        ConnParser::default()
    }

    /// The request id being received, if one has begun: a refusal is sent
    /// to it.
    pub fn active_request(&self) -> Option<u16> {
        self.active.as_ref().map(|a| a.request_id)
    }

    /// Consumes whole records from the start of `buf`. Returns how many
    /// bytes it used and, once a request's params are complete, the
    /// request. `max_params` bounds the PARAMS stream (431 past it).
    pub fn parse(
        &mut self,
        buf: &[u8],
        max_params: usize,
        capacity: Capacity,
    ) -> Result<(Option<Request>, usize), ClientError> {
        let mut used = 0;
        while let Some(header) = Header::parse(&buf[used..])? {
            if buf.len() - used < header.record_len() {
                break;
            }
            let content = &buf[used + HEADER_LEN..used + HEADER_LEN + header.content_len];
            used += header.record_len();
            if let Some(request) = self.record(header, content, max_params, capacity)? {
                return Ok((Some(request), used));
            }
        }
        Ok((None, used))
    }

    fn record(
        &mut self,
        header: Header,
        content: &[u8],
        max_params: usize,
        capacity: Capacity,
    ) -> Result<Option<Request>, ClientError> {
        let id = header.request_id;
        if id == 0 {
            self.management(header.kind, content, capacity);
            return Ok(None);
        }
        let ours = self.active_request() == Some(id);
        match header.kind {
            BEGIN_REQUEST if self.active.is_some() && !ours => {
                push_end_request(&mut self.replies, id, CANT_MPX_CONN);
            }
            BEGIN_REQUEST => {
                if content.len() < 8 {
                    return Err(bad("FastCGI BEGIN_REQUEST body too short"));
                }
                let role = u16::from_be_bytes([content[0], content[1]]);
                if role != RESPONDER {
                    push_end_request(&mut self.replies, id, UNKNOWN_ROLE);
                    return Ok(None);
                }
                self.active = Some(Active {
                    request_id: id,
                    keep_conn: content[2] & KEEP_CONN != 0,
                });
                self.params.clear();
            }
            PARAMS if ours && content.is_empty() => {
                let block = std::mem::take(&mut self.params);
                let vars = parse_pairs(&block)?;
                let mut head = head_from_vars(block, vars)?;
                let Some(active) = self.active.take() else {
                    return Ok(None);
                };
                head.keep_alive = active.keep_conn;
                return Ok(Some(Request {
                    head,
                    request_id: active.request_id,
                    keep_conn: active.keep_conn,
                }));
            }
            PARAMS if ours => {
                if self.params.len() + content.len() > max_params {
                    return Err(ClientError::new(
                        ClientErrorKind::HeadersTooLarge,
                        "FastCGI params larger than buffer_size",
                    ));
                }
                self.params.extend_from_slice(content);
            }
            ABORT_REQUEST if ours => {
                // Aborted before it started: nothing ran, so it is over.
                self.active = None;
                push_end_request(&mut self.replies, id, REQUEST_COMPLETE);
            }
            STDIN if ours => return Err(bad("FastCGI STDIN before the params ended")),
            // Records of requests not begun (or refused) are ignored.
            _ => {}
        }
        Ok(None)
    }

    /// A management record (request id 0): GET_VALUES is answered, any
    /// other type gets UNKNOWN_TYPE.
    fn management(&mut self, kind: u8, content: &[u8], capacity: Capacity) {
        if kind != GET_VALUES {
            push_record(
                &mut self.replies,
                UNKNOWN_TYPE,
                0,
                &[kind, 0, 0, 0, 0, 0, 0, 0],
            );
            return;
        }
        // Each known name answered once, however often it was asked: the
        // reply then fits one record.
        let mut result = Vec::new();
        let mut answered = [false; 3];
        for (name, _) in parse_pairs(content).unwrap_or_default() {
            let (slot, value) = match &content[name.clone()] {
                b"FCGI_MAX_CONNS" => (0, capacity.max_conns.to_string()),
                b"FCGI_MAX_REQS" => (1, capacity.max_reqs.to_string()),
                b"FCGI_MPXS_CONNS" => (2, "0".to_string()),
                _ => continue,
            };
            if !std::mem::replace(&mut answered[slot], true) {
                push_pair(&mut result, &content[name], value.as_bytes());
            }
        }
        push_record(&mut self.replies, GET_VALUES_RESULT, 0, &result);
    }
}

/// Decodes a request's STDIN stream out of the connection's records: the
/// body's bytes, until the empty STDIN record. A BEGIN_REQUEST for another
/// id meanwhile is answered END_REQUEST with CANT_MPX_CONN (`take_replies`),
/// as between requests; other records of other ids are skipped;
/// ABORT_REQUEST for this one ends the body as a client error.
#[derive(Debug)]
pub struct StdinDecoder {
    request_id: u16,
    /// Content bytes of the current STDIN record still to come, then its
    /// padding; `None` between records.
    record: Option<(usize, usize)>,
    /// Body bytes decoded, against `max_body`.
    received: u64,
    max_body: u64,
    done: bool,
    /// END_REQUEST records for requests another id tried to begin.
    replies: Vec<u8>,
}

/// Most refusals queued while one body is read: a gateway that keeps
/// beginning requests on a connection that said it cannot multiplex is
/// refused past it.
const MAX_QUEUED_REFUSALS: usize = 64;

impl StdinDecoder {
    pub fn new(request_id: u16, max_body: u64) -> Self {
        StdinDecoder {
            request_id,
            record: None,
            received: 0,
            max_body,
            done: false,
            replies: Vec::new(),
        }
    }

    /// The records to send the gateway for what it sent meanwhile.
    pub fn take_replies(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.replies)
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Decodes from the start of `input`: how many bytes were used and
    /// what they were (body data at a range of `input`, more needed, or
    /// the end of the body).
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Chunk), ClientError> {
        let mut at = 0;
        loop {
            // The end comes once the empty STDIN record's padding is read
            // too: on a kept connection the next request's records follow.
            if self.done && matches!(self.record, None | Some((0, 0))) {
                return Ok((at, Chunk::Done));
            }
            match self.record {
                Some((0, 0)) => self.record = None,
                Some((0, padding)) => {
                    let skip = padding.min(input.len() - at);
                    at += skip;
                    self.record = Some((0, padding - skip));
                    if skip == 0 {
                        return Ok((at, Chunk::NeedMore));
                    }
                }
                Some((left, padding)) => {
                    let take = left.min(input.len() - at);
                    if take == 0 {
                        return Ok((at, Chunk::NeedMore));
                    }
                    self.received += take as u64;
                    if self.received > self.max_body {
                        return Err(ClientError::new(
                            ClientErrorKind::PayloadTooLarge,
                            "request body larger than limit_request_body",
                        ));
                    }
                    self.record = Some((left - take, padding));
                    return Ok((at + take, Chunk::Data(at..at + take)));
                }
                None => {
                    let Some(header) = Header::parse(&input[at..])? else {
                        return Ok((at, Chunk::NeedMore));
                    };
                    let ours = header.request_id == self.request_id;
                    match header.kind {
                        STDIN if ours => {
                            at += HEADER_LEN;
                            if header.content_len == 0 {
                                self.done = true;
                                self.record = Some((0, header.padding_len));
                            } else {
                                self.record = Some((header.content_len, header.padding_len));
                            }
                        }
                        ABORT_REQUEST if ours => {
                            return Err(bad("the gateway aborted the request"));
                        }
                        _ => {
                            // Another request's record, or a management
                            // record mid-request: skipped whole.
                            if input.len() - at < header.record_len() {
                                return Ok((at, Chunk::NeedMore));
                            }
                            if header.kind == BEGIN_REQUEST && header.request_id != 0 {
                                let record = 2 * HEADER_LEN; // END_REQUEST's size
                                if self.replies.len() >= MAX_QUEUED_REFUSALS * record {
                                    return Err(bad("FastCGI gateway keeps multiplexing"));
                                }
                                push_end_request(
                                    &mut self.replies,
                                    header.request_id,
                                    CANT_MPX_CONN,
                                );
                            }
                            at += header.record_len();
                        }
                    }
                }
            }
        }
    }
}

/// The response to one FastCGI request: a CGI-style response (`Status:`,
/// fields, body) carried in STDOUT records of at most `MAX_CONTENT` bytes,
/// then an empty STDOUT record and END_REQUEST.
#[derive(Debug, Clone)]
pub struct FastCgiEncoder {
    inner: ResponseEncoder,
    request_id: u16,
    keep_conn: bool,
}

impl FastCgiEncoder {
    pub fn new(request_id: u16, is_head: bool, keep_conn: bool) -> Self {
        FastCgiEncoder {
            inner: ResponseEncoder::gateway(HeadStyle::Cgi, is_head),
            request_id,
            keep_conn,
        }
    }

    pub fn head_sent(&self) -> bool {
        self.inner.head_sent()
    }

    pub fn status(&self) -> u16 {
        self.inner.status
    }

    pub fn body_bytes(&self) -> u64 {
        self.inner.body_bytes
    }

    /// The records delimit the response, so the connection stays open
    /// whenever the gateway asked for it.
    pub fn keep_alive(&self) -> bool {
        self.keep_conn
    }

    pub fn start(&mut self, out: &mut Vec<u8>, app: &AppHead, known_length: Option<u64>) {
        let from = out.len();
        self.inner.start(out, app, known_length);
        wrap_in_records(out, from, STDOUT, self.request_id);
    }

    /// Writes the record header for the next piece of at most `len` body
    /// bytes; returns how many of them that record carries (0 when the
    /// body allows no more).
    pub fn piece_start(&mut self, out: &mut Vec<u8>, len: u64) -> u64 {
        let n = self.inner.piece_start(out, len.min(MAX_CONTENT as u64));
        if n > 0 {
            push_header(out, STDOUT, self.request_id, n as usize);
        }
        n
    }

    pub fn body(&mut self, out: &mut Vec<u8>, mut data: &[u8]) {
        while !data.is_empty() {
            let n = self.piece_start(out, data.len() as u64) as usize;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.inner.finish(out);
        self.end(out);
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        push_header(out, STDOUT, self.request_id, 0);
        push_end_request(out, self.request_id, REQUEST_COMPLETE);
    }

    pub fn error(&mut self, out: &mut Vec<u8>, status: u16, phrase: &str) {
        let from = out.len();
        self.inner.error(out, status, phrase);
        wrap_in_records(out, from, STDOUT, self.request_id);
        self.end(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    /// The STDOUT content of records in `buf` for `request_id`, and whether
    /// END_REQUEST came (for tests).
    fn read_stdout(mut buf: &[u8], request_id: u16) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        while let Ok(Some(h)) = Header::parse(buf) {
            if buf.len() < h.record_len() {
                break;
            }
            let content: Range<usize> = HEADER_LEN..HEADER_LEN + h.content_len;
            if h.request_id == request_id {
                match h.kind {
                    STDOUT => out.extend_from_slice(&buf[content]),
                    END_REQUEST => return (out, true),
                    _ => {}
                }
            }
            buf = &buf[h.record_len()..];
        }
        (out, false)
    }
    use crate::proto::request::BodyFraming;

    const CAP: Capacity = Capacity {
        max_conns: 10,
        max_reqs: 10,
    };

    fn begin(id: u16, flags: u8) -> Vec<u8> {
        let mut out = Vec::new();
        push_record(&mut out, BEGIN_REQUEST, id, &[0, 1, flags, 0, 0, 0, 0, 0]);
        out
    }

    fn params(id: u16, pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut block = Vec::new();
        for (n, v) in pairs {
            push_pair(&mut block, n, v);
        }
        let mut out = Vec::new();
        push_record(&mut out, PARAMS, id, &block);
        push_record(&mut out, PARAMS, id, b"");
        out
    }

    fn request(id: u16, body: &[u8]) -> Vec<u8> {
        let mut r = begin(id, KEEP_CONN);
        let cl = body.len().to_string();
        r.extend(params(
            id,
            &[
                (b"REQUEST_METHOD", b"POST"),
                (b"SCRIPT_NAME", b"/x"),
                (b"CONTENT_LENGTH", cl.as_bytes()),
                (b"HTTP_COOKIE", &[b'c'; 300]),
            ],
        ));
        // The body in two records, the second padded.
        push_record(&mut r, STDIN, id, &body[..body.len() / 2]);
        let second = &body[body.len() / 2..];
        let id_be = id.to_be_bytes();
        let len = (second.len() as u16).to_be_bytes();
        r.extend_from_slice(&[1, STDIN, id_be[0], id_be[1], len[0], len[1], 3, 0]);
        r.extend_from_slice(second);
        r.extend_from_slice(&[0, 0, 0]);
        push_record(&mut r, STDIN, id, b"");
        r
    }

    fn decode_all(decoder: &mut StdinDecoder, input: &[u8]) -> (Vec<u8>, usize) {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let (used, chunk) = decoder.decode(&input[at..]).unwrap();
            match chunk {
                Chunk::Data(r) => body.extend_from_slice(&input[at + r.start..at + r.end]),
                Chunk::Done => return (body, at + used),
                Chunk::NeedMore => return (body, at + used),
            }
            at += used;
        }
    }

    #[test]
    fn a_request_whole_and_in_pieces() {
        let bytes = request(1, b"hello world");
        let mut parser = ConnParser::new();
        let (req, used) = parser.parse(&bytes, 4096, CAP).unwrap();
        let req = req.unwrap();
        assert_eq!(req.request_id, 1);
        assert!(req.keep_conn && req.head.keep_alive);
        assert_eq!(req.head.method(), b"POST");
        assert_eq!(req.head.cgi_var(b"SCRIPT_NAME"), Some(&b"/x"[..]));
        assert_eq!(req.head.framing, BodyFraming::Length(11));
        let mut d = StdinDecoder::new(1, 100);
        let (body, _) = decode_all(&mut d, &bytes[used..]);
        assert_eq!(body, b"hello world");
        assert!(d.is_done());

        // Fed a byte at a time, the parser and the decoder agree.
        let mut parser = ConnParser::new();
        let mut buf = Vec::new();
        let mut found = None;
        let mut end = 0;
        for (i, &b) in bytes.iter().enumerate() {
            buf.push(b);
            let (req, used) = parser.parse(&buf, 4096, CAP).unwrap();
            buf.drain(..used);
            if req.is_some() {
                found = req;
                end = i + 1;
                break;
            }
        }
        assert!(found.is_some());
        assert!(buf.is_empty());
        let rest = &bytes[end..];
        let mut d = StdinDecoder::new(1, 100);
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for &b in rest {
            pending.push(b);
            loop {
                let (used, chunk) = d.decode(&pending).unwrap();
                if let Chunk::Data(r) = &chunk {
                    body.extend_from_slice(&pending[r.clone()]);
                }
                pending.drain(..used);
                if !matches!(chunk, Chunk::Data(_)) || pending.is_empty() {
                    break;
                }
            }
        }
        assert_eq!(body, b"hello world");
        assert!(d.is_done());
    }

    #[test]
    fn params_limit_at_and_past() {
        let bytes = request(1, b"x");
        let mut block = Vec::new();
        for (n, v) in [
            (&b"REQUEST_METHOD"[..], &b"POST"[..]),
            (b"SCRIPT_NAME", b"/x"),
            (b"CONTENT_LENGTH", b"1"),
            (b"HTTP_COOKIE", &[b'c'; 300]),
        ] {
            push_pair(&mut block, n, v);
        }
        let size = block.len();
        assert!(ConnParser::new()
            .parse(&bytes, size, CAP)
            .unwrap()
            .0
            .is_some());
        let err = ConnParser::new().parse(&bytes, size - 1, CAP).unwrap_err();
        assert_eq!(err.status().0, 431);
    }

    #[test]
    fn management_records_and_refusals() {
        let mut p = ConnParser::new();
        let mut query = Vec::new();
        push_pair(&mut query, b"FCGI_MPXS_CONNS", b"");
        push_pair(&mut query, b"FCGI_MAX_REQS", b"");
        push_pair(&mut query, b"OTHER", b"");
        let mut bytes = Vec::new();
        push_record(&mut bytes, GET_VALUES, 0, &query);
        push_record(&mut bytes, 42, 0, b"");
        bytes.extend(begin(1, 0));
        bytes.extend(begin(2, 0));
        let mut filter = Vec::new();
        push_record(&mut filter, BEGIN_REQUEST, 3, &[0, 3, 0, 0, 0, 0, 0, 0]);
        bytes.extend(filter);
        let (req, used) = p.parse(&bytes, 4096, CAP).unwrap();
        assert!(req.is_none());
        assert_eq!(used, bytes.len());
        let mut expected = Vec::new();
        let mut result = Vec::new();
        push_pair(&mut result, b"FCGI_MPXS_CONNS", b"0");
        push_pair(&mut result, b"FCGI_MAX_REQS", b"10");
        push_record(&mut expected, GET_VALUES_RESULT, 0, &result);
        push_record(&mut expected, UNKNOWN_TYPE, 0, &[42, 0, 0, 0, 0, 0, 0, 0]);
        push_end_request(&mut expected, 2, CANT_MPX_CONN);
        push_end_request(&mut expected, 3, CANT_MPX_CONN);
        assert_eq!(p.replies, expected);
        assert_eq!(p.active_request(), Some(1));
    }

    #[test]
    fn unknown_role_and_malformed_records() {
        let mut p = ConnParser::new();
        let mut bytes = Vec::new();
        push_record(&mut bytes, BEGIN_REQUEST, 5, &[0, 2, 0, 0, 0, 0, 0, 0]);
        p.parse(&bytes, 4096, CAP).unwrap();
        let mut expected = Vec::new();
        push_end_request(&mut expected, 5, UNKNOWN_ROLE);
        assert_eq!(p.replies, expected);
        assert_eq!(p.active_request(), None);

        let status = |bytes: &[u8]| {
            ConnParser::new()
                .parse(bytes, 4096, CAP)
                .unwrap_err()
                .status()
                .0
        };
        assert_eq!(status(&[2, 1, 0, 1, 0, 0, 0, 0]), 400, "version 2");
        let mut overrun = begin(1, 0);
        push_record(&mut overrun, PARAMS, 1, &[5, 200, b'A']);
        push_record(&mut overrun, PARAMS, 1, b"");
        assert_eq!(status(&overrun), 400);
        let mut stdin_early = begin(1, 0);
        push_record(&mut stdin_early, STDIN, 1, b"x");
        assert_eq!(status(&stdin_early), 400);
    }

    #[test]
    fn the_last_stdin_records_padding_is_read() {
        let mut input = Vec::new();
        push_record(&mut input, STDIN, 1, b"ab");
        input.extend_from_slice(&[1, STDIN, 0, 1, 0, 0, 3, 0, 0, 0, 0]);
        input.extend(begin(2, KEEP_CONN));
        let mut d = StdinDecoder::new(1, 10);
        let (body, used) = decode_all(&mut d, &input);
        assert_eq!(body, b"ab");
        assert_eq!(&input[used..], &begin(2, KEEP_CONN)[..]);
        // Padding that has not arrived yet is waited for.
        let mut d = StdinDecoder::new(1, 10);
        let cut = input.len() - begin(2, KEEP_CONN).len() - 2;
        let (_, used) = decode_all(&mut d, &input[..cut]);
        assert!(!d.is_done() || used == cut);
    }

    #[test]
    fn get_values_answers_each_name_once() {
        let mut query = Vec::new();
        for _ in 0..5000 {
            push_pair(&mut query, b"FCGI_MPXS_CONNS", b"");
        }
        let mut bytes = Vec::new();
        for piece in query.chunks(MAX_CONTENT) {
            push_record(&mut bytes, GET_VALUES, 0, piece);
        }
        let mut p = ConnParser::new();
        p.parse(&bytes, 4096, CAP).unwrap();
        let mut result = Vec::new();
        push_pair(&mut result, b"FCGI_MPXS_CONNS", b"0");
        let mut expected = Vec::new();
        push_record(&mut expected, GET_VALUES_RESULT, 0, &result);
        assert!(p.replies.starts_with(&expected));
    }

    #[test]
    fn four_byte_lengths() {
        let mut block = Vec::new();
        push_pair(&mut block, b"HTTP_X", &[b'v'; 200]);
        assert_eq!(&block[..5], &[6, 0x80, 0, 0, 200]);
        let vars = parse_pairs(&block).unwrap();
        assert_eq!(vars[0].1.len(), 200);
    }

    #[test]
    fn stdin_skips_other_requests_and_honours_the_limit() {
        let mut input = Vec::new();
        push_record(&mut input, STDIN, 9, b"not ours");
        push_record(&mut input, STDIN, 1, b"abc");
        push_record(&mut input, STDIN, 1, b"");
        let mut d = StdinDecoder::new(1, 3);
        assert_eq!(decode_all(&mut d, &input).0, b"abc");
        let mut d = StdinDecoder::new(1, 2);
        let (used, _) = d.decode(&input).unwrap_or((0, Chunk::NeedMore));
        let err = d.decode(&input[used..]).unwrap_err();
        assert_eq!(err.status().0, 413);
        let mut abort = Vec::new();
        push_record(&mut abort, ABORT_REQUEST, 1, b"");
        assert!(StdinDecoder::new(1, 9).decode(&abort).is_err());
    }

    #[test]
    fn stdin_refuses_a_request_begun_meanwhile() {
        let mut input = Vec::new();
        push_record(&mut input, STDIN, 1, b"ab");
        push_record(&mut input, BEGIN_REQUEST, 2, &[0, 1, 1, 0, 0, 0, 0, 0]);
        push_record(&mut input, STDIN, 1, b"c");
        push_record(&mut input, STDIN, 1, b"");
        let mut d = StdinDecoder::new(1, 100);
        assert_eq!(decode_all(&mut d, &input).0, b"abc");
        let mut expected = Vec::new();
        push_end_request(&mut expected, 2, CANT_MPX_CONN);
        assert_eq!(d.take_replies(), expected);
        assert!(d.take_replies().is_empty());
        // Past the queue's limit, the gateway is refused.
        let mut flood = Vec::new();
        for id in 2..2 + MAX_QUEUED_REFUSALS as u16 + 1 {
            push_record(&mut flood, BEGIN_REQUEST, id, &[0, 1, 1, 0, 0, 0, 0, 0]);
        }
        let mut d = StdinDecoder::new(1, 100);
        assert_eq!(d.decode(&flood).unwrap_err().status().0, 400);
    }

    #[test]
    fn responses_in_records() {
        let head = AppHead {
            status: 200,
            bytes: b"200 OK".to_vec(),
            status_len: 6,
            declared_length: None,
            has_date: false,
            has_server: false,
        };
        let mut e = FastCgiEncoder::new(7, false, true);
        let mut out = Vec::new();
        e.start(&mut out, &head, None);
        let big = vec![b'z'; 70_000];
        e.body(&mut out, &big);
        e.finish(&mut out);
        let (stdout, ended) = read_stdout(&out, 7);
        assert!(ended);
        let mut expected = b"Status: 200 OK\r\n\r\n".to_vec();
        expected.extend_from_slice(&big);
        assert_eq!(stdout, expected);
        // 70,000 bytes of body need two records.
        let headers = out.windows(2).filter(|w| w == &[1, STDOUT]).count();
        assert!(headers >= 4, "head, two body records, the empty end");
        assert!(e.keep_alive());
    }
}

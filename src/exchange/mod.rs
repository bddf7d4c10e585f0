//! One request/response exchange on a connection, shared between the
//! connection's task and the Python objects the application holds
//! (`wsgi.input`, `start_response`, `write`).
//!
//! The connection lends its read buffer to the exchange for the duration of
//! the request and takes the rest back afterwards (it may hold the next
//! pipelined request). Once the exchange is closed, the Python objects refuse
//! I/O: an application that keeps `wsgi.input` past its request can never
//! touch a descriptor that now belongs to another connection.
//!
//! Lock order: code holding `Exchange::state` never calls into Python or
//! waits for the GIL; blocking I/O under the lock is done with the GIL
//! released.

pub mod blocking_io;
pub mod out_queue;
pub mod spool;
pub mod wire;

use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::exchange::out_queue::OutQueue;
use crate::exchange::spool::Spool;
use crate::exchange::wire::Wire;
use crate::proto::app_head::AppHead;
use crate::proto::body::{BodyDecoder, Chunk};
use crate::proto::error::{ClientError, ClientErrorKind};
use crate::proto::response::ResponseFramer;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// How many bytes one socket read asks for.
pub const READ_CHUNK: usize = 64 * 1024;

pub struct Exchange {
    /// Where the request body is read from.
    pub input: Wire,
    /// Where the response is written: the same socket, but for a CGI
    /// script (stdin and stdout).
    pub output: Wire,
    pub socket_timeout: Duration,
    state: Mutex<ExchangeState>,
}

/// Why reading the request body failed.
#[derive(Debug)]
pub enum BodyError {
    /// The client sent a malformed or oversized body, cut it short, or
    /// went quiet while sending it.
    Client(ClientError),
    /// The request is over; the object was kept past it.
    Closed,
    /// The body's temporary file could not be read (the server's fault).
    Spool(io::Error),
}

/// A request body received whole before the application runs: its first
/// `--post-buffering` bytes in memory, the rest in a temporary file.
#[derive(Default)]
pub struct ReceivedBody {
    pub memory: Vec<u8>,
    pub spool: Option<Spool>,
}

impl ReceivedBody {
    /// The body's length.
    pub fn length(&self) -> u64 {
        self.memory.len() as u64 + self.spool.as_ref().map_or(0, Spool::written)
    }
}

pub struct ExchangeState {
    /// False once the request is over.
    pub open: bool,
    /// Bytes read from the socket and not yet decoded.
    pub rbuf: Vec<u8>,
    pub body: BodyDecoder,
    /// Decoded body bytes the application has not read yet, from `decoded_pos`.
    decoded: Vec<u8>,
    decoded_pos: usize,
    /// A body received whole before the application ran, past what
    /// `decoded` holds (`ReceivedBody`).
    spool: Option<Spool>,
    /// `Expect: 100-continue` not yet answered (RFC 9110 §10.1.1).
    pub continue_owed: bool,
    /// The first body error, which decides the status if the application fails.
    pub body_error: Option<ClientError>,
    /// What `start_response` was given, until the head is sent.
    pub app_head: Option<AppHead>,
    /// The buffer for the next `AppHead`; once the application's head is
    /// sent, its bytes (status line, then fields) until the buffer is reused.
    pub head_spare: Vec<u8>,
    /// Where the status line ends in `head_spare` once a head is sent; 0
    /// before.
    pub sent_status_len: usize,
    pub response: ResponseFramer,
    /// Framed bytes waiting to be sent by the connection.
    pub out: OutQueue,
    /// A blocking write from the application failed: the connection is dead.
    pub write_failed: bool,
}

impl Exchange {
    pub fn new(
        (input, output): (Wire, Wire),
        socket_timeout: Duration,
        state: ExchangeState,
    ) -> Exchange {
        Exchange {
            input,
            output,
            socket_timeout,
            state: Mutex::new(state),
        }
    }

    /// Starts the connection's next exchange in this one's place
    /// (`RequestObjects::for_request`).
    pub fn renew(&self, state: ExchangeState) {
        *self.lock() = state;
    }

    pub fn lock(&self) -> MutexGuard<'_, ExchangeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock if it is free now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, ExchangeState>> {
        match self.state.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Ends the exchange and hands back the buffers it was lent: the read
    /// buffer (which may hold the next pipelined request), the output queue
    /// and the head scratch buffer.
    pub fn close(&self) -> (Vec<u8>, OutQueue, Vec<u8>) {
        let mut st = self.lock();
        st.open = false;
        // An idle kept connection holds neither the body's file nor more
        // than a socket read of its memory.
        st.spool = None;
        if st.decoded.capacity() > READ_CHUNK {
            st.decoded = Vec::new();
        }
        (
            std::mem::take(&mut st.rbuf),
            std::mem::take(&mut st.out),
            std::mem::take(&mut st.head_spare),
        )
    }
}

impl ExchangeState {
    /// An exchange lent the connection's read buffer, output queue and head
    /// scratch buffer, which `Exchange::close` hands back.
    pub fn new(
        rbuf: Vec<u8>,
        out: OutQueue,
        mut head_spare: Vec<u8>,
        body: BodyDecoder,
        continue_owed: bool,
        response: ResponseFramer,
    ) -> Self {
        head_spare.clear();
        ExchangeState {
            open: true,
            rbuf,
            body,
            decoded: Vec::new(),
            decoded_pos: 0,
            spool: None,
            continue_owed,
            body_error: None,
            app_head: None,
            head_spare,
            sent_status_len: 0,
            response,
            out,
            write_failed: false,
        }
    }

    /// Decoded bytes not yet read by the application.
    pub fn available(&self) -> &[u8] {
        &self.decoded[self.decoded_pos..]
    }

    /// Marks `n` available bytes as read. Read bytes are dropped once they
    /// are the larger part of the buffer, so it holds what the application
    /// asked for plus at most one socket read, however long the body.
    pub fn consume(&mut self, n: usize) {
        self.decoded_pos += n;
        if self.decoded_pos == self.decoded.len() {
            self.decoded.clear();
            self.decoded_pos = 0;
        } else if self.decoded_pos >= READ_CHUNK && self.decoded_pos * 2 >= self.decoded.len() {
            self.decoded.drain(..self.decoded_pos);
            self.decoded_pos = 0;
        }
    }

    /// Hands the application a body received whole (its decoder is done).
    pub fn set_received(&mut self, body: ReceivedBody) {
        self.decoded = body.memory;
        self.decoded_pos = 0;
        self.spool = body.spool;
    }

    /// Whether the application has been given the whole body: nothing more
    /// comes from the connection or the body's temporary file.
    pub fn body_done(&self) -> bool {
        self.body.is_done() && self.spool.as_ref().is_none_or(|s| s.remaining() == 0)
    }

    /// Decodes what the read buffer holds, leaving bytes past the body there.
    /// Body data goes to `sink` (the application's buffer, or nowhere when
    /// draining).
    pub fn decode_buffered(&mut self, mut sink: Option<&mut Vec<u8>>) -> Result<(), ClientError> {
        let mut used = 0;
        let result = loop {
            match self.body.decode(&self.rbuf[used..]) {
                Ok((n, Chunk::Data(range))) => {
                    if let Some(sink) = sink.as_deref_mut() {
                        sink.extend_from_slice(&self.rbuf[used + range.start..used + range.end]);
                    }
                    used += n;
                }
                Ok((n, _)) => {
                    used += n;
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        self.rbuf.drain(..used);
        result
    }

    /// Blocks until more body is available or the body has ended. Returns
    /// false at the end of the body.
    pub fn fill(
        &mut self,
        input: &Wire,
        output: &Wire,
        timeout: Duration,
    ) -> Result<bool, BodyError> {
        if !self.open {
            return Err(BodyError::Closed);
        }
        if let Some(e) = &self.body_error {
            return Err(BodyError::Client(e.clone()));
        }
        if let Some(spool) = self.spool.as_mut().filter(|s| s.remaining() > 0) {
            spool
                .read_into(&mut self.decoded, READ_CHUNK)
                .map_err(BodyError::Spool)?;
            return Ok(true);
        }
        loop {
            let before = self.available().len();
            let mut decoded = std::mem::take(&mut self.decoded);
            let result = self.decode_buffered(Some(&mut decoded));
            self.decoded = decoded;
            if let Err(e) = result {
                self.body_error = Some(e.clone());
                return Err(BodyError::Client(e));
            }
            if self.available().len() > before {
                return Ok(true);
            }
            if self.body_done() {
                return Ok(false);
            }
            if self.continue_owed {
                self.continue_owed = false;
                output
                    .send_all(self.response.continue_bytes(), timeout)
                    .map_err(|e| self.client_failed(&e))?;
            }
            match input.recv_some(&mut self.rbuf, READ_CHUNK, timeout) {
                Ok(0) => {
                    let e = ClientError::bad_request(
                        "client closed the connection before the end of the request body",
                    );
                    self.body_error = Some(e.clone());
                    return Err(BodyError::Client(e));
                }
                Ok(_) => {}
                Err(e) => return Err(self.client_failed(&e)),
            }
        }
    }

    /// The connection failed while the body was being read: the client's
    /// doing (it went quiet or reset the connection), so the request is
    /// answered as a client error, not as an application failure.
    fn client_failed(&mut self, e: &io::Error) -> BodyError {
        let err = if e.kind() == io::ErrorKind::TimedOut {
            ClientError::new(
                ClientErrorKind::RequestTimeout,
                "request body: client made no progress within socket_timeout",
            )
        } else {
            ClientError::bad_request("request body: the connection failed")
        };
        self.body_error = Some(err.clone());
        BodyError::Client(err)
    }

    /// Sends the head (if it has not gone yet) and frames `data` into `out`.
    /// Fails if `start_response` has not been called.
    pub fn frame_body(
        &mut self,
        data: &[u8],
        known_length: Option<u64>,
    ) -> Result<(), &'static str> {
        self.start_head(known_length)?;
        self.response.body(self.out.buf(), data);
        Ok(())
    }

    /// Like `frame_body`, for the application's own bytes object: a large
    /// one is queued by reference instead of copied.
    pub fn frame_bytes(
        &mut self,
        bytes: &Bound<'_, PyBytes>,
        known_length: Option<u64>,
    ) -> Result<(), &'static str> {
        self.start_head(known_length)?;
        let data = bytes.as_bytes();
        if let ResponseFramer::Direct(encoder) = &mut self.response {
            // One piece (cut at a declared Content-Length).
            let n = encoder.piece_start(self.out.buf(), data.len() as u64);
            self.out.push_body(bytes, &data[..n as usize]);
            encoder.piece_end(self.out.buf(), n);
            return Ok(());
        }
        let mut at = 0;
        // Pieces as large as the protocol allows (FastCGI records).
        while at < data.len() {
            let n = self
                .response
                .piece_start(self.out.buf(), (data.len() - at) as u64) as usize;
            if n == 0 {
                break;
            }
            self.out.push_body(bytes, &data[at..at + n]);
            self.response.piece_end(self.out.buf(), n as u64);
            at += n;
        }
        Ok(())
    }

    /// Ends the body (last chunk, or the decision to close).
    pub fn finish_response(&mut self) {
        self.response.finish(self.out.buf());
    }

    /// The status line and header fields of the application's head, once
    /// sent.
    pub fn sent_head(&self) -> Option<(&[u8], &[u8])> {
        (self.sent_status_len > 0).then(|| self.head_spare.split_at(self.sent_status_len))
    }

    /// Sends the head from `start_response` now, for a body of `known_length`.
    pub fn start_head(&mut self, known_length: Option<u64>) -> Result<(), &'static str> {
        if !self.response.head_sent() {
            let head = self
                .app_head
                .take()
                .ok_or("the application returned a body before calling start_response()")?;
            self.response.start(self.out.buf(), &head, known_length);
            self.sent_status_len = head.status_len;
            self.head_spare = head.into_bytes();
        }
        Ok(())
    }

    /// Frames what precedes `len` bytes sent straight from a file; returns
    /// how many of them to send.
    pub fn raw_body_start(&mut self, len: u64) -> u64 {
        self.response.piece_start(self.out.buf(), len)
    }

    pub fn raw_body_end(&mut self, len: u64) {
        self.response.piece_end(self.out.buf(), len);
    }

    /// Sends what the socket takes of `out` without waiting: true if all
    /// of it. A failure marks the connection dead, as in `flush_blocking`.
    pub fn flush_now(&mut self, output: &Wire) -> io::Result<bool> {
        let result = output.send_queue_now(&mut self.out);
        match result {
            Ok(true) => self.out.clear(),
            Ok(false) => {}
            Err(_) => self.write_failed = true,
        }
        result
    }

    /// Sends what is framed in `out` now, blocking (the `write()` callable).
    pub fn flush_blocking(&mut self, output: &Wire, timeout: Duration) -> io::Result<()> {
        let result = output.send_queue(&mut self.out, timeout);
        self.out.clear();
        if result.is_err() {
            self.write_failed = true;
        }
        result
    }
}

//! Where the application's side of a request reads and writes: a
//! descriptor (a socket, or a CGI script's stdin or stdout), and on a TLS
//! connection the session the bytes go through. The blocking calls of
//! `blocking_io` wait on the descriptor either way.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::exchange::blocking_io;
use crate::exchange::out_queue::{OutQueue, MAX_SLICES};
use crate::net::tls::{read_into_spare, Session};

#[derive(Clone)]
pub struct Wire {
    pub fd: RawFd,
    tls: Option<Arc<Session>>,
}

impl Wire {
    pub fn plain(fd: RawFd) -> Wire {
        Wire { fd, tls: None }
    }

    /// `fd` with TLS through `session`, if there is one.
    pub fn new(fd: RawFd, session: Option<&Arc<Session>>) -> Wire {
        Wire {
            fd,
            tls: session.cloned(),
        }
    }

    /// The same wire through another descriptor of the same socket (the
    /// sender's own, `send_ahead`).
    pub fn through(&self, fd: RawFd) -> Wire {
        Wire {
            fd,
            tls: self.tls.clone(),
        }
    }

    /// Whether bytes may go out as they are from a file (sendfile(2)).
    pub fn carries_raw_bytes(&self) -> bool {
        self.tls.is_none()
    }

    /// Sends what the socket takes of `queue` at once: true if all of it
    /// (and, under TLS, every record made of it), false if the rest must
    /// wait for the client.
    #[inline]
    pub fn send_queue_now(&self, queue: &mut OutQueue) -> io::Result<bool> {
        match &self.tls {
            None => blocking_io::send_queue_now(self.fd, queue),
            Some(session) => send_queue_now_tls(session, self.fd, queue),
        }
    }

    /// Sends everything in `queue`, waiting for the client as needed.
    pub fn send_queue(&self, queue: &mut OutQueue, timeout: Duration) -> io::Result<()> {
        if self.tls.is_none() {
            return blocking_io::send_queue(self.fd, queue, timeout);
        }
        while !self.send_queue_now(queue)? {
            blocking_io::wait_writable(self.fd, timeout)?;
        }
        Ok(())
    }

    /// Sends all of `data`.
    pub fn send_all(&self, data: &[u8], timeout: Duration) -> io::Result<()> {
        if self.tls.is_none() {
            return blocking_io::send_all(self.fd, data, timeout);
        }
        let mut queue = OutQueue::with_capacity(data.len());
        queue.buf().extend_from_slice(data);
        self.send_queue(&mut queue, timeout)
    }

    /// Appends up to `max` bytes read to `buf`; Ok(0) is the end of the
    /// stream.
    pub fn recv_some(&self, buf: &mut Vec<u8>, max: usize, timeout: Duration) -> io::Result<usize> {
        let Some(session) = &self.tls else {
            return blocking_io::recv_some(self.fd, buf, max, timeout);
        };
        buf.reserve(max);
        loop {
            match read_into_spare(buf, max, |dst| session.read_plain(self.fd, dst)) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocking_io::wait_readable(self.fd, timeout)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// `Wire::send_queue_now` through a TLS session: apart, so that the plain
/// path stays small enough to inline.
#[inline(never)]
fn send_queue_now_tls(session: &Session, fd: RawFd, queue: &mut OutQueue) -> io::Result<bool> {
    loop {
        let mut slots = [IoSlice::new(&[]); MAX_SLICES];
        let count = queue.slices(&mut slots);
        match session.write_plain(fd, &slots[..count]) {
            Ok(n) => queue.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if queue.is_empty() {
            return Ok(!session.has_pending_output());
        }
    }
}

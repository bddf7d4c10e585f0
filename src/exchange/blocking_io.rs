//! Blocking socket I/O for the application's side of a request:
//! `wsgi.input` reads and the `write()` callable are synchronous in PEP 3333,
//! so they wait on the connection's (non-blocking) descriptor with poll(2).
//! Callers release the GIL around these calls. Every wait is bounded by
//! `--socket-timeout`: it is the longest the peer may make no progress.
//! Sockets are used with recv/send (MSG_NOSIGNAL); a descriptor that is not
//! one (a CGI script's stdin and stdout) with read/write.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::time::Duration;

use crate::exchange::out_queue::{OutQueue, MAX_SLICES};

/// Waits until `fd` is ready for `events` (POLLIN / POLLOUT).
fn wait(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<()> {
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, millis) };
        match n {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client made no progress within socket_timeout",
                ))
            }
            n if n > 0 => return Ok(()),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// After a failed call on `fd`: waits until it is ready for `events` if it
/// would have blocked, returns to retry if interrupted, fails otherwise.
fn after_error(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<()> {
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::WouldBlock => wait(fd, events, timeout),
        io::ErrorKind::Interrupted => Ok(()),
        _ => Err(err),
    }
}

/// Whether the call that just failed failed because its descriptor is not
/// a socket (ENOTSOCK): then the plain read(2)/write(2) family is used.
fn not_a_socket() -> bool {
    io::Error::last_os_error().raw_os_error() == Some(libc::ENOTSOCK)
}

/// Appends up to `max` bytes read from `fd` to `buf`; Ok(0) is end of stream.
pub fn recv_some(fd: RawFd, buf: &mut Vec<u8>, max: usize, timeout: Duration) -> io::Result<usize> {
    buf.reserve(max);
    loop {
        let spare = buf.spare_capacity_mut();
        let len = spare.len().min(max);
        // SAFETY: reading into the vector's spare capacity, then setting the
        // length to cover only the bytes the kernel wrote.
        let mut n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), len, 0) };
        if n < 0 && not_a_socket() {
            // A CGI script's stdin is a pipe or a file.
            // SAFETY: as above.
            n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), len) };
        }
        if n >= 0 {
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(n as usize);
        }
        after_error(fd, libc::POLLIN, timeout)?;
    }
}

/// Sends all of `data`.
pub fn send_all(fd: RawFd, mut data: &[u8], timeout: Duration) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: sending from a valid slice; MSG_NOSIGNAL turns a closed
        // peer into EPIPE instead of SIGPIPE.
        let mut n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
        if n < 0 && not_a_socket() {
            // SAFETY: as above; a CGI script's stdout is a pipe or a file
            // (Python ignores SIGPIPE, so a closed pipe is EPIPE too).
            n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        }
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        after_error(fd, libc::POLLOUT, timeout)?;
    }
    Ok(())
}

/// Waits until `fd` can take more bytes, at most `timeout`.
pub fn wait_writable(fd: RawFd, timeout: Duration) -> io::Result<()> {
    wait(fd, libc::POLLOUT, timeout)
}

/// Waits until `fd` has bytes to read, at most `timeout`.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<()> {
    wait(fd, libc::POLLIN, timeout)
}

/// Sends everything in `queue` with writev(2).
pub fn send_queue(fd: RawFd, queue: &mut OutQueue, timeout: Duration) -> io::Result<()> {
    while !send_queue_now(fd, queue)? {
        wait(fd, libc::POLLOUT, timeout)?;
    }
    Ok(())
}

/// Sends what the socket takes of `queue` at once: true if all of it,
/// false if the rest must wait for the client.
pub fn send_queue_now(fd: RawFd, queue: &mut OutQueue) -> io::Result<bool> {
    while !queue.is_empty() {
        let mut slots = [IoSlice::new(&[]); MAX_SLICES];
        let count = queue.slices(&mut slots);
        let msg = libc::msghdr {
            msg_name: std::ptr::null_mut(),
            msg_namelen: 0,
            // IoSlice is guaranteed ABI-compatible with iovec on Unix.
            msg_iov: slots.as_mut_ptr().cast(),
            msg_iovlen: count,
            msg_control: std::ptr::null_mut(),
            msg_controllen: 0,
            msg_flags: 0,
        };
        // SAFETY: the iovecs point into memory the queue keeps alive;
        // MSG_NOSIGNAL turns a closed peer into EPIPE instead of SIGPIPE.
        let mut n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n < 0 && not_a_socket() {
            // SAFETY: the same iovecs; a CGI script's stdout is a pipe or
            // a file.
            n = unsafe { libc::writev(fd, slots.as_ptr().cast(), count as libc::c_int) };
        }
        if n >= 0 {
            queue.advance(n as usize);
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => return Ok(false),
            io::ErrorKind::Interrupted => {}
            _ => return Err(err),
        }
    }
    Ok(true)
}

//! The stream sockets a connection can be served on, with the few
//! non-blocking operations tokio does not wrap.

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// A stream socket the server can serve requests on.
pub trait Socket: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + Sync + 'static {
    /// A read that does not wait: appends what the socket holds now, with
    /// recv(2) itself. (tokio's `try_read` answers WouldBlock without asking
    /// the kernel until its reactor has seen the socket ready, which a
    /// socket just accepted has not.)
    fn read_now(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let spare = buf.spare_capacity_mut();
        // SAFETY: recv writes at most `spare.len()` bytes into the vector's
        // spare capacity; the length then covers only what it wrote.
        let n = unsafe {
            libc::recv(
                self.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        unsafe { buf.set_len(buf.len() + n as usize) };
        Ok(n as usize)
    }
    /// Copies what the socket holds now into `buf` without taking it
    /// (MSG_PEEK), without waiting: for what comes before the bytes a
    /// protocol reads (a PROXY header, the first byte of a handshake).
    fn peek_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::recv(
                self.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
    /// A write that does not wait, telling the kernel more follows at once
    /// (MSG_MORE: held back to go out with the next write's bytes).
    fn send_more(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: send reads at most `buf.len()` bytes from `buf`.
        let n = unsafe {
            libc::send(
                self.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_MORE | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
    /// A gathered write that does not wait: what the socket takes now.
    fn try_write_vectored_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Runs a non-blocking write `f` on the descriptor, clearing readiness on
    /// WouldBlock (for sendfile(2), which tokio does not wrap).
    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
    /// Runs a non-blocking read `f`, clearing readiness on WouldBlock.
    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn wait_writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Output taken by a write but not yet on the socket (TLS records):
    /// a response is sent only once there is none.
    fn has_pending_output(&self) -> bool {
        false
    }
    /// Whether bytes may go on the socket as they are, from a file
    /// (sendfile(2)): not under TLS.
    fn carries_raw_bytes(&self) -> bool {
        true
    }
    /// The TLS session the connection's bytes go through, if any.
    fn tls_session(&self) -> Option<&std::sync::Arc<crate::net::tls::Session>> {
        None
    }
}

/// How long ago the kernel last received data on the TCP socket `fd`
/// (`tcpi_last_data_recv`, whole milliseconds at the kernel's tick); None
/// for other sockets.
pub fn since_last_data_received(fd: RawFd) -> Option<std::time::Duration> {
    // SAFETY: tcp_info is plain old data, valid zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is
    // that large, and sets `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let wrote_field = std::mem::offset_of!(libc::tcp_info, tcpi_last_data_recv)
        + std::mem::size_of::<u32>()
        <= len as usize;
    (rc == 0 && wrote_field)
        .then(|| std::time::Duration::from_millis(u64::from(info.tcpi_last_data_recv)))
}

/// Both stream types wrap the same non-blocking calls.
macro_rules! impl_socket {
    ($($stream:ty),*) => {$(
        impl Socket for $stream {
            fn try_write_vectored_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.try_write_vectored(bufs)
            }
            fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
                self.try_io(tokio::io::Interest::WRITABLE, f)
            }
            fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
                self.try_io(tokio::io::Interest::READABLE, f)
            }
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_read_ready(self, cx)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_write_ready(self, cx)
            }
            fn wait_writable(&self) -> impl Future<Output = io::Result<()>> + Send {
                self.writable()
            }
        }
    )*};
}

impl_socket!(TcpStream, UnixStream);

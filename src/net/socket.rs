//! The stream sockets a connection can be served on, with the few
//! non-blocking operations tokio does not wrap.

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// A stream socket the server can serve requests on.
pub trait Socket: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + Sync + 'static {
    /// A read that does not wait: appends what the socket holds now.
    fn try_read_now(&self, buf: &mut Vec<u8>) -> io::Result<usize>;
    /// A gathered write that does not wait: what the socket takes now.
    fn try_write_vectored_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Runs a non-blocking write `f` on the descriptor, clearing readiness on
    /// WouldBlock (for sendfile(2), which tokio does not wrap).
    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
    fn wait_writable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl Socket for TcpStream {
    fn try_read_now(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.try_read_buf(buf)
    }
    fn try_write_vectored_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.try_write_vectored(bufs)
    }
    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(tokio::io::Interest::WRITABLE, f)
    }
    fn wait_writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.writable()
    }
}

impl Socket for UnixStream {
    fn try_read_now(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.try_read_buf(buf)
    }
    fn try_write_vectored_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.try_write_vectored(bufs)
    }
    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(tokio::io::Interest::WRITABLE, f)
    }
    fn wait_writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.writable()
    }
}

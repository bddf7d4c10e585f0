//! The metrics listener (`--metrics-bind`): a thread of the process that
//! sees every worker (the master, or a lone `ferrule.serve()` process)
//! answering `GET /metrics` over plain HTTP/1.1, one connection at a time
//! and closed after each answer. It never shares a listener with the
//! application, and it writes to no log once running, so a fork taken
//! while it works cannot leave the child a lock it holds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Longest request head a scrape may send.
const MAX_HEAD: usize = 8192;
/// How long a scraper has to send its request, and to take the answer:
/// each, at most (one scrape is answered at a time).
const SCRAPE_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The pause after an accept that failed.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The text of one scrape.
pub type Source = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `address`: before any worker is forked, so that a bad address
/// stops the start. The socket is close-on-exec and takes SO_REUSEPORT,
/// so a master started by USR2 can bind it beside the old one.
pub fn bind(address: &str) -> Result<TcpListener, String> {
    let addr: SocketAddr = address
        .parse()
        .map_err(|_| format!("--metrics-bind: '{address}' is not HOST:PORT (an IP address and a port, such as 127.0.0.1:9101 or [::1]:9101)"))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .and_then(|s| {
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&addr.into())?;
        s.listen(64)?;
        Ok(s)
    })
    .map_err(|e| format!("--metrics-bind: cannot listen on {addr}: {e}"))?;
    Ok(socket.into())
}

/// Serves scrapes on `listener` from a thread of its own, for the life of
/// the process.
pub fn start(listener: TcpListener, source: Source) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ferrule-metrics".into())
        .spawn(move || {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = answer(stream, &source);
                    }
                    // A connection reset before it was taken, or no
                    // descriptor free: try again a moment later.
                    Err(_) => std::thread::sleep(ACCEPT_RETRY),
                }
            }
        })
        .map(drop)
}

fn answer(mut stream: TcpStream, source: &Source) -> std::io::Result<()> {
    stream.set_write_timeout(Some(SCRAPE_IO_TIMEOUT))?;
    let deadline = std::time::Instant::now() + SCRAPE_IO_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        // The whole head within the timeout, not each read: a client that
        // trickles bytes cannot hold the listener.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return reply(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
                false,
            );
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let head_only = method == b"HEAD";
    if method != b"GET" && !head_only {
        return reply(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET or HEAD\n",
            false,
        );
    }
    if path != b"/metrics" {
        return reply(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"metrics are at /metrics\n",
            head_only,
        );
    }
    let text = source();
    reply(
        &mut stream,
        "200 OK",
        "text/plain; version=0.0.4; charset=utf-8",
        text.as_bytes(),
        head_only,
    )
}

fn reply(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

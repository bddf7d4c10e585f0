//! The HTTP/1.x front end: reads request heads off a connection (RFC 9112)
//! and hands each request, with an HTTP/1 response framer, to the driver;
//! repeats while keep-alive allows. Waiting for a head holds no
//! application thread.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::driver::{self, lane, ConnBuffers, ServerCtx};
use crate::log_at;
use crate::net::socket::Socket;
use crate::net::tls;
use crate::proto::error::{ClientError, ClientErrorKind};
use crate::proto::http1::head::HeadParser;
use crate::proto::http1::response::ResponseEncoder;
use crate::proto::proxy_protocol::{self, ProxyHeader};
use crate::proto::response::ResponseFramer;
use crate::runtime::head::{read_head, HeadOutcome, STOP_GRACE};
use crate::runtime::http2;
use crate::wsgi::environ::ConnInfo;

/// Serves a connection. `first_head` is told when the first request claims
/// an application thread, and dropped when the connection ends or moves on
/// to its next request, so the accept loop knows it may accept again.
pub async fn serve<S: Socket>(
    mut stream: S,
    mut conn: ConnInfo,
    ctx: Arc<ServerCtx>,
    first_head: oneshot::Sender<()>,
) {
    let mut bufs = ConnBuffers::new();
    let mut first_head = Some(first_head);
    let mut parser = HeadParser::new();
    // A load balancer's PROXY header comes before the first request only,
    // read on a path of its own so that the loop's stays as it was.
    let mut proxy_pending = conn.proxy_header_required;
    loop {
        let outcome = if std::mem::take(&mut proxy_pending) {
            let read =
                read_proxied_head(&mut stream, &mut bufs, &ctx, &mut first_head, &mut parser);
            match read.await {
                Ok((outcome, header)) => {
                    take_proxy_header(&mut conn, header, &ctx);
                    outcome
                }
                Err(reason) => {
                    log_at!(
                        Info,
                        "{}: closed: {reason} (--proxy-protocol; --proxy-allow-from peers must send one)",
                        driver::display_remote(&conn)
                    );
                    return;
                }
            }
        } else {
            let limits = &ctx.head_limits;
            let parse = |buf: &[u8]| parser.parse(buf, limits);
            read_head(&mut stream, &mut bufs.rbuf, &ctx, &mut first_head, parse).await
        };
        let head = match outcome {
            HeadOutcome::Head(head) => head,
            HeadOutcome::Closed => return,
            HeadOutcome::Refused(err) => {
                // The head is unreadable: answered as HTTP/1.1, closing.
                let framer = ResponseFramer::Direct(ResponseEncoder::new(1, false, false));
                driver::refuse(&mut stream, framer, &err, &conn, &ctx, None).await;
                return;
            }
        };
        // When the server is stopping, the connection still waits briefly
        // for a next request the client may have sent after a keep-alive
        // response, and answers it with Connection: close (read_head).
        let framer = ResponseFramer::Direct(ResponseEncoder::new(
            head.minor_version,
            head.is_head(),
            ctx.may_keep_alive(&head),
        ));
        let keep = driver::handle_request(
            &mut stream,
            &head,
            framer,
            &mut bufs,
            &conn,
            &ctx,
            &mut first_head,
        )
        .await;
        if !keep {
            return;
        }
        parser.recycle(head);
        // Dropping the sender tells the accept loop too.
        first_head = None;
    }
}

/// Serves a connection of an https listener: the TLS handshake, within
/// --header-timeout, then HTTP/1.x over it.
pub async fn serve_tls<S: Socket>(
    stream: S,
    config: Arc<rustls::ServerConfig>,
    mut conn: ConnInfo,
    ctx: Arc<ServerCtx>,
    first_head: oneshot::Sender<()>,
) {
    // A handshake claims no thread: the accept loop need not wait for it
    // (the client's first request comes a round trip after it).
    drop(first_head);
    let remote = |conn: &ConnInfo| driver::display_remote(conn);
    match open_tls(stream, config, &mut conn, &ctx).await {
        Ok((stream, facts)) => {
            conn.url_scheme = "https";
            let http2 = facts.http2;
            conn.tls = Some(Arc::new(facts));
            if http2 {
                http2::serve(stream, conn, ctx).await;
            } else {
                let (told, _) = oneshot::channel();
                serve(stream, conn, ctx, told).await;
            }
        }
        Err(NotOpened::Refused) => {}
        // A load balancer's TCP check, a port scan.
        Err(NotOpened::Silent) => {
            log_at!(Debug, "{}: closed before a TLS handshake", remote(&conn))
        }
        Err(NotOpened::Closed(why)) => log_at!(Info, "{}: closed: {why}", remote(&conn)),
    }
}

/// Serves a plain connection of a listener that takes HTTP/2 in the clear
/// from trusted peers (--http2-cleartext prior-knowledge): as HTTP/2 if it
/// opens with the preface (RFC 9113 §3.3), else as HTTP/1.x.
pub async fn serve_cleartext<S: Socket>(
    stream: S,
    conn: ConnInfo,
    ctx: Arc<ServerCtx>,
    first_head: oneshot::Sender<()>,
) {
    if conn.trusted_proxy && !conn.proxy_header_required && opens_with_preface(&stream, &ctx).await
    {
        drop(first_head);
        return http2::serve(stream, conn, ctx).await;
    }
    serve(stream, conn, ctx, first_head).await
}

/// Whether the client's first bytes are HTTP/2's preface: as many of them
/// as have come, at least four ("PRI "), peeked, so that either front end
/// reads them again. Waits for them within --header-timeout; false for a
/// connection that sends nothing.
async fn opens_with_preface<S: Socket>(stream: &S, ctx: &ServerCtx) -> bool {
    let preface = http2::PREFACE;
    let mut first = [0u8; 24];
    let peeked = std::future::poll_fn(|cx| loop {
        if std::task::ready!(stream.poll_read_ready(cx)).is_err() {
            return std::task::Poll::Ready(0);
        }
        let peeked = stream.try_read_io(|| {
            let n = stream.peek_now(&mut first)?;
            let closed = n < 4 && peer_closed(stream.as_raw_fd());
            if n >= 4 || n == preface.len() || closed {
                Ok(n)
            } else {
                Err(std::io::ErrorKind::WouldBlock.into())
            }
        });
        match peeked {
            Ok(n) => return std::task::Poll::Ready(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return std::task::Poll::Ready(0),
        }
    });
    let deadline = lane::deadline_after(ctx.header_timeout);
    match before_first_request(ctx, deadline, peeked).await {
        Some(n) if n >= 4 => first[..n] == preface[..n],
        _ => false,
    }
}

/// Why a connection of an https listener ends before its first request.
enum NotOpened {
    /// Answered already (and logged) by `driver::refuse`.
    Refused,
    /// Closed before sending anything.
    Silent,
    /// Closed for the reason given.
    Closed(String),
}

/// A PROXY header if the peer must send one, then the handshake: the TLS
/// stream and what it settled.
async fn open_tls<S: Socket>(
    mut stream: S,
    config: Arc<rustls::ServerConfig>,
    conn: &mut ConnInfo,
    ctx: &ServerCtx,
) -> Result<(tls::TlsStream<S>, tls::TlsFacts), NotOpened> {
    let deadline = lane::deadline_after(ctx.header_timeout);
    if std::mem::take(&mut conn.proxy_header_required) {
        // A load balancer that passes TLS through sends its PROXY header
        // first, in the clear.
        let header =
            match before_first_request(ctx, deadline, proxy_header_before_tls(&stream)).await {
                Some(Ok(header)) => header,
                Some(Err(reason)) => {
                    return Err(NotOpened::Closed(format!(
                        "{reason} (--proxy-protocol; --proxy-allow-from peers must send one)"
                    )))
                }
                None => {
                    return Err(NotOpened::Closed(
                        "no PROXY header within --header-timeout (or the stop's grace)".into(),
                    ))
                }
            };
        take_proxy_header(conn, header, ctx);
    }
    // The client's first bytes, to tell plain HTTP from a ClientHello
    // (usually there already: TCP listeners defer accepting until data).
    let readable = std::future::poll_fn(|cx| stream.poll_read_ready(cx));
    if before_first_request(ctx, deadline, readable)
        .await
        .is_none()
    {
        return Err(NotOpened::Closed(
            "no TLS handshake within --header-timeout (or the stop's grace)".into(),
        ));
    }
    if tls::starts_like_plain_http(&stream) {
        // As nginx does, an answer the person at the browser can read.
        let framer = ResponseFramer::Direct(ResponseEncoder::new(1, false, false));
        let err = ClientError::bad_request("plain HTTP sent to an HTTPS listener (use https://)");
        driver::refuse(&mut stream, framer, &err, conn, ctx, None).await;
        return Err(NotOpened::Refused);
    }
    match before_first_request(ctx, deadline, tls::accept(stream, config)).await {
        Some(Ok(opened)) => Ok(opened),
        Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(NotOpened::Silent),
        Some(Err(e)) => Err(NotOpened::Closed(format!("TLS handshake failed: {e}"))),
        None => Err(NotOpened::Closed(
            "no TLS handshake within --header-timeout (or the stop's grace)".into(),
        )),
    }
}

/// Whether the peer has closed its side (poll(2)'s POLLRDHUP, without
/// waiting).
fn peer_closed(fd: std::os::fd::RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// Waits for `future` until `deadline`, or, once the server is stopping,
/// for the stop's grace at most: what comes before a first request (a
/// PROXY header, the handshake) is a request on its way, as a head partway
/// is (`read_head`). None when the time is up.
pub async fn before_first_request<F: std::future::Future>(
    ctx: &ServerCtx,
    deadline: u64,
    future: F,
) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    loop {
        if ctx.lane.stopping() {
            let grace = deadline.min(lane::deadline_after(STOP_GRACE));
            return lane::timeout_at(grace, future.as_mut()).await.ok();
        }
        let wait = lane::timeout_at(deadline, future.as_mut());
        if let Some(finished) = lane::unless_stopping(&ctx.lane, wait).await {
            return finished.ok();
        }
    }
}

/// Reads the PROXY header that comes before a TLS handshake. It is peeked
/// until whole, then only its own bytes are taken off the socket, so that
/// the ClientHello after it stays there for the handshake.
async fn proxy_header_before_tls<S: Socket>(stream: &S) -> Result<ProxyHeader, String> {
    let fd = stream.as_raw_fd();
    let mut buf = vec![0u8; proxy_protocol::V2_MAX];
    let (header, len) = std::future::poll_fn(|cx| loop {
        if let Err(e) = std::task::ready!(stream.poll_read_ready(cx)) {
            return std::task::Poll::Ready(Err(e.to_string()));
        }
        let peeked = stream.try_read_io(|| {
            let n = stream.peek_now(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            match proxy_protocol::parse(&buf[..n]) {
                Ok(Some(found)) => Ok(Ok(found)),
                // Not whole, and no more will come: tokio keeps a closed
                // socket readable, so waiting would spin.
                Ok(None) if peer_closed(fd) => Err(std::io::ErrorKind::UnexpectedEof.into()),
                // Not whole yet: wait for more, as if nothing were there.
                Ok(None) => Err(std::io::ErrorKind::WouldBlock.into()),
                Err(reason) => Ok(Err(reason)),
            }
        });
        match peeked {
            Ok(Ok(found)) => return std::task::Poll::Ready(Ok(found)),
            Ok(Err(reason)) => return std::task::Poll::Ready(Err(reason.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return std::task::Poll::Ready(Err("closed before a whole PROXY header".into()))
            }
            Err(e) => return std::task::Poll::Ready(Err(e.to_string())),
        }
    })
    .await?;
    // SAFETY: recv writes at most `len` bytes into `buf`, which is larger;
    // they are the header's, received already.
    let taken = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), len, libc::MSG_DONTWAIT) };
    if taken != len as isize {
        return Err("the PROXY header could not be taken off the socket".into());
    }
    Ok(header)
}

/// The client a PROXY header names becomes the connection's peer: its
/// address is REMOTE_ADDR, the address it reached is the server's, and its
/// proxy headers are taken if it is itself in --forwarded-allow-ips.
fn take_proxy_header(conn: &mut ConnInfo, header: ProxyHeader, ctx: &ServerCtx) {
    let ProxyHeader::Client {
        source,
        destination,
    } = header
    else {
        return;
    };
    conn.remote_addr = source.ip().to_string();
    conn.remote_port = source.port().to_string();
    conn.server_name = destination.ip().to_string().into();
    conn.server_port = destination.port().to_string().into();
    conn.trusted_proxy = (ctx.environ_settings.proxy.trusted)(source.ip());
}

/// The first head of a connection that starts with a PROXY header: the
/// head (or why there is none) and the header, or why the PROXY header
/// was refused.
#[inline(never)]
async fn read_proxied_head<S: Socket>(
    stream: &mut S,
    bufs: &mut ConnBuffers,
    ctx: &ServerCtx,
    first_head: &mut Option<oneshot::Sender<()>>,
    parser: &mut HeadParser,
) -> Result<(HeadOutcome, ProxyHeader), &'static str> {
    let limits = &ctx.head_limits;
    let mut proxied = None;
    let mut refused = None;
    let parse = |buf: &[u8]| {
        let (header, skip) = match proxy_protocol::parse(buf) {
            Ok(None) => return Ok(None),
            Ok(Some(found)) => found,
            Err(reason) => {
                refused = Some(reason);
                return Err(ClientError::new(ClientErrorKind::BadRequest, reason));
            }
        };
        proxied = Some(header);
        let parsed = parser.parse(&buf[skip..], limits)?;
        Ok(parsed.map(|(head, used)| (head, skip + used)))
    };
    let outcome = read_head(stream, &mut bufs.rbuf, ctx, first_head, parse).await;
    match (refused, proxied) {
        (Some(reason), _) => Err(reason),
        (None, Some(header)) => Ok((outcome, header)),
        // Closed, or timed out, before a whole PROXY header.
        (None, None) => Ok((outcome, ProxyHeader::Local)),
    }
}

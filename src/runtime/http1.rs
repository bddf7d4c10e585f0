//! The HTTP/1.x front end: reads request heads off a connection (RFC 9112)
//! and hands each request, with an HTTP/1 response framer, to the driver;
//! repeats while keep-alive allows. Waiting for a head holds no
//! application thread.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use crate::driver::lane::{self, deadline_after, timeout_at};
use crate::driver::{self, ConnBuffers, ServerCtx};
use crate::net::socket::Socket;
use crate::proto::error::{ClientError, ClientErrorKind};
use crate::proto::http1::head::HeadParser;
use crate::proto::http1::response::ResponseEncoder;
use crate::proto::request::RequestHead;
use crate::proto::response::ResponseFramer;
use crate::wsgi::environ::ConnInfo;

/// How long a connection with no complete request (idle, or partway
/// through a head) stays open once the server is stopping, for a request
/// the client may already have sent.
const STOP_GRACE: Duration = Duration::from_secs(1);

enum HeadOutcome {
    Head(RequestHead),
    /// The client closed, went idle past keep-alive, or the server is stopping.
    Closed,
    Refused(ClientError),
}

/// Serves a connection. `first_head` is told when the first request claims
/// an application thread, and dropped when the connection ends or moves on
/// to its next request, so the accept loop knows it may accept again.
pub async fn serve<S: Socket>(
    mut stream: S,
    conn: ConnInfo,
    ctx: Arc<ServerCtx>,
    first_head: oneshot::Sender<()>,
) {
    let mut bufs = ConnBuffers::new();
    let mut first_head = Some(first_head);
    let mut parser = HeadParser::new();
    loop {
        let first = first_head.is_some();
        let read = read_head(&mut stream, &mut parser, &mut bufs.rbuf, &ctx, first);
        let head = match read.await {
            HeadOutcome::Head(head) => head,
            HeadOutcome::Closed => return,
            HeadOutcome::Refused(err) => {
                // The head is unreadable: answered as HTTP/1.1, closing.
                let framer = ResponseFramer::Http1(ResponseEncoder::new(1, false, false));
                driver::refuse(&mut stream, framer, &err, &conn, &ctx).await;
                return;
            }
        };
        // When the server is stopping, the connection still waits briefly
        // for a next request the client may have sent after a keep-alive
        // response, and answers it with Connection: close (read_head).
        let framer = ResponseFramer::Http1(ResponseEncoder::new(
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

async fn read_head<S: Socket>(
    stream: &mut S,
    parser: &mut HeadParser,
    rbuf: &mut Vec<u8>,
    ctx: &ServerCtx,
    first: bool,
) -> HeadOutcome {
    let idle_deadline = deadline_after(if first {
        ctx.header_timeout
    } else {
        ctx.keep_alive
    });
    let mut head_deadline: Option<u64> = None;
    let mut stop_deadline: Option<u64> = None;
    loop {
        if !rbuf.is_empty() {
            match parser.parse(rbuf, &ctx.head_limits) {
                Ok(Some((head, used))) => {
                    rbuf.drain(..used);
                    return HeadOutcome::Head(head);
                }
                Ok(None) => {}
                Err(e) => return HeadOutcome::Refused(e),
            }
            // The head has begun: it must now arrive within header_timeout.
            head_deadline.get_or_insert_with(|| deadline_after(ctx.header_timeout));
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(8192);
        }
        let stopping = ctx.lane.stopping();
        if stopping {
            // Stopping: a connection with no complete request, idle or
            // partway through a head, gets a moment for the rest of a
            // request already on its way (answered with Connection: close)
            // instead of a close that would race it, and no more: a slow
            // head is not waited for until header_timeout.
            stop_deadline.get_or_insert_with(|| deadline_after(STOP_GRACE));
        }
        let deadline = head_deadline
            .unwrap_or(idle_deadline)
            .min(stop_deadline.unwrap_or(u64::MAX));
        let read = timeout_at(deadline, stream.read_buf(rbuf));
        let result = if stopping {
            read.await
        } else {
            match lane::unless_stopping(&ctx.lane, read).await {
                Some(r) => r,
                None => continue,
            }
        };
        match result {
            Ok(Ok(n)) if n > 0 => {}
            Err(_) if !rbuf.is_empty() && !stopping => {
                return HeadOutcome::Refused(ClientError::new(
                    ClientErrorKind::RequestTimeout,
                    "request head not received within header_timeout",
                ))
            }
            _ => return HeadOutcome::Closed,
        }
    }
}

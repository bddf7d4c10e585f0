//! The FastCGI front end: reads records until a request's params are
//! complete, answering management records and refused requests as they
//! come (`proto::fastcgi::ConnParser`), hands the request to the driver
//! with its STDIN records as the body and a framer that writes STDOUT
//! records, and repeats while the gateway keeps the connection
//! (FCGI_KEEP_CONN, nginx's `fastcgi_keep_conn on`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::driver::lane::timeout;
use crate::driver::{self, ConnBuffers, ServerCtx};
use crate::log_at;
use crate::net::socket::Socket;
use crate::proto::fastcgi::{Capacity, ConnParser, FastCgiEncoder, Request};
use crate::proto::request::BodyFraming;
use crate::proto::response::ResponseFramer;
use crate::runtime::head::{first_read, HeadOutcome, HeadWait};
use crate::wsgi::environ::ConnInfo;

/// How long a connection the gateway keeps (FCGI_KEEP_CONN) waits for its
/// next request. The gateway closes kept connections itself (nginx after
/// its keepalive_timeout, 60 s by default); were ferrule to close them
/// first, after --keep-alive (5 s), nginx could send a request on a
/// connection closed meanwhile and answer a POST with 502.
const KEPT_IDLE: Duration = Duration::from_secs(600);

/// Serves a FastCGI connection.
pub async fn serve<S: Socket>(
    mut stream: S,
    conn: ConnInfo,
    ctx: Arc<ServerCtx>,
    first_head: oneshot::Sender<()>,
) {
    let mut bufs = ConnBuffers::new();
    let mut first_head = Some(first_head);
    let mut parser = ConnParser::new();
    let capacity = Capacity {
        max_conns: ctx.max_connections as u32,
        max_reqs: ctx.max_connections as u32,
    };
    loop {
        let Some(Request {
            mut head,
            request_id,
            keep_conn,
        }) = next_request(
            &mut stream,
            &mut parser,
            &mut bufs.rbuf,
            &conn,
            &ctx,
            capacity,
            &mut first_head,
        )
        .await
        else {
            return;
        };
        head.framing = BodyFraming::FastCgiStdin { request_id };
        let keep = keep_conn && ctx.may_keep_alive(&head);
        let framer = ResponseFramer::FastCgi(FastCgiEncoder::new(request_id, head.is_head(), keep));
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
        first_head = None;
    }
}

/// Reads records until a request's params are complete; `None` when the
/// connection is over (closed, idle, malformed, or a refused request).
async fn next_request<S: Socket>(
    stream: &mut S,
    parser: &mut ConnParser,
    rbuf: &mut Vec<u8>,
    conn: &ConnInfo,
    ctx: &ServerCtx,
    capacity: Capacity,
    first_head: &mut Option<oneshot::Sender<()>>,
) -> Option<Request> {
    let mut wait = if first_head.is_some() {
        HeadWait::new(ctx, true)
    } else {
        HeadWait::idle_for(KEPT_IDLE)
    };
    first_read(stream, rbuf, first_head);
    loop {
        if !rbuf.is_empty() {
            let parsed = parser.parse(rbuf, ctx.buffer_size, capacity);
            if !parser.replies.is_empty() {
                let replies = std::mem::take(&mut parser.replies);
                if !matches!(
                    timeout(
                        ctx.socket_timeout,
                        crate::driver::send_all(stream, &replies)
                    )
                    .await,
                    Ok(Ok(()))
                ) {
                    return None;
                }
            }
            match parsed {
                Ok((request, used)) => {
                    rbuf.drain(..used);
                    if request.is_some() {
                        return request;
                    }
                }
                Err(err) => {
                    match parser.active_request() {
                        // A request has begun: it is refused in records.
                        Some(id) => {
                            let framer =
                                ResponseFramer::FastCgi(FastCgiEncoder::new(id, false, false));
                            driver::refuse(stream, framer, &err, conn, ctx, None).await;
                        }
                        // The records themselves are broken: nothing can
                        // be said in them.
                        None => log_at!(
                            Info,
                            "{} closed: {}",
                            driver::display_remote(conn),
                            err.reason
                        ),
                    }
                    return None;
                }
            }
        }
        // No request whole yet: no claim on a thread for now.
        first_head.take();
        match wait.read_more(stream, rbuf, ctx).await {
            Ok(()) => {}
            Err(HeadOutcome::Refused(err)) => {
                log_at!(
                    Info,
                    "{} closed: {}",
                    driver::display_remote(conn),
                    err.reason
                );
                return None;
            }
            Err(_) => return None,
        }
    }
}

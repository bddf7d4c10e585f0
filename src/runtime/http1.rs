//! The HTTP/1.x front end: reads request heads off a connection (RFC 9112)
//! and hands each request, with an HTTP/1 response framer, to the driver;
//! repeats while keep-alive allows. Waiting for a head holds no
//! application thread.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::driver::{self, ConnBuffers, ServerCtx};
use crate::net::socket::Socket;
use crate::proto::http1::head::HeadParser;
use crate::proto::http1::response::ResponseEncoder;
use crate::proto::response::ResponseFramer;
use crate::runtime::head::{read_head, HeadOutcome};
use crate::wsgi::environ::ConnInfo;

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
        let limits = &ctx.head_limits;
        let parse = |buf: &[u8]| parser.parse(buf, limits);
        let read = read_head(&mut stream, &mut bufs.rbuf, &ctx, &mut first_head, parse);
        let head = match read.await {
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

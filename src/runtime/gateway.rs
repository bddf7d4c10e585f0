//! The front end of the gateway protocols that carry one request per
//! connection, uwsgi and SCGI: read the variables block, hand the request
//! to the driver with the framer of the protocol's responses (raw HTTP for
//! uwsgi, CGI-style for SCGI), close.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::driver::{self, ConnBuffers, ServerCtx};
use crate::net::listen::Protocol;
use crate::net::socket::Socket;
use crate::proto::http1::response::{HeadStyle, ResponseEncoder};
use crate::proto::response::ResponseFramer;
use crate::proto::{scgi, uwsgi};
use crate::runtime::head::{read_head, HeadOutcome};
use crate::wsgi::environ::ConnInfo;

/// The response framer of `protocol` for a request (HEAD if `is_head`).
fn framer(protocol: Protocol, is_head: bool) -> ResponseFramer {
    match protocol {
        // nginx's uwsgi module reads an HTTP/1.x status line and the body
        // to the end of the connection or its Content-Length; it does not
        // decode a chunked body, so none is sent.
        Protocol::Uwsgi => {
            ResponseFramer::Direct(ResponseEncoder::gateway(HeadStyle::GatewayHttp, is_head))
        }
        _ => ResponseFramer::Direct(ResponseEncoder::gateway(HeadStyle::Cgi, is_head)),
    }
}

/// Serves the one request of a uwsgi or SCGI connection.
pub async fn serve<S: Socket>(
    mut stream: S,
    protocol: Protocol,
    conn: ConnInfo,
    ctx: Arc<ServerCtx>,
    first_head: oneshot::Sender<()>,
) {
    let mut bufs = ConnBuffers {
        one_request: true,
        ..ConnBuffers::new()
    };
    let max = ctx.buffer_size;
    let parse = |buf: &[u8]| match protocol {
        Protocol::Uwsgi => uwsgi::parse(buf, max),
        _ => scgi::parse(buf, max),
    };
    let mut first_head = Some(first_head);
    let head = match read_head(&mut stream, &mut bufs.rbuf, &ctx, &mut first_head, parse).await {
        HeadOutcome::Head(head) => head,
        HeadOutcome::Closed => return,
        HeadOutcome::Refused(err) => {
            driver::refuse(
                &mut stream,
                framer(protocol, false),
                &err,
                &conn,
                &ctx,
                None,
            )
            .await;
            return;
        }
    };
    let framer = framer(protocol, head.is_head());
    driver::handle_request(
        &mut stream,
        &head,
        framer,
        &mut bufs,
        &conn,
        &ctx,
        &mut first_head,
    )
    .await;
}

//! Reading a request head off a connection, for any front end: bytes are
//! read until the front end's parser has a whole head, within
//! `--header-timeout` once it has begun (and `--keep-alive`, or the header
//! timeout for a new connection, while idle). Holds no application thread.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use crate::driver::lane::{self, deadline_after, timeout_at};
use crate::driver::ServerCtx;
use crate::net::socket::Socket;
use crate::proto::error::{ClientError, ClientErrorKind};
use crate::proto::request::RequestHead;

/// How long a connection with no complete request (idle, or partway
/// through a head) stays open once the server is stopping, for a request
/// the client may already have sent.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

pub enum HeadOutcome {
    Head(RequestHead),
    /// The client closed, went idle past keep-alive, or the server is stopping.
    Closed,
    Refused(ClientError),
}

/// The waits of a connection while it reads a head: `--keep-alive` (or
/// the header timeout for a new connection) while idle, `--header-timeout`
/// once a head has begun, and the stop's grace.
pub struct HeadWait {
    idle_deadline: u64,
    head_deadline: Option<u64>,
    stop_deadline: Option<u64>,
}

impl HeadWait {
    /// `first` says the connection has had no request yet.
    pub fn new(ctx: &ServerCtx, first: bool) -> Self {
        Self::idle_for(if first {
            ctx.header_timeout
        } else {
            ctx.keep_alive
        })
    }

    /// Waits up to `idle` for the start of a head.
    pub fn idle_for(idle: Duration) -> Self {
        HeadWait {
            idle_deadline: deadline_after(idle),
            head_deadline: None,
            stop_deadline: None,
        }
    }

    /// Reads more bytes into `rbuf`; `Err` when the connection is over
    /// (closed, idle too long, the server stopping) or the head too slow.
    pub async fn read_more<S: Socket>(
        &mut self,
        stream: &mut S,
        rbuf: &mut Vec<u8>,
        ctx: &ServerCtx,
    ) -> Result<(), HeadOutcome> {
        loop {
            if !rbuf.is_empty() {
                // The head has begun: it must now arrive within
                // header_timeout.
                self.head_deadline
                    .get_or_insert_with(|| deadline_after(ctx.header_timeout));
            }
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(8192);
            }
            let stopping = ctx.lane.stopping();
            if stopping {
                // Stopping: a connection with no complete request, idle or
                // partway through a head, gets a moment for the rest of a
                // request already on its way (answered with Connection:
                // close) instead of a close that would race it, and no
                // more: a slow head is not waited for until header_timeout.
                self.stop_deadline
                    .get_or_insert_with(|| deadline_after(STOP_GRACE));
            }
            let deadline = self
                .head_deadline
                .unwrap_or(self.idle_deadline)
                .min(self.stop_deadline.unwrap_or(u64::MAX));
            let read = timeout_at(deadline, stream.read_buf(rbuf));
            let result = if stopping {
                read.await
            } else {
                match lane::unless_stopping(&ctx.lane, read).await {
                    Some(r) => r,
                    None => continue,
                }
            };
            return match result {
                Ok(Ok(n)) if n > 0 => Ok(()),
                Err(_) if !rbuf.is_empty() && !stopping => {
                    Err(HeadOutcome::Refused(ClientError::new(
                        ClientErrorKind::RequestTimeout,
                        "request head not received within header_timeout",
                    )))
                }
                _ => Err(HeadOutcome::Closed),
            };
        }
    }
}

/// On a new connection, the accept loop waits to hear whether the first
/// request claims an application thread (`first_head`, see
/// `runtime::server`). It hears at once: this reads what the socket holds
/// without waiting, and unless that is a whole head, drops `first_head`
/// ("no claim yet") before waiting for more.
pub fn first_read<S: Socket>(
    stream: &S,
    rbuf: &mut Vec<u8>,
    first_head: &mut Option<oneshot::Sender<()>>,
) {
    if first_head.is_some() && rbuf.is_empty() {
        if rbuf.capacity() < 4096 {
            rbuf.reserve(8192);
        }
        let _ = stream.read_now(rbuf);
    }
}

/// Reads until `parse` returns a head, leaving what follows it in `rbuf`.
/// `first_head` is the new connection's word to the accept loop (see
/// `first_read`), `None` once said.
pub async fn read_head<S: Socket>(
    stream: &mut S,
    rbuf: &mut Vec<u8>,
    ctx: &ServerCtx,
    first_head: &mut Option<oneshot::Sender<()>>,
    mut parse: impl FnMut(&[u8]) -> Result<Option<(RequestHead, usize)>, ClientError>,
) -> HeadOutcome {
    let mut wait = HeadWait::new(ctx, first_head.is_some());
    first_read(stream, rbuf, first_head);
    loop {
        if !rbuf.is_empty() {
            match parse(rbuf) {
                Ok(Some((head, used))) => {
                    rbuf.drain(..used);
                    return HeadOutcome::Head(head);
                }
                Ok(None) => {}
                Err(e) => {
                    // Refusing waits on the client: no claim.
                    first_head.take();
                    return HeadOutcome::Refused(e);
                }
            }
        }
        // Not a whole head yet: no claim on a thread for now.
        first_head.take();
        if let Err(outcome) = wait.read_more(stream, rbuf, ctx).await {
            return outcome;
        }
    }
}

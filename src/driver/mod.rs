//! The request driver, the same for every protocol: given a request head
//! a front end parsed and the response framer for its protocol, it reads a
//! small body ahead, runs the application inline, sends the framed
//! response, drains what the application left unread, and says whether the
//! connection may carry another request. Waiting for the client (pre-read
//! bodies, response writes) is asynchronous and holds no application
//! thread; only the application's own blocking reads of a large body do.

pub mod lane;
pub mod send_ahead;
pub mod static_files;

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch, Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::access_log::AccessRecord;
use crate::driver::lane::{deadline_after, timeout, timeout_at, Lane};
use crate::driver::send_ahead::{SendAhead, SenderThread};
use crate::exchange::out_queue::{OutQueue, KEPT_BUFFER, MAX_SLICES};
use crate::exchange::spool::Spool;
use crate::exchange::wire::Wire;
use crate::exchange::{Exchange, ExchangeState, ReceivedBody, READ_CHUNK};
use crate::liveness::{self, Slot};
use crate::log;
use crate::log_at;
use crate::metrics::{self, Block};
use crate::net::socket::Socket;
use crate::proto::body::{BodyDecoder, Chunk};
use crate::proto::error::{ClientError, ClientErrorKind};
use crate::proto::http2::Http2Limits;
use crate::proto::request::HeadLimits;
use crate::proto::request::{BodyFraming, RequestHead, RequestLabel};
use crate::proto::response::ResponseFramer;
use crate::wsgi::call::{AppCall, Step};
use crate::wsgi::environ::{self, ConnInfo, EnvironSettings};
use crate::wsgi::objects::RequestObjects;

/// Buffers a connection lends to each of its exchanges and takes back
/// afterwards, so a keep-alive connection allocates them once.
#[derive(Default)]
pub struct ConnBuffers {
    /// Bytes read from the socket and not yet consumed; may hold the next
    /// pipelined request when it comes back.
    pub rbuf: Vec<u8>,
    /// Framed response bytes the application side produces.
    pub out: OutQueue,
    /// Framed response bytes the connection is sending.
    pub sending: OutQueue,
    /// Scratch for the head `start_response` encodes.
    pub head: Vec<u8>,
    /// The last request's objects and exchange, reused by the next
    /// request when nothing else holds them.
    pub objects: Option<RequestObjects>,
    /// The peer sends one request and nothing after it (uwsgi, SCGI): once
    /// all of it is read, closing cannot reset the connection under a
    /// response the peer has not read, so it closes without lingering.
    pub one_request: bool,
    /// Whether closing with input unread lingers for the peer to read the
    /// response first: not for an HTTP/2 stream's socket pair, whose peer,
    /// the relay, has read the response whole already.
    pub linger: bool,
}

impl ConnBuffers {
    /// Sized for a typical request and response head, so that a
    /// connection's first request does not grow them step by step (seven
    /// reallocations, about 2,000 instructions, for a hello-world response).
    pub fn new() -> Self {
        ConnBuffers {
            rbuf: Vec::with_capacity(8192),
            out: OutQueue::with_capacity(1024),
            head: Vec::with_capacity(256),
            linger: true,
            ..ConnBuffers::default()
        }
    }

    /// Empties the buffers for the next request, dropping any grown past
    /// what a connection keeps.
    pub fn trim(&mut self) {
        self.out.reset();
        self.sending.reset();
        if self.head.capacity() > KEPT_BUFFER {
            self.head = Vec::new();
        } else {
            self.head.clear();
        }
    }
}

/// Most unread body bytes discarded after a response to keep the connection
/// open; a longer remainder closes the connection instead.
pub const MAX_DRAIN: u64 = 1 << 20;

/// How long a refused client gets to stop sending before the connection is
/// closed, so it reads the error response instead of a reset.
const LINGER: Duration = Duration::from_secs(2);

/// Everything a connection needs from the server.
pub struct ServerCtx {
    pub app: Py<PyAny>,
    pub environ_base: Py<PyDict>,
    pub environ_settings: EnvironSettings,
    pub head_limits: HeadLimits,
    /// Largest variables block a gateway may send (`--buffer-size`).
    pub buffer_size: usize,
    /// Most connections at once (`--worker-connections`), which FastCGI
    /// tells a gateway that asks.
    pub max_connections: usize,
    pub max_body: u64,
    pub post_buffering: u64,
    /// `--stream-uploads`: large bodies are read by the application from
    /// the connection instead of being received first.
    pub stream_uploads: bool,
    pub header_timeout: Duration,
    pub keep_alive: Duration,
    pub socket_timeout: Duration,
    /// Most bytes of a streamed response that may wait in memory for a slow
    /// client while the application goes on (`--response-buffer`).
    pub response_buffer: usize,
    /// Longest a request may wait for an application thread before it is
    /// answered 503 instead (`--queue-timeout`); zero for no limit.
    pub queue_timeout: Duration,
    pub shutdown: watch::Receiver<bool>,
    /// The worker's liveness page, under a master.
    pub liveness: Option<Arc<Slot>>,
    /// Requests after which the worker asks to be replaced; 0 for never.
    pub max_requests: u64,
    /// Application threads (`--threads`), and how many requests hold one now.
    pub threads: usize,
    /// The runtime's threads (`runtime::server::runtime_threads`): with
    /// more than one, a task may resume on another thread after a wait.
    pub runtime_threads: usize,
    pub in_flight: AtomicUsize,
    /// Woken when a request ends, for an accept loop waiting for a thread.
    pub thread_freed: Notify,
    /// One permit: whose turn it is to send a large file (`send_file`).
    pub file_turns: Semaphore,
    /// Where the connections run (see `lane`).
    pub lane: Arc<Lane>,
    /// Where streamed responses are sent from while their application
    /// thread goes on (`send_ahead`), with more than one thread; started
    /// once the serving thread has blocked the signals it waits for.
    pub sender: OnceLock<SenderThread>,
    /// The worker's page, whose metrics block requests are recorded in
    /// (`--metrics-bind`); None records nothing.
    pub metrics: Option<Arc<Slot>>,
    /// `--static` routes; None costs a request one branch.
    pub static_files: Option<static_files::StaticFiles>,
    /// The hooks (`ferrule._hooks.Hooks`) when pre_request or post_request
    /// is defined; None costs a request one branch.
    pub request_hooks: Option<Py<PyAny>>,
    /// The HTTP/2 settings clients are held to.
    pub http2: Http2Limits,
    /// Whether a plain HTTP connection from a trusted peer that opens with
    /// HTTP/2's preface is served as HTTP/2 (--http2-cleartext).
    pub http2_cleartext: bool,
    /// The socket pairs HTTP/2 streams may hold at once in this worker
    /// (`runtime::server::stream_pair_limit`).
    pub http2_pairs: Arc<Semaphore>,
}

impl ServerCtx {
    /// Where requests are recorded, with --metrics-bind.
    pub fn metrics(&self) -> Option<&Block> {
        self.metrics.as_deref().map(Slot::metrics)
    }

    /// Runs `f` attached to Python, stamping the liveness page so the master
    /// can tell a request that hangs in the application.
    fn in_python<R>(&self, f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
        let thread = lane::thread_index();
        let _stamped = self
            .liveness
            .as_deref()
            .map(|slot| InPython::enter(slot, thread));
        Python::attach(f)
    }

    /// Waits until fewer requests run than there are application threads.
    /// With several workers on one listener, a worker whose threads are all
    /// busy leaves new connections in the kernel's queue for the others.
    pub async fn wait_for_free_thread(&self) {
        loop {
            let freed = self.thread_freed.notified();
            if self.in_flight.load(Ordering::Acquire) < self.threads {
                return;
            }
            freed.await;
        }
    }

    /// Whether a response to `head` may leave the connection open for
    /// another request: the client allows it, keep-alive is on, and the
    /// server is not stopping.
    pub fn may_keep_alive(&self, head: &RequestHead) -> bool {
        head.keep_alive && !self.keep_alive.is_zero() && !self.lane.stopping()
    }

    /// Counts a served request; past --max-requests the worker asks its own
    /// main thread for a graceful stop, and the master replaces it.
    fn count_request(&self) {
        let Some(slot) = &self.liveness else { return };
        if slot.count_request() == self.max_requests {
            log_at!(
                Info,
                "Autorestarting worker after {} requests (max_requests)",
                self.max_requests
            );
            slot.stop_worker(liveness::EXIT_MAX_REQUESTS);
        }
    }
}

/// Answers a request the server refuses itself with the error response of
/// its protocol (`framer`), logged at info, then closes.
/// `head` is the request's, when it was read whole; the access log has a
/// line for every refusal.
pub async fn refuse<S: Socket>(
    stream: &mut S,
    mut framer: ResponseFramer,
    err: &ClientError,
    conn: &ConnInfo,
    ctx: &ServerCtx,
    head: Option<&RequestHead>,
) {
    let (code, phrase) = err.status();
    if let Some(metrics) = ctx.metrics() {
        metrics.client_error(err.kind);
        metrics.request_done(head.map_or(&b""[..], RequestHead::method), code, 0, 0, 0);
    }
    log_at!(
        Info,
        "{} refused ({}): {}",
        display_remote(conn),
        code,
        err.reason
    );
    if log::access_log_enabled() {
        let done = AccessDone {
            status: code,
            bytes: 0,
            head_fields: b"",
            environ: &[],
            elapsed: std::time::Duration::ZERO,
        };
        access_log(head, conn, &ctx.environ_settings, &done);
    }
    let mut out = Vec::new();
    framer.error(&mut out, code, phrase);
    if timeout(ctx.socket_timeout, send_all(stream, &out))
        .await
        .is_ok()
    {
        linger_close(stream).await;
    }
}

/// Half-closes and discards what the client still sends for a moment, so
/// that closing with unread input does not reset the connection before the
/// client has read the response.
pub async fn linger_close<S: Socket>(stream: &mut S) {
    let deadline = deadline_after(LINGER);
    // Under TLS the shutdown sends close_notify, which waits for a client
    // that may read nothing more: bounded like the rest.
    let _ = timeout_at(deadline, stream.shutdown()).await;
    // Read into spare capacity: a zeroed 16 KiB buffer cost about 16,000
    // instructions a connection, most of a connection-per-request's cost.
    let mut sink = Vec::with_capacity(16 * 1024);
    let mut discarded = 0u64;
    while discarded < MAX_DRAIN {
        sink.clear();
        match timeout_at(deadline, stream.read_buf(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => discarded += n as u64,
            _ => break,
        }
    }
}

pub fn display_remote(conn: &ConnInfo) -> String {
    if conn.remote_addr.is_empty() {
        "unix socket client".to_string()
    } else {
        format!("{}:{}", conn.remote_addr, conn.remote_port)
    }
}

/// The request body as the application will read it.
struct RequestBody {
    /// Decodes what is still to come from the connection.
    decoder: BodyDecoder,
    /// `Expect: 100-continue` to be answered on the first read.
    continue_owed: bool,
    /// The body received whole already (the decoder is then done).
    received: Option<ReceivedBody>,
    /// The body's length for the metrics: its Content-Length, or the length
    /// of a body received whole (0 for one the application streams).
    len: u64,
}

/// Receives the whole body through `decoder` before the application runs:
/// up to --post-buffering bytes in memory, the rest in a temporary file.
/// What follows the body (a pipelined request) stays in `rbuf`. `Err`
/// holds the error that answers the request: the client's (a body cut
/// short, too slow, malformed or too large), or a 500 when the temporary
/// file could not be written (logged).
async fn receive_body<S: Socket>(
    stream: &mut S,
    rbuf: &mut Vec<u8>,
    decoder: &mut BodyDecoder,
    ctx: &ServerCtx,
) -> Result<ReceivedBody, ClientError> {
    let mut whole = ReceivedBody::default();
    let memory_max = ctx.post_buffering as usize;
    loop {
        let mut used = 0;
        let finished = loop {
            match decoder.decode(&rbuf[used..])? {
                (n, Chunk::Data(range)) => {
                    let data = &rbuf[used + range.start..used + range.end];
                    if whole.spool.is_none() && whole.memory.len() + data.len() <= memory_max {
                        whole.memory.extend_from_slice(data);
                    } else {
                        let spool = match &mut whole.spool {
                            Some(spool) => spool,
                            None => whole.spool.insert(Spool::create().map_err(spool_failed)?),
                        };
                        spool.write(data).map_err(spool_failed)?;
                    }
                    used += n;
                }
                (n, Chunk::Done) => {
                    used += n;
                    break true;
                }
                (n, Chunk::NeedMore) => {
                    used += n;
                    break false;
                }
            }
        };
        rbuf.drain(..used);
        let replies = decoder.take_replies();
        if !replies.is_empty()
            && timeout(ctx.socket_timeout, send_all(stream, &replies))
                .await
                .map_or(true, |r| r.is_err())
        {
            return Err(body_cut_short());
        }
        if finished {
            return Ok(whole);
        }
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 2 {
            rbuf.reserve(READ_CHUNK);
        }
        match timeout(ctx.socket_timeout, stream.read_buf(rbuf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(body_cut_short()),
            Err(_) => return Err(body_too_slow()),
        }
    }
}

/// Reads until `rbuf` holds `len` bytes, each read within the socket
/// timeout; the client error that answers a body cut short or too slow.
async fn read_at_least<S: Socket>(
    stream: &mut S,
    rbuf: &mut Vec<u8>,
    len: usize,
    wait: Duration,
) -> Result<(), ClientError> {
    while rbuf.len() < len {
        rbuf.reserve(len - rbuf.len());
        match timeout(wait, stream.read_buf(rbuf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(body_cut_short()),
            Err(_) => return Err(body_too_slow()),
        }
    }
    Ok(())
}

/// The body's temporary file could not be made or written (the disk is
/// full, $TMPDIR is missing): the server's fault, logged as such, and the
/// client told so with a 500.
fn spool_failed(e: std::io::Error) -> ClientError {
    log_at!(Error, "receiving a request body into a temporary file: {e}");
    ClientError::new(
        ClientErrorKind::ServerError,
        "the request body could not be stored",
    )
}

fn body_cut_short() -> ClientError {
    ClientError::bad_request("client closed the connection before the end of the request body")
}

fn body_too_slow() -> ClientError {
    ClientError::new(
        ClientErrorKind::RequestTimeout,
        "request body: client made no progress within socket_timeout",
    )
}

/// Serves one request; returns whether the connection may carry another.
///
/// `framer` frames the response in the protocol the request came by.
/// `first_request` is told when the request claims an application thread
/// (see `runtime::server`'s accept loop).
pub async fn handle_request<S: Socket>(
    stream: &mut S,
    head: &RequestHead,
    framer: ResponseFramer,
    bufs: &mut ConnBuffers,
    conn: &ConnInfo,
    ctx: &Arc<ServerCtx>,
    first_request: &mut Option<oneshot::Sender<()>>,
) -> bool {
    let mut framer = framer;
    let _in_flight = ctx.metrics().map(InFlight::new);
    if ctx.static_files.is_some() {
        // Boxed: its state would otherwise enlarge every request's future,
        // which is moved several times a request.
        let served = Box::pin(static_files::serve(
            stream,
            head,
            &mut framer,
            bufs,
            conn,
            ctx,
            first_request,
        ));
        if let Some(keep) = served.await {
            return keep;
        }
    }
    let started = log::access_log_enabled().then(std::time::Instant::now);
    let begun_ns = if ctx.metrics.is_some() {
        metrics::now_ns()
    } else {
        0
    };
    let mut body = match BodyDecoder::new(head.framing, ctx.max_body, ctx.head_limits.max_head_size)
    {
        Ok(body) => body,
        Err(err) => {
            first_request.take();
            refuse(stream, framer, &err, conn, ctx, Some(head)).await;
            return false;
        }
    };
    // The body is received before the application runs, so an uploading
    // client never holds an application thread. A small one is read into
    // the read buffer, where the application's reads decode it; any other
    // (longer, chunked, FastCGI records) is received whole, decoded, into
    // memory and past --post-buffering a temporary file. With
    // --stream-uploads, the application reads those from the connection
    // itself, and Expect: 100-continue is answered on its first read.
    let mut continue_owed = head.expect_continue && head.framing != BodyFraming::Empty;
    let small = match head.framing {
        BodyFraming::Empty => true,
        BodyFraming::Length(n) => n <= ctx.post_buffering,
        _ => false,
    };
    let mut received = None;
    if small && !continue_owed {
        if let BodyFraming::Length(n) = head.framing {
            if bufs.rbuf.len() < n as usize {
                // Waiting on the client: no claim on a thread meanwhile.
                first_request.take();
                if let Err(err) =
                    read_at_least(stream, &mut bufs.rbuf, n as usize, ctx.socket_timeout).await
                {
                    refuse(stream, framer, &err, conn, ctx, Some(head)).await;
                    return false;
                }
            }
        }
    } else if !ctx.stream_uploads {
        // Receiving says nothing of a thread: the accept loop goes on.
        first_request.take();
        if continue_owed && bufs.rbuf.is_empty() {
            let go_ahead = framer.continue_bytes();
            if timeout(ctx.socket_timeout, send_all(stream, go_ahead))
                .await
                .is_err()
            {
                return false;
            }
        }
        continue_owed = false;
        match receive_body(stream, &mut bufs.rbuf, &mut body, ctx).await {
            Ok(whole) => received = Some(whole),
            Err(err) => {
                refuse(stream, framer, &err, conn, ctx, Some(head)).await;
                return false;
            }
        }
    } else if let BodyFraming::Length(n) = head.framing {
        if continue_owed && bufs.rbuf.len() as u64 >= n {
            continue_owed = false;
        }
    }

    if !ctx.queue_timeout.is_zero() && queued_too_long(stream, ctx) {
        first_request.take();
        let err = ClientError::new(
            ClientErrorKind::Overloaded,
            "waited longer than --queue-timeout for an application thread",
        );
        refuse(stream, framer, &err, conn, ctx, Some(head)).await;
        return false;
    }

    // From here the request holds an application thread, until it needs
    // no more Python (`run_request` lets go of the claim then).
    let claim = ThreadClaim::new(ctx);
    if let Some(tell) = first_request.take() {
        if tell.send(()).is_ok() {
            // The accept loop was just woken onto this thread's LIFO slot,
            // which no other thread may steal; let it run before the
            // application blocks this thread.
            lane::yield_to_runtime().await;
        }
    }
    let len = match (head.framing, &received) {
        (BodyFraming::Length(n), _) => n,
        (_, Some(received)) => received.length(),
        _ => 0,
    };
    let body = RequestBody {
        decoder: body,
        continue_owed,
        received,
        len,
    };
    let times = Times { started, begun_ns };
    run_request(stream, head, body, framer, claim, bufs, conn, ctx, times).await
}

/// Whether a request about to run has waited longer than --queue-timeout
/// since its last byte arrived, by the kernel's count on TCP (`TCP_INFO`),
/// which takes in the time the request sat unread in the socket while
/// every application thread was busy. A unix socket has no such count, and
/// the wait inside ferrule says nothing of it (a head is read only once a
/// loop is free), so there nothing is refused.
fn queued_too_long<S: Socket>(stream: &S, ctx: &ServerCtx) -> bool {
    let Some(waited) = crate::net::socket::since_last_data_received(stream.as_raw_fd()) else {
        return false;
    };
    if let Some(metrics) = ctx.metrics() {
        metrics.queue_waited(waited);
    }
    waited > ctx.queue_timeout
}

/// A thread's stamp in the liveness page while it runs Python, taken off
/// however the call ends (a panic too: else the master would take the
/// thread for one hung in the application).
struct InPython<'a> {
    slot: &'a Slot,
    thread: usize,
}

impl<'a> InPython<'a> {
    fn enter(slot: &'a Slot, thread: usize) -> Self {
        slot.enter(thread);
        InPython { slot, thread }
    }
}

impl Drop for InPython<'_> {
    fn drop(&mut self) {
        self.slot.leave(self.thread);
    }
}

/// Counts a request in flight for the metrics while it lives.
struct InFlight<'a>(&'a Block);

impl<'a> InFlight<'a> {
    fn new(metrics: &'a Block) -> Self {
        metrics.request_started();
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// When a request began: for the access log (with it on), and in
/// nanoseconds for the metrics (0 with them off).
struct Times {
    started: Option<std::time::Instant>,
    begun_ns: u64,
}

/// A request's claim on one of the worker's application threads, counted
/// in `in_flight` while it runs or will run Python: a response that is
/// only bytes left to send (a list, a file) no longer counts, so a slow
/// reader does not stop a worker from accepting (the accept loop waits
/// while every thread is claimed).
struct ThreadClaim<'a> {
    ctx: &'a ServerCtx,
    /// When the claim began (`metrics::now_ns`), for the metrics; 0 with
    /// them off.
    since_ns: u64,
}

impl<'a> ThreadClaim<'a> {
    fn new(ctx: &'a ServerCtx) -> Self {
        ctx.in_flight.fetch_add(1, Ordering::AcqRel);
        let since_ns = match ctx.metrics() {
            Some(metrics) => {
                metrics.thread_claimed();
                metrics::now_ns()
            }
            None => 0,
        };
        ThreadClaim { ctx, since_ns }
    }
}

impl Drop for ThreadClaim<'_> {
    fn drop(&mut self) {
        if let Some(metrics) = self.ctx.metrics() {
            metrics.thread_freed(metrics::now_ns().saturating_sub(self.since_ns));
        }
        // An accept loop waits for a thread only when every one was busy.
        if self.ctx.in_flight.fetch_sub(1, Ordering::AcqRel) >= self.ctx.threads {
            self.ctx.thread_freed.notify_waiters();
            // Only with several workers does an accept loop wait for it.
            if self.ctx.environ_settings.multiprocess {
                lane::return_to_runtime_after_this_task();
            }
        }
    }
}

/// Runs the application for a request whose body framing is settled.
#[allow(clippy::too_many_arguments)]
async fn run_request<S: Socket>(
    stream: &mut S,
    head: &RequestHead,
    body: RequestBody,
    framer: ResponseFramer,
    claim: ThreadClaim<'_>,
    bufs: &mut ConnBuffers,
    conn: &ConnInfo,
    ctx: &Arc<ServerCtx>,
    times: Times,
) -> bool {
    let started = times.started;
    let mut claim = Some(claim);
    let body_len = body.len;
    let fd = stream.as_raw_fd();
    let mut refusal = framer.clone();
    let mut state = ExchangeState::new(
        std::mem::take(&mut bufs.rbuf),
        std::mem::take(&mut bufs.out),
        std::mem::take(&mut bufs.head),
        body.decoder,
        body.continue_owed,
        framer,
    );
    if let Some(received) = body.received {
        state.set_received(received);
    }
    let spare = bufs.objects.take();
    // From here until the response needs no more Python, nothing is
    // awaited: the call is on this thread.
    let call_on_thread = ctx.lane.call();
    let call_started = ctx.in_python(|py| {
        let wire = Wire::new(fd, stream.tls_session());
        let objects = RequestObjects::for_request(
            py,
            spare,
            (wire.clone(), wire),
            ctx.socket_timeout,
            state,
        )?;
        let environ = environ::build(
            py,
            ctx.environ_base.bind(py),
            &ctx.environ_settings,
            head,
            conn,
            objects.input.bind(py).clone().into_any(),
        )?;
        let hooked = ctx
            .request_hooks
            .as_ref()
            .map(|hooks| pre_request(py, hooks, &environ));
        // The access log's `{name}e` atoms read the environ afterwards.
        let logged_environ = (log::access_log_enabled()
            && !log::access_format().environ_names().is_empty())
        .then(|| environ.clone().unbind());
        let (call, step) = AppCall::start(
            py,
            &ctx.app,
            environ.into_any(),
            objects.start_response.bind(py).clone().into_any(),
            objects.exchange.clone(),
            RequestLabel(head),
        );
        Ok::<_, PyErr>((objects, call, step, hooked, logged_environ))
    });
    let (objects, mut call, mut step, hooked, logged_environ) = match call_started {
        Ok(started) => started,
        Err(err) => {
            // Building Python objects failed (out of memory, most likely):
            // ferrule's fault, not the client's or the application's.
            log_at!(
                Critical,
                "could not build the request for the application: {err}"
            );
            let mut out = Vec::new();
            refusal.error(&mut out, 500, "Internal Server Error");
            drop(call_on_thread);
            let _ = timeout(ctx.socket_timeout, send_all(stream, &out)).await;
            return false;
        }
    };
    let exchange = &objects.exchange;
    // With several threads the connection's task may resume on another
    // thread after any wait, so a response that needs more Python is
    // finished here, before the task waits for anything.
    let mut sent_ahead = None;
    if ctx.runtime_threads > 1 && needs_more_python(&step, &call) {
        (step, sent_ahead) = finish_on_this_thread(ctx, exchange, &mut call, step);
    }
    let mut hooked = hooked;
    if ctx.runtime_threads > 1 {
        // The hook is one of the request's Python steps, which all run on
        // the thread that called the application (its thread-locals and
        // context variables): here, before any wait could move the task,
        // once the response is whole in the out queue.
        post_request(ctx, hooked.take(), exchange, 0);
    }
    drop(call_on_thread);
    if !needs_more_python(&step, &call) {
        claim.take();
    }
    // Framed bytes that never reached the socket when the client left: the
    // access log counts the body bytes sent, at most (chunk framing still
    // queued counts against them).
    let mut unsent = 0u64;
    let mut sent_ok = true;
    if let Some(sender) = sent_ahead {
        // The thread is free; the rest of the response goes out from the
        // sender, which this connection waits for before its next write.
        let _ = sender.await;
        let mut st = exchange.lock();
        if st.write_failed {
            // The client was given --socket-timeout once: not again.
            step = Step::Abort;
            sent_ok = false;
            unsent = st.out.len() as u64;
            st.out.clear();
        }
    }
    let mut out = std::mem::take(&mut bufs.sending);
    let mut first_send = true;
    loop {
        std::mem::swap(&mut out, &mut exchange.lock().out);
        // Under TLS the application's side may have left records in the
        // session that the socket did not take: they go out here too.
        if !out.is_empty() || stream.has_pending_output() {
            // Let the other connections that are ready run their requests
            // first, so that the responses go out in one burst: the client
            // then reads them in one wake-up instead of being woken (an
            // inter-processor interrupt) once per response. Measured with
            // Flask: about 1 wake-up per request without this, 0.2 with it,
            // and about 15% more requests per second. With several threads
            // another loop may resume the task on another thread (when this
            // one is held by a slow call), and a request's Python
            // steps (next(), close()) must all run on the thread that called
            // the application, whose thread-locals and context variables
            // they may use: there, only a response that needs no more Python
            // yields.
            let no_more_python = matches!(step, Step::Done) && !call.needs_close();
            if std::mem::take(&mut first_send) && (ctx.runtime_threads == 1 || no_more_python) {
                lane::yield_to_ready_tasks().await;
            }
            if !send_queue(stream, &mut out, ctx.socket_timeout).await {
                sent_ok = false;
                unsent = (out.len() + exchange.lock().out.len()) as u64;
                break;
            }
            out.clear();
        }
        step = match step {
            Step::More => {
                let next = ctx.in_python(|py| next_chunks(py, &mut call, exchange));
                if !needs_more_python(&next, &call) {
                    claim.take();
                }
                next
            }
            Step::Done => break,
            Step::Abort => {
                sent_ok = false;
                break;
            }
            Step::SendFile {
                fd: file_fd,
                offset,
                len,
            } => match send_file(
                stream,
                file_fd,
                offset,
                len,
                &ctx.file_turns,
                ctx.socket_timeout,
            )
            .await
            {
                Ok(()) => call.after_sendfile(len),
                Err(e) => {
                    log_at!(Debug, "sendfile to {} stopped: {e}", display_remote(conn));
                    sent_ok = false;
                    unsent = len;
                    break;
                }
            },
        };
    }
    if call.needs_close() {
        ctx.in_python(|py| call.close_now(py));
    }
    // One thread: the response has been sent, on the only thread there is.
    post_request(ctx, hooked, exchange, unsent);
    drop(claim);
    ctx.count_request();

    let (status, bytes, mut keep, body_read) = {
        let st = exchange.lock();
        (
            st.response.status(),
            st.response.body_bytes(),
            st.response.keep_alive() && !st.write_failed,
            st.body.is_done(),
        )
    };
    keep &= sent_ok;
    if let Some(metrics) = ctx.metrics() {
        let sent = bytes.saturating_sub(unsent);
        let took = metrics::now_ns().saturating_sub(times.begun_ns);
        metrics.request_done(head.method(), status, body_len, sent, took.max(1));
    }
    if let Some(elapsed) = started.map(|at| at.elapsed()) {
        let environ = logged_environ
            .map(|environ| ctx.in_python(|py| environ_values(environ.bind(py))))
            .unwrap_or_default();
        let st = exchange.lock();
        let done = AccessDone {
            status,
            bytes: bytes.saturating_sub(unsent),
            head_fields: st.sent_head().map_or(&b""[..], |(_, fields)| fields),
            environ: &environ,
            elapsed,
        };
        access_log(Some(head), conn, &ctx.environ_settings, &done);
    }
    if keep {
        keep = drain_body(stream, exchange, ctx.socket_timeout).await;
    }
    (bufs.rbuf, bufs.out, bufs.head) = exchange.close();
    // The call holds the exchange too; dropped first, so that the next
    // request can tell whether anything else still does.
    drop(call);
    bufs.objects = Some(objects);
    bufs.sending = out;
    bufs.trim();
    if !sent_ok {
        return false;
    }
    let all_read = bufs.one_request && body_read && bufs.rbuf.is_empty();
    if !keep && !all_read && bufs.linger {
        linger_close(stream).await;
    }
    keep
}

/// Writes all of `data` and what the socket's TLS session made of it.
pub async fn send_all<S: Socket>(stream: &mut S, data: &[u8]) -> io::Result<()> {
    stream.write_all(data).await?;
    stream.flush().await
}

/// Sends the queue with writev(2); false if the connection failed or the
/// client made no progress for `wait`. Most responses fit the socket
/// buffer, so usually no timer is ever armed. Under TLS, the records made
/// of the queue must leave too.
async fn send_queue<S: Socket>(stream: &mut S, queue: &mut OutQueue, wait: Duration) -> bool {
    while !queue.is_empty() || stream.has_pending_output() {
        let written = {
            let mut slots = [IoSlice::new(&[]); MAX_SLICES];
            let count = queue.slices(&mut slots);
            stream.try_write_vectored_now(&slots[..count])
        };
        match written {
            Ok(n) => queue.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !matches!(timeout(wait, stream.wait_writable()).await, Ok(Ok(()))) {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Whether the application's response still has Python to run after
/// `step`: iterations to pull, or a `close()` to call (after a file sent
/// with sendfile(2), `close()` only closes the file).
fn needs_more_python(step: &Step, call: &AppCall<'_>) -> bool {
    match step {
        Step::More => true,
        Step::SendFile { .. } => false,
        Step::Done | Step::Abort => call.needs_close(),
    }
}

/// Runs the rest of a response on the calling thread, without awaiting.
/// PEP 3333 applications may keep per-request state in thread-locals or
/// context variables (Flask's `stream_with_context`, for one), which only
/// the thread that called the application sees, so every chunk is pulled
/// here. What the client has not taken yet waits in the out queue, up to
/// --response-buffer bytes, and the sender thread (`send_ahead`) sends it
/// as the client reads, also while the application is producing its next
/// chunk. A response that ends within the buffer frees its thread at once,
/// however slow the client; past the buffer the thread waits for the
/// client here (GIL released, each wait bounded by --socket-timeout), and
/// the runtime's spare thread (`runtime_threads`) keeps the worker's own
/// tasks going if every application thread waits so. Returns the last step, and when the sender was
/// started, what ends when it has sent everything (or the client failed).
fn finish_on_this_thread(
    ctx: &ServerCtx,
    exchange: &Arc<Exchange>,
    call: &mut AppCall<'_>,
    mut step: Step,
) -> (Step, Option<oneshot::Receiver<()>>) {
    let mut sender: Option<SendAhead> = None;
    while matches!(step, Step::More) {
        // What is queued goes out before the next chunk is asked for: now,
        // as far as the socket takes it, and the rest from the sender.
        let (queued, all_sent) = {
            let mut st = exchange.lock();
            // The sender gave up on the client: so does the response.
            let sent = if st.write_failed {
                Err(io::ErrorKind::BrokenPipe.into())
            } else {
                st.flush_now(&exchange.output)
            };
            match sent {
                Ok(all_sent) => (st.out.len(), all_sent),
                Err(_) => {
                    step = Step::Abort;
                    break;
                }
            }
        };
        // Not all sent: bytes queued, or (TLS) records the socket did not
        // take yet.
        if !all_sent {
            sender
                .get_or_insert_with(|| {
                    SendAhead::start(
                        ctx.sender
                            .get()
                            .expect("started when the runtime has more than one thread"),
                        exchange,
                    )
                })
                .queued();
        }
        // Past the buffer this thread waits for the client itself (with
        // poll(2), GIL released).
        if queued > ctx.response_buffer
            && wait_until_queued_at_most(exchange, ctx.response_buffer).is_err()
        {
            step = Step::Abort;
            break;
        }
        step = ctx.in_python(|py| next_chunks(py, call, exchange));
    }
    ctx.in_python(|py| call.close_now(py));
    // The tail of a response that ended goes from the connection's task,
    // unless a sender is already at work.
    (step, sender.map(SendAhead::producer_done))
}

/// Waits (blocking, without the exchange's lock) until at most `bound`
/// bytes of the response wait to be sent. It fails only when the client
/// takes nothing for --socket-timeout: the sender's writes count as
/// progress too.
fn wait_until_queued_at_most(exchange: &Exchange, bound: usize) -> io::Result<()> {
    let mut queued = usize::MAX;
    loop {
        let before = queued;
        queued = {
            let mut st = exchange.lock();
            st.flush_now(&exchange.output)?;
            st.out.len()
        };
        if queued <= bound {
            return Ok(());
        }
        let waited = crate::exchange::blocking_io::wait_writable(
            exchange.output.fd,
            exchange.socket_timeout,
        );
        if waited.is_err() && exchange.lock().out.len() >= queued.min(before) {
            exchange.lock().write_failed = true;
            return waited;
        }
    }
}

/// Most chunks of a streamed response pulled with the GIL held once: up to
/// this many, so that each hold stays short (the worker's --timeout
/// watches how long Python runs).
const CHUNKS_PER_HOLD: usize = 64;

/// Pulls the response's next chunks, sending each before pulling the next
/// (PEP 3333: no block may wait for the one after it), for as long as the
/// socket takes them at once: attaching to Python and releasing it again
/// cost about 600 instructions a chunk. Returns `Step::More` with the
/// unsent rest in the exchange when a chunk must wait for the client.
fn next_chunks(py: Python<'_>, call: &mut AppCall<'_>, exchange: &Exchange) -> Step {
    for _ in 0..CHUNKS_PER_HOLD {
        let step = call.next(py);
        if !matches!(step, Step::More) {
            return step;
        }
        match exchange.lock().flush_now(&exchange.output) {
            Ok(true) => {}
            Ok(false) => return Step::More,
            Err(_) => return Step::Abort,
        }
    }
    Step::More
}

/// Discards what the application left unread of the body, so the next
/// request on the connection starts where it should. An unanswered
/// `Expect: 100-continue` means the client never sent the body: close.
async fn drain_body<S: Socket>(stream: &mut S, exchange: &Exchange, wait: Duration) -> bool {
    let mut drained = 0u64;
    // Most requests have had their body read (or have none): no buffer.
    let mut buf = Vec::new();
    loop {
        {
            let mut st = exchange.lock();
            if st.continue_owed && !st.body.is_done() {
                return false;
            }
            let before = st.rbuf.len() as u64;
            st.rbuf.extend_from_slice(&buf);
            if st.decode_buffered(None).is_err() {
                return false;
            }
            drained += before + buf.len() as u64 - st.rbuf.len() as u64;
            if st.body.is_done() {
                return true;
            }
        }
        if drained > MAX_DRAIN {
            return false;
        }
        buf.clear();
        buf.reserve(READ_CHUNK);
        match timeout(wait, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}

/// Files at least this large are sent in turns (see `send_file`).
const TURN_MIN_FILE: u64 = 1 << 20;
/// The most one turn sends, and the longest it lasts.
const TURN_BYTES: u64 = 8 << 20;
const TURN_TIME: Duration = Duration::from_millis(20);
/// A client that takes longer than this to make room in its socket buffer
/// gives its turn up while it waits.
const TURN_IDLE: Duration = Duration::from_millis(2);

/// Sends `len` bytes of `file_fd` from `offset` with sendfile(2).
///
/// Large files go out in turns: one connection of the worker at a time
/// sends, for up to `TURN_BYTES` or `TURN_TIME`, while its client keeps up.
/// Keeping one socket busy instead of spreading the same bytes over every
/// download at once measured about twice the throughput with 64 concurrent
/// 10 MiB downloads (see docs/performance.md), and bodies finish in order
/// instead of all late together. A client that cannot keep up gives its
/// turn away while it waits.
async fn send_file<S: Socket>(
    stream: &S,
    file_fd: RawFd,
    offset: u64,
    len: u64,
    turns: &Semaphore,
    wait: Duration,
) -> io::Result<()> {
    let sock = stream.as_raw_fd();
    let mut off = offset as libc::off_t;
    let mut left = len;
    let in_turns = len >= TURN_MIN_FILE;
    // The turn held: its permit, when it began, and `left` then.
    let mut turn: Option<(SemaphorePermit<'_>, Instant, u64)> = None;
    while left > 0 {
        if let Some((_, began, left_then)) = &turn {
            if began.elapsed() >= TURN_TIME || left_then - left >= TURN_BYTES {
                turn = None;
            }
        }
        if in_turns && turn.is_none() {
            let permit = turns.acquire().await.map_err(io::Error::other)?;
            turn = Some((permit, Instant::now(), left));
        }
        let step = left.min(1 << 30) as usize;
        let sent = stream.try_write_io(|| {
            // SAFETY: both descriptors are open for the duration of the call.
            let n = unsafe { libc::sendfile(sock, file_fd, &mut off, step) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as u64)
            }
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than expected",
                ))
            }
            Ok(n) => left -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if turn.is_some()
                    && tokio::time::timeout(TURN_IDLE, stream.wait_writable())
                        .await
                        .is_ok()
                {
                    continue;
                }
                turn = None;
                timeout(wait, stream.wait_writable()).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")
                })??;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The post_request hook, for the request pre_request was told of:
/// `unsent` framed bytes never reached the client.
fn post_request(
    ctx: &ServerCtx,
    hooked: Option<(Py<PyAny>, Py<PyAny>)>,
    exchange: &Exchange,
    unsent: u64,
) {
    let (Some(hooks), Some((req, environ))) = (&ctx.request_hooks, hooked) else {
        return;
    };
    let (status, status_line, sent) = {
        let st = exchange.lock();
        let line = st
            .sent_head()
            .map(|(line, _)| String::from_utf8_lossy(line).into_owned());
        let sent = st.response.body_bytes().saturating_sub(unsent);
        (st.response.status(), line, sent)
    };
    ctx.in_python(|py| {
        crate::call_hook(
            py,
            Some(hooks),
            "post_request",
            (req, environ, status, status_line, sent),
        )
    });
}

/// The pre_request hook: its `req` object and the environ, kept for
/// post_request.
fn pre_request(
    py: Python<'_>,
    hooks: &Py<PyAny>,
    environ: &Bound<'_, PyDict>,
) -> (Py<PyAny>, Py<PyAny>) {
    let req = match hooks.bind(py).call_method1("pre_request", (environ,)) {
        Ok(req) => req.unbind(),
        Err(err) => {
            log_at!(
                Error,
                "Hook pre_request failed\n{}",
                crate::wsgi::call::format_exception(py, &err)
            );
            py.None()
        }
    };
    (req, environ.clone().into_any().unbind())
}

/// How a request ended, for its access-log line.
struct AccessDone<'a> {
    status: u16,
    bytes: u64,
    /// The response's header fields as sent (empty for a server's own).
    head_fields: &'a [u8],
    /// The values of the format's `{name}e` atoms.
    environ: &'a [Option<String>],
    elapsed: std::time::Duration,
}

/// The values the access format's `{name}e` atoms name, from the environ.
fn environ_values(environ: &Bound<'_, PyDict>) -> Vec<Option<String>> {
    log::access_format()
        .environ_names()
        .iter()
        .map(|name| {
            environ
                .get_item(name)
                .ok()
                .flatten()
                .and_then(|v| v.str().ok().map(|s| s.to_string()))
        })
        .collect()
}

/// Writes a request's access-log line; `head` is None for a request
/// refused before its head was read whole.
fn access_log(
    head: Option<&RequestHead>,
    conn: &ConnInfo,
    settings: &EnvironSettings,
    done: &AccessDone<'_>,
) {
    let format = log::access_format();
    // Behind a gateway, the client is the one it names; behind a trusted
    // proxy with --forwarded-for, the one the proxy names.
    let gateway_remote = head.and_then(|h| match h.cgi_var(b"REMOTE_ADDR") {
        Some(addr) => Some(String::from_utf8_lossy(addr).into_owned()),
        None => environ::forwarded_client(settings, h, conn).map(|(addr, _)| addr),
    });
    let lookup = |name: &[u8], cgi: &[u8]| head.and_then(|h| h.header(name, cgi));
    let time = if format.wants_time() {
        log::access_time(format.is_json())
    } else {
        String::new()
    };
    let record = AccessRecord {
        remote: gateway_remote.as_deref().unwrap_or(&conn.remote_addr),
        method: head.map_or(&b""[..], RequestHead::method),
        target: head.map_or(&b""[..], RequestHead::target),
        protocol: head.map_or("-", RequestHead::protocol),
        status: done.status,
        bytes: done.bytes,
        elapsed: done.elapsed,
        request_header: &lookup,
        response_fields: done.head_fields,
        environ: done.environ,
        time: &time,
    };
    let mut line = String::with_capacity(256);
    format.render(&record, &mut line);
    log::write_access(&line);
}

//! The HTTP/2 front end (RFC 9113): over TLS when ALPN settles on h2, and
//! in the clear for a connection that opens with HTTP/2's preface
//! (`--http2-cleartext prior-knowledge`). The `h2` crate reads and writes
//! frames, HPACK and flow control, and holds clients to the settings
//! (`proto::http2::Http2Limits`).
//!
//! Each stream is one request, which the one driver runs as it runs any
//! other: through a socket pair (a `Port`), one end of which a driver task
//! serves as a connection, request after request, while this module
//! relays between the other end and the stream. The request body goes in
//! framed as the driver reads any body (DATA frames of unknown length as
//! HTTP/1 chunks), and the response comes out framed as HTTP/1.1, whose
//! head becomes the HEADERS frame and whose body, decoded, the DATA
//! frames. The pair keeps the driver whole (the application's blocking
//! reads and writes on a descriptor, responses sent ahead by the sender
//! thread, sendfile(2) for `wsgi.file_wrapper`), and its socket buffers
//! and the stream's window bound what waits between the application and
//! the client. A connection keeps the ports its streams are done with for
//! the next streams: making a pair and registering and closing its ends
//! cost 8 system calls a request, most of its cost (measured with h2load
//! and strace).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::driver::lane;
use crate::driver::{self, ConnBuffers, ServerCtx};
use crate::log_at;
use crate::proto::body::{BodyDecoder, Chunk};
use crate::proto::error::ClientError;
use crate::proto::http1::response::ResponseEncoder;
use crate::proto::http2::{self, chunk_size_line, parse_response_head, LAST_CHUNK};
use crate::proto::request::{BodyFraming, RequestHead};
use crate::proto::response::ResponseFramer;
use crate::runtime::http1::before_first_request;
use crate::wsgi::environ::ConnInfo;

/// What `h2` keeps of a stream's response before it waits for the
/// client's window (its default is 400 KiB).
const SEND_BUFFER: usize = 64 * 1024;
/// Bytes read from the driver's end at a time: most responses' heads and
/// small bodies fit the first read. (16 KiB measured slower on hello: the
/// allocator grew and shrank its heap about every fifth request.)
const READ_SIZE: usize = 4 * 1024;
/// Largest response head relayed (the application's fields are bounded
/// by nothing else).
const MAX_RESPONSE_HEAD: usize = 1 << 20;
/// Most ports a connection keeps for its next streams; its streams past
/// these each have a pair made and closed for them.
const KEPT_PORTS: usize = 16;

/// The preface every HTTP/2 connection opens with (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves an HTTP/2 connection until the client closes it, it stays idle
/// past --keep-alive, or the server stops (GOAWAY, then the streams begun
/// finish). Called as a task of the lane, which it holds only for the
/// handshake: the connection and its streams' relays are then tasks of
/// the runtime, so that they go on while every application thread waits
/// on a stream's socket pair (which only a relay drains or fills). The
/// lane's task waits for them, so the connection counts as open until its
/// last request is done.
pub async fn serve<T>(io: T, conn: ConnInfo, ctx: Arc<ServerCtx>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = ctx.http2;
    let remote = driver::display_remote(&conn);
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_window_size(limits.initial_window_size)
        .initial_connection_window_size(limits.connection_window_size())
        .max_frame_size(limits.max_frame_size)
        .max_header_list_size(limits.max_header_list_size)
        // Streams the client resets before they are accepted: h2 cuts the
        // client off when this many wait to be accepted at once (those
        // reset after are counted in a window, `StreamBudget`).
        .max_pending_accept_reset_streams(limits.max_reset_streams as usize)
        .max_send_buffer_size(SEND_BUFFER);
    let deadline = lane::deadline_after(ctx.header_timeout);
    let handshake = builder.handshake::<_, Bytes>(io);
    let connection = match before_first_request(&ctx, deadline, handshake).await {
        Some(Ok(connection)) => connection,
        Some(Err(e)) => {
            log_at!(Info, "{remote}: closed: HTTP/2 preface: {e}");
            return;
        }
        None => {
            log_at!(
                Info,
                "{remote}: closed: no HTTP/2 preface within --header-timeout (or the stop's grace)"
            );
            return;
        }
    };
    let driven = tokio::spawn(drive(connection, Arc::new(conn), remote, ctx));
    // The new task sits in this thread's LIFO slot, which no other thread
    // may take: it must not wait there behind the loop's next tasks, which
    // may block in the application.
    lane::return_to_runtime_after_this_task();
    let _ = driven.await;
}

/// How a connection is being closed, once GOAWAY is sent.
#[derive(Clone, Copy)]
enum Closing {
    /// The server stops: its streams are served to their end.
    Stopping,
    /// Idle past --keep-alive: GOAWAY has --socket-timeout to reach a
    /// client that may read nothing, and streams it opened meanwhile are
    /// served.
    Idle(tokio::time::Instant),
    /// Cut off for abuse: GOAWAY has --socket-timeout, and nothing more
    /// is served.
    CutOff(tokio::time::Instant),
}

/// Accepts a connection's streams and starts each one's relay.
async fn drive<T>(
    mut connection: h2::server::Connection<T, Bytes>,
    conn: Arc<ConnInfo>,
    remote: String,
    ctx: Arc<ServerCtx>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = ctx.http2;
    let ports = Arc::new(Ports::default());
    let budget = Arc::new(StreamBudget::new(&limits));
    let mut stop = ctx.shutdown.clone();
    let mut closing = None;
    let after = |wait: Duration| tokio::time::Instant::now() + wait;
    let mut idle_deadline = after(ctx.keep_alive);
    loop {
        if closing.is_none() && *stop.borrow() {
            // RFC 9113 §6.8: GOAWAY, and the streams begun go on.
            closing = Some(Closing::Stopping);
            connection.graceful_shutdown();
        }
        let accepted = match closing {
            Some(Closing::Stopping) => connection.accept().await,
            Some(Closing::Idle(deadline) | Closing::CutOff(deadline)) => {
                match tokio::time::timeout_at(deadline, connection.accept()).await {
                    Ok(accepted) => accepted,
                    Err(_)
                        if matches!(closing, Some(Closing::Idle(_)))
                            && (connection.has_streams() || budget.any_running()) =>
                    {
                        closing = Some(Closing::Idle(after(ctx.socket_timeout)));
                        continue;
                    }
                    Err(_) => break,
                }
            }
            None => tokio::select! {
                accepted = connection.accept() => accepted,
                _ = tokio::time::sleep_until(idle_deadline) => {
                    if connection.has_streams() || budget.any_running() {
                        idle_deadline = after(ctx.keep_alive);
                    } else {
                        closing = Some(Closing::Idle(after(ctx.socket_timeout)));
                        connection.graceful_shutdown();
                    }
                    continue;
                }
                _ = budget.abused.notified() => {
                    log_at!(
                        Warning,
                        "{remote}: HTTP/2 connection cut off: more than {} streams reset by the client in {} s (--http2-max-reset-streams; CVE-2023-44487, Rapid Reset)",
                        limits.max_reset_streams,
                        RESET_WINDOW.as_secs()
                    );
                    closing = Some(Closing::CutOff(after(ctx.socket_timeout)));
                    connection.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                    continue;
                }
                _ = stop.changed() => continue,
            },
        };
        match accepted {
            Some(Ok((request, respond))) => {
                idle_deadline = after(ctx.keep_alive);
                let stream = serve_stream(
                    request,
                    respond,
                    ports.clone(),
                    conn.clone(),
                    budget.clone(),
                    ctx.clone(),
                );
                tokio::spawn(stream);
            }
            Some(Err(e)) => {
                if e.is_io() {
                    log_at!(Debug, "{remote}: HTTP/2 connection ended: {e}");
                } else if e.reason() == Some(Reason::ENHANCE_YOUR_CALM) {
                    // h2's own bounds: resets of streams not yet accepted
                    // (--http2-max-reset-streams), CONTINUATION and empty
                    // DATA floods, a header list far past its limit.
                    log_at!(
                        Warning,
                        "{remote}: HTTP/2 connection cut off: {e} (a flood of frames, or of reset streams: CVE-2023-44487, Rapid Reset)"
                    );
                } else {
                    log_at!(Info, "{remote}: HTTP/2 connection closed: {e}");
                }
                break;
            }
            None => break,
        }
    }
    // The requests still in the driver's hands (an application call, its
    // close(), the hooks) end before the connection counts as closed.
    drop(connection);
    budget.all_done().await;
}

/// The window in which `--http2-max-reset-streams` counts a client's
/// resets.
const RESET_WINDOW: Duration = Duration::from_secs(10);

/// What a connection allows its streams beyond what `h2` holds the client
/// to. `h2` frees a stream's place under SETTINGS_MAX_CONCURRENT_STREAMS
/// as soon as the client resets it, while the request's application call
/// goes on: a client that opens and resets streams in a loop (Rapid
/// Reset, CVE-2023-44487) would start calls without bound. Here a request
/// holds its place until the driver is done with it, a stream waits for a
/// place (open in `h2`, so their number is bounded by the same setting),
/// and a client that resets more than --http2-max-reset-streams streams in
/// RESET_WINDOW is cut off.
struct StreamBudget {
    places: Arc<tokio::sync::Semaphore>,
    max_places: u32,
    /// When the current window began, and the resets counted in it.
    resets: std::sync::Mutex<(std::time::Instant, u32)>,
    max_resets: u32,
    /// Told once the client has reset too many streams.
    abused: tokio::sync::Notify,
}

impl StreamBudget {
    fn new(limits: &http2::Http2Limits) -> Self {
        StreamBudget {
            places: Arc::new(tokio::sync::Semaphore::new(
                limits.max_concurrent_streams as usize,
            )),
            max_places: limits.max_concurrent_streams,
            resets: std::sync::Mutex::new((std::time::Instant::now(), 0)),
            max_resets: limits.max_reset_streams,
            abused: tokio::sync::Notify::new(),
        }
    }

    /// A place for a new request, once one is free.
    async fn place(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.places.clone().acquire_owned().await.ok()
    }

    /// Whether a request is in the driver's hands.
    fn any_running(&self) -> bool {
        self.places.available_permits() < self.max_places as usize
    }

    /// Waits until no request is in the driver's hands, then takes every
    /// place away: a stream still waiting for one is over.
    async fn all_done(&self) {
        let _ = self.places.acquire_many(self.max_places).await;
        self.places.close();
    }

    /// Counts a stream the client reset before its response was whole.
    fn reset_by_client(&self) {
        let mut window = self.resets.lock().unwrap_or_else(|e| e.into_inner());
        if window.0.elapsed() > RESET_WINDOW {
            *window = (std::time::Instant::now(), 0);
        }
        window.1 += 1;
        if window.1 == self.max_resets + 1 {
            self.abused.notify_one();
        }
    }
}

/// A request for a port's driver task: the head, and where to say whether
/// the port may carry another.
struct Job {
    head: RequestHead,
    finished: oneshot::Sender<bool>,
}

/// A socket pair whose one end a driver task serves (`serve_port`, which
/// holds one of the worker's `ServerCtx::http2_pairs` for as long as its
/// end is open), and the way to hand that task its next request.
struct Port {
    relay_end: UnixStream,
    jobs: mpsc::Sender<Job>,
}

/// A socket pair for a stream's request, counted against the worker's
/// (`ServerCtx::http2_pairs`): its driver's end, its relay's end, and the
/// permit the driver's end holds while open. None, logged, when the worker
/// holds as many pairs as its open-file limit allows or the system makes
/// none: the stream is then refused (REFUSED_STREAM, which clients retry).
fn socket_pair(
    ctx: &ServerCtx,
) -> Option<(UnixStream, UnixStream, tokio::sync::OwnedSemaphorePermit)> {
    let Ok(permit) = ctx.http2_pairs.clone().try_acquire_owned() else {
        log_at!(
            Warning,
            "HTTP/2 stream refused: the worker holds as many socket pairs as its open-file limit (RLIMIT_NOFILE) allows"
        );
        return None;
    };
    match UnixStream::pair() {
        Ok((app_end, relay_end)) => Some((app_end, relay_end, permit)),
        Err(e) => {
            log_at!(Error, "HTTP/2 stream refused: no socket pair for it: {e}");
            None
        }
    }
}

/// The ports a connection's finished streams left for the next ones.
#[derive(Default)]
struct Ports(std::sync::Mutex<Vec<Port>>);

impl Ports {
    /// A kept port, else a new one with its driver task started; None when
    /// there is no socket pair for one (`socket_pair`).
    fn take(&self, conn: &Arc<ConnInfo>, ctx: &Arc<ServerCtx>) -> Option<Port> {
        if let Some(port) = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Some(port);
        }
        let (app_end, relay_end, pair) = socket_pair(ctx)?;
        let (jobs, queue) = mpsc::channel(1);
        let port_task = serve_port(app_end, pair, queue, conn.clone(), ctx.clone());
        ctx.lane.spawn(port_task);
        Some(Port { relay_end, jobs })
    }

    /// Keeps `port` for the connection's next streams, unless it has
    /// enough, or the worker's pairs have run out (a kept port would hold
    /// one another connection needs).
    fn keep(&self, port: Port, ctx: &ServerCtx) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT_PORTS && ctx.http2_pairs.available_permits() > 0 {
            kept.push(port);
        }
    }
}

/// The driver's side of a port: each request handed to it, run as a
/// request on a connection (its end of the pair), until one leaves the
/// connection unfit for another or the port is dropped.
async fn serve_port(
    mut app_end: UnixStream,
    _pair: tokio::sync::OwnedSemaphorePermit,
    mut jobs: mpsc::Receiver<Job>,
    conn: Arc<ConnInfo>,
    ctx: Arc<ServerCtx>,
) {
    // The relay has read the response whole before the port could close:
    // no lingering.
    let mut bufs = ConnBuffers {
        linger: false,
        ..ConnBuffers::new()
    };
    while let Some(Job { head, finished }) = jobs.recv().await {
        // The driver frames the response as HTTP/1.1 (chunked when its
        // length is unknown), so its end is plain in the relayed bytes.
        let framer = ResponseFramer::Direct(ResponseEncoder::new(1, head.is_head(), true));
        let mut no_claim = None;
        let keep = driver::handle_request(
            &mut app_end,
            &head,
            framer,
            &mut bufs,
            &conn,
            &ctx,
            &mut no_claim,
        )
        .await;
        let _ = finished.send(keep);
        if !keep {
            return;
        }
    }
}

/// Serves one stream: once it has a place, its request through a port's
/// driver task, and the relay between the port and the stream. The place
/// is held until the driver is done with the request, however the stream
/// ended.
async fn serve_stream(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    ports: Arc<Ports>,
    conn: Arc<ConnInfo>,
    budget: Arc<StreamBudget>,
    ctx: Arc<ServerCtx>,
) {
    let reset = std::future::poll_fn(|cx| respond.poll_reset(cx));
    let _place = tokio::select! {
        biased;
        _ = reset => {
            budget.reset_by_client();
            return;
        }
        place = budget.place() => match place {
            Some(place) => place,
            None => return,
        },
    };
    let (parts, body) = request.into_parts();
    let is_head = parts.method == Method::HEAD;
    let head = http2::request_head(
        &parts.method,
        &parts.uri,
        &parts.headers,
        body.is_end_stream(),
        &ctx.head_limits,
    );
    let head = match head {
        Ok(head) => head,
        Err(err) => return refuse_stream(err, respond, is_head, conn, ctx).await,
    };
    let Some(mut port) = ports.take(&conn, &ctx) else {
        respond.send_reset(Reason::REFUSED_STREAM);
        return;
    };
    let framing = head.framing;
    let (finished, port_fit) = oneshot::channel();
    if port.jobs.try_send(Job { head, finished }).is_err() {
        respond.send_reset(Reason::REFUSED_STREAM);
        return;
    }
    let (from_app, to_app) = port.relay_end.split();
    let wait = ctx.socket_timeout;
    let relayed = relay(
        Some(body),
        respond,
        from_app,
        to_app,
        framing,
        is_head,
        wait,
    )
    .await;
    if relayed == Relayed::ResetByClient {
        budget.reset_by_client();
    }
    if relayed != Relayed::Whole {
        // The driver's next read or write on its end fails, and its
        // request ends (an application call still running ends first).
        drop(port);
        let _ = port_fit.await;
        return;
    }
    // A port is kept only when both of its directions ended where a
    // request's bytes end, and its driver task is ready for another.
    if port_fit.await == Ok(true) {
        ports.keep(port, &ctx);
    }
}

/// Answers a stream whose request the server refuses (an invalid field, a
/// limit passed) with the driver's refusal, on a pair of its own.
async fn refuse_stream(
    err: ClientError,
    respond: SendResponse<Bytes>,
    is_head: bool,
    conn: Arc<ConnInfo>,
    ctx: Arc<ServerCtx>,
) {
    let Some((mut app_end, mut relay_end, pair)) = socket_pair(&ctx) else {
        let mut respond = respond;
        respond.send_reset(Reason::REFUSED_STREAM);
        return;
    };
    // The driver's refusal waits with the lane's timeouts: a lane task.
    let lane_ctx = ctx.clone();
    ctx.lane.spawn(async move {
        let _pair = pair;
        let framer = ResponseFramer::Direct(ResponseEncoder::new(1, is_head, false));
        driver::refuse(&mut app_end, framer, &err, &conn, &lane_ctx, None).await;
    });
    // No body goes in: the relay's end closes its writing side at once.
    let _ = relay_end.shutdown().await;
    let (from_app, to_app) = relay_end.split();
    let wait = ctx.socket_timeout;
    let relay = relay(
        None,
        respond,
        from_app,
        to_app,
        BodyFraming::Empty,
        is_head,
        wait,
    );
    relay.await;
}

/// How a stream's relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relayed {
    /// The whole request went in and the whole response out.
    Whole,
    /// The client reset the stream before its response was whole.
    ResetByClient,
    /// Cut short otherwise: the response was whole before the request (or
    /// is cut short), or the connection failed.
    Cut,
}

/// Relays a stream's request body (`body`) to the driver and its response
/// back, until the response is sent or the stream or the driver fails.
async fn relay<R, W>(
    body: Option<RecvStream>,
    mut respond: SendResponse<Bytes>,
    mut from_app: R,
    mut to_app: W,
    framing: BodyFraming,
    is_head: bool,
    wait: Duration,
) -> Relayed
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let chunked = framing == BodyFraming::Chunked;
    let body_bytes = AtomicU64::new(0);
    let upload = async {
        match body {
            Some(mut body) => {
                relay_request_body(&mut body, &mut to_app, chunked, &body_bytes).await
            }
            None => Ok(()),
        }
    };
    let download = relay_response(&mut from_app, &mut respond, is_head, wait);
    tokio::pin!(upload, download);
    let mut uploaded = None;
    let sent = loop {
        tokio::select! {
            biased;
            done = &mut upload, if uploaded.is_none() => uploaded = Some(done.is_ok()),
            sent = &mut download => break sent,
        }
    };
    // Held until the request's end of stream is seen: dropped, h2 resets
    // a stream still open.
    let _sent = match sent {
        Ok(sent) => sent,
        Err(cut) => return cut,
    };
    let all_relayed = match framing {
        BodyFraming::Empty => true,
        BodyFraming::Length(n) => body_bytes.load(Ordering::Relaxed) == n,
        _ => false,
    };
    if uploaded.is_none() && all_relayed {
        // Every byte of the body has come: only the end of the stream,
        // which comes with or right after them, is still to be seen.
        uploaded = tokio::time::timeout(wait, &mut upload)
            .await
            .ok()
            .map(|done| done.is_ok());
    }
    match uploaded {
        Some(true) => Relayed::Whole,
        // RFC 9113 §8.1: a complete response before the whole request
        // tells the client to stop sending with RST_STREAM NO_ERROR, which
        // h2 sends when the stream's handles are dropped, after the frames
        // still queued (an explicit reset now would discard them).
        _ => Relayed::Cut,
    }
}

/// Passes the DATA frames of a request body to the driver, each window
/// update sent only once the driver's end has taken its bytes (so a body
/// the application does not read stops the client). `chunked`: the
/// body's length is unknown and the frames go as HTTP/1 chunks.
async fn relay_request_body<W: AsyncWrite + Unpin>(
    body: &mut RecvStream,
    to_app: &mut W,
    chunked: bool,
    body_bytes: &AtomicU64,
) -> Result<(), ()> {
    let mut framed = Vec::new();
    while let Some(data) = body.data().await {
        // An error: the client reset the stream, or broke the connection.
        let data = data.map_err(drop)?;
        let n = data.len();
        if n == 0 {
            continue;
        }
        if chunked {
            framed.clear();
            chunk_size_line(&mut framed, n);
            framed.extend_from_slice(&data);
            framed.extend_from_slice(b"\r\n");
            to_app.write_all(&framed).await.map_err(drop)?;
        } else {
            to_app.write_all(&data).await.map_err(drop)?;
        }
        body_bytes.fetch_add(n as u64, Ordering::Relaxed);
        let _ = body.flow_control().release_capacity(n);
    }
    if chunked {
        to_app.write_all(LAST_CHUNK).await.map_err(drop)?;
    }
    Ok(())
}

/// Sends the response the driver writes to its end: the head as HEADERS,
/// the body as DATA, the last frame ending the stream. Returns the stream
/// when the whole response was sent; a response cut short (the driver's
/// end closed before its length or last chunk: the application failed
/// partway) resets the stream, so the client never takes it for whole.
/// A client's reset is seen while the application is still working on
/// the response, not only when its next frame would go out.
async fn relay_response<R: AsyncRead + Unpin>(
    from_app: &mut R,
    respond: &mut SendResponse<Bytes>,
    is_head: bool,
    wait: Duration,
) -> Result<SendStream<Bytes>, Relayed> {
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let (head, used) = loop {
        match parse_response_head(&buf, is_head) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if buf.len() < MAX_RESPONSE_HEAD => {}
            Ok(None) | Err(_) => {
                log_at!(
                    Error,
                    "HTTP/2 stream: the response head could not be relayed"
                );
                respond.send_reset(Reason::INTERNAL_ERROR);
                return Err(Relayed::Cut);
            }
        }
        buf.reserve(READ_SIZE);
        let reset = std::future::poll_fn(|cx| respond.poll_reset(cx));
        tokio::select! {
            read = from_app.read_buf(&mut buf) => match read {
                Ok(n) if n > 0 => {}
                // The driver closed without a response.
                _ => {
                    respond.send_reset(Reason::CANCEL);
                    return Err(Relayed::Cut);
                }
            },
            _ = reset => return Err(Relayed::ResetByClient),
        }
    };
    buf.advance(used);
    let mut response = http::Response::new(());
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    let bodiless = head.framing == BodyFraming::Empty;
    let mut send = respond
        .send_response(response, bodiless)
        .map_err(|e| cut_by(&e))?;
    if bodiless {
        return Ok(send);
    }
    let mut decoder =
        BodyDecoder::new(head.framing, u64::MAX, MAX_RESPONSE_HEAD).map_err(|_| Relayed::Cut)?;
    let mut pieces: Vec<Bytes> = Vec::new();
    loop {
        while !buf.is_empty() && !decoder.is_done() {
            match decoder.decode(&buf) {
                Ok((n, Chunk::Data(range))) => {
                    let taken = buf.split_to(n).freeze();
                    pieces.push(taken.slice(range));
                }
                Ok((n, Chunk::Done)) => buf.advance(n),
                Ok((n, Chunk::NeedMore)) => {
                    buf.advance(n);
                    break;
                }
                Err(_) => {
                    send.send_reset(Reason::INTERNAL_ERROR);
                    return Err(Relayed::Cut);
                }
            }
        }
        let done = decoder.is_done();
        let count = pieces.len();
        for (i, piece) in pieces.drain(..).enumerate() {
            let last = done && i + 1 == count;
            send_data(&mut send, piece, last, wait).await?;
        }
        if done {
            if count == 0 {
                send.send_data(Bytes::new(), true).map_err(|e| cut_by(&e))?;
            }
            return Ok(send);
        }
        buf.reserve(READ_SIZE);
        let reset = std::future::poll_fn(|cx| send.poll_reset(cx));
        tokio::select! {
            read = from_app.read_buf(&mut buf) => match read {
                Ok(n) if n > 0 => {}
                _ => {
                    // Cut short: the application failed partway.
                    send.send_reset(Reason::INTERNAL_ERROR);
                    return Err(Relayed::Cut);
                }
            },
            _ = reset => return Err(Relayed::ResetByClient),
        }
    }
}

/// How a failure of `h2` to send ended the stream.
fn cut_by(e: &h2::Error) -> Relayed {
    if e.is_reset() && e.is_remote() {
        Relayed::ResetByClient
    } else {
        Relayed::Cut
    }
}

/// Sends `data` as the client's window allows, waiting at most `wait`
/// (--socket-timeout) for it to open each time; `end` ends the stream
/// with the last frame.
async fn send_data(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    wait: Duration,
) -> Result<(), Relayed> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = std::future::poll_fn(|cx| send.poll_capacity(cx));
        let n = match tokio::time::timeout(wait, granted).await {
            Ok(Some(Ok(n))) => n,
            Ok(Some(Err(e))) => return Err(cut_by(&e)),
            // No more capacity will come: the client reset the stream, or
            // the connection ended.
            Ok(None) => {
                let reset = std::future::poll_fn(|cx| match send.poll_reset(cx) {
                    std::task::Poll::Ready(Ok(_)) => std::task::Poll::Ready(true),
                    _ => std::task::Poll::Ready(false),
                });
                return Err(if reset.await {
                    Relayed::ResetByClient
                } else {
                    Relayed::Cut
                });
            }
            Err(_) => {
                // The client's window stayed shut for --socket-timeout.
                send.send_reset(Reason::CANCEL);
                return Err(Relayed::Cut);
            }
        };
        if n == 0 {
            continue;
        }
        let piece = data.split_to(n.min(data.len()));
        send.send_data(piece, end && data.is_empty())
            .map_err(|e| cut_by(&e))?;
    }
    Ok(())
}

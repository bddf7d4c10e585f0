//! Serving static files (`--static /prefix=DIR`) from Rust, before any
//! application thread is claimed: the file is opened beneath its directory
//! (openat2(2) with RESOLVE_BENEATH, so no `..` or symlink leads out of
//! it), answered by the rules in `proto::static_file`, and sent with
//! sendfile(2) where the protocol carries raw bytes. A name with no file
//! (missing, a directory) is left to the application.

use std::borrow::Cow;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::sync::oneshot;

use crate::log_at;
use crate::net::socket::Socket;
use crate::proto::error::ClientError;
use crate::proto::request::{BodyFraming, RequestHead};
use crate::proto::response::ResponseFramer;
use crate::proto::static_file::{
    accepted_codings, answer, content_type, lookup, response_head, Answer, FileFacts, Lookup,
    Precompressed, Preconditions, StaticRoute,
};
use crate::wsgi::environ::{percent_decode, ConnInfo};

use super::{
    access_log, display_remote, linger_close, receive_body, refuse, send_file, send_queue,
    AccessDone, ConnBuffers, ServerCtx,
};
use crate::proto::body::BodyDecoder;

/// The static routes of a worker, each with its directory open.
pub struct StaticFiles {
    routes: Vec<StaticRoute>,
    /// `O_PATH` descriptors of the routes' directories, by route.
    dirs: Vec<OwnedFd>,
    /// `--static-cache-control`.
    cache_control: Option<String>,
}

/// Pieces of a file read for a protocol that cannot take sendfile(2)
/// (FastCGI records).
const READ_PIECE: usize = 64 * 1024;

impl StaticFiles {
    /// Opens each route's directory; the error names the one that fails.
    pub fn open(routes: Vec<StaticRoute>, cache_control: Option<String>) -> Result<Self, String> {
        let mut dirs = Vec::with_capacity(routes.len());
        for route in &routes {
            let path = CString::new(route.dir.as_os_str().as_encoded_bytes())
                .map_err(|_| format!("--static: {} has a NUL byte", route.dir.display()))?;
            // SAFETY: `path` is a valid C string; the descriptor returned,
            // if any, is owned by the OwnedFd below.
            let fd = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(format!(
                    "--static: cannot open the directory {}: {}",
                    route.dir.display(),
                    io::Error::last_os_error()
                ));
            }
            // SAFETY: `fd` was just opened and is owned by nothing else.
            let dir = unsafe { OwnedFd::from_raw_fd(fd) };
            // Every file is opened with openat2(2) (Linux 5.6), which a
            // container's seccomp profile may also forbid: found out here,
            // not as a 500 on every request.
            if let Err(e) = open_beneath(dir.as_raw_fd(), b".", "") {
                return Err(format!(
                    "--static: files are opened with openat2(2) (Linux 5.6 and later), which failed here: {e}"
                ));
            }
            dirs.push(dir);
        }
        Ok(StaticFiles {
            routes,
            dirs,
            cache_control,
        })
    }

    fn dir_of(&self, route: &StaticRoute) -> RawFd {
        let index = self
            .routes
            .iter()
            .position(|r| std::ptr::eq(r, route))
            .unwrap_or(0);
        self.dirs[index].as_raw_fd()
    }
}

/// Opens `relative` (plus `suffix`) beneath `dir`: None when there is no
/// such file; an error when the name leads out of the directory (EXDEV,
/// ELOOP) or cannot be read.
fn open_beneath(dir: RawFd, relative: &[u8], suffix: &str) -> io::Result<Option<OwnedFd>> {
    let mut name = Vec::with_capacity(relative.len() + suffix.len() + 1);
    name.extend_from_slice(relative);
    name.extend_from_slice(suffix.as_bytes());
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain old data; zeroed is valid, then filled.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `name` is a valid C string and `how` a valid open_how of the
    // size passed; the descriptor returned is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
}

/// A regular file's size and modification time; None for anything else.
fn regular_file(fd: &OwnedFd) -> io::Result<Option<(u64, u64)>> {
    // SAFETY: stat is plain old data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(None);
    }
    Ok(Some((st.st_size as u64, st.st_mtime.max(0) as u64)))
}

/// The file to send: the precompressed sibling in the first coding the
/// client accepts that exists, else the file itself; and whether the
/// response varies by Accept-Encoding: a sibling exists and the client
/// sent the field (`asked`). Without the field the identity response is
/// right for every client, so a cache may keep it without Vary, and the
/// request costs no look for siblings. None when there is no regular file
/// of that name.
fn choose_file(
    dir: RawFd,
    relative: &[u8],
    codings: &[Precompressed],
    asked: bool,
) -> io::Result<Option<(OwnedFd, FileFacts, bool)>> {
    for &coding in codings {
        if let Some(fd) = open_beneath(dir, relative, coding.suffix())? {
            if let Some((size, mtime)) = regular_file(&fd)? {
                let facts = FileFacts {
                    size,
                    mtime,
                    coding: Some(coding),
                };
                // Only if the file itself is there: a stray `x.css.gz`
                // does not make `x.css` exist.
                if open_beneath(dir, relative, "")?.is_some() {
                    return Ok(Some((fd, facts, true)));
                }
                return Ok(None);
            }
        }
    }
    let Some(fd) = open_beneath(dir, relative, "")? else {
        return Ok(None);
    };
    let Some((size, mtime)) = regular_file(&fd)? else {
        return Ok(None);
    };
    let facts = FileFacts {
        size,
        mtime,
        coding: None,
    };
    Ok(Some((fd, facts, asked && has_sibling(dir, relative)?)))
}

/// Whether any precompressed sibling of the file exists, for the Vary of
/// an identity response to a client that would take one.
fn has_sibling(dir: RawFd, relative: &[u8]) -> io::Result<bool> {
    for coding in [Precompressed::Brotli, Precompressed::Gzip] {
        if open_beneath(dir, relative, coding.suffix())?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Answers `head` from the static routes when it names a file there;
/// `None` leaves the request to the application (not a GET or HEAD, not
/// under a route, or no such file). `Some(keep)` otherwise: whether the
/// connection may carry another request. `first_request` is told at once
/// when the server answers itself: no application thread is claimed.
pub async fn serve<S: Socket>(
    stream: &mut S,
    head: &RequestHead,
    framer: &mut ResponseFramer,
    bufs: &mut ConnBuffers,
    conn: &ConnInfo,
    ctx: &ServerCtx,
    first_request: &mut Option<oneshot::Sender<()>>,
) -> Option<bool> {
    let statics = ctx.static_files.as_ref()?;
    // A GET or HEAD with no body; over FastCGI, every request has a STDIN
    // stream, read below.
    let stdin = matches!(head.framing, BodyFraming::FastCgiStdin { .. });
    if !(head.framing == BodyFraming::Empty || stdin) || !matches!(head.method(), b"GET" | b"HEAD")
    {
        return None;
    }
    // A gateway's path (PATH_INFO) is decoded already.
    let path: Cow<'_, [u8]> = if head.cgi.is_empty() {
        percent_decode(head.path())
    } else {
        Cow::Borrowed(head.path())
    };
    let (route, relative) = match lookup(&statics.routes, &path) {
        Lookup::NotStatic | Lookup::Directory => return None,
        Lookup::Refused(reason) => {
            first_request.take();
            let err = ClientError::bad_request(reason);
            refuse(stream, framer.clone(), &err, conn, ctx, Some(head)).await;
            return Some(false);
        }
        Lookup::File(route, relative) => (route, relative),
    };

    let started = std::time::Instant::now();
    let header = |name: &[u8], cgi: &[u8]| head.header(name, cgi);
    let accept_encoding = header(b"accept-encoding", b"HTTP_ACCEPT_ENCODING");
    let codings = accepted_codings(accept_encoding);
    let dir = statics.dir_of(route);
    let chosen = choose_file(dir, &relative, &codings, accept_encoding.is_some());
    if matches!(chosen, Ok(None)) {
        return None;
    }
    first_request.take();
    // The file answers: over FastCGI, its STDIN records are read up to the
    // empty one, so that the connection's next request starts where it
    // should (what they carry is discarded).
    if stdin {
        let limits = &ctx.head_limits;
        let received = match BodyDecoder::new(head.framing, ctx.max_body, limits.max_head_size) {
            Ok(mut decoder) => receive_body(stream, &mut bufs.rbuf, &mut decoder, ctx).await,
            Err(err) => Err(err),
        };
        if let Err(err) = received {
            refuse(stream, framer.clone(), &err, conn, ctx, Some(head)).await;
            return Some(false);
        }
    }
    let (file, facts, vary) = match chosen {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            let name = String::from_utf8_lossy(&relative);
            let (status, phrase) = match e.raw_os_error() {
                // The name leads out of the directory (a symlink, RESOLVE_BENEATH).
                Some(libc::EXDEV | libc::ELOOP) => {
                    log_at!(
                        Info,
                        "{}: static file {name:?} leads out of {}: refused",
                        display_remote(conn),
                        route.dir.display()
                    );
                    (404, "Not Found")
                }
                Some(libc::EACCES | libc::EPERM) => {
                    log_at!(
                        Warning,
                        "static file {name:?} in {}: {e}",
                        route.dir.display()
                    );
                    (403, "Forbidden")
                }
                _ => {
                    log_at!(
                        Error,
                        "static file {name:?} in {}: {e}",
                        route.dir.display()
                    );
                    (500, "Internal Server Error")
                }
            };
            return Some(plain_answer(stream, head, framer, bufs, conn, ctx, status, phrase).await);
        }
    };
    let etag = facts.etag();
    let pre = Preconditions {
        if_match: header(b"if-match", b"HTTP_IF_MATCH"),
        if_none_match: header(b"if-none-match", b"HTTP_IF_NONE_MATCH"),
        if_modified_since: header(b"if-modified-since", b"HTTP_IF_MODIFIED_SINCE"),
        if_unmodified_since: header(b"if-unmodified-since", b"HTTP_IF_UNMODIFIED_SINCE"),
        // Range is defined for GET only (RFC 9110 §14.2): a HEAD gets the
        // whole representation's fields.
        if_range: header(b"if-range", b"HTTP_IF_RANGE").filter(|_| !head.is_head()),
        range: header(b"range", b"HTTP_RANGE").filter(|_| !head.is_head()),
    };
    let answer = answer(&facts, &etag, &pre);
    let app_head = response_head(
        &facts,
        &etag,
        &answer,
        content_type(&relative),
        vary,
        statics.cache_control.as_deref(),
    );
    let (start, len) = match answer {
        _ if head.is_head() => (0, 0),
        Answer::Whole => (0, facts.size),
        Answer::Part { start, end } => (start, end - start),
        _ => (0, 0),
    };
    let mut out = std::mem::take(&mut bufs.sending);
    framer.start(out.buf(), &app_head, app_head.declared_length);
    let sent = send_body(stream, framer, &mut out, &file, start, len, ctx).await;
    out.clear();
    bufs.sending = out;
    drop(file);
    log_access(head, conn, ctx, framer, &app_head, started);
    Some(finish(stream, framer, bufs, sent).await)
}

/// Sends the head in `out` and `len` bytes of `file` from `start`: with
/// sendfile(2) where the protocol allows, else read and framed piece by
/// piece. False when the client is gone or too slow.
async fn send_body<S: Socket>(
    stream: &mut S,
    framer: &mut ResponseFramer,
    out: &mut crate::exchange::out_queue::OutQueue,
    file: &OwnedFd,
    start: u64,
    len: u64,
    ctx: &ServerCtx,
) -> bool {
    if framer.allows_sendfile() && stream.carries_raw_bytes() {
        let n = framer.piece_start(out.buf(), len);
        if n > 0 {
            // The head goes with MSG_MORE, so that it leaves in one segment
            // with the file's first bytes instead of a packet of its own
            // (which cost about a fifth of the requests a second for a 4 KiB
            // file over loopback). What the socket does not take at once
            // goes the usual way.
            match stream.send_more(out.buf()) {
                Ok(sent) => out.advance(sent),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
        if !send_queue(stream, out, ctx.socket_timeout).await {
            return false;
        }
        out.clear();
        if n > 0 {
            let sent = send_file(
                stream,
                file.as_raw_fd(),
                start,
                n,
                &ctx.file_turns,
                ctx.socket_timeout,
            )
            .await;
            if let Err(e) = sent {
                log_at!(Debug, "static file: sendfile stopped: {e}");
                return false;
            }
        }
        framer.piece_end(out.buf(), n);
        framer.finish(out.buf());
        return send_queue(stream, out, ctx.socket_timeout).await;
    }
    let mut piece = vec![0u8; READ_PIECE.min(len as usize)];
    let mut offset = start;
    let end = start + len;
    while offset < end {
        let want = piece.len().min((end - offset) as usize);
        // SAFETY: `piece` has room for `want` bytes; pread writes at most that.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                piece.as_mut_ptr().cast(),
                want,
                offset as libc::off_t,
            )
        };
        if n <= 0 {
            log_at!(Debug, "static file: read stopped at {offset} of {end}");
            return false;
        }
        framer.body(out.buf(), &piece[..n as usize]);
        offset += n as u64;
        if !send_queue(stream, out, ctx.socket_timeout).await {
            return false;
        }
        out.clear();
    }
    framer.finish(out.buf());
    send_queue(stream, out, ctx.socket_timeout).await
}

/// A short plain-text answer of the server's own (403, 404, 500 for a
/// static file), keeping the connection when the request allows.
#[allow(clippy::too_many_arguments)]
async fn plain_answer<S: Socket>(
    stream: &mut S,
    head: &RequestHead,
    framer: &mut ResponseFramer,
    bufs: &mut ConnBuffers,
    conn: &ConnInfo,
    ctx: &ServerCtx,
    status: u16,
    phrase: &str,
) -> bool {
    let started = std::time::Instant::now();
    let body = format!("{status} {phrase}\n");
    let mut bytes = format!("{status} {phrase}").into_bytes();
    let status_len = bytes.len();
    bytes.extend_from_slice(
        format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let app_head = crate::proto::app_head::AppHead {
        status,
        bytes,
        status_len,
        declared_length: Some(body.len() as u64),
        has_date: false,
        has_server: false,
    };
    let mut out = std::mem::take(&mut bufs.sending);
    framer.start(out.buf(), &app_head, app_head.declared_length);
    framer.body(out.buf(), body.as_bytes());
    framer.finish(out.buf());
    let sent = send_queue(stream, &mut out, ctx.socket_timeout).await;
    out.clear();
    bufs.sending = out;
    log_access(head, conn, ctx, framer, &app_head, started);
    finish(stream, framer, bufs, sent).await
}

fn log_access(
    head: &RequestHead,
    conn: &ConnInfo,
    ctx: &ServerCtx,
    framer: &ResponseFramer,
    app_head: &crate::proto::app_head::AppHead,
    started: std::time::Instant,
) {
    let elapsed = started.elapsed();
    if let Some(metrics) = ctx.metrics() {
        let took = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        metrics.request_done(
            head.method(),
            framer.status(),
            0,
            framer.body_bytes(),
            took.max(1),
        );
    }
    if crate::log::access_log_enabled() {
        let done = AccessDone {
            status: framer.status(),
            bytes: framer.body_bytes(),
            head_fields: app_head.fields(),
            environ: &[],
            elapsed,
        };
        access_log(Some(head), conn, &ctx.environ_settings, &done);
    }
}

/// Whether the connection carries on after a response `sent` (or not);
/// closing, it lingers unless the peer sent one request and nothing more
/// (as `run_request` does).
async fn finish<S: Socket>(
    stream: &mut S,
    framer: &ResponseFramer,
    bufs: &ConnBuffers,
    sent: bool,
) -> bool {
    if !sent {
        return false;
    }
    let keep = framer.keep_alive();
    let peer_is_done = bufs.one_request && bufs.rbuf.is_empty();
    if !keep && !peer_is_done && bufs.linger {
        linger_close(stream).await;
    }
    keep
}

//! The serving process: open the listeners, start one tokio worker thread
//! per application thread (`--threads`), accept connections, and stop
//! gracefully on SIGTERM/SIGINT.
//!
//! Each worker thread keeps one Python thread state for its whole life, so
//! attaching to the interpreter per request is a GIL hand-off and nothing
//! more, and `threading.local` data (database connections) survives across
//! requests as it does under other threaded servers.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::ffi;
use pyo3::prelude::*;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::connection::{self, ServerCtx, Socket};
use crate::listen::Listener;
use crate::log_at;
use crate::wsgi::environ::{base_environ, ConnInfo, EnvironSettings};

/// Runs the server until a stop signal; the caller holds the GIL, which is
/// released for the server's lifetime.
pub fn run(py: Python<'_>, config: &Config, app: Py<PyAny>) -> Result<(), String> {
    if let Some(mask) = config.umask {
        // SAFETY: umask has no failure mode.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    let mut listeners = Vec::new();
    for addr in config.bind_addresses()? {
        let listener = Listener::bind(&addr, config.backlog)
            .map_err(|e| format!("cannot listen on {addr:?}: {e}"))?;
        listeners.push(listener);
    }

    let environ_settings = EnvironSettings {
        script_name: config.script_name.trim_end_matches('/').to_string(),
        multithread: config.threads > 1,
        multiprocess: false,
    };
    let environ_base =
        base_environ(py, &environ_settings).map_err(|e| format!("building the environ: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(ServerCtx {
        app,
        environ_base: environ_base.unbind(),
        environ_settings,
        head_limits: config.head_limits(),
        max_body: config.limit_request_body,
        post_buffering: config.post_buffering,
        header_timeout: config.header_timeout,
        keep_alive: config.keep_alive,
        socket_timeout: config.socket_timeout,
        shutdown: stop_rx,
    });
    let threads = usize::from(config.threads);
    let max_connections = config.worker_connections as usize;
    let graceful_timeout = config.graceful_timeout;

    py.detach(move || {
        serve(
            listeners,
            ctx,
            stop_tx,
            threads,
            max_connections,
            graceful_timeout,
        )
    })
}

fn serve(
    listeners: Vec<Listener>,
    ctx: Arc<ServerCtx>,
    stop_tx: watch::Sender<bool>,
    threads: usize,
    max_connections: usize,
    graceful_timeout: Duration,
) -> Result<(), String> {
    // Blocked before the runtime's threads exist, so they inherit the mask
    // and only this thread receives the stop signals, even while every
    // worker thread is busy in the application.
    let signals = StopSignals::block();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("ferrule-worker")
        .enable_all()
        .on_thread_start(keep_python_thread_state)
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut socket_files = Vec::new();
    let listen_fds: Vec<RawFd> = listeners.iter().map(Listener::raw_fd).collect();
    {
        let _in_runtime = runtime.enter();
        for listener in listeners {
            log_at!(
                Info,
                "Listening at: {} (pid {})",
                listener,
                std::process::id()
            );
            socket_files.extend(listener_cleanup(&listener));
            spawn_accept_loop(listener, ctx.clone(), slots.clone())?;
        }
    }

    let signal_name = signals.wait(None).unwrap_or("?");
    log_at!(Info, "Handling signal: {signal_name}: stopping");
    // Stop listening now, from this thread: the accept loops may be waiting
    // for a worker thread that is busy in the application. New connections
    // are refused from here on.
    for fd in listen_fds {
        stop_listening(fd);
    }
    let _ = stop_tx.send(true);
    // Every connection holds a slot: all slots back means all are done. A
    // second signal cuts the wait short.
    let deadline = Instant::now() + graceful_timeout;
    while slots.available_permits() < max_connections {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log_at!(
                Warning,
                "graceful_timeout passed with requests still running; exiting anyway"
            );
            break;
        }
        if let Some(again) = signals.wait(Some(left.min(Duration::from_millis(20)))) {
            log_at!(
                Warning,
                "Handling signal: {again}: not waiting for running requests"
            );
            break;
        }
    }
    for path in socket_files {
        let _ = std::fs::remove_file(path);
    }
    runtime.shutdown_timeout(Duration::from_millis(100));
    log_at!(Info, "Shutting down");
    Ok(())
}

/// Closes the listening socket behind `fd` while the descriptor number stays
/// valid for its accept loop: an unbound socket is put in its place with
/// dup2, which closes the listener (new connections are refused) without
/// racing the accept loop's own close of the descriptor.
fn stop_listening(fd: RawFd) {
    // SAFETY: plain descriptor calls; `fd` stays open throughout.
    unsafe {
        let placeholder = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if placeholder >= 0 {
            libc::dup2(placeholder, fd);
            libc::close(placeholder);
        }
    }
}

/// SIGINT and SIGTERM, blocked for the life of the server and received
/// synchronously with sigwait; the previous mask is restored afterwards.
struct StopSignals {
    set: libc::sigset_t,
    previous: libc::sigset_t,
}

impl StopSignals {
    fn block() -> StopSignals {
        // SAFETY: plain sigset manipulation on stack values we own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
            StopSignals { set, previous }
        }
    }

    /// Waits for a stop signal, for at most `timeout` when given.
    fn wait(&self, timeout: Option<Duration>) -> Option<&'static str> {
        let signo = match timeout {
            None => {
                let mut signo = 0;
                // SAFETY: waits on our own signal set.
                (unsafe { libc::sigwait(&self.set, &mut signo) } == 0).then_some(signo)?
            }
            Some(t) => {
                let ts = libc::timespec {
                    tv_sec: t.as_secs() as libc::time_t,
                    tv_nsec: t.subsec_nanos() as _,
                };
                // SAFETY: as above, with a timeout; -1 means none arrived.
                let n = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
                (n > 0).then_some(n)?
            }
        };
        Some(if signo == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        })
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}

/// The socket file to remove on exit, for unix listeners this process made.
fn listener_cleanup(listener: &Listener) -> Option<std::path::PathBuf> {
    match listener {
        Listener::Unix(_, path) => path.clone(),
        Listener::Tcp(_) => None,
    }
}

fn spawn_accept_loop(
    listener: Listener,
    ctx: Arc<ServerCtx>,
    slots: Arc<Semaphore>,
) -> Result<(), String> {
    match listener {
        Listener::Tcp(std_listener) => {
            let local = std_listener.local_addr().map_err(|e| e.to_string())?;
            let listener = TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
            tokio::spawn(accept_loop(TcpAcceptor { listener, local }, ctx, slots));
        }
        Listener::Unix(std_listener, _) => {
            let listener = UnixListener::from_std(std_listener).map_err(|e| e.to_string())?;
            tokio::spawn(accept_loop(listener, ctx, slots));
        }
    }
    Ok(())
}

/// A listener that yields connections with what the environ needs to know
/// about them.
trait Acceptor: Send + 'static {
    type Stream: Socket;
    fn accept_conn(&self) -> impl Future<Output = io::Result<(Self::Stream, ConnInfo)>> + Send;
}

struct TcpAcceptor {
    listener: TcpListener,
    local: SocketAddr,
}

impl Acceptor for TcpAcceptor {
    type Stream = TcpStream;
    async fn accept_conn(&self) -> io::Result<(TcpStream, ConnInfo)> {
        let (stream, peer) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo {
            remote_addr: peer.ip().to_string(),
            remote_port: peer.port().to_string(),
            server_name: self.local.ip().to_string(),
            server_port: self.local.port().to_string(),
            url_scheme: "http",
        };
        Ok((stream, conn))
    }
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    async fn accept_conn(&self) -> io::Result<(UnixStream, ConnInfo)> {
        let (stream, _) = self.accept().await?;
        // A unix socket has no peer address or port; the environ falls back
        // to these only when the request names no Host.
        let conn = ConnInfo {
            remote_addr: String::new(),
            remote_port: String::new(),
            server_name: "localhost".to_string(),
            server_port: "80".to_string(),
            url_scheme: "http",
        };
        Ok((stream, conn))
    }
}

async fn accept_loop<A: Acceptor>(acceptor: A, ctx: Arc<ServerCtx>, slots: Arc<Semaphore>) {
    let mut stop = ctx.shutdown.clone();
    loop {
        let Some(slot) = acquire(&slots, &mut stop).await else {
            break;
        };
        let accepted = tokio::select! {
            r = acceptor.accept_conn() => r,
            _ = stop.changed() => break,
        };
        match accepted {
            Ok((stream, conn)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    connection::serve(stream, conn, ctx).await;
                    drop(slot);
                });
            }
            Err(_) if *stop.borrow() => break,
            Err(e) => accept_failed(e).await,
        }
    }
}

/// Waits for a free connection slot (`--worker-connections`), or for the stop.
async fn acquire(
    slots: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if *stop.borrow_and_update() {
        return None;
    }
    tokio::select! {
        p = slots.clone().acquire_owned() => p.ok(),
        _ = stop.changed() => None,
    }
}

/// Out of descriptors or memory: say so and back off instead of spinning.
async fn accept_failed(e: std::io::Error) {
    log_at!(Error, "accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Gives the worker thread a Python thread state that lives as long as the
/// thread, then releases the GIL.
fn keep_python_thread_state() {
    // SAFETY: the interpreter is initialised (we are called from it). The
    // ensured state is never released, which keeps the thread state alive;
    // PyEval_SaveThread releases the GIL it acquired.
    unsafe {
        ffi::PyGILState_Ensure();
        ffi::PyEval_SaveThread();
    }
}

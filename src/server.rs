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
use std::sync::Arc;
use std::time::Duration;

use pyo3::ffi;
use pyo3::prelude::*;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("ferrule-worker")
        .enable_all()
        .on_thread_start(keep_python_thread_state)
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let slots = Arc::new(Semaphore::new(max_connections));

    let outcome = runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut cleanup = Vec::new();
        for listener in listeners {
            log_at!(
                Info,
                "Listening at: {} (pid {})",
                listener,
                std::process::id()
            );
            cleanup.push(listener_cleanup(&listener));
            spawn_accept_loop(listener, ctx.clone(), slots.clone())?;
        }
        let signal_name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        log_at!(Info, "Handling signal: {signal_name}: stopping");
        let _ = stop_tx.send(true);
        // Every connection holds a slot; all slots back means all are done.
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(graceful_timeout, slots.acquire_many(all))
            .await
            .is_err()
        {
            log_at!(
                Warning,
                "graceful_timeout passed with requests still running; exiting anyway"
            );
        }
        for path in cleanup.into_iter().flatten() {
            let _ = std::fs::remove_file(path);
        }
        Ok::<(), String>(())
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    log_at!(Info, "Shutting down");
    outcome
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

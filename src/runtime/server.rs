//! Serving: one tokio worker thread per application thread (`--threads`),
//! and with more than one a spare (`runtime_threads`), accept loops on the
//! listeners, and the stop on SIGTERM (graceful) or
//! SIGINT/SIGQUIT (fast). Runs as a worker process under the master
//! (`master.rs`) or alone for `ferrule.serve()`.
//!
//! Each worker thread keeps one Python thread state for its whole life, so
//! attaching to the interpreter per request is a GIL hand-off and nothing
//! more, and `threading.local` data (database connections) survives across
//! requests as it does under other threaded servers.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pyo3::ffi;
use pyo3::prelude::*;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{oneshot, watch, Notify, Semaphore};

use crate::config::{Config, Http2Cleartext};
use crate::driver::lane::{self, Lane};
use crate::driver::send_ahead::SenderThread;
use crate::driver::static_files::StaticFiles;
use crate::driver::ServerCtx;
use crate::has_hook;
use crate::liveness::Slot;
use crate::log;
use crate::log_at;
use crate::net::allow::{self, AllowedPeer};
use crate::net::listen::{self, ListenSocket, Listener, Protocol};
use crate::net::socket::Socket;
use crate::net::tls;
use crate::proto::forwarded::SecureSchemeHeaders;
use crate::proto::http1::response::push_decimal;
use crate::runtime::metrics::{serve_scrapes, Registry};
use crate::runtime::{fastcgi, gateway, http1};
use crate::wsgi::environ::{base_environ, ConnInfo, EnvironSettings, ProxyHeaders};

/// Longest an accept loop waits for a new connection's word on whether it
/// claims a thread. The word comes at the connection's first, non-waiting
/// read (`runtime::head::first_read`); this bounds the wait only when the
/// connection's task cannot run that soon.
const FIRST_WORD_WAIT: Duration = Duration::from_secs(1);

/// What a worker process adds to plain serving.
pub struct WorkerRole {
    /// Liveness page shared with the master.
    pub slot: Arc<Slot>,
    /// Requests to serve before asking to be replaced; 0 for no limit.
    pub max_requests: u64,
    /// True when more than one worker serves (wsgi.multiprocess).
    pub multiprocess: bool,
    /// The hooks (`ferrule._hooks.Hooks`), when any is defined.
    pub hooks: Option<Py<PyAny>>,
}

/// How the server was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: finish in-flight requests within --graceful-timeout.
    Graceful,
    /// SIGINT or SIGQUIT: go now.
    Fast,
}

/// Opens the listeners as configured (umask first, for unix sockets).
pub fn open_listeners(config: &Config) -> Result<Vec<Listener>, String> {
    if let Some(mask) = config.umask {
        // SAFETY: umask has no failure mode.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    let options = listen::ListenOptions {
        default_protocol: config.protocol,
        backlog: config.backlog,
        reuse_port: config.reuse_port,
        defer: config.header_timeout,
        // gunicorn's default umask of 0 leaves its sockets open to every
        // local user; --umask narrows them.
        socket_mode: config
            .chmod_socket
            .unwrap_or(0o777 & !config.umask.unwrap_or(0)),
        tls_by_default: !config.certfile.is_empty(),
    };
    listen::open_all(&config.bind_addresses()?, &options)
}

/// What a trusted proxy's header fields may change, as configured.
fn proxy_headers(config: &Config) -> ProxyHeaders {
    let mut proxy = ProxyHeaders::new(SecureSchemeHeaders(
        config
            .secure_scheme_headers
            .iter()
            .flatten()
            .cloned()
            .collect(),
    ));
    let trusted: Arc<[AllowedPeer]> = config.forwarded_allow_ips.clone().into();
    proxy.trusted = Arc::new(move |ip| allow::allowed(&trusted, ip));
    proxy.forwarded_for = config.forwarded_for;
    proxy.forwarded_prefix = config.forwarded_prefix;
    proxy
}

/// Serves on `listeners` until a stop signal; the caller holds the GIL,
/// which is released for the server's lifetime. Without a worker role this
/// is the whole server (`ferrule.serve()`), which also logs its listeners
/// and removes its unix socket files on exit.
pub fn run(
    py: Python<'_>,
    config: &Config,
    app: Py<PyAny>,
    listeners: Vec<Listener>,
    worker: Option<WorkerRole>,
) -> Result<Stop, String> {
    let environ_settings = EnvironSettings {
        script_name: config.script_name.trim_end_matches('/').to_string(),
        multithread: config.threads > 1,
        multiprocess: worker.as_ref().is_some_and(|w| w.multiprocess),
        run_once: false,
        proxy: proxy_headers(config),
    };
    let environ_base =
        base_environ(py, &environ_settings).map_err(|e| format!("building the environ: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let hooks = worker.as_ref().and_then(|w| w.hooks.as_ref());
    // Looked up once: with neither defined, a request pays one branch.
    let request_hooks = hooks
        .filter(|h| has_hook(py, h, "pre_request") || has_hook(py, h, "post_request"))
        .map(|h| h.clone_ref(py));
    let signal_hooks = hooks.map(|h| h.clone_ref(py));
    let metrics = match (&config.metrics_bind, &worker) {
        (None, _) => None,
        (Some(_), Some(worker)) => Some(worker.slot.clone()),
        // A lone process (ferrule.serve()) answers its own scrapes.
        (Some(address), None) => Some(serve_own_scrapes(
            address,
            config.threads,
            runtime_threads(usize::from(config.threads), config.serves_http2()),
        )?),
    };
    let static_routes = config.static_routes()?;
    let static_files = if static_routes.is_empty() {
        None
    } else {
        Some(StaticFiles::open(
            static_routes,
            config.static_cache_control.clone(),
        )?)
    };
    let ctx = Arc::new(ServerCtx {
        app,
        environ_base: environ_base.unbind(),
        environ_settings,
        head_limits: config.head_limits(),
        buffer_size: config.buffer_size as usize,
        max_connections: config.worker_connections as usize,
        max_body: config.limit_request_body,
        post_buffering: config.post_buffering,
        stream_uploads: config.stream_uploads,
        header_timeout: config.header_timeout,
        keep_alive: config.keep_alive,
        socket_timeout: config.socket_timeout,
        queue_timeout: config.queue_timeout,
        response_buffer: config.response_buffer as usize,
        shutdown: stop_rx,
        liveness: worker.as_ref().map(|w| w.slot.clone()),
        max_requests: worker.as_ref().map_or(0, |w| w.max_requests),
        threads: usize::from(config.threads),
        runtime_threads: runtime_threads(usize::from(config.threads), config.serves_http2()),
        in_flight: AtomicUsize::new(0),
        thread_freed: Notify::new(),
        file_turns: Semaphore::new(1),
        lane: Lane::new(
            usize::from(config.threads),
            runtime_threads(usize::from(config.threads), config.serves_http2()),
        ),
        sender: OnceLock::new(),
        request_hooks,
        static_files,
        metrics,
        http2: config.http2_limits()?,
        http2_cleartext: config.http2_cleartext != Http2Cleartext::Off,
        http2_pairs: Arc::new(Semaphore::new(stream_pair_limit(config.worker_connections))),
    });
    let max_connections = config.worker_connections as usize;
    let graceful_timeout = config.graceful_timeout;
    let standalone = worker.is_none();
    let allow_from: Arc<[AllowedPeer]> = config.gateway_allow_from.clone().into();
    let forwarded_allow: Arc<[AllowedPeer]> = config.forwarded_allow_ips.clone().into();
    let proxy_from: Option<Arc<[AllowedPeer]>> = config
        .proxy_protocol
        .then(|| config.proxy_allow_from.clone().into());
    let tls = prepared_tls(config)?.map(|made| Arc::new(tls::LiveConfig::new(made)));
    let certs_watch = (tls.is_some() && !config.reload_certs_every.is_zero())
        .then(|| (config.clone(), config.reload_certs_every));

    py.detach(move || {
        serve(ServeParams {
            listeners,
            allow_from,
            forwarded_allow,
            proxy_from,
            tls,
            certs_watch,
            ctx,
            stop_tx,
            max_connections,
            graceful_timeout,
            standalone,
            hooks: signal_hooks,
        })
    })
}

/// The TLS configuration workers serve with, made by the process that
/// forks them (`prepare_tls`) and inherited across fork: the files are
/// read as the master's user, before --user applies to a worker, once for
/// all workers, and again on HUP.
static TLS_CONFIG: Mutex<Option<Arc<rustls::ServerConfig>>> = Mutex::new(None);

/// Reads the certificates and keys the settings name into the
/// configuration workers forked from now on serve with; on failure the one
/// made before stays.
pub fn prepare_tls(config: &Config) -> Result<(), String> {
    let stamp = certificate_files_stamp(config);
    let made = config.tls_config()?;
    *PREPARED_STAMP.lock().unwrap_or_else(|e| e.into_inner()) = Some(stamp);
    *TLS_CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = made;
    Ok(())
}

/// The prepared TLS configuration, else one made now (`ferrule.serve()`).
fn prepared_tls(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let prepared = TLS_CONFIG.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match prepared {
        Some(made) => Ok(Some(made)),
        None => config.tls_config(),
    }
}

/// What the certificate, key and CA files were when last read: each one's
/// modification time, size and inode (a renewal that writes in place or
/// renames over changes one of them).
type FilesStamp = Vec<Option<(Option<std::time::SystemTime>, u64, u64)>>;

fn certificate_files_stamp(config: &Config) -> FilesStamp {
    use std::os::unix::fs::MetadataExt;
    let files = config
        .certfile
        .iter()
        .chain(&config.keyfile)
        .chain(&config.ca_certs);
    files
        .map(|path| {
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.modified().ok(), m.len(), m.ino()))
        })
        .collect()
}

/// The files' stamp when `prepare_tls` last read them (inherited across
/// fork, like `TLS_CONFIG`): a worker started after a renewal the master
/// has not read yet takes the renewal at its first look.
static PREPARED_STAMP: Mutex<Option<FilesStamp>> = Mutex::new(None);

/// Every `every`, looks at the certificate, key and CA files; once one has
/// changed and stayed the same for a look more (a renewal written in
/// place, not half-written), reads them all again, as the worker's user,
/// on a thread of its own (decrypting a key must not hold the runtime), and
/// serves new connections with them. Files that cannot be used are logged
/// once, and the configuration before them stays.
async fn reload_certs_when_changed(config: Config, every: Duration, live: Arc<tls::LiveConfig>) {
    let prepared = PREPARED_STAMP
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut seen = prepared.unwrap_or_else(|| certificate_files_stamp(&config));
    let mut settling: Option<FilesStamp> = None;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = certificate_files_stamp(&config);
        if now == seen {
            settling = None;
            continue;
        }
        if settling.as_ref() != Some(&now) {
            settling = Some(now);
            continue;
        }
        seen = now;
        settling = None;
        let (made_tx, made) = oneshot::channel();
        let reading = config.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrule-certs".into())
            .spawn(move || {
                let _ = made_tx.send(reading.tls_config());
            });
        if spawned.is_err() {
            continue;
        }
        match made.await {
            Ok(Ok(Some(made))) => {
                live.replace(made);
                log_at!(
                    Info,
                    "TLS certificates reloaded (--reload-certs-every): new connections get them"
                );
            }
            Ok(Ok(None)) | Err(_) => {}
            Ok(Err(e)) => log_at!(
                Error,
                "TLS certificates changed but cannot be used, the ones before stay: {e}"
            ),
        }
    }
}

/// The metrics of a process without a master: its own page, and the
/// listener answering from it.
fn serve_own_scrapes(
    address: &str,
    threads: u16,
    runtime_threads: usize,
) -> Result<Arc<Slot>, String> {
    let slot = Arc::new(Slot::new(runtime_threads).map_err(|e| format!("shared memory: {e}"))?);
    let listener = crate::metrics::exporter::bind(address)?;
    if let Ok(local) = listener.local_addr() {
        log_at!(
            Info,
            "Metrics at: http://{local}/metrics (pid {})",
            std::process::id()
        );
    }
    let mut registry = Registry::new(u64::from(threads));
    registry.worker_started(std::process::id() as libc::pid_t, slot.clone());
    serve_scrapes(listener, Arc::new(std::sync::Mutex::new(registry)))
        .map_err(|e| format!("--metrics-bind: {e}"))?;
    Ok(slot)
}

struct ServeParams {
    listeners: Vec<Listener>,
    /// Peers allowed on gateway listeners (`--gateway-allow-from`).
    allow_from: Arc<[AllowedPeer]>,
    /// Peers whose scheme headers are taken (`--forwarded-allow-ips`).
    forwarded_allow: Arc<[AllowedPeer]>,
    /// Peers that must send a PROXY header (`--proxy-protocol`).
    proxy_from: Option<Arc<[AllowedPeer]>>,
    /// The TLS configuration of https listeners.
    tls: Option<Arc<tls::LiveConfig>>,
    /// The settings to re-read the certificates from, and how often to
    /// look at their files (`--reload-certs-every`).
    certs_watch: Option<(Config, Duration)>,
    ctx: Arc<ServerCtx>,
    stop_tx: watch::Sender<bool>,
    max_connections: usize,
    graceful_timeout: Duration,
    standalone: bool,
    /// For worker_int (SIGINT, SIGQUIT) and worker_abort (SIGABRT).
    hooks: Option<Py<PyAny>>,
}

/// The runtime's threads for `threads` application threads. With more than
/// one, one more than the lane runs loops on (`Lane::new`): an application
/// thread may wait for its client past --response-buffer, and if every one
/// does, the runtime's own tasks (the accept loops, the liveness stamp)
/// still have a thread, so the worker goes on and is not taken for hung.
/// Loops move between the runtime's threads, so the application may run
/// on any of them over time, never on more than `threads` at once. With one thread there is no
/// such wait: a streamed response is sent from the connection's task,
/// unless HTTP/2 is served (`http2`): there an application thread waits on
/// the socket pair of its stream (a large `write()`, `wsgi.input` with
/// --stream-uploads), which only the stream's relay, a task of the
/// runtime's, drains or fills, so the runtime has a spare thread too.
pub fn runtime_threads(threads: usize, http2: bool) -> usize {
    if threads > 1 || http2 {
        threads + 1
    } else {
        1
    }
}

fn serve(p: ServeParams) -> Result<Stop, String> {
    // Blocked before the runtime's threads exist, so they inherit the mask
    // and only this thread receives the signals, even while every worker
    // thread is busy in the application.
    let signals = SignalSet::block(&[
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGABRT,
    ]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(p.ctx.runtime_threads)
        .thread_name("ferrule-worker")
        .enable_all()
        .on_thread_start({
            let next_index = AtomicUsize::new(0);
            move || start_application_thread(next_index.fetch_add(1, Ordering::Relaxed))
        })
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    p.ctx
        .lane
        .start(runtime.handle().clone())
        .map_err(|e| format!("starting the lane's watchdog: {e}"))?;
    // Before any listener accepts: the first request may stream.
    if p.ctx.runtime_threads > 1 {
        let sender =
            SenderThread::start().map_err(|e| format!("starting the sender thread: {e}"))?;
        let _ = p.ctx.sender.set(sender);
    }
    let slots = Arc::new(Semaphore::new(p.max_connections));
    let mut socket_files = Vec::new();
    let listen_fds: Vec<RawFd> = p.listeners.iter().map(Listener::raw_fd).collect();
    {
        let _in_runtime = runtime.enter();
        for listener in p.listeners {
            if p.standalone {
                log_at!(
                    Info,
                    "Listening at: {} (pid {})",
                    listener,
                    std::process::id()
                );
                socket_files.extend(listener.socket_file());
            }
            spawn_accept_loop(
                listener,
                &p.allow_from,
                &p.forwarded_allow,
                &p.proxy_from,
                &p.tls,
                p.ctx.clone(),
                slots.clone(),
            )?;
        }
        if let (Some((config, every)), Some(live)) = (p.certs_watch, &p.tls) {
            tokio::spawn(reload_certs_when_changed(config, every, live.clone()));
        }
        if let Some(slot) = p.ctx.liveness.clone() {
            match p.ctx.sender.get() {
                // The stamp is a task sent into the runtime from the sender
                // thread: it lands in the runtime's shared queue and runs on
                // whichever thread is free (the spare one when every other
                // waits). A timer of the runtime itself would wake its task
                // into the LIFO slot of the thread that saw the timer, where
                // it could wait behind a loop blocked for longer than
                // --timeout.
                Some(sender) => {
                    sender.stamp_every(crate::liveness::LOOP_TICK, runtime.handle().clone(), slot)
                }
                None => {
                    tokio::spawn(async move {
                        let mut every = tokio::time::interval(crate::liveness::LOOP_TICK);
                        loop {
                            every.tick().await;
                            slot.tick();
                        }
                    });
                }
            }
        }
    }

    let stop = loop {
        match signals.wait(None) {
            Some(libc::SIGUSR1) => reopen_logs(),
            Some(libc::SIGABRT) => run_hook(&p.hooks, "worker_abort"),
            Some(libc::SIGTERM) => break Stop::Graceful,
            Some(_) => {
                run_hook(&p.hooks, "worker_int");
                break Stop::Fast;
            }
            None => {}
        }
    };
    log_at!(Info, "Handling signal: {}: stopping", signal_name(stop));
    // Stop listening now, from this thread: the accept loops may be waiting
    // for a worker thread that is busy in the application. New connections
    // are refused (or, with a master, left to the other workers).
    for fd in listen_fds {
        stop_listening(fd);
    }
    let _ = p.stop_tx.send(true);
    p.ctx.lane.stop_waiting();
    if stop == Stop::Graceful {
        // Every connection holds a slot: all slots back means all are done.
        // SIGINT or SIGQUIT cuts the wait short. Another SIGTERM does not:
        // when TERM goes to the whole process group (systemd's default
        // KillMode=control-group, `docker stop`, `timeout`), a worker gets
        // its own and then the one the master forwards.
        let deadline = Instant::now() + p.graceful_timeout;
        while slots.available_permits() < p.max_connections {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log_at!(
                    Warning,
                    "graceful_timeout passed with requests still running; exiting anyway"
                );
                break;
            }
            match signals.wait(Some(left.min(Duration::from_millis(20)))) {
                Some(libc::SIGUSR1) => reopen_logs(),
                Some(libc::SIGABRT) => run_hook(&p.hooks, "worker_abort"),
                Some(libc::SIGTERM) | None => {}
                Some(_) => {
                    run_hook(&p.hooks, "worker_int");
                    log_at!(
                        Warning,
                        "Handling signal: SIGINT/SIGQUIT: not waiting for running requests"
                    );
                    break;
                }
            }
        }
    }
    for path in socket_files {
        let _ = std::fs::remove_file(path);
    }
    {
        // Connections still open close here, within the runtime.
        let _in_runtime = runtime.enter();
        p.ctx.lane.close();
    }
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(stop)
}

/// Calls a worker hook from the signal-handling thread.
fn run_hook(hooks: &Option<Py<PyAny>>, name: &str) {
    if let Some(hooks) = hooks {
        Python::attach(|py| crate::call_hook(py, Some(hooks), name, ()));
    }
}

fn signal_name(stop: Stop) -> &'static str {
    match stop {
        Stop::Graceful => "SIGTERM",
        Stop::Fast => "SIGINT/SIGQUIT",
    }
}

fn reopen_logs() {
    match log::reopen() {
        Ok(()) => log_at!(Info, "Handling signal: SIGUSR1: log files reopened"),
        Err(e) => log_at!(Error, "reopening log files: {e}"),
    }
}

/// Closes the listening socket behind `fd` while the descriptor number stays
/// valid for its accept loop: an unbound socket is put in its place with
/// dup2, which drops this process's reference to the listener without
/// racing the accept loop's own close of the descriptor.
fn stop_listening(fd: RawFd) {
    // SAFETY: plain descriptor calls; `fd` stays open throughout.
    unsafe {
        let placeholder = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if placeholder >= 0 {
            libc::dup3(placeholder, fd, libc::O_CLOEXEC);
            libc::close(placeholder);
        }
    }
}

/// A set of signals blocked for this thread (and the threads it starts) and
/// received synchronously; the previous mask is restored on drop.
pub struct SignalSet {
    set: libc::sigset_t,
    previous: libc::sigset_t,
}

impl SignalSet {
    pub fn block(signals: &[libc::c_int]) -> SignalSet {
        // SAFETY: plain sigset manipulation on stack values we own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
            SignalSet { set, previous }
        }
    }

    /// Waits for one of the signals, for at most `timeout` when given.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<libc::c_int> {
        match timeout {
            None => {
                let mut signo = 0;
                // SAFETY: waits on our own signal set.
                (unsafe { libc::sigwait(&self.set, &mut signo) } == 0).then_some(signo)
            }
            Some(t) => {
                let ts = libc::timespec {
                    tv_sec: t.as_secs() as libc::time_t,
                    tv_nsec: t.subsec_nanos() as _,
                };
                // SAFETY: as above, with a timeout; -1 means none arrived.
                let n = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
                (n > 0).then_some(n)
            }
        }
    }
}

impl Drop for SignalSet {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}

fn spawn_accept_loop(
    listener: Listener,
    allow_from: &Arc<[AllowedPeer]>,
    forwarded_allow: &Arc<[AllowedPeer]>,
    proxy_from: &Option<Arc<[AllowedPeer]>>,
    tls: &Option<Arc<tls::LiveConfig>>,
    ctx: Arc<ServerCtx>,
    slots: Arc<Semaphore>,
) -> Result<(), String> {
    let protocol = listener.protocol;
    let tls = match (listener.tls, tls) {
        (false, _) => None,
        (true, Some(made)) => Some(made.clone()),
        // Named https by systemd's FileDescriptorName or LISTEN_FDNAMES.
        (true, None) => {
            return Err(format!(
                "{listener} is to serve TLS, but no --certfile is given"
            ))
        }
    };
    match listener.socket {
        ListenSocket::Tcp(std_listener) => {
            let local = std_listener.local_addr().map_err(|e| e.to_string())?;
            let listener = TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
            let acceptor = TcpAcceptor {
                listener,
                server_name: local.ip().to_string().into(),
                server_port: local.port().to_string().into(),
                allow_from: protocol.is_gateway().then(|| allow_from.clone()),
                forwarded_allow: forwarded_allow.clone(),
                proxy_from: (protocol == Protocol::Http)
                    .then(|| proxy_from.clone())
                    .flatten(),
                refused_peers: Mutex::default(),
            };
            tokio::spawn(accept_loop(acceptor, protocol, tls, ctx, slots));
        }
        ListenSocket::Unix(std_listener, _) => {
            let listener = UnixListener::from_std(std_listener).map_err(|e| e.to_string())?;
            tokio::spawn(accept_loop(listener, protocol, tls, ctx, slots));
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

/// Most refused gateway peers remembered, so that each is logged once.
const REFUSED_PEERS_LOGGED: usize = 1024;

struct TcpAcceptor {
    listener: TcpListener,
    server_name: Arc<str>,
    server_port: Arc<str>,
    /// For a gateway listener: the peers it accepts.
    allow_from: Option<Arc<[AllowedPeer]>>,
    /// Peers whose scheme headers are taken (`--forwarded-allow-ips`).
    forwarded_allow: Arc<[AllowedPeer]>,
    /// With --proxy-protocol on an HTTP listener: the load balancers that
    /// must send a PROXY header first (`--proxy-allow-from`).
    proxy_from: Option<Arc<[AllowedPeer]>>,
    /// Peers refused and logged already.
    refused_peers: Mutex<HashSet<IpAddr>>,
}

impl TcpAcceptor {
    /// Whether a gateway peer may connect; a refused one is logged the
    /// first time (at most `REFUSED_PEERS_LOGGED` of them are remembered).
    fn admits(&self, peer: IpAddr) -> bool {
        let Some(list) = &self.allow_from else {
            return true;
        };
        if allow::allowed(list, peer) {
            return true;
        }
        let mut refused = self.refused_peers.lock().unwrap_or_else(|e| e.into_inner());
        if refused.len() < REFUSED_PEERS_LOGGED && refused.insert(peer) {
            log_at!(
                Warning,
                "refused a connection from {peer}, which is not in gateway_allow_from; \
                 a gateway peer vouches for the client's address and headers \
                 (further connections from it are closed silently)"
            );
        }
        false
    }
}

/// A peer's address and port as the environ shows them. IPv4 by hand: the
/// formatting machinery cost about 1,500 instructions a connection.
fn peer_text(peer: SocketAddr) -> (String, String) {
    let mut port = Vec::with_capacity(5);
    push_decimal(&mut port, u64::from(peer.port()));
    let addr = match peer.ip() {
        std::net::IpAddr::V4(v4) => {
            let mut text = Vec::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push(b'.');
                }
                push_decimal(&mut text, u64::from(octet));
            }
            text
        }
        ip => ip.to_string().into_bytes(),
    };
    // Both are ASCII digits, dots and (IPv6) hex digits and colons.
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap_or_default();
    (text(addr), text(port))
}

impl Acceptor for TcpAcceptor {
    type Stream = TcpStream;
    async fn accept_conn(&self) -> io::Result<(TcpStream, ConnInfo)> {
        let (stream, peer) = loop {
            let (stream, peer) = self.listener.accept().await?;
            if self.admits(peer.ip()) {
                break (stream, peer);
            }
        };
        let _ = stream.set_nodelay(true);
        let (remote_addr, remote_port) = peer_text(peer);
        let conn = ConnInfo {
            remote_addr,
            remote_port,
            server_name: self.server_name.clone(),
            server_port: self.server_port.clone(),
            url_scheme: "http",
            trusted_proxy: allow::allowed(&self.forwarded_allow, peer.ip()),
            proxy_header_required: self
                .proxy_from
                .as_ref()
                .is_some_and(|from| allow::allowed(from, peer.ip())),
            strings: Default::default(),
            tls: None,
        };
        Ok((stream, conn))
    }
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    async fn accept_conn(&self) -> io::Result<(UnixStream, ConnInfo)> {
        let (stream, _) = self.accept().await?;
        // Only processes allowed by the socket file's mode connect: their
        // word on the scheme is taken.
        Ok((stream, ConnInfo::without_address(true)))
    }
}

async fn accept_loop<A: Acceptor>(
    acceptor: A,
    protocol: Protocol,
    tls: Option<Arc<tls::LiveConfig>>,
    ctx: Arc<ServerCtx>,
    slots: Arc<Semaphore>,
) {
    let mut stop = ctx.shutdown.clone();
    let mut failures = AcceptFailures::default();
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
                let (first_head_tx, first_head) = oneshot::channel();
                let conn_ctx = ctx.clone();
                // Counted while the task lives, and released however it
                // ends (dropped unrun when the lane is closing).
                let open = ctx.metrics.clone().map(OpenConnection::new);
                let tls = tls.as_ref().map(|live| live.current());
                ctx.lane.spawn(async move {
                    match protocol {
                        Protocol::Http => match tls {
                            None if conn_ctx.http2_cleartext => {
                                http1::serve_cleartext(stream, conn, conn_ctx, first_head_tx).await
                            }
                            None => http1::serve(stream, conn, conn_ctx, first_head_tx).await,
                            Some(config) => {
                                http1::serve_tls(stream, config, conn, conn_ctx, first_head_tx)
                                    .await
                            }
                        },
                        Protocol::Fastcgi => {
                            fastcgi::serve(stream, conn, conn_ctx, first_head_tx).await
                        }
                        Protocol::Uwsgi | Protocol::Scgi => {
                            gateway::serve(stream, protocol, conn, conn_ctx, first_head_tx).await
                        }
                    }
                    drop(slot);
                    drop(open);
                });
                // With other workers on the same listener, accept the next
                // connection only once this one has said whether its first
                // request claims a thread, and a thread is free. The
                // connection says so after its first read, which waits for
                // nothing: TCP listeners defer accepting until the client
                // has sent data (TCP_DEFER_ACCEPT), so a request is usually
                // whole by then, and a connection with nothing (or half a
                // head) to read says "no claim" at once. So no connection,
                // silent or slow, ever delays accepting the next. A lone
                // worker has no one to leave connections to, and accepts at
                // once.
                if !ctx.environ_settings.multiprocess {
                    drop(first_head);
                    continue;
                }
                tokio::select! {
                    _ = first_head => {}
                    // Only if the connection's task cannot run (its loop
                    // busy in a long call): the wait below then holds anyway.
                    _ = tokio::time::sleep(FIRST_WORD_WAIT) => {}
                    _ = stop.changed() => break,
                }
                tokio::select! {
                    _ = ctx.wait_for_free_thread() => {}
                    _ = stop.changed() => break,
                }
            }
            Err(_) if *stop.borrow() => break,
            Err(e) => failures.failed(e).await,
        }
    }
}

/// A connection counted open in the metrics while this lives.
struct OpenConnection(Arc<Slot>);

impl OpenConnection {
    fn new(page: Arc<Slot>) -> Self {
        page.metrics().connection_opened();
        OpenConnection(page)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics().connection_closed();
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

/// Accept failures (out of descriptors or memory) repeat for as long as
/// the cause lasts: each backs off instead of spinning, and they are logged
/// at most once a second, with how many there were.
#[derive(Default)]
struct AcceptFailures {
    last_logged: Option<Instant>,
    unlogged: u64,
}

/// How often repeated accept failures are logged.
const ACCEPT_FAILURE_REPORT: Duration = Duration::from_secs(1);

impl AcceptFailures {
    async fn failed(&mut self, e: io::Error) {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_FAILURE_REPORT)
        {
            log_at!(
                Error,
                "accept failed: {e} ({} failure(s) since the last report)",
                self.unlogged
            );
            self.last_logged = Some(now);
            self.unlogged = 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Descriptors a worker needs besides its connections: listeners, log
/// files, the runtime's own, and files the application opens.
const DESCRIPTOR_MARGIN: u64 = 100;

/// How many socket pairs HTTP/2 streams may hold at once in a worker
/// (`runtime::http2`, two descriptors each): what the open-file limit
/// leaves after one descriptor for every connection and
/// `DESCRIPTOR_MARGIN`, so that streams can never take the descriptors
/// connections, logs and the application need. A stream past it is
/// refused (REFUSED_STREAM, which clients retry).
fn stream_pair_limit(worker_connections: u32) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1;
    }
    let left = limit
        .rlim_cur
        .saturating_sub(u64::from(worker_connections) + DESCRIPTOR_MARGIN);
    (left / 2).clamp(1, 1 << 20) as usize
}

/// Raises the soft descriptor limit to the hard one (as nginx's
/// worker_rlimit_nofile users expect), and warns when it is still below
/// `worker_connections` plus a margin: connections past it would fail to be
/// accepted. Called once, before workers start; they inherit the limit.
pub fn raise_descriptor_limit(worker_connections: u32) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let needed = u64::from(worker_connections) + DESCRIPTOR_MARGIN;
    if limit.rlim_cur < needed {
        log_at!(
            Warning,
            "the open-file limit (RLIMIT_NOFILE) is {}, below worker_connections ({}) plus {} \
             for listeners, logs and the application's files: connections past it cannot be \
             accepted. Raise the limit (ulimit -n, systemd's LimitNOFILE=) or lower \
             --worker-connections",
            limit.rlim_cur,
            worker_connections,
            DESCRIPTOR_MARGIN
        );
    }
}

fn start_application_thread(index: usize) {
    lane::set_thread_index(index);
    keep_python_thread_state();
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

#[cfg(test)]
mod tests {
    use super::peer_text;

    #[test]
    fn peer_addresses_as_the_environ_shows_them() {
        let text = |s: &str| peer_text(s.parse().unwrap());
        assert_eq!(text("127.0.0.1:8000"), ("127.0.0.1".into(), "8000".into()));
        assert_eq!(text("10.200.0.255:0"), ("10.200.0.255".into(), "0".into()));
        assert_eq!(text("[::1]:65535"), ("::1".into(), "65535".into()));
        assert_eq!(
            text("[2001:db8::7]:443"),
            ("2001:db8::7".into(), "443".into())
        );
    }
}

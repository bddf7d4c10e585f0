//! The master (arbiter): binds every listener before forking, then runs a
//! single-threaded loop with no event loop of its own. Signals are blocked
//! and taken synchronously (sigtimedwait), so a handler never runs at an
//! awkward moment; each one is dispatched by the loop, with gunicorn's
//! meanings:
//!
//! | signal | action |
//! |---|---|
//! | TERM | graceful stop: workers finish in-flight requests (--graceful-timeout) |
//! | INT, QUIT | fast stop |
//! | HUP | reload: start new workers, then gracefully retire the old ones |
//! | TTIN / TTOU | one worker more / less |
//! | USR1 | reopen log files, in the master and every worker |
//! | USR2 | start a new master with the listeners (`upgrade.rs`) |
//! | WINCH | after USR2 only: gracefully stop this master's workers |
//! | CHLD | reap; replace workers that died |
//!
//! Every loop tick (at most `TICK` apart) reads each worker's liveness page
//! (`liveness.rs`) for --timeout and its RSS for --max-worker-memory.

use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::config::Config;
use crate::config_file::Effective;
use crate::liveness::{self, BootFailure, Slot};
use crate::metrics::exporter;
use crate::net::listen::Listener;
use crate::process::upgrade;
use crate::process::worker::{self, set_thread_name, Boot};
use crate::runtime::metrics::{serve_scrapes, Registry};
use crate::runtime::server::{self, SignalSet};
use crate::{
    call_hook, has_hook, load_app, log, log_at, report_load_error, EXIT_APP_LOAD_ERROR,
    EXIT_WORKER_BOOT_ERROR,
};

/// Longest pause between two passes over the workers.
const TICK: Duration = Duration::from_millis(250);
/// A timed-out worker is sent SIGUSR2 (its faulthandler writes every
/// thread's Python stack to the error log) and this long before SIGKILL.
const TIMEOUT_KILL_GRACE: Duration = Duration::from_secs(2);
/// On a fast stop, how long workers get before SIGKILL.
const FAST_STOP_GRACE: Duration = Duration::from_secs(2);
/// A worker that dies this soon after booting counts towards a crash loop.
const CRASH_WINDOW: Duration = Duration::from_secs(2);
/// This many such deaths in a row stop the server.
const CRASH_LOOP_DEATHS: u32 = 5;
/// After HUP, old workers are retired once the new ones are ready, or after
/// this long at the latest.
const RELOAD_READY_WAIT: Duration = Duration::from_secs(30);

struct Worker {
    id: usize,
    pid: libc::pid_t,
    slot: Arc<Slot>,
    booted: Instant,
    /// Replaced: no longer counted towards --workers.
    replaced: bool,
    /// When SIGKILL follows if the worker has not exited.
    kill_at: Option<Instant>,
    /// Why the master replaced it, for the exit log line.
    reason: Option<&'static str>,
}

struct Arbiter<'a> {
    config: &'a Config,
    spec: &'a str,
    listeners: Vec<Listener>,
    workers: Vec<Worker>,
    target: usize,
    next_id: usize,
    preloaded: Option<Py<PyAny>>,
    /// The hooks (`ferrule._hooks.Hooks`), when any is defined.
    hooks: Option<Py<PyAny>>,
    /// Whether a worker_abort hook is defined: a timed-out worker is then
    /// sent SIGABRT after its stack dump, as gunicorn does.
    abort_hook: bool,
    boot_failure: BootFailure,
    early_deaths: u32,
    /// Workers from before a HUP, retired once their successors are ready.
    reload_pending: Option<(Vec<libc::pid_t>, Instant)>,
    /// Set when the server must stop with this status.
    fatal: Option<i32>,
    /// The directory ferrule was started in, where a USR2 upgrade starts
    /// the new master.
    start_dir: PathBuf,
    /// The pid file as it is named now (FILE.oldbin after USR2).
    pid_file: Option<PathBuf>,
    /// The master started by USR2, while it runs.
    new_master: Option<libc::pid_t>,
    /// With --metrics-bind: what scrapes read, and the listener's
    /// descriptor, which a worker closes after fork.
    metrics: Option<MetricsListener>,
}

/// What scrapes read, and the metrics listener's descriptor.
type MetricsListener = (Arc<Mutex<Registry>>, RawFd);

/// Runs ferrule with a master and workers; returns the exit status.
/// `app` is the application object `ferrule.serve()` was given, served
/// as if preloaded; None to import `spec`.
pub fn run(
    py: Python<'_>,
    config: &Config,
    spec: &str,
    settings: &[Effective],
    app: Option<Py<PyAny>>,
) -> i32 {
    log_at!(Info, "Starting ferrule {}", env!("CARGO_PKG_VERSION"));
    if crate::log::enabled(crate::config::LogLevel::Debug) {
        let lines: Vec<String> = settings
            .iter()
            .map(|s| format!("  {}: {}", s.name, s.values.join(",")))
            .collect();
        log_at!(Debug, "Current configuration:\n{}", lines.join("\n"));
    }
    let title = format!(
        "ferrule: master [{}]",
        config.name.as_deref().unwrap_or(spec)
    );
    if let Err(e) = py
        .import("ferrule._process")
        .and_then(|m| m.call_method1("set_title", (title,)))
    {
        log_at!(Debug, "process title: {e}");
    }
    // After the title, which setproctitle also writes to the short name.
    set_thread_name(b"ferrule:master\0");
    let start_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    // Blocked before anything is announced, so that a signal sent as soon as
    // the "Listening at" line appears is queued for the loop, not fatal.
    let signals = SignalSet::block(&[
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGHUP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGCHLD,
    ]);

    let target = match config.worker_count() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::EXIT_USAGE;
        }
    };
    let listeners = match server::open_listeners(config) {
        Ok(listeners) => listeners,
        Err(e) => {
            log_at!(Critical, "{e}");
            return 1;
        }
    };
    server::raise_descriptor_limit(config.worker_connections);
    if let Some(path) = &config.pid {
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            log_at!(Critical, "--pid {}: {e}", path.display());
            return 1;
        }
    }
    for listener in &listeners {
        log_at!(
            Info,
            "Listening at: {} (pid {})",
            listener,
            std::process::id()
        );
    }
    log_at!(
        Info,
        "Using worker: gthread ({} threads per worker, {target} worker{})",
        config.threads,
        if target == 1 { "" } else { "s" }
    );
    let socket_files: Vec<PathBuf> = listeners.iter().filter_map(Listener::socket_file).collect();
    let metrics = match start_metrics(config) {
        Ok(metrics) => metrics,
        Err(e) => {
            log_at!(Critical, "{e}");
            return 1;
        }
    };

    let hooks = match load_hooks(py, config, settings) {
        Ok(hooks) => hooks,
        Err(status) => return status,
    };
    call_hook(py, hooks.as_ref(), "nworkers_changed", (target, py.None()));
    call_hook(py, hooks.as_ref(), "on_starting", ());

    let preloaded = if app.is_some() {
        app
    } else if config.preload && !config.reload {
        match load_app(py, config) {
            Ok(app) => {
                if let Err(e) = py
                    .import("ferrule._process")
                    .and_then(|m| m.call_method0("freeze_preloaded"))
                {
                    log_at!(Warning, "gc.freeze after preload failed: {e}");
                }
                Some(app)
            }
            Err(err) => {
                report_load_error(py, spec, &err);
                return EXIT_APP_LOAD_ERROR;
            }
        }
    } else {
        if config.preload {
            log_at!(
                Warning,
                "--preload is ignored with --reload: workers import the application fresh"
            );
        }
        None
    };
    let boot_failure = match BootFailure::new() {
        Ok(flag) => flag,
        Err(e) => {
            log_at!(Critical, "shared memory: {e}");
            return 1;
        }
    };

    call_hook(py, hooks.as_ref(), "when_ready", ());
    let abort_hook = hooks
        .as_ref()
        .is_some_and(|h| has_hook(py, h, "worker_abort"));
    let mut arbiter = Arbiter {
        config,
        spec,
        listeners,
        workers: Vec::new(),
        target,
        next_id: 1,
        preloaded,
        hooks,
        abort_hook,
        boot_failure,
        early_deaths: 0,
        reload_pending: None,
        fatal: None,
        start_dir,
        pid_file: config.pid.clone(),
        new_master: None,
        metrics,
    };
    let status = arbiter.run_loop(py, &signals);
    drop(signals);
    // After USR2 the socket files are the new master's.
    if arbiter.new_master.is_none() {
        for path in socket_files {
            let _ = std::fs::remove_file(path);
        }
    }
    if let Some(path) = &arbiter.pid_file {
        let _ = std::fs::remove_file(path);
    }
    call_hook(py, arbiter.hooks.as_ref(), "on_exit", ());
    log_at!(Info, "Shutting down: Master");
    status
}

/// With --metrics-bind: binds it and starts answering scrapes from a
/// thread of the master (signals stay blocked in it, as in the thread that
/// starts it).
fn start_metrics(config: &Config) -> Result<Option<MetricsListener>, String> {
    let Some(address) = &config.metrics_bind else {
        return Ok(None);
    };
    let listener = exporter::bind(address)?;
    let fd = listener.as_raw_fd();
    if let Ok(local) = listener.local_addr() {
        log_at!(
            Info,
            "Metrics at: http://{local}/metrics (pid {})",
            std::process::id()
        );
    }
    let registry = Arc::new(Mutex::new(Registry::new(u64::from(config.threads))));
    serve_scrapes(listener, registry.clone()).map_err(|e| format!("--metrics-bind: {e}"))?;
    Ok(Some((registry, fd)))
}

/// The hooks of the config file and of --hooks; Err is the exit status
/// when the module cannot be imported or a hook has the wrong signature.
pub fn load_hooks(
    py: Python<'_>,
    config: &Config,
    settings: &[Effective],
) -> Result<Option<Py<PyAny>>, i32> {
    // server.cfg: every setting under its name and its gunicorn names, the
    // worker count as it is in effect (--workers, WEB_CONCURRENCY or 1).
    let workers = vec![config.worker_count().unwrap_or(1).to_string()];
    let settings: Vec<(&str, &[String], bool)> = settings
        .iter()
        .flat_map(|s| {
            let values = if s.name == "workers" {
                workers.as_slice()
            } else {
                s.values.as_slice()
            };
            std::iter::once(s.name.as_str())
                .chain(s.aliases.iter().map(String::as_str))
                .map(move |name| (name, values, s.many))
        })
        .collect();
    let loaded = crate::prepare_path(py, config).and_then(|()| {
        py.import("ferrule._hooks")?
            .call_method1("load", (config.hooks.as_deref(), settings))
    });
    match loaded {
        Ok(hooks) if hooks.is_none() => Ok(None),
        Ok(hooks) => {
            let names: Vec<String> = hooks
                .call_method0("names")
                .and_then(|n| n.extract())
                .unwrap_or_default();
            log_at!(Debug, "Hooks defined: {}", names.join(", "));
            Ok(Some(hooks.unbind()))
        }
        Err(err) if err.get_type(py).name().is_ok_and(|n| n == "HookError") => {
            log_at!(Critical, "{}", err.value(py));
            Err(crate::EXIT_USAGE)
        }
        Err(err) => {
            report_load_error(py, config.hooks.as_deref().unwrap_or("hooks"), &err);
            Err(EXIT_APP_LOAD_ERROR)
        }
    }
}

fn signal_name(sig: libc::c_int) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGILL => "SIGILL".into(),
        other => format!("signal {other}"),
    }
}

fn send(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: signalling a child of ours.
    unsafe { libc::kill(pid, sig) };
}

/// Resident memory of a process, in bytes (from /proc/PID/statm).
fn rss_bytes(pid: libc::pid_t) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    Some(pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64)
}

impl Arbiter<'_> {
    fn run_loop(&mut self, py: Python<'_>, signals: &SignalSet) -> i32 {
        loop {
            if let Some(status) = self.fatal {
                self.stop(py, signals, libc::SIGQUIT);
                return status;
            }
            self.spawn_missing(py);
            let sig = py.detach(|| signals.wait(Some(TICK)));
            match sig {
                Some(libc::SIGCHLD) | None => {}
                Some(libc::SIGHUP) => {
                    self.reload();
                    call_hook(py, self.hooks.as_ref(), "on_reload", ());
                }
                Some(libc::SIGTTIN) => {
                    self.target += 1;
                    log_at!(Info, "Handling signal: SIGTTIN: {} workers", self.target);
                    let (new, old) = (self.target, self.target - 1);
                    call_hook(py, self.hooks.as_ref(), "nworkers_changed", (new, old));
                }
                Some(libc::SIGTTOU) => {
                    if self.target > 1 {
                        self.target -= 1;
                        log_at!(Info, "Handling signal: SIGTTOU: {} workers", self.target);
                        let (new, old) = (self.target, self.target + 1);
                        call_hook(py, self.hooks.as_ref(), "nworkers_changed", (new, old));
                        if let Some(oldest) = self.workers.iter().position(|w| !w.replaced) {
                            self.retire(oldest, None);
                        }
                    }
                }
                Some(libc::SIGUSR2) => self.upgrade(py),
                Some(libc::SIGWINCH) => self.stop_workers_for_upgrade(),
                Some(libc::SIGUSR1) => {
                    if let Err(e) = log::reopen() {
                        log_at!(Error, "reopening log files: {e}");
                    }
                    log_at!(Info, "Handling signal: SIGUSR1: reopening log files");
                    for w in &self.workers {
                        send(w.pid, libc::SIGUSR1);
                    }
                }
                Some(sig) => {
                    log_at!(Info, "Handling signal: {}", signal_name(sig));
                    self.stop(py, signals, sig);
                    return 0;
                }
            }
            self.reap(py);
            self.check_workers();
        }
    }

    /// Forks workers until --workers of them are not being replaced.
    fn spawn_missing(&mut self, py: Python<'_>) {
        while self.fatal.is_none()
            && self.workers.iter().filter(|w| !w.replaced).count() < self.target
        {
            if let Err(e) = self.spawn(py) {
                log_at!(Critical, "cannot start a worker: {e}");
                self.fatal = Some(EXIT_WORKER_BOOT_ERROR);
            }
        }
    }

    fn spawn(&mut self, py: Python<'_>) -> Result<(), String> {
        let slot = Arc::new(
            Slot::new(server::runtime_threads(
                usize::from(self.config.threads),
                self.config.serves_http2(),
            ))
            .map_err(|e| e.to_string())?,
        );
        let id = self.next_id;
        self.next_id += 1;
        let process = py.import("ferrule._process").map_err(|e| e.to_string())?;
        let _ = process.call_method0("flush_std_streams");
        let master_pid = std::process::id() as libc::pid_t;
        call_hook(py, self.hooks.as_ref(), "pre_fork", (id,));
        // os.fork runs the interpreter's at-fork hooks (locks, random seeds,
        // os.register_at_fork callbacks), which a bare fork(2) would skip.
        let pid: libc::pid_t = py
            .import("os")
            .and_then(|os| os.call_method0("fork"))
            .and_then(|pid| pid.extract())
            .map_err(|e| e.to_string())?;
        if pid == 0 {
            if let Some((_, fd)) = &self.metrics {
                // SAFETY: the master's metrics listener, inherited by fork;
                // the worker never uses it.
                unsafe { libc::close(*fd) };
            }
            let boot = Boot {
                config: self.config,
                spec: self.spec,
                id,
                master_pid,
                listeners: std::mem::take(&mut self.listeners),
                slot,
                boot_failure: &self.boot_failure,
                preloaded: self.preloaded.as_ref().map(|a| a.clone_ref(py)),
                hooks: self.hooks.as_ref().map(|h| h.clone_ref(py)),
                multiprocess: self.target > 1,
            };
            let status = worker::run(py, boot);
            let _ = process.call_method0("flush_std_streams");
            // SAFETY: the worker ends here; the master's stack frames above
            // this call must never run in the child.
            unsafe { libc::_exit(status) };
        }
        log_at!(Info, "Booting worker {id} with pid: {pid}");
        if let Some((registry, _)) = &self.metrics {
            registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .worker_started(pid, slot.clone());
        }
        call_hook(py, self.hooks.as_ref(), "forked", (pid,));
        self.workers.push(Worker {
            id,
            pid,
            slot,
            booted: Instant::now(),
            replaced: false,
            kill_at: None,
            reason: None,
        });
        Ok(())
    }

    /// Gracefully replaces worker `index`: a successor is started by the
    /// next `spawn_missing`, and this one gets --graceful-timeout to finish.
    fn retire(&mut self, index: usize, reason: Option<&'static str>) {
        let grace = self.config.graceful_timeout + Duration::from_secs(1);
        let w = &mut self.workers[index];
        w.replaced = true;
        w.reason = w.reason.or(reason);
        w.kill_at = Some(Instant::now() + grace);
        send(w.pid, libc::SIGTERM);
    }

    fn reload(&mut self) {
        log_at!(Info, "Handling signal: SIGHUP: reloading");
        // The new workers serve with certificates and keys read again now.
        if let Err(e) = server::prepare_tls(self.config) {
            log_at!(
                Error,
                "SIGHUP: the TLS files cannot be used, so the new workers keep the old ones: {e}"
            );
        }
        let old: Vec<libc::pid_t> = self
            .workers
            .iter()
            .filter(|w| !w.replaced)
            .map(|w| w.pid)
            .collect();
        for w in self.workers.iter_mut().filter(|w| !w.replaced) {
            w.replaced = true;
            w.reason = Some("reload");
        }
        let mut all_old = old;
        if let Some((pending, _)) = self.reload_pending.take() {
            all_old.extend(pending);
        }
        self.reload_pending = Some((all_old, Instant::now()));
    }

    /// USR2: starts a new master on the listeners, from the program and
    /// code on disk now. This one keeps serving until WINCH and TERM.
    fn upgrade(&mut self, py: Python<'_>) {
        if let Some(pid) = self.new_master {
            log_at!(
                Warning,
                "Handling signal: SIGUSR2: a new master (pid {pid}) is already running; ignored"
            );
            return;
        }
        if let Some(path) = self.pid_file.take() {
            self.pid_file = Some(upgrade::set_pid_file_aside(&path).unwrap_or(path));
        }
        match upgrade::start_new_master(
            py,
            &self.listeners,
            &self.start_dir,
            self.hooks.as_ref(),
            self.config.ssl_keyfile_password.as_deref(),
        ) {
            Ok(pid) => {
                log_at!(
                    Info,
                    "Handling signal: SIGUSR2: started a new master (pid {pid}) with the listeners; \
                     send this master WINCH, then TERM, once it serves"
                );
                self.new_master = Some(pid);
            }
            Err(e) => {
                log_at!(
                    Error,
                    "Handling signal: SIGUSR2: cannot start a new master: {e}"
                );
                self.restore_pid_file();
            }
        }
    }

    /// WINCH: once a new master runs, this one's workers finish their
    /// requests and are not replaced. Without one it is ignored: terminals
    /// send WINCH when resized (gunicorn acts on it only when daemonized).
    fn stop_workers_for_upgrade(&mut self) {
        if self.new_master.is_none() {
            log_at!(Debug, "SIGWINCH ignored: no new master was started (USR2)");
            return;
        }
        log_at!(
            Info,
            "Handling signal: SIGWINCH: stopping the workers gracefully"
        );
        self.target = 0;
        self.reload_pending = None;
        for index in 0..self.workers.len() {
            if !self.workers[index].replaced {
                self.retire(index, Some("upgrade (WINCH)"));
            }
        }
    }

    /// The master USR2 started has exited: this one serves on, with its
    /// full complement of workers and its pid file name.
    fn new_master_exited(&mut self, status: libc::c_int) {
        let pid = self.new_master.take().unwrap_or_default();
        log_at!(
            Error,
            "The new master (pid {pid}) exited (status {status:#x}); this master serves on"
        );
        self.restore_pid_file();
        if self.target == 0 {
            self.target = self.config.worker_count().unwrap_or(1);
        }
    }

    fn restore_pid_file(&mut self) {
        if let (Some(aside), Some(path)) = (&self.pid_file, &self.config.pid) {
            if aside != path && std::fs::rename(aside, path).is_ok() {
                self.pid_file = Some(path.clone());
            }
        }
    }

    /// Reaps every exited worker and says why it went.
    fn reap(&mut self, py: Python<'_>) {
        loop {
            let mut status = 0;
            // SAFETY: non-blocking wait for any child.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if Some(pid) == self.new_master {
                self.new_master_exited(status);
                continue;
            }
            let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let w = self.workers.remove(index);
            call_hook(py, self.hooks.as_ref(), "child_exit", (pid,));
            let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
            let reason = w.reason.or(match w.slot.exit_reason() {
                liveness::EXIT_MAX_REQUESTS => Some("max requests"),
                liveness::EXIT_RELOAD => Some("source changed (--reload)"),
                _ => None,
            });
            let how = match (code, signal) {
                (Some(c), _) => format!("exited with code {c}"),
                (_, Some(s)) => format!("was killed by {}", signal_name(s)),
                _ => "exited".to_string(),
            };
            if let Some((registry, _)) = &self.metrics {
                let restart = match reason {
                    Some("max requests") => Some("max_requests"),
                    Some("source changed (--reload)") => Some("reload"),
                    Some(r @ ("timeout" | "memory" | "reload")) => Some(r),
                    Some(_) => None,
                    None => (code != Some(0)).then_some("crash"),
                };
                registry
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .worker_exited(pid, restart);
            }
            match (reason, code) {
                (Some(reason), _) => log_at!(
                    Info,
                    "Worker {} (pid: {pid}) {how}; replaced: {reason}",
                    w.id
                ),
                (None, Some(0)) => log_at!(Info, "Worker {} (pid: {pid}) {how}", w.id),
                (None, _) => log_at!(Error, "Worker {} (pid: {pid}) {how}; replaced: crash", w.id),
            }
            // Exit statuses 3 and 4 mean "cannot boot" only from a worker
            // that never became ready: an application calling os._exit(3)
            // later is a crash like any other (gunicorn stops on it).
            let booting = !w.slot.is_ready();
            if booting && code == Some(EXIT_APP_LOAD_ERROR) {
                log_at!(Critical, "Worker failed to load the application: stopping");
                self.fatal = Some(EXIT_APP_LOAD_ERROR);
                continue;
            }
            if booting && code == Some(EXIT_WORKER_BOOT_ERROR) {
                log_at!(Critical, "Worker failed to boot: stopping");
                self.fatal = Some(EXIT_WORKER_BOOT_ERROR);
                continue;
            }
            let crashed = reason.is_none() && code != Some(0);
            if crashed && w.booted.elapsed() < CRASH_WINDOW {
                self.early_deaths += 1;
                if self.early_deaths >= CRASH_LOOP_DEATHS {
                    log_at!(
                        Critical,
                        "Workers keep dying within {}s of booting ({} in a row): stopping instead of restarting them in a loop",
                        CRASH_WINDOW.as_secs(),
                        self.early_deaths
                    );
                    self.fatal = Some(EXIT_WORKER_BOOT_ERROR);
                }
            } else {
                self.early_deaths = 0;
            }
        }
    }

    /// Timeouts, memory limits, SIGKILL deadlines, and the end of a reload.
    fn check_workers(&mut self) {
        let now = Instant::now();
        let now_ms = liveness::now_ms();
        let timeout_ms = self.config.timeout.as_millis() as u64;
        let memory_limit = self.config.max_worker_memory * 1024 * 1024;
        for index in 0..self.workers.len() {
            let w = &mut self.workers[index];
            if let Some(kill_at) = w.kill_at {
                if now >= kill_at {
                    log_at!(
                        Warning,
                        "Worker {} (pid: {}) did not exit in time: SIGKILL",
                        w.id,
                        w.pid
                    );
                    send(w.pid, libc::SIGKILL);
                    w.kill_at = Some(now + Duration::from_secs(3600));
                }
                continue;
            }
            if timeout_ms > 0 {
                let in_python = w.slot.longest_in_python_ms(now_ms);
                let loop_stuck = w.slot.is_ready()
                    && in_python.is_none()
                    && w.slot.loop_silence_ms(now_ms)
                        > timeout_ms + liveness::LOOP_TICK.as_millis() as u64;
                if in_python.is_some_and(|ms| ms > timeout_ms) || loop_stuck {
                    let what = match in_python {
                        Some(ms) if ms > timeout_ms => format!(
                            "a request has run in the application for {:.1}s",
                            ms as f64 / 1000.0
                        ),
                        _ => "its event loop has made no progress".to_string(),
                    };
                    log_at!(Critical, "WORKER TIMEOUT: worker {} (pid: {}): {what} (--timeout {}s); its Python stacks follow", w.id, w.pid, self.config.timeout.as_secs_f64());
                    send(w.pid, libc::SIGUSR2);
                    if self.abort_hook {
                        send(w.pid, libc::SIGABRT);
                    }
                    w.replaced = true;
                    w.reason = Some("timeout");
                    w.kill_at = Some(now + TIMEOUT_KILL_GRACE);
                    continue;
                }
            }
            if memory_limit > 0 && !w.replaced {
                if let Some(rss) = rss_bytes(w.pid).filter(|&rss| rss > memory_limit) {
                    log_at!(Warning, "Worker {} (pid: {}) uses {} MiB, over --max-worker-memory {} MiB: replacing it", w.id, w.pid, rss >> 20, self.config.max_worker_memory);
                    self.retire(index, Some("memory"));
                }
            }
        }
        if let Some((old, since)) = &self.reload_pending {
            let ready = self
                .workers
                .iter()
                .filter(|w| !w.replaced && w.slot.is_ready())
                .count();
            if ready >= self.target || since.elapsed() > RELOAD_READY_WAIT {
                let old = old.clone();
                self.reload_pending = None;
                for pid in old {
                    if let Some(index) = self.workers.iter().position(|w| w.pid == pid) {
                        self.retire(index, Some("reload"));
                    }
                }
            }
        }
    }

    /// Stops every worker: TERM (graceful, within --graceful-timeout) or
    /// QUIT (fast), then SIGKILL for any still there.
    fn stop(&mut self, py: Python<'_>, signals: &SignalSet, sig: libc::c_int) {
        // Close the master's listeners first; the workers close theirs on
        // the signal, and then new connections are refused.
        self.listeners.clear();
        let graceful = sig == libc::SIGTERM;
        let (worker_signal, grace) = if graceful {
            (
                libc::SIGTERM,
                self.config.graceful_timeout + Duration::from_secs(1),
            )
        } else {
            (libc::SIGQUIT, FAST_STOP_GRACE)
        };
        for w in &self.workers {
            send(w.pid, worker_signal);
        }
        let deadline = Instant::now() + grace;
        while !self.workers.is_empty() && Instant::now() < deadline {
            if let Some(again) = py.detach(|| signals.wait(Some(TICK))) {
                if again != libc::SIGCHLD && graceful && again != libc::SIGTERM {
                    log_at!(
                        Info,
                        "Handling signal: {}: stopping now",
                        signal_name(again)
                    );
                    for w in &self.workers {
                        send(w.pid, libc::SIGQUIT);
                    }
                }
            }
            self.reap(py);
        }
        for w in &self.workers {
            log_at!(
                Warning,
                "Worker {} (pid: {}) did not stop in time: SIGKILL",
                w.id,
                w.pid
            );
            send(w.pid, libc::SIGKILL);
        }
        while !self.workers.is_empty() {
            let mut status = 0;
            // SAFETY: blocking wait for the killed children.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid <= 0 {
                break;
            }
            self.workers.retain(|w| w.pid != pid);
        }
    }
}

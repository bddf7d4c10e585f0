//! A worker process, from the moment `fork` returns in the child: reset the
//! signals meant for the master, drop privileges, load the application
//! (unless the master preloaded it), serve until told to stop, and report
//! why it left through its liveness page.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;

use crate::config::Config;
use crate::liveness::{self, BootFailure, Slot};
use crate::net::listen::Listener;
use crate::runtime::server::{self, WorkerRole};
use crate::{
    load_app, log, log_at, report_load_error, EXIT_APP_LOAD_ERROR, EXIT_WORKER_BOOT_ERROR,
};

/// Everything a new worker receives from the master.
pub struct Boot<'a> {
    pub config: &'a Config,
    pub spec: &'a str,
    pub id: usize,
    pub master_pid: i32,
    pub listeners: Vec<Listener>,
    pub slot: Arc<Slot>,
    pub boot_failure: &'a BootFailure,
    pub preloaded: Option<Py<PyAny>>,
    pub hooks: Option<Py<PyAny>>,
    pub multiprocess: bool,
}

/// Runs the worker; returns its exit status.
pub fn run(py: Python<'_>, boot: Boot<'_>) -> i32 {
    reset_signals();
    if !follow_master(boot.master_pid) {
        return 0;
    }
    let title = format!(
        "ferrule: worker [{}]",
        boot.config.name.as_deref().unwrap_or(boot.spec)
    );
    if let Err(e) = py
        .import("ferrule._process")
        .and_then(|m| m.call_method1("prepare_worker", (log::error_log_path(), title)))
    {
        log_at!(
            Warning,
            "Worker {}: stack dumps on timeout are unavailable: {e}",
            boot.id
        );
    }
    // After the title, which setproctitle also writes to the short name.
    set_thread_name(b"ferrule:worker\0");
    // After the log files are open and before any application code runs.
    if let Err(e) = drop_privileges(boot.config) {
        log_at!(Critical, "Worker {} cannot switch user: {e}", boot.id);
        return EXIT_WORKER_BOOT_ERROR;
    }
    // Changing credentials (--user, --group) clears the parent-death
    // signal (prctl(2)): ask for it again.
    if !follow_master(boot.master_pid) {
        return 0;
    }
    crate::call_hook(py, boot.hooks.as_ref(), "post_fork", ());

    let app = match boot.preloaded {
        Some(app) => app,
        None => match load_app(py, boot.config) {
            Ok(app) => app,
            Err(err) if boot.config.reload => {
                report_load_error(py, boot.spec, &err);
                return wait_to_reload_after_failure(py, boot.config, &boot.slot, &err);
            }
            Err(err) => {
                if boot.boot_failure.claim() {
                    report_load_error(py, boot.spec, &err);
                }
                return EXIT_APP_LOAD_ERROR;
            }
        },
    };
    if boot.config.reload {
        start_reload_watcher(py, boot.slot.clone(), boot.config);
    }
    crate::call_hook(py, boot.hooks.as_ref(), "post_worker_init", ());
    boot.slot.set_ready();
    let role = WorkerRole {
        slot: boot.slot.clone(),
        max_requests: draw_max_requests(boot.config),
        multiprocess: boot.multiprocess,
        hooks: boot.hooks.as_ref().map(|h| h.clone_ref(py)),
    };
    let result = server::run(py, boot.config, app, boot.listeners, Some(role));
    crate::call_hook(py, boot.hooks.as_ref(), "worker_exit", ());
    match result {
        Ok(_) => 0,
        Err(e) => {
            log_at!(Critical, "Worker {} failed: {e}", boot.id);
            EXIT_WORKER_BOOT_ERROR
        }
    }
}

/// Signals meant for the master are ignored. The worker's own stop signals
/// (and SIGABRT, which the master sends a timed-out worker for its
/// worker_abort hook) stay blocked from the fork on, so one that arrives
/// while the application is loading waits for `server::run` instead of
/// killing the worker; every other signal the master blocked is unblocked.
/// abort(3) unblocks SIGABRT itself, so a real abort still ends the worker.
fn reset_signals() {
    // SAFETY: signal dispositions and masks of this (single-threaded) child.
    unsafe {
        for sig in [libc::SIGHUP, libc::SIGTTIN, libc::SIGTTOU, libc::SIGWINCH] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        let mut own: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut own);
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGABRT,
        ] {
            libc::sigaddset(&mut own, sig);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &own, std::ptr::null_mut());
    }
}

/// Names the calling thread (and so the process, for the main thread) as
/// `ps -o comm` and `top` show it.
pub fn set_thread_name(name: &[u8]) {
    // SAFETY: `name` is NUL-terminated and at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// Each worker draws its own limit in [N, N + jitter] so that workers
/// started together do not all restart together.
fn draw_max_requests(config: &Config) -> u64 {
    if config.max_requests == 0 {
        return 0;
    }
    let noise = liveness::now_ms() ^ (u64::from(std::process::id()) << 17);
    let spread = config.max_requests_jitter + 1;
    config.max_requests + (noise.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % spread
}

fn resolve_user(user: &str) -> Result<(libc::uid_t, libc::gid_t, Option<CString>), String> {
    if let Ok(uid) = user.parse::<libc::uid_t>() {
        // SAFETY: getpwuid returns a pointer into static storage or null.
        let pw = unsafe { libc::getpwuid(uid) };
        let gid = if pw.is_null() {
            uid
        } else {
            unsafe { (*pw).pw_gid }
        };
        return Ok((uid, gid, None));
    }
    let name = CString::new(user).map_err(|_| format!("--user {user:?}: invalid name"))?;
    // SAFETY: as above.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!("--user {user:?}: no such user"));
    }
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid, Some(name)) })
}

fn resolve_group(group: &str) -> Result<libc::gid_t, String> {
    if let Ok(gid) = group.parse::<libc::gid_t>() {
        return Ok(gid);
    }
    let name = CString::new(group).map_err(|_| format!("--group {group:?}: invalid name"))?;
    // SAFETY: getgrnam returns a pointer into static storage or null.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    if gr.is_null() {
        return Err(format!("--group {group:?}: no such group"));
    }
    Ok(unsafe { (*gr).gr_gid })
}

/// Asks the kernel for SIGTERM when the master dies, even by SIGKILL;
/// false if it has died already (the worker then has a new parent).
fn follow_master(master_pid: libc::pid_t) -> bool {
    // SAFETY: prctl with constant arguments; getppid cannot fail.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        libc::getppid() == master_pid
    }
}

/// --user/--group: switch the worker's identity (the master keeps its own,
/// to bind, reopen logs and signal workers).
fn drop_privileges(config: &Config) -> Result<(), String> {
    if config.user.is_none() && config.group.is_none() {
        return Ok(());
    }
    let user = config.user.as_deref().map(resolve_user).transpose()?;
    let gid = match (&config.group, &user) {
        (Some(g), _) => Some(resolve_group(g)?),
        (None, Some((_, gid, _))) => Some(*gid),
        (None, None) => None,
    };
    // SAFETY: identity changes of this process; each result is checked.
    unsafe {
        if let Some(gid) = gid {
            let groups_ok = match user.as_ref().and_then(|(_, _, name)| name.as_ref()) {
                Some(name) => libc::initgroups(name.as_ptr(), gid) == 0,
                None => libc::setgroups(1, &gid) == 0,
            };
            if !groups_ok || libc::setgid(gid) != 0 {
                return Err(format!(
                    "setgid({gid}): {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        if let Some((uid, _, _)) = user {
            if libc::setuid(uid) != 0 {
                return Err(format!(
                    "setuid({uid}): {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

/// --reload: a thread that watches, with inotify, the directories of the
/// project's loaded sources (and --reload-extra-file) and, when one of
/// those files is written or replaced, asks this worker to stop; the master
/// starts a fresh one. Every `RELOAD_RESCAN` it looks at the loaded modules
/// again, so that a module imported after the start (Django imports its
/// views on the first request) is watched too.
fn start_reload_watcher(py: Python<'_>, slot: Arc<Slot>, config: &Config) {
    let extra = extra_files(config);
    let files = match loaded_sources(py) {
        Ok(files) => files,
        Err(e) => {
            log_at!(Error, "--reload: cannot list the loaded sources: {e}");
            return;
        }
    };
    // The watches are in place before the worker reports ready: an edit
    // made once it answers is seen, not lost to a thread still starting.
    let mut watch = match Watch::new() {
        Ok(watch) => watch,
        Err(e) => {
            log_at!(Error, "--reload: watching sources failed: {e}");
            return;
        }
    };
    watch.add(files.iter().chain(&extra));
    std::thread::spawn(move || {
        let changed = watch.wait(|watch| {
            if let Ok(files) = Python::attach(loaded_sources) {
                for path in watch.add(files.iter()) {
                    log_at!(
                        Debug,
                        "--reload: watching {}, imported since",
                        path.display()
                    );
                }
            }
            false
        });
        match changed {
            Ok(None) => {}
            Ok(Some(path)) => {
                log_at!(Info, "Worker reloading: {} modified", path.display());
                slot.stop_worker(liveness::EXIT_RELOAD);
            }
            Err(e) => log_at!(Error, "--reload: watching sources failed: {e}"),
        }
    });
}

/// --reload, when the application failed to load: the error is logged and
/// the worker waits, instead of stopping the server, for a change to any
/// Python file in the project's directories (the loaded sources', the
/// working directory, the file a SyntaxError names, --reload-extra-file),
/// then leaves to be started again.
fn wait_to_reload_after_failure(py: Python<'_>, config: &Config, slot: &Slot, err: &PyErr) -> i32 {
    let mut files = loaded_sources(py).unwrap_or_default();
    files.extend(extra_files(config));
    if let Ok(filename) = err
        .value(py)
        .getattr("filename")
        .and_then(|f| f.extract::<PathBuf>())
    {
        files.push(filename);
    }
    if let Ok(dir) = std::env::current_dir() {
        files.push(dir.join("__init__.py"));
    }
    let mut watch = match Watch::new() {
        Ok(watch) => watch,
        Err(e) => {
            log_at!(Error, "--reload: watching sources failed: {e}");
            return EXIT_APP_LOAD_ERROR;
        }
    };
    watch.add(files.iter());
    watch.any_python_file = true;
    log_at!(
        Info,
        "--reload: waiting for a change to the project's Python files to load the application again"
    );
    // The stop signals stay blocked here (`reset_signals`): looked for at
    // each rescan, so a stop waits at most `RELOAD_RESCAN`.
    match py.detach(|| watch.wait(|_| stop_signal_pending())) {
        Ok(None) => 0,
        Ok(Some(path)) => {
            log_at!(Info, "Worker reloading: {} modified", path.display());
            slot.set_exit_reason(liveness::EXIT_RELOAD);
            0
        }
        Err(e) => {
            log_at!(Error, "--reload: watching sources failed: {e}");
            EXIT_APP_LOAD_ERROR
        }
    }
}

/// Whether SIGTERM, SIGINT or SIGQUIT waits, blocked, for this worker.
fn stop_signal_pending() -> bool {
    // SAFETY: sigpending fills a set this function owns.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set) == 0
            && [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT]
                .iter()
                .any(|&sig| libc::sigismember(&set, sig) == 1)
    }
}

/// --reload-extra-file's files, absolute, so that a bare name (`tpl.html`)
/// has a directory to watch.
fn extra_files(config: &Config) -> Vec<PathBuf> {
    config
        .reload_extra_file
        .iter()
        .filter_map(|f| std::path::absolute(f).ok())
        .collect()
}

/// The project's loaded Python sources (`ferrule._process.source_files`).
fn loaded_sources(py: Python<'_>) -> PyResult<Vec<PathBuf>> {
    py.import("ferrule._process")?
        .call_method0("source_files")?
        .extract()
}

/// How long the reload watcher waits for an event before it looks at the
/// loaded modules again.
const RELOAD_RESCAN: Duration = Duration::from_secs(1);

/// An inotify descriptor watching the directories of some files.
struct Watch {
    fd: i32,
    /// Each watch's directory.
    dirs: HashMap<i32, PathBuf>,
    watched_dirs: HashSet<PathBuf>,
    /// The files whose change counts.
    files: HashSet<PathBuf>,
    /// Any `.py` file in a watched directory counts (after a failed load).
    any_python_file: bool,
}

impl Watch {
    fn new() -> std::io::Result<Watch> {
        // SAFETY: creates a descriptor this value owns.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Watch {
            fd,
            dirs: HashMap::new(),
            watched_dirs: HashSet::new(),
            files: HashSet::new(),
            any_python_file: false,
        })
    }

    /// Watches `files` too (and their directories, once each); returns
    /// the ones it did not watch before.
    fn add<'a>(&mut self, files: impl Iterator<Item = &'a PathBuf>) -> Vec<PathBuf> {
        let mut added = Vec::new();
        for file in files {
            if !self.files.insert(file.clone()) {
                continue;
            }
            added.push(file.clone());
            let Some(dir) = file.parent() else { continue };
            if !self.watched_dirs.insert(dir.to_path_buf()) {
                continue;
            }
            let Ok(c_dir) = CString::new(dir.as_os_str().as_bytes()) else {
                continue;
            };
            let mask = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE;
            // SAFETY: a watch on our descriptor for a NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(self.fd, c_dir.as_ptr(), mask) };
            if wd >= 0 {
                self.dirs.insert(wd, dir.to_path_buf());
            }
        }
        added
    }

    /// Reads events until a watched file is written or replaced; returns
    /// its path. `rescan` runs whenever `RELOAD_RESCAN` passes quietly; when
    /// it says so, the wait ends with None.
    fn wait(
        &mut self,
        mut rescan: impl FnMut(&mut Watch) -> bool,
    ) -> std::io::Result<Option<PathBuf>> {
        // SAFETY (below): poll and read on our descriptor into a buffer this
        // function owns; events are parsed within the length read.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ready = unsafe { libc::poll(&mut pfd, 1, RELOAD_RESCAN.as_millis() as i32) };
            if ready == 0 {
                if rescan(self) {
                    return Ok(None);
                }
                continue;
            }
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let mut offset = 0;
            while offset + std::mem::size_of::<libc::inotify_event>() <= n as usize {
                let event = unsafe { &*(buf.as_ptr().add(offset) as *const libc::inotify_event) };
                let name_start = offset + std::mem::size_of::<libc::inotify_event>();
                let name = &buf[name_start..name_start + event.len as usize];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if let Some(dir) = self.dirs.get(&event.wd) {
                    let path = dir.join(std::ffi::OsStr::from_bytes(name));
                    let counts = self.files.contains(&path)
                        || (self.any_python_file && name.ends_with(b".py"));
                    if counts {
                        return Ok(Some(path));
                    }
                }
                offset = name_start + event.len as usize;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value owns.
        unsafe { libc::close(self.fd) };
    }
}

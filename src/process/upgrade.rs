//! USR2, gunicorn's binary upgrade: the master starts a new master from the
//! program and code on disk now, handing it every listener, so that no
//! connection is refused while the old one is retired (WINCH stops its
//! workers, TERM or QUIT stops it). The new master is `ferrule` run again
//! with the same command line and working directory; it receives the
//! listeners as systemd would hand them (sd_listen_fds: LISTEN_FDS from
//! descriptor 3, LISTEN_PID, and LISTEN_FDNAMES naming each one's
//! protocol), which `net::listen::systemd_fds` reads.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use pyo3::prelude::*;

use crate::net::listen::{Listener, UPGRADE_SOCKET_FILES};
use crate::{call_hook, log_at};

/// Descriptors at or above this are free while the listeners are moved
/// into place from 3 on.
const SCRATCH_FD: libc::c_int = 1000;

/// Forks and executes the new master; returns its pid. `dir` is the
/// directory the server was started from (a relative config file or APP
/// path means the same there).
/// Where the password of encrypted TLS keys may be given.
pub const KEY_PASSWORD_VAR: &std::ffi::CStr = c"FERRULE_SSL_KEYFILE_PASSWORD";

pub fn start_new_master(
    py: Python<'_>,
    listeners: &[Listener],
    dir: &Path,
    hooks: Option<&Py<PyAny>>,
    key_password: Option<&str>,
) -> Result<libc::pid_t, String> {
    let sys = py.import("sys").map_err(|e| e.to_string())?;
    let executable: String = sys
        .getattr("executable")
        .and_then(|e| e.extract())
        .map_err(|e| e.to_string())?;
    let argv: Vec<String> = sys
        .getattr("argv")
        .and_then(|a| a.extract())
        .map_err(|e| e.to_string())?;
    // Everything the child needs is allocated before the fork.
    let program = CString::new(executable.clone()).map_err(|e| e.to_string())?;
    let args: Vec<CString> = std::iter::once(executable)
        .chain(argv)
        .map(CString::new)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());
    let dir = CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // Taken out of this process's environment at start (`lib.rs`), so that
    // the application never sees it; the new master reads it again.
    let key_password = key_password
        .map(CString::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    let fds: Vec<libc::c_int> = listeners.iter().map(Listener::raw_fd).collect();
    let names: Vec<&str> = listeners.iter().map(Listener::scheme).collect();
    let count = CString::new(fds.len().to_string()).map_err(|e| e.to_string())?;
    let names = CString::new(names.join(":")).map_err(|e| e.to_string())?;
    let files: Vec<String> = listeners
        .iter()
        .map(|l| {
            l.socket_file()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    let files = CString::new(files.join("\n")).map_err(|e| e.to_string())?;
    let files_var = CString::new(UPGRADE_SOCKET_FILES).map_err(|e| e.to_string())?;

    let pid: libc::pid_t = py
        .import("os")
        .and_then(|os| os.call_method0("fork"))
        .and_then(|pid| pid.extract())
        .map_err(|e| e.to_string())?;
    if pid != 0 {
        return Ok(pid);
    }
    call_hook(py, hooks, "pre_exec", ());
    // SAFETY: the child, about to replace itself: descriptor moves, its
    // environment and signal mask, then execv with arguments allocated
    // before the fork. Any failure ends the child.
    unsafe {
        // First out of the way of 3..3+n, then into place; dup2 leaves the
        // new descriptor open across exec.
        let moved: Vec<libc::c_int> = fds
            .iter()
            .map(|&fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, SCRATCH_FD))
            .collect();
        for (i, &fd) in moved.iter().enumerate() {
            if fd < 0 || libc::dup2(fd, 3 + i as libc::c_int) < 0 {
                libc::_exit(1);
            }
        }
        let own_pid = CString::new(libc::getpid().to_string()).unwrap_or_default();
        libc::setenv(c"LISTEN_FDS".as_ptr(), count.as_ptr(), 1);
        libc::setenv(c"LISTEN_PID".as_ptr(), own_pid.as_ptr(), 1);
        libc::setenv(c"LISTEN_FDNAMES".as_ptr(), names.as_ptr(), 1);
        libc::setenv(files_var.as_ptr(), files.as_ptr(), 1);
        if let Some(password) = &key_password {
            libc::setenv(KEY_PASSWORD_VAR.as_ptr(), password.as_ptr(), 1);
        }
        // The new master blocks what it needs itself; execve keeps a mask.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if libc::chdir(dir.as_ptr()) == 0 {
            libc::execv(program.as_ptr(), arg_ptrs.as_ptr());
        }
        log_at!(
            Critical,
            "USR2: starting the new master failed: {}",
            std::io::Error::last_os_error()
        );
        libc::_exit(1);
    }
}

/// `FILE` renamed `FILE.oldbin` (gunicorn's name), while a new master
/// writes `FILE`; None if it could not be renamed.
pub fn set_pid_file_aside(path: &Path) -> Option<std::path::PathBuf> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".oldbin");
    let aside = std::path::PathBuf::from(aside);
    std::fs::rename(path, &aside).ok().map(|()| aside)
}

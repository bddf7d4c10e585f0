//! The one logger: error log lines in gunicorn's shape
//! (`[2026-11-22 01:50:00 +0000] [1234] [INFO] message`) and the access log,
//! whose lines `access_log` formats. `-` is stderr for the error log and
//! stdout for the access log, as in gunicorn.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::access_log::AccessFormat;
use crate::config::LogLevel;

enum Sink {
    Stderr,
    Stdout,
    File(File),
}

impl Sink {
    fn open(target: &str, dash: Sink) -> io::Result<Sink> {
        if target == "-" {
            return Ok(dash);
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)
            .map(Sink::File)
    }

    /// One write per call, so lines from several threads never interleave.
    fn write_all(&mut self, bytes: &[u8]) {
        let _ = match self {
            Sink::Stderr => io::stderr().lock().write_all(bytes),
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Sink::File(f) => f.write_all(bytes),
        };
    }
}

pub struct Logger {
    level: RwLock<LogLevel>,
    error: Mutex<Sink>,
    access: Mutex<Option<Sink>>,
    /// Where the sinks point, for reopening them (SIGUSR1, logrotate), and
    /// whether stdout and stderr go to the error log (`--capture-output`).
    targets: Mutex<(String, Option<String>, bool)>,
    /// Whether there is an access log: read on every request, so no lock.
    access_on: AtomicBool,
    /// The access log's line (`--access-logformat`), set once at start.
    access_format: OnceLock<AccessFormat>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

fn logger() -> &'static Logger {
    LOGGER.get_or_init(|| Logger {
        level: RwLock::new(LogLevel::Info),
        error: Mutex::new(Sink::Stderr),
        access: Mutex::new(None),
        targets: Mutex::new(("-".to_string(), None, false)),
        access_on: AtomicBool::new(false),
        access_format: OnceLock::new(),
    })
}

/// Points the logger at the configured files; the error names the file.
pub fn configure(
    level: LogLevel,
    error_logfile: &str,
    access_logfile: Option<&str>,
    capture_output: bool,
) -> Result<(), String> {
    let error = Sink::open(error_logfile, Sink::Stderr)
        .map_err(|e| format!("--error-logfile {error_logfile}: {e}"))?;
    if capture_output {
        capture_standard_streams(&error);
    }
    let access = access_logfile
        .map(|f| Sink::open(f, Sink::Stdout).map_err(|e| format!("--access-logfile {f}: {e}")))
        .transpose()?;
    let log = logger();
    *log.level.write().unwrap_or_else(|e| e.into_inner()) = level;
    *log.error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    log.access_on.store(access.is_some(), Ordering::Relaxed);
    *log.access.lock().unwrap_or_else(|e| e.into_inner()) = access;
    *log.targets.lock().unwrap_or_else(|e| e.into_inner()) = (
        error_logfile.to_string(),
        access_logfile.map(str::to_string),
        capture_output,
    );
    Ok(())
}

/// `--capture-output`: the process's stdout and stderr (and so those of
/// the workers it forks, and the application's print() and C output) become
/// the error log file; with the error log on stderr, stdout joins it.
fn capture_standard_streams(error: &Sink) {
    let target = match error {
        Sink::File(file) => file.as_raw_fd(),
        _ => libc::STDERR_FILENO,
    };
    let _ = io::stdout().flush();
    // SAFETY: dup2 onto the standard descriptors, which stay open.
    unsafe {
        libc::dup2(target, libc::STDOUT_FILENO);
        if target != libc::STDERR_FILENO {
            libc::dup2(target, libc::STDERR_FILENO);
        }
    }
}

/// Reopens the log files at their configured paths, so a rotated file is
/// replaced by a fresh one (SIGUSR1).
pub fn reopen() -> Result<(), String> {
    let (error, access, capture) = logger()
        .targets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let level = *logger().level.read().unwrap_or_else(|e| e.into_inner());
    configure(level, &error, access.as_deref(), capture)
}

/// The error log's path, or None for stderr.
pub fn error_log_path() -> Option<String> {
    let (error, _, _) = logger()
        .targets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    (error != "-").then_some(error)
}

pub fn enabled(level: LogLevel) -> bool {
    level >= *logger().level.read().unwrap_or_else(|e| e.into_inner())
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warning => "WARNING",
        LogLevel::Error => "ERROR",
        LogLevel::Critical => "CRITICAL",
    }
}

/// Writes one error-log message (which may span lines, e.g. a traceback).
pub fn log(level: LogLevel, message: &str) {
    if !enabled(level) {
        return;
    }
    let (date, time) = civil_now();
    let mut line = format!(
        "[{date} {time} +0000] [{}] [{}] {}",
        std::process::id(),
        level_name(level),
        message.trim_end_matches('\n')
    );
    line.push('\n');
    logger()
        .error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .write_all(line.as_bytes());
}

/// Writes text as it is to the error log (`wsgi.errors`).
pub fn write_raw(text: &[u8]) {
    logger()
        .error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .write_all(text);
}

pub fn access_log_enabled() -> bool {
    logger().access_on.load(Ordering::Relaxed)
}

/// Sets the access log's format (`--access-logformat`), once.
pub fn set_access_format(format: AccessFormat) {
    let _ = logger().access_format.set(format);
}

/// The access log's format: as set, else gunicorn's default.
pub fn access_format() -> &'static AccessFormat {
    logger().access_format.get_or_init(|| {
        AccessFormat::parse(crate::access_log::DEFAULT_FORMAT).expect("the default format parses")
    })
}

/// Writes one access-log line (with its newline).
pub fn write_access(line: &str) {
    if let Some(sink) = logger()
        .access
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
    {
        sink.write_all(line.as_bytes());
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn now_parts() -> (i64, u32, u32, u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    (y, m, d, secs % 86_400)
}

fn civil_now() -> (String, String) {
    let (y, m, d, s) = now_parts();
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
    )
}

/// `[22/Nov/2026:01:50:00 +0000]`, the access log's `t`; with `iso`,
/// `2026-11-22T01:50:00Z` (RFC 3339), for JSON lines.
pub fn access_time(iso: bool) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, s) = now_parts();
    if iso {
        return format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        );
    }
    format!(
        "[{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000]",
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[macro_export]
macro_rules! log_at {
    ($level:ident, $($arg:tt)*) => {
        if $crate::log::enabled($crate::config::LogLevel::$level) {
            $crate::log::log($crate::config::LogLevel::$level, &format!($($arg)*));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}

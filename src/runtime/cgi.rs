//! CGI mode (`ferrule --cgi APP`): the process is the request, as RFC 3875
//! and PEP 3333's `run_with_cgi` describe. The request's variables are the
//! process environment, the body is stdin, the response (a CGI `Status:`
//! head, then the body) goes to stdout and the log to stderr. One front
//! end more for the same pieces: the CGI variables make the request head
//! (`proto::cgi`), the one environ builder makes the environ, the exchange
//! and `AppCall` run the application; only the waits are blocking, since
//! there is nothing else to serve.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;

use crate::exchange::wire::Wire;
use std::time::Duration;

use pyo3::prelude::*;

use crate::config::Config;
use crate::exchange::out_queue::OutQueue;
use crate::exchange::{blocking_io, Exchange, ExchangeState};
use crate::log_at;
use crate::proto::body::BodyDecoder;
use crate::proto::cgi::head_from_vars;
use crate::proto::forwarded::SecureSchemeHeaders;
use crate::proto::http1::response::{HeadStyle, ResponseEncoder};
use crate::proto::request::RequestLabel;
use crate::proto::response::ResponseFramer;
use crate::wsgi::call::{AppCall, Step};
use crate::wsgi::environ::{self, base_environ, ConnInfo, EnvironSettings, ProxyHeaders};
use crate::wsgi::objects::RequestObjects;
use crate::{load_app, prepare_path, report_load_error, EXIT_USAGE};

const STDIN: RawFd = 0;
const STDOUT: RawFd = 1;

/// Runs the application once for the request in the environment; returns
/// the exit status: 0 whenever a response was written (a 500 included:
/// the server in front shows it), 2 when the environment holds no CGI
/// request.
pub fn run(py: Python<'_>, config: &Config, spec: &str) -> i32 {
    let mut buf = Vec::new();
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let name = name.as_bytes();
        let value = value.as_bytes();
        let n = buf.len()..buf.len() + name.len();
        buf.extend_from_slice(name);
        let v = buf.len()..buf.len() + value.len();
        buf.extend_from_slice(value);
        vars.push((n, v));
    }
    let head = match head_from_vars(buf, vars) {
        Ok(head) => head,
        Err(e) => {
            eprintln!(
                "error: --cgi runs the application for the CGI request in the environment, \
                 and there is none here ({}); a web server sets REQUEST_METHOD and the rest",
                e.reason
            );
            return EXIT_USAGE;
        }
    };
    let mut framer =
        ResponseFramer::Direct(ResponseEncoder::gateway(HeadStyle::Cgi, head.is_head()));
    let app = match prepare_path(py, config).and_then(|()| load_app(py, config)) {
        Ok(app) => app,
        Err(err) => {
            report_load_error(py, spec, &err);
            answer_with_error(&mut framer, 500, "Internal Server Error", config);
            return 0;
        }
    };
    let body = match BodyDecoder::new(head.framing, config.limit_request_body, 0) {
        Ok(body) => body,
        Err(err) => {
            log_at!(Info, "refused ({}): {}", err.status().0, err.reason);
            let (code, phrase) = err.status();
            answer_with_error(&mut framer, code, phrase, config);
            return 0;
        }
    };
    let settings = EnvironSettings {
        script_name: config.script_name.trim_end_matches('/').to_string(),
        multithread: false,
        multiprocess: true,
        run_once: true,
        proxy: ProxyHeaders::new(SecureSchemeHeaders::default()),
    };
    // What the environment does not say (REMOTE_ADDR, SERVER_NAME...)
    // stays empty or generic: there is no connection to ask.
    let conn = ConnInfo::without_address(false);
    let state = ExchangeState::new(
        Vec::new(),
        OutQueue::default(),
        Vec::new(),
        body,
        false,
        framer,
    );
    let started = (|| {
        let base = base_environ(py, &settings)?;
        let objects = RequestObjects::for_request(
            py,
            None,
            (Wire::plain(STDIN), Wire::plain(STDOUT)),
            config.socket_timeout,
            state,
        )?;
        let environ = environ::build(
            py,
            &base,
            &settings,
            &head,
            &conn,
            objects.input.bind(py).clone().into_any(),
        )?;
        Ok::<_, PyErr>((objects, environ))
    })();
    let (objects, environ) = match started {
        Ok(started) => started,
        Err(err) => {
            log_at!(
                Critical,
                "could not build the request for the application: {err}"
            );
            let mut framer =
                ResponseFramer::Direct(ResponseEncoder::gateway(HeadStyle::Cgi, false));
            answer_with_error(&mut framer, 500, "Internal Server Error", config);
            return 0;
        }
    };
    let (mut call, mut step) = AppCall::start(
        py,
        &app,
        environ.into_any(),
        objects.start_response.bind(py).clone().into_any(),
        objects.exchange.clone(),
        RequestLabel(&head),
    );
    loop {
        if flush(py, &objects.exchange).is_err() {
            break;
        }
        step = match step {
            Step::More => call.next(py),
            Step::SendFile { fd, offset, len } => {
                match py.detach(|| copy_file(fd, offset, len, config.socket_timeout)) {
                    Ok(()) => call.after_sendfile(len),
                    Err(_) => break,
                }
            }
            Step::Done | Step::Abort => break,
        };
    }
    let _ = flush(py, &objects.exchange);
    call.close(py);
    0
}

/// Writes what the exchange has framed to stdout.
fn flush(py: Python<'_>, exchange: &Exchange) -> io::Result<()> {
    py.detach(|| {
        exchange
            .lock()
            .flush_blocking(&exchange.output, exchange.socket_timeout)
    })
}

/// Writes a whole error response to stdout.
fn answer_with_error(framer: &mut ResponseFramer, status: u16, phrase: &str, config: &Config) {
    let mut out = Vec::new();
    framer.error(&mut out, status, phrase);
    let mut queue = OutQueue::default();
    queue.buf().extend_from_slice(&out);
    let _ = blocking_io::send_queue(STDOUT, &mut queue, config.socket_timeout);
}

/// Copies `len` bytes of the file `fd` from `offset` to stdout (a
/// `wsgi.file_wrapper` file).
fn copy_file(fd: RawFd, mut offset: u64, mut len: u64, wait: Duration) -> io::Result<()> {
    let mut block = vec![0u8; 64 * 1024];
    while len > 0 {
        let want = block.len().min(len as usize);
        // SAFETY: reading into a buffer of at least `want` bytes.
        let n = unsafe { libc::pread(fd, block.as_mut_ptr().cast(), want, offset as libc::off_t) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than expected",
            ));
        }
        let n = n as usize;
        blocking_io::send_all(STDOUT, &block[..n], wait)?;
        offset += n as u64;
        len -= n as u64;
    }
    Ok(())
}

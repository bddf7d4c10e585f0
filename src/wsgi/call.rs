//! Calling the application and walking its response (PEP 3333, "The
//! Application/Framework Side" and "Buffering and Streaming").
//!
//! The connection drives an `AppCall` step by step, holding the GIL only
//! inside each step and sending the framed bytes between steps with the GIL
//! released. A list or tuple result is framed in one step (its whole length
//! is known, so it gets a Content-Length); an iterator yields one chunk per
//! step, so a slow client holds memory for one chunk, never a thread.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyIterator, PyList, PyTuple};

use crate::exchange::Exchange;
use crate::log_at;
use crate::proto::request::RequestLabel;
use crate::wsgi::streams::FileWrapper;

/// `--no-sendfile`: file_wrapper responses are read and sent as chunks.
/// Set once at start, before any request.
static SENDFILE_OFF: AtomicBool = AtomicBool::new(false);

pub fn disable_sendfile() {
    SENDFILE_OFF.store(true, Ordering::Relaxed);
}

/// What the connection does next.
#[derive(Debug)]
pub enum Step {
    /// Send `exchange.out`, then call `next`.
    More,
    /// Send `exchange.out`; the response is complete.
    Done,
    /// Send `exchange.out`, then `len` bytes of the file `fd` from `offset`,
    /// then call `after_sendfile`.
    SendFile { fd: RawFd, offset: u64, len: u64 },
    /// Send `exchange.out`, then drop the connection: the response broke
    /// after its head went out, and the client must be able to tell.
    Abort,
}

pub struct AppCall<'a> {
    exchange: Arc<Exchange>,
    /// What the application returned, kept for `close()`; `None` once
    /// nothing is left to close (a list or tuple has no `close()`).
    result: Option<Py<PyAny>>,
    iter: Option<Py<PyIterator>>,
    /// The request, named in log messages.
    label: RequestLabel<'a>,
}

impl<'a> AppCall<'a> {
    /// Calls `app(environ, start_response)` and takes the first step.
    pub fn start(
        py: Python<'_>,
        app: &Py<PyAny>,
        environ: Bound<'_, PyAny>,
        start_response: Bound<'_, PyAny>,
        exchange: Arc<Exchange>,
        label: RequestLabel<'a>,
    ) -> (AppCall<'a>, Step) {
        let mut call = AppCall {
            exchange,
            result: None,
            iter: None,
            label,
        };
        let step = match app.bind(py).call1((environ, start_response)) {
            Ok(result) => {
                call.result = Some(result.clone().unbind());
                call.first_step(py, &result)
            }
            Err(err) => call.fail(py, err),
        };
        (call, step)
    }

    fn first_step(&mut self, py: Python<'_>, result: &Bound<'_, PyAny>) -> Step {
        if let Ok(items) = result.cast_exact::<PyList>() {
            self.result = None;
            return self.frame_sequence(py, items.len(), |i| items.get_item(i));
        }
        if let Ok(items) = result.cast_exact::<PyTuple>() {
            self.result = None;
            return self.frame_sequence(py, items.len(), |i| items.get_item(i));
        }
        if let Ok(wrapper) = result.cast::<FileWrapper>() {
            if let Some(step) = self.sendfile_step(py, wrapper.get()) {
                return step;
            }
        }
        match result.try_iter() {
            Ok(iter) => {
                self.iter = Some(iter.unbind());
                self.next(py)
            }
            Err(err) => self.fail(py, err),
        }
    }

    /// A list or tuple (exactly: a subclass may define `close()`): every
    /// chunk is in hand, so the total length is known before the head goes
    /// out. Two passes over the items, one to check and sum them and one to
    /// frame them; no Python code runs between the two, so the sequence
    /// cannot change.
    fn frame_sequence<'py>(
        &mut self,
        py: Python<'py>,
        len: usize,
        item: impl Fn(usize) -> PyResult<Bound<'py, PyAny>>,
    ) -> Step {
        let mut total = 0u64;
        for i in 0..len {
            match item(i).map(|item| item.cast_into::<PyBytes>()) {
                Ok(Ok(bytes)) => total += bytes.as_bytes().len() as u64,
                Ok(Err(e)) => return self.fail(py, not_bytes(e.into_inner().as_any())),
                Err(e) => return self.fail(py, e),
            }
        }
        let mut st = self.exchange.lock();
        let framed = if len == 0 {
            st.frame_body(b"", Some(total))
        } else {
            (0..len).try_for_each(|i| {
                let bytes = item(i).map_err(|_| "the response sequence changed")?;
                let bytes = bytes
                    .cast_into::<PyBytes>()
                    .map_err(|_| "the response sequence changed")?;
                st.frame_bytes(&bytes, Some(total))
            })
        };
        if let Err(msg) = framed {
            drop(st);
            return self.fail(py, pyo3::exceptions::PyAssertionError::new_err(msg));
        }
        st.finish_response();
        Step::Done
    }

    /// A `wsgi.file_wrapper` around a regular file: sent with sendfile(2)
    /// where the protocol sends bodies as they are. Anything else (a pipe,
    /// BytesIO, a socket, a FastCGI response) is iterated instead.
    fn sendfile_step(&mut self, py: Python<'_>, wrapper: &FileWrapper) -> Option<Step> {
        if SENDFILE_OFF.load(Ordering::Relaxed)
            || !self.exchange.output.carries_raw_bytes()
            || !self.exchange.lock().response.allows_sendfile()
        {
            return None;
        }
        let (fd, offset, len) = regular_file_span(wrapper.filelike.bind(py))?;
        let mut st = self.exchange.lock();
        if let Err(msg) = st.start_head(Some(len)) {
            drop(st);
            return Some(self.fail(py, pyo3::exceptions::PyAssertionError::new_err(msg)));
        }
        let len = st.raw_body_start(len);
        Some(Step::SendFile { fd, offset, len })
    }

    /// Frames what follows a file sent with sendfile(2).
    pub fn after_sendfile(&mut self, len: u64) -> Step {
        let mut st = self.exchange.lock();
        st.raw_body_end(len);
        st.finish_response();
        Step::Done
    }

    /// Pulls chunks from the iterator until one is non-empty or it ends.
    pub fn next(&mut self, py: Python<'_>) -> Step {
        let Some(mut iter) = self.iter.as_ref().map(|i| i.bind(py).clone()) else {
            return Step::Done;
        };
        loop {
            match iter.next() {
                None => {
                    let mut st = self.exchange.lock();
                    if !st.response.head_sent() {
                        // Headers go out with the first non-empty chunk or,
                        // failing that, when the iterable ends (PEP 3333).
                        if let Err(msg) = st.frame_body(b"", Some(0)) {
                            drop(st);
                            return self.fail(py, pyo3::exceptions::PyAssertionError::new_err(msg));
                        }
                    }
                    st.finish_response();
                    return Step::Done;
                }
                Some(Err(err)) => return self.fail(py, err),
                Some(Ok(item)) => {
                    let bytes = match item.cast::<PyBytes>() {
                        Ok(b) => b,
                        Err(_) => return self.fail(py, not_bytes(&item)),
                    };
                    if bytes.as_bytes().is_empty() {
                        continue;
                    }
                    let mut st = self.exchange.lock();
                    if let Err(msg) = st.frame_bytes(bytes, None) {
                        drop(st);
                        return self.fail(py, pyo3::exceptions::PyAssertionError::new_err(msg));
                    }
                    return Step::More;
                }
            }
        }
    }

    /// The application raised. Before the head went out the client gets a
    /// 500 (or the 4xx its own body error earned); after, the connection is
    /// aborted. The traceback goes to the error log either way.
    fn fail(&mut self, py: Python<'_>, err: PyErr) -> Step {
        let mut st = self.exchange.lock();
        let client_error = st.body_error.clone();
        let write_failed = st.write_failed;
        let head_sent = st.response.head_sent();
        if !head_sent {
            let (code, phrase) = client_error
                .as_ref()
                .map(|e| e.status())
                .unwrap_or((500, "Internal Server Error"));
            let state = &mut *st;
            state.out.clear();
            state.response.error(state.out.buf(), code, phrase);
        }
        drop(st);
        if let Some(e) = client_error {
            log_at!(Info, "{}: refused request body: {}", self.label, e);
        } else if write_failed {
            log_at!(
                Debug,
                "{}: client went away: {}",
                self.label,
                format_exception(py, &err)
            );
        } else {
            log_at!(
                Error,
                "Error handling request {}\n{}",
                self.label,
                format_exception(py, &err)
            );
        }
        if head_sent {
            Step::Abort
        } else {
            Step::Done
        }
    }

    /// Whether `close` has Python work to do; a list or tuple result was
    /// let go as soon as it was framed.
    pub fn needs_close(&self) -> bool {
        self.result.is_some() || self.iter.is_some()
    }

    /// Calls the result's `close()`, which PEP 3333 requires on every path:
    /// success, error, and a client that went away.
    pub fn close(mut self, py: Python<'_>) {
        self.close_now(py);
    }

    /// `close` without giving up the call; later `close` calls do nothing.
    pub fn close_now(&mut self, py: Python<'_>) {
        self.iter = None;
        let Some(result) = self.result.take() else {
            return;
        };
        let result = result.bind(py);
        let closed = match result.getattr(pyo3::intern!(py, "close")) {
            Ok(close) => close.call0().map(drop),
            Err(_) => Ok(()),
        };
        if let Err(err) = closed {
            log_at!(
                Error,
                "Error closing the response of {}\n{}",
                self.label,
                format_exception(py, &err)
            );
        }
    }
}

fn not_bytes(item: &Bound<'_, PyAny>) -> PyErr {
    let ty = item
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    pyo3::exceptions::PyTypeError::new_err(format!(
        "response body items must be bytes, not {ty} (PEP 3333: the application returns bytestrings)"
    ))
}

/// The descriptor, position and remaining length of a regular file, or
/// `None` when `filelike` is not one.
fn regular_file_span(filelike: &Bound<'_, PyAny>) -> Option<(RawFd, u64, u64)> {
    let fd: RawFd = filelike.call_method0("fileno").ok()?.extract().ok()?;
    // The Python-level position, which accounts for read-ahead buffering.
    let offset: u64 = match filelike.call_method0("tell") {
        Ok(pos) => pos.extract().ok()?,
        // SAFETY: lseek on a descriptor the file object owns.
        Err(_) => u64::try_from(unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }).ok()?,
    };
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat struct for a valid descriptor.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return None;
    }
    let stat = unsafe { stat.assume_init() };
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let size = u64::try_from(stat.st_size).ok()?;
    Some((fd, offset, size.saturating_sub(offset)))
}

/// The traceback text of an exception, as `traceback.format_exception` gives.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )
    });
    match formatted.and_then(|lines| lines.extract::<Vec<String>>()) {
        Ok(lines) => lines.concat(),
        Err(_) => err.to_string(),
    }
}

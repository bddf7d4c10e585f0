//! `wsgi.input` (PEP 3333, "Input and Error Streams"): a streaming,
//! read-only file object over the request body. It reads from the socket on
//! demand, so a large upload is never held whole in memory, answers
//! `Expect: 100-continue` on the first read, and returns b'' (never blocks)
//! once the body has ended, as `wsgi.input_terminated` promises.

use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::exchange::{BodyError, Exchange, ExchangeState};

#[pyclass(frozen, module = "ferrule._ferrule")]
pub struct Input {
    exchange: Arc<Exchange>,
}

impl Input {
    pub fn new(exchange: Arc<Exchange>) -> Self {
        Input { exchange }
    }
}

pyo3::create_exception!(
    ferrule,
    ClientDisconnected,
    PyOSError,
    "The request body could not be read because of the client: it closed the \
     connection or went quiet before the end of the body, or sent a malformed or \
     oversized one. Raised by wsgi.input; an OSError, as gunicorn's and Django's \
     are. Left unhandled it is logged at info level, without a traceback, and the \
     client gets a 4xx response if none was sent yet."
);

fn to_pyerr(e: BodyError) -> PyErr {
    match e {
        BodyError::Client(e) => ClientDisconnected::new_err(e.reason),
        BodyError::Spool(e) => PyOSError::new_err(format!("reading the request body back: {e}")),
        BodyError::Closed => {
            PyValueError::new_err("I/O operation on the input of a finished request")
        }
    }
}

/// How much a read wants: `None` or a negative size means "to the end".
fn wanted(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

/// Where a line of at most `limit` bytes ends in `data`, if it does.
fn line_end(data: &[u8], limit: Option<usize>) -> Option<usize> {
    let window = &data[..limit.map_or(data.len(), |l| l.min(data.len()))];
    match memchr::memchr(b'\n', window) {
        Some(i) => Some(i + 1),
        None if limit.is_some_and(|l| data.len() >= l) => limit,
        None => None,
    }
}

impl Input {
    /// Runs `take` over the available bytes until it returns a length, reading
    /// more of the body between tries; at the end of the body it takes what
    /// is left. The fast path (the body is already buffered) keeps the GIL.
    fn take_bytes<'py>(
        &self,
        py: Python<'py>,
        take: impl Fn(&[u8]) -> Option<usize> + Send + Sync,
    ) -> PyResult<Bound<'py, PyBytes>> {
        {
            let mut st = self.exchange.lock();
            if !st.open {
                return Err(to_pyerr(BodyError::Closed));
            }
            let ready =
                take(st.available()).or_else(|| st.body_done().then(|| st.available().len()));
            if let Some(n) = ready {
                return Ok(take_from(py, &mut st, n));
            }
        }
        let exchange = &self.exchange;
        let data: Result<Vec<u8>, BodyError> = py.detach(|| {
            let mut st = exchange.lock();
            loop {
                if let Some(n) = take(st.available()) {
                    break Ok(take_vec(&mut st, n));
                }
                if !st.fill(&exchange.input, &exchange.output, exchange.socket_timeout)? {
                    let n = st.available().len();
                    break Ok(take_vec(&mut st, n));
                }
            }
        });
        Ok(PyBytes::new(py, &data.map_err(to_pyerr)?))
    }
}

fn take_from<'py>(py: Python<'py>, st: &mut ExchangeState, n: usize) -> Bound<'py, PyBytes> {
    let bytes = PyBytes::new(py, &st.available()[..n]);
    st.consume(n);
    bytes
}

fn take_vec(st: &mut ExchangeState, n: usize) -> Vec<u8> {
    let v = st.available()[..n].to_vec();
    st.consume(n);
    v
}

#[pymethods]
impl Input {
    /// read(size=-1): up to `size` bytes, or the rest of the body.
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        match wanted(size) {
            Some(0) => Ok(PyBytes::new(py, b"")),
            Some(n) => self.take_bytes(py, move |data| (data.len() >= n).then_some(n)),
            None => self.take_bytes(py, |_| None),
        }
    }

    /// readline(size=-1): through the next b'\n', at most `size` bytes.
    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = wanted(size);
        if limit == Some(0) {
            return Ok(PyBytes::new(py, b""));
        }
        self.take_bytes(py, move |data| line_end(data, limit))
    }

    /// readlines(hint=-1): lines until their total size reaches `hint`.
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = wanted(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.readline(py, None)?;
            if line.as_bytes().is_empty() {
                break;
            }
            total += line.as_bytes().len();
            lines.append(line)?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::line_end;

    #[test]
    fn line_ends() {
        assert_eq!(line_end(b"ab\ncd", None), Some(3));
        assert_eq!(line_end(b"abcd", None), None);
        assert_eq!(line_end(b"abcd", Some(2)), Some(2));
        assert_eq!(line_end(b"a\nbcd", Some(3)), Some(2));
        assert_eq!(line_end(b"ab", Some(3)), None);
    }
}

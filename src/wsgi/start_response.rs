//! `start_response` and the `write()` callable it returns (PEP 3333, "The
//! start_response() Callable" and "The write() Callable").
//!
//! `start_response` only records the status and headers; they go out with the
//! first non-empty body bytes, so an application may still replace them with
//! an error response (a second call with `exc_info`) until then.

use std::sync::Arc;

use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::exchange::Exchange;
use crate::proto::app_head::AppHead;
use crate::wsgi::response_head::{add_field, parse_status};

#[pyclass(frozen, module = "ferrule._ferrule")]
pub struct StartResponse {
    exchange: Arc<Exchange>,
    /// What every call returns: one `write()` callable per exchange.
    write: Py<Write>,
}

impl StartResponse {
    pub fn new(py: Python<'_>, exchange: Arc<Exchange>) -> PyResult<Self> {
        let write = Py::new(
            py,
            Write {
                exchange: exchange.clone(),
            },
        )?;
        Ok(StartResponse { exchange, write })
    }

    /// True when no one but this holds the `write()` callable.
    pub fn write_unshared(&self, py: Python<'_>) -> bool {
        crate::wsgi::objects::sole_reference(py, &self.write)
    }
}

/// Validates and encodes the status and headers into `buf`.
fn build_head(
    status: &Bound<'_, PyAny>,
    headers: &Bound<'_, PyAny>,
    buf: Vec<u8>,
) -> PyResult<AppHead> {
    let status = status.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!("status must be a str, not {}", type_name(status)))
    })?;
    let mut head = parse_status(&status.to_cow()?, buf).map_err(PyValueError::new_err)?;
    if let Ok(list) = headers.cast_exact::<PyList>() {
        for item in list.iter() {
            add_header(&mut head, &item)?;
        }
        return Ok(head);
    }
    for item in headers
        .try_iter()
        .map_err(|_| PyTypeError::new_err("headers must be a list of (name, value) tuples"))?
    {
        add_header(&mut head, &item?)?;
    }
    Ok(head)
}

/// Adds one `(name, value)` item of the application's header list.
fn add_header(head: &mut AppHead, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let pair = item
        .cast::<PyTuple>()
        .ok()
        .filter(|t| t.len() == 2)
        .ok_or_else(|| {
            PyTypeError::new_err(format!(
                "each header must be a (name, value) tuple, not {}",
                type_name(item)
            ))
        })?;
    let name = pair.get_item(0)?;
    let value = pair.get_item(1)?;
    let (Ok(name), Ok(value)) = (name.cast::<PyString>(), value.cast::<PyString>()) else {
        return Err(PyTypeError::new_err(format!(
            "header names and values must be str, got ({}, {})",
            type_name(&name),
            type_name(&value)
        )));
    };
    add_field(head, &name.to_cow()?, &value.to_cow()?).map_err(PyValueError::new_err)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Write>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        let buf = {
            let mut st = self.exchange.lock();
            if !st.open {
                return Err(PyValueError::new_err(
                    "start_response() called after the request ended",
                ));
            }
            match exc_info {
                // Headers already sent: the error cannot replace them, so the
                // application's exception propagates (PEP 3333).
                Some(info) if st.response.head_sent() => {
                    drop(st);
                    let value = info.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
                Some(_) => {}
                None if st.app_head.is_some() || st.response.head_sent() => {
                    return Err(PyAssertionError::new_err(
                        "start_response() called a second time without exc_info",
                    ));
                }
                None => {}
            }
            std::mem::take(&mut st.head_spare)
        };
        let head = build_head(status, headers, buf)?;
        self.exchange.lock().app_head = Some(head);
        Ok(self.write.clone_ref(status.py()))
    }
}

/// The `write()` callable: sends its bytes before returning (blocking, with
/// the GIL released), heads first if they have not gone yet.
#[pyclass(frozen, module = "ferrule._ferrule")]
pub struct Write {
    exchange: Arc<Exchange>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!("write() takes bytes, not {}", type_name(data)))
        })?;
        let exchange = &self.exchange;
        {
            let mut st = exchange.lock();
            if !st.open {
                return Err(PyValueError::new_err(
                    "write() called after the request ended",
                ));
            }
            if data.as_bytes().is_empty() {
                return Ok(());
            }
            st.frame_bytes(data, None)
                .map_err(PyAssertionError::new_err)?;
        }
        py.detach(|| {
            exchange
                .lock()
                .flush_blocking(&exchange.output, exchange.socket_timeout)
                .map_err(|e| PyOSError::new_err(format!("client connection lost: {e}")))
        })
    }
}

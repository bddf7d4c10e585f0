//! The objects a request hands the application besides the environ:
//! `wsgi.input`, `start_response` and the `write()` callable it returns
//! (PEP 3333). A connection keeps them, with their exchange, and its next
//! request reuses them when nothing else holds them: making and freeing
//! the three took about 1,300 instructions a request, 7% of a hello-world
//! request. An object the application kept (in a global, a closure, a
//! cycle not yet collected) is never reused: it stays with its request,
//! closed, and the next request gets new ones.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;

use crate::exchange::wire::Wire;
use crate::exchange::{Exchange, ExchangeState};
use crate::wsgi::input::Input;
use crate::wsgi::start_response::StartResponse;

pub struct RequestObjects {
    pub exchange: Arc<Exchange>,
    pub input: Py<Input>,
    pub start_response: Py<StartResponse>,
}

/// Holders of the exchange when only a `RequestObjects` holds its objects:
/// itself, `wsgi.input`, `start_response` and `write`.
const EXCHANGE_HOLDERS: usize = 4;

impl RequestObjects {
    /// The objects for a request read from `wires.0` and answered on
    /// `wires.1` (the same connection, but for a CGI script): `spare`, the
    /// last request's, given `state` when nothing else holds them; else new
    /// ones.
    pub fn for_request(
        py: Python<'_>,
        spare: Option<RequestObjects>,
        wires: (Wire, Wire),
        socket_timeout: Duration,
        state: ExchangeState,
    ) -> PyResult<RequestObjects> {
        if let Some(objects) = spare.filter(|o| o.unshared(py)) {
            objects.exchange.renew(state);
            return Ok(objects);
        }
        let exchange = Arc::new(Exchange::new(wires, socket_timeout, state));
        Ok(RequestObjects {
            input: Py::new(py, Input::new(exchange.clone()))?,
            start_response: Py::new(py, StartResponse::new(py, exchange.clone())?)?,
            exchange,
        })
    }

    /// True when no one but `self` holds the objects, so no one can tell
    /// they are reused.
    fn unshared(&self, py: Python<'_>) -> bool {
        sole_reference(py, &self.input)
            && sole_reference(py, &self.start_response)
            && self.start_response.get().write_unshared(py)
            && Arc::strong_count(&self.exchange) == EXCHANGE_HOLDERS
    }
}

/// True when `object` is the only reference to its Python object. (The
/// module declares that it needs the GIL, so counts are exact.)
pub fn sole_reference<T>(_py: Python<'_>, object: &Py<T>) -> bool {
    // SAFETY: the pointer is a live object (`object` holds a reference),
    // read with the GIL held.
    unsafe { pyo3::ffi::Py_REFCNT(object.as_ptr()) == 1 }
}

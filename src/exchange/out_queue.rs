//! Response bytes waiting to be sent. Framing and small bodies are copied
//! into one buffer; a large body is referenced where Python holds it (an
//! immutable `bytes` object the queue keeps alive) and goes to writev(2)
//! beside the framing, so it is never copied in user space.

use std::io::IoSlice;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Bodies at least this large are sent from the application's own bytes;
/// smaller ones cost less to copy than to reference.
pub const ZERO_COPY_MIN: usize = 16 * 1024;

/// Most pieces handed to one writev(2).
pub const MAX_SLICES: usize = 64;

/// Largest buffer a connection keeps between requests; a larger one is
/// freed after its request.
pub const KEPT_BUFFER: usize = 64 * 1024;

#[derive(Default)]
pub struct OutQueue {
    /// Copied bytes: framing and small bodies.
    buf: Vec<u8>,
    /// Referenced bodies, in order, each placed at an offset of `buf`.
    shared: Vec<SharedBody>,
    /// How much of the queue earlier (partial) writes sent.
    sent: usize,
}

struct SharedBody {
    /// The bytes of `buf` before `at` go before this body.
    at: usize,
    /// Keeps the bytes object, and so the memory at `addr`, alive and
    /// unchanged (bytes objects are immutable).
    _owner: Py<PyBytes>,
    addr: usize,
    len: usize,
}

impl OutQueue {
    /// An empty queue whose copy buffer holds `capacity` bytes before it
    /// has to grow.
    pub fn with_capacity(capacity: usize) -> Self {
        OutQueue {
            buf: Vec::with_capacity(capacity),
            ..OutQueue::default()
        }
    }

    /// The copy buffer, for framing written by the response encoder.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Queues `data`, which lies inside `owner`, without copying it when it
    /// is large.
    pub fn push_body(&mut self, owner: &Bound<'_, PyBytes>, data: &[u8]) {
        if data.len() < ZERO_COPY_MIN {
            self.buf.extend_from_slice(data);
            return;
        }
        debug_assert!({
            let whole = owner.as_bytes().as_ptr_range();
            whole.start <= data.as_ptr() && data.as_ptr_range().end <= whole.end
        });
        self.shared.push(SharedBody {
            at: self.buf.len(),
            _owner: owner.clone().unbind(),
            addr: data.as_ptr() as usize,
            len: data.len(),
        });
    }

    /// Bytes queued and not yet sent.
    pub fn len(&self) -> usize {
        self.buf.len() + self.shared.iter().map(|s| s.len).sum::<usize>() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue in order, sent or not.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let mut from = 0;
        self.shared
            .iter()
            .flat_map(move |s| {
                let before = &self.buf[from..s.at];
                from = s.at;
                // SAFETY: `_owner` keeps the bytes object alive, and its
                // buffer never moves or changes while it lives.
                let body = unsafe { std::slice::from_raw_parts(s.addr as *const u8, s.len) };
                [before, body]
            })
            .chain(std::iter::once(
                &self.buf[self.shared.last().map_or(0, |s| s.at)..],
            ))
    }

    /// Fills `slots` with the unsent pieces, in order; returns how many.
    pub fn slices<'a>(&'a self, slots: &mut [IoSlice<'a>]) -> usize {
        let mut skip = self.sent;
        let mut n = 0;
        for piece in self.pieces() {
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            if n == slots.len() {
                break;
            }
            slots[n] = IoSlice::new(&piece[skip..]);
            skip = 0;
            n += 1;
        }
        n
    }

    /// Marks `n` more bytes sent; an entirely sent queue is emptied.
    pub fn advance(&mut self, n: usize) {
        self.sent += n;
        if self.is_empty() {
            self.clear();
        }
    }

    /// Drops everything queued. Referenced bodies released without the GIL
    /// are released by Python at the thread's next attach.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.shared.clear();
        self.sent = 0;
    }

    /// Empties the queue for reuse by the next request, freeing a copy
    /// buffer grown past what a connection keeps.
    pub fn reset(&mut self) {
        self.clear();
        if self.buf.capacity() > KEPT_BUFFER {
            self.buf = Vec::new();
        }
    }
}

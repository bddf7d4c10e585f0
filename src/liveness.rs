//! Worker liveness without the file system: one shared memory page per
//! worker, written by the worker and read by the master. The page also
//! holds the worker's metrics (`metrics::Block`).
//!
//! The worker stores, per thread of its runtime, when that thread entered
//! Python (0 while it is outside), and its event loop stamps a tick every
//! second. The master's checks are two loads: a thread inside Python longer
//! than `--timeout` is a hung request; a stale tick while no thread is in
//! Python is a stuck event loop. The tick is a task of the worker's
//! runtime, so it says a runtime thread was free: with several threads
//! there is a spare one (`server::runtime_threads`), and threads waiting
//! for their clients past --response-buffer do not make the worker hung.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::metrics::Block;

/// Reasons a worker gives for leaving, so the master can log them.
/// How often a worker's event loop stamps its page. The master counts a
/// loop as stalled only once it has missed its stamp by more than
/// --timeout, so that a short --timeout (1 s) never mistakes the interval
/// between two stamps for a stall.
pub const LOOP_TICK: std::time::Duration = std::time::Duration::from_secs(1);

pub const EXIT_NONE: u32 = 0;
pub const EXIT_MAX_REQUESTS: u32 = 1;
pub const EXIT_RELOAD: u32 = 2;

#[repr(C)]
struct Layout {
    loop_tick_ms: AtomicU64,
    requests: AtomicU64,
    exit_reason: AtomicU32,
    threads: AtomicU32,
    /// Set once the worker has loaded the application and is serving.
    ready: AtomicU32,
    _pad: AtomicU32,
    // followed by `threads` AtomicU64 "entered Python at" stamps, then, on
    // a cache line of its own, the metrics block
}

/// One worker's page, shared across fork (MAP_SHARED | MAP_ANONYMOUS).
pub struct Slot {
    base: *mut Layout,
    len: usize,
    /// Where the metrics block starts in the mapping.
    metrics_at: usize,
}

// SAFETY: every field is an atomic in shared memory that lives as long as
// the Slot; concurrent access is what it is for.
unsafe impl Send for Slot {}
unsafe impl Sync for Slot {}

/// Milliseconds on the monotonic clock, which every process shares. The
/// coarse clock (a few milliseconds of resolution) is read without a
/// hardware timer access, which matters at two stamps per request; timeouts
/// are whole seconds.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

impl Slot {
    /// Maps a zeroed page for a worker whose runtime has `threads` threads
    /// (`server::runtime_threads`), any of which may run the application.
    pub fn new(threads: usize) -> std::io::Result<Slot> {
        // The metrics block on a cache line of its own, away from the
        // stamps the master reads.
        let metrics_at = (std::mem::size_of::<Layout>() + threads * 8).next_multiple_of(64);
        let len = metrics_at + std::mem::size_of::<Block>();
        // SAFETY: an anonymous shared mapping; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let slot = Slot {
            base: ptr.cast(),
            len,
            metrics_at,
        };
        slot.layout()
            .threads
            .store(threads as u32, Ordering::Relaxed);
        slot.layout()
            .loop_tick_ms
            .store(now_ms(), Ordering::Relaxed);
        Ok(slot)
    }

    fn layout(&self) -> &Layout {
        // SAFETY: the mapping is at least size_of::<Layout>() and zeroed.
        unsafe { &*self.base }
    }

    fn thread_stamps(&self) -> &[AtomicU64] {
        let n = self.layout().threads.load(Ordering::Relaxed) as usize;
        // SAFETY: the mapping holds `n` u64 stamps after the header.
        unsafe { std::slice::from_raw_parts(self.base.add(1).cast::<AtomicU64>(), n) }
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> &Block {
        // SAFETY: the mapping holds a zeroed (valid) Block at `metrics_at`,
        // aligned to 64 bytes within a page-aligned mapping; it lives as
        // long as the Slot.
        unsafe { &*self.base.cast::<u8>().add(self.metrics_at).cast::<Block>() }
    }

    /// Worker: application thread `thread` entered Python.
    pub fn enter(&self, thread: usize) {
        if let Some(stamp) = self.thread_stamps().get(thread) {
            stamp.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Worker: application thread `thread` left Python.
    pub fn leave(&self, thread: usize) {
        if let Some(stamp) = self.thread_stamps().get(thread) {
            stamp.store(0, Ordering::Relaxed);
        }
    }

    pub fn set_ready(&self) {
        self.layout().ready.store(1, Ordering::Relaxed);
        self.tick();
    }

    pub fn is_ready(&self) -> bool {
        self.layout().ready.load(Ordering::Relaxed) == 1
    }

    pub fn tick(&self) {
        self.layout()
            .loop_tick_ms
            .store(now_ms(), Ordering::Relaxed);
    }

    /// Worker: counts a served request; returns the new total.
    pub fn count_request(&self) -> u64 {
        self.layout().requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn set_exit_reason(&self, reason: u32) {
        self.layout().exit_reason.store(reason, Ordering::Relaxed);
    }

    /// Worker: records why it leaves and asks its own main thread for a
    /// graceful stop (the same path as a SIGTERM from the master).
    pub fn stop_worker(&self, reason: u32) {
        self.set_exit_reason(reason);
        // SAFETY: signalling our own process.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    }

    pub fn exit_reason(&self) -> u32 {
        self.layout().exit_reason.load(Ordering::Relaxed)
    }

    /// Master: how long the longest-running thread has been in Python, if any.
    pub fn longest_in_python_ms(&self, now: u64) -> Option<u64> {
        self.thread_stamps()
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .map(|t| now.saturating_sub(t))
            .max()
    }

    /// Master: how long since the event loop last ticked.
    pub fn loop_silence_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.layout().loop_tick_ms.load(Ordering::Relaxed))
    }
}

/// A flag shared by the master and all its workers: the first worker to
/// fail loading the application claims it and prints the error, so the
/// message is shown once however many workers fail.
pub struct BootFailure(Slot);

impl BootFailure {
    pub fn new() -> std::io::Result<Self> {
        Slot::new(0).map(BootFailure)
    }

    /// True for the first caller only.
    pub fn claim(&self) -> bool {
        self.0
            .layout()
            .exit_reason
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_ticks() {
        let slot = Slot::new(3).unwrap();
        let now = now_ms();
        assert_eq!(slot.longest_in_python_ms(now), None);
        slot.enter(1);
        assert!(slot.longest_in_python_ms(now + 50).unwrap() >= 50);
        slot.leave(1);
        assert_eq!(slot.longest_in_python_ms(now), None);
        slot.enter(7); // beyond the slot's threads: ignored
        assert_eq!(slot.count_request(), 1);
        assert!(slot.loop_silence_ms(now_ms()) < 1000);
    }

    #[test]
    fn shared_across_fork() {
        let slot = Slot::new(1).unwrap();
        // SAFETY: the child only touches the atomic and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            slot.set_exit_reason(EXIT_MAX_REQUESTS);
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(slot.exit_reason(), EXIT_MAX_REQUESTS);
    }
}

//! Prometheus metrics (`--metrics-bind`): what each worker records, how
//! the records add up, and the text a scrape gets.
//!
//! Each worker records into a `Block` of atomics in its shared memory page
//! (`liveness::Slot`), so recording is a few relaxed additions on memory no
//! other process writes, and the master reads every block for one scrape
//! of the whole server. When a worker exits, the master adds its counters
//! to the totals of the workers before it, so replacing a worker resets
//! nothing. Label sets are fixed: no path or host ever becomes a label.

pub mod exporter;
pub mod text;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::proto::error::ClientErrorKind;

/// The `method` label's values; any other method counts as "other".
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

/// The `status` label's values: the status class.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds of the duration histograms' buckets, in seconds (the last
/// bucket, +Inf, is implied).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `BUCKETS` in nanoseconds, for the comparisons on the recording path.
const BUCKET_NS: [u64; 14] = {
    let mut ns = [0u64; 14];
    let mut i = 0;
    while i < 14 {
        ns[i] = (BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

/// The `reason` label of worker restarts.
pub const RESTART_REASONS: [&str; 5] = ["timeout", "max_requests", "memory", "crash", "reload"];

/// A duration histogram: a count per bucket (not cumulative: the text
/// adds them up) and the sum of the observations.
#[repr(C)]
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; 15],
    sum_ns: AtomicU64,
}

/// Nanoseconds on the monotonic clock, for durations the metrics record:
/// a subtraction of two of these costs a few instructions, where
/// `Instant::elapsed` cost about 130 (measured with callgrind).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        self.observe_ns(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn observe_ns(&self, ns: u64) {
        let bucket = BUCKET_NS.iter().position(|&le| ns <= le).unwrap_or(14);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }
}

/// One worker's records, in shared memory (all zero is a valid start).
#[repr(C)]
#[derive(Default)]
pub struct Block {
    /// Requests answered, by method and status class.
    requests: [[AtomicU64; 5]; 8],
    /// From the request head read to the response sent.
    request_time: Histogram,
    /// How long a request held an application thread.
    application_time: Histogram,
    /// How long a request waited for an application thread (the kernel's
    /// count, read only with `--queue-timeout`).
    queue_wait: Histogram,
    body_bytes_received: AtomicU64,
    body_bytes_sent: AtomicU64,
    client_errors: [AtomicU64; ClientErrorKind::ALL.len()],
    // Gauges: this worker's now.
    in_flight: AtomicU64,
    threads_busy: AtomicU64,
    connections_open: AtomicU64,
}

impl Block {
    /// A request answered with `status`, `body_sent` body bytes, `took_ns`
    /// nanoseconds after its head was read (0: not timed, a refusal).
    pub fn request_done(
        &self,
        method: &[u8],
        status: u16,
        body_received: u64,
        body_sent: u64,
        took_ns: u64,
    ) {
        let method = match method {
            b"GET" => 0,
            b"HEAD" => 1,
            b"POST" => 2,
            b"PUT" => 3,
            b"DELETE" => 4,
            b"PATCH" => 5,
            b"OPTIONS" => 6,
            _ => 7,
        };
        if status == 0 {
            // The client left before a response began: no status to count.
            return;
        }
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        self.requests[method][class].fetch_add(1, Relaxed);
        if body_received > 0 {
            self.body_bytes_received.fetch_add(body_received, Relaxed);
        }
        self.body_bytes_sent.fetch_add(body_sent, Relaxed);
        if took_ns > 0 {
            self.request_time.observe_ns(took_ns);
        }
    }

    pub fn client_error(&self, kind: ClientErrorKind) {
        self.client_errors[kind.index()].fetch_add(1, Relaxed);
    }

    pub fn queue_waited(&self, waited: Duration) {
        self.queue_wait.observe(waited);
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    pub fn request_ended(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    pub fn thread_claimed(&self) {
        self.threads_busy.fetch_add(1, Relaxed);
    }

    /// A thread let go after `held_ns` nanoseconds.
    pub fn thread_freed(&self, held_ns: u64) {
        self.threads_busy.fetch_sub(1, Relaxed);
        self.application_time.observe_ns(held_ns);
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }
}

/// A histogram's values, added up over workers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramTotals {
    pub buckets: [u64; 15],
    pub sum_ns: u64,
}

impl HistogramTotals {
    fn add(&mut self, h: &Histogram) {
        for (total, bucket) in self.buckets.iter_mut().zip(&h.buckets) {
            *total += bucket.load(Relaxed);
        }
        self.sum_ns += h.sum_ns.load(Relaxed);
    }

    fn add_totals(&mut self, other: &HistogramTotals) {
        for (total, n) in self.buckets.iter_mut().zip(other.buckets) {
            *total += n;
        }
        self.sum_ns += other.sum_ns;
    }
}

/// Counters added up over workers (those running and those gone).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub requests: [[u64; 5]; 8],
    pub request_time: HistogramTotals,
    pub application_time: HistogramTotals,
    pub queue_wait: HistogramTotals,
    pub body_bytes_received: u64,
    pub body_bytes_sent: u64,
    pub client_errors: [u64; ClientErrorKind::ALL.len()],
}

impl Totals {
    /// Adds a worker's counters.
    pub fn add(&mut self, block: &Block) {
        for (row, counters) in self.requests.iter_mut().zip(&block.requests) {
            for (total, n) in row.iter_mut().zip(counters) {
                *total += n.load(Relaxed);
            }
        }
        self.request_time.add(&block.request_time);
        self.application_time.add(&block.application_time);
        self.queue_wait.add(&block.queue_wait);
        self.body_bytes_received += block.body_bytes_received.load(Relaxed);
        self.body_bytes_sent += block.body_bytes_sent.load(Relaxed);
        for (total, n) in self.client_errors.iter_mut().zip(&block.client_errors) {
            *total += n.load(Relaxed);
        }
    }

    /// Adds totals kept from before (workers gone).
    pub fn add_totals(&mut self, other: &Totals) {
        for (row, counters) in self.requests.iter_mut().zip(&other.requests) {
            for (total, n) in row.iter_mut().zip(counters) {
                *total += n;
            }
        }
        self.request_time.add_totals(&other.request_time);
        self.application_time.add_totals(&other.application_time);
        self.queue_wait.add_totals(&other.queue_wait);
        self.body_bytes_received += other.body_bytes_received;
        self.body_bytes_sent += other.body_bytes_sent;
        for (total, n) in self.client_errors.iter_mut().zip(other.client_errors) {
            *total += n;
        }
    }
}

/// Gauges of the running workers, added up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    pub in_flight: u64,
    pub threads_busy: u64,
    pub connections_open: u64,
}

impl Gauges {
    pub fn add(&mut self, block: &Block) {
        self.in_flight += block.in_flight.load(Relaxed);
        self.threads_busy += block.threads_busy.load(Relaxed);
        self.connections_open += block.connections_open.load(Relaxed);
    }
}

/// What only the process that serves the scrape knows.
#[derive(Debug, Clone, Default)]
pub struct ServerFacts {
    pub workers: u64,
    pub threads: u64,
    /// Resident memory of each running worker, in bytes.
    pub worker_rss: Vec<u64>,
    pub restarts: [u64; RESTART_REASONS.len()],
    pub uptime: Duration,
}

/// Resident memory of process `pid`, in bytes (from /proc).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_micros(501));
        h.observe(Duration::from_secs(60));
        let mut t = HistogramTotals::default();
        t.add(&h);
        assert_eq!(t.buckets[0], 1);
        assert_eq!(t.buckets[1], 1);
        assert_eq!(t.buckets[14], 1);
        assert_eq!(t.sum_ns, 500_000 + 501_000 + 60_000_000_000);
    }

    #[test]
    fn requests_by_method_and_class() {
        let b = Block::default();
        b.request_done(b"GET", 200, 0, 10, 0);
        b.request_done(b"BREW", 418, 5, 0, 0);
        b.request_done(b"POST", 503, 0, 0, 1_000_000);
        let mut t = Totals::default();
        t.add(&b);
        t.add(&b);
        assert_eq!(t.requests[0][1], 2);
        assert_eq!(t.requests[7][3], 2);
        assert_eq!(t.requests[2][4], 2);
        assert_eq!((t.body_bytes_received, t.body_bytes_sent), (10, 20));
        assert_eq!(t.request_time.buckets.iter().sum::<u64>(), 2);
    }
}

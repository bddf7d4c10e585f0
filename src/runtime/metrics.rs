//! What the process that answers scrapes (the master, or a lone
//! `ferrule.serve()` process) knows of its workers for the metrics: their
//! pages while they run, the counters of those gone, and why each went.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::liveness::Slot;
use crate::metrics::{self, exporter, Gauges, ServerFacts, Totals, RESTART_REASONS};

pub struct Registry {
    live: Vec<(libc::pid_t, Arc<Slot>)>,
    /// The counters of the workers that have exited.
    retired: Totals,
    restarts: [u64; RESTART_REASONS.len()],
    started: Instant,
    threads_per_worker: u64,
}

impl Registry {
    pub fn new(threads_per_worker: u64) -> Registry {
        Registry {
            live: Vec::new(),
            retired: Totals::default(),
            restarts: [0; RESTART_REASONS.len()],
            started: Instant::now(),
            threads_per_worker,
        }
    }

    /// `slot` is the worker's own, mapped afresh for it (its gauges start
    /// at zero; the worker may be counting already).
    pub fn worker_started(&mut self, pid: libc::pid_t, slot: Arc<Slot>) {
        self.live.push((pid, slot));
    }

    /// A worker has exited: its counters join the totals; `replaced_for`
    /// is the restart's reason label, when it was replaced for one.
    pub fn worker_exited(&mut self, pid: libc::pid_t, replaced_for: Option<&str>) {
        if let Some(index) = self.live.iter().position(|(p, _)| *p == pid) {
            let (_, slot) = self.live.remove(index);
            self.retired.add(slot.metrics());
        }
        if let Some(index) = replaced_for.and_then(|r| RESTART_REASONS.iter().position(|&x| x == r))
        {
            self.restarts[index] += 1;
        }
    }

    /// The text of a scrape.
    pub fn render(&self) -> String {
        let mut totals = self.retired.clone();
        let mut gauges = Gauges::default();
        for (_, slot) in &self.live {
            totals.add(slot.metrics());
            gauges.add(slot.metrics());
        }
        let facts = ServerFacts {
            workers: self.live.len() as u64,
            threads: self.live.len() as u64 * self.threads_per_worker,
            worker_rss: self
                .live
                .iter()
                .filter_map(|(pid, _)| metrics::rss_bytes(*pid))
                .collect(),
            restarts: self.restarts,
            uptime: self.started.elapsed(),
        };
        metrics::text::render(&totals, &gauges, &facts)
    }
}

/// Starts the metrics listener, bound already, answering from `registry`.
pub fn serve_scrapes(
    listener: std::net::TcpListener,
    registry: Arc<Mutex<Registry>>,
) -> std::io::Result<()> {
    exporter::start(
        listener,
        Arc::new(move || registry.lock().unwrap_or_else(|e| e.into_inner()).render()),
    )
}

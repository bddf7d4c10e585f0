//! The Prometheus text exposition format (version 0.0.4) of the metrics,
//! and the README's list of them, both from one table.

use std::fmt::Write;

use super::{
    Gauges, HistogramTotals, ServerFacts, Totals, BUCKETS, CLASSES, METHODS, RESTART_REASONS,
};
use crate::proto::error::ClientErrorKind;

/// Every metric: name, type, labels, meaning.
pub const METRICS: [(&str, &str, &str, &str); 15] = [
    ("ferrule_requests_total", "counter", "method, status",
     "Requests answered, by method (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, other) and status class (1xx to 5xx); the server's own refusals included."),
    ("ferrule_request_duration_seconds", "histogram", "",
     "From a request's head being read to its response being sent."),
    ("ferrule_application_duration_seconds", "histogram", "",
     "How long a request held an application thread (running Python)."),
    ("ferrule_request_queue_seconds", "histogram", "",
     "How long a request waited for an application thread, by the kernel's count; recorded only with --queue-timeout."),
    ("ferrule_request_body_bytes_total", "counter", "",
     "Request body bytes: each request's Content-Length, or the length of a body received whole before the application ran (a chunked body streamed with --stream-uploads is not counted)."),
    ("ferrule_response_body_bytes_total", "counter", "", "Response body bytes sent."),
    ("ferrule_client_errors_total", "counter", "kind",
     "Requests the server refused itself, by kind: bad_request, request_timeout, content_too_large, uri_too_long, expectation_failed, header_fields_too_large, not_implemented, version_not_supported, overloaded (--queue-timeout), server_error."),
    ("ferrule_requests_in_flight", "gauge", "", "Requests read and not yet answered."),
    ("ferrule_threads_busy", "gauge", "", "Application threads running a request."),
    ("ferrule_threads", "gauge", "", "Application threads in all (--workers x --threads)."),
    ("ferrule_connections_open", "gauge", "", "Client connections open."),
    ("ferrule_workers", "gauge", "", "Worker processes running."),
    ("ferrule_worker_restarts_total", "counter", "reason",
     "Workers replaced, by reason: timeout, max_requests, memory, crash, reload."),
    ("ferrule_worker_resident_memory_bytes", "gauge", "stat",
     "Resident memory of the workers: their sum (stat=\"sum\") and the largest (stat=\"max\")."),
    ("ferrule_uptime_seconds", "gauge", "", "Seconds since the server started."),
];

/// The scrape's text.
pub fn render(totals: &Totals, gauges: &Gauges, facts: &ServerFacts) -> String {
    let mut out = String::with_capacity(8192);
    for (name, kind, _, help) in METRICS {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        match name {
            "ferrule_requests_total" => {
                for (method, row) in METHODS.iter().zip(&totals.requests) {
                    for (class, n) in CLASSES.iter().zip(row) {
                        let _ =
                            writeln!(out, "{name}{{method=\"{method}\",status=\"{class}\"}} {n}");
                    }
                }
            }
            "ferrule_request_duration_seconds" => histogram(&mut out, name, &totals.request_time),
            "ferrule_application_duration_seconds" => {
                histogram(&mut out, name, &totals.application_time)
            }
            "ferrule_request_queue_seconds" => histogram(&mut out, name, &totals.queue_wait),
            "ferrule_request_body_bytes_total" => value(&mut out, name, totals.body_bytes_received),
            "ferrule_response_body_bytes_total" => value(&mut out, name, totals.body_bytes_sent),
            "ferrule_client_errors_total" => {
                for (kind, n) in ClientErrorKind::ALL.iter().zip(totals.client_errors) {
                    let _ = writeln!(out, "{name}{{kind=\"{}\"}} {n}", kind.label());
                }
            }
            "ferrule_requests_in_flight" => value(&mut out, name, gauges.in_flight),
            "ferrule_threads_busy" => value(&mut out, name, gauges.threads_busy),
            "ferrule_threads" => value(&mut out, name, facts.threads),
            "ferrule_connections_open" => value(&mut out, name, gauges.connections_open),
            "ferrule_workers" => value(&mut out, name, facts.workers),
            "ferrule_worker_restarts_total" => {
                for (reason, n) in RESTART_REASONS.iter().zip(facts.restarts) {
                    let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
                }
            }
            "ferrule_worker_resident_memory_bytes" => {
                let sum: u64 = facts.worker_rss.iter().sum();
                let max = facts.worker_rss.iter().copied().max().unwrap_or(0);
                let _ = writeln!(out, "{name}{{stat=\"sum\"}} {sum}");
                let _ = writeln!(out, "{name}{{stat=\"max\"}} {max}");
            }
            "ferrule_uptime_seconds" => {
                let _ = writeln!(out, "{name} {:.3}", facts.uptime.as_secs_f64());
            }
            _ => {}
        }
    }
    out
}

fn value(out: &mut String, name: &str, n: u64) {
    let _ = writeln!(out, "{name} {n}");
}

/// Cumulative buckets, then the sum and the count (the +Inf bucket).
fn histogram(out: &mut String, name: &str, h: &HistogramTotals) {
    let mut cumulative = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        match BUCKETS.get(i) {
            Some(le) => {
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let _ = writeln!(out, "{name}_sum {}", h.sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {cumulative}");
}

/// The metrics as a Markdown table, for the README.
pub fn reference() -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for (name, kind, labels, help) in METRICS {
        let _ = writeln!(out, "| `{name}` | {kind} | {labels} | {help} |");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_type_and_a_value() {
        let text = render(
            &Totals::default(),
            &Gauges::default(),
            &ServerFacts::default(),
        );
        for (name, kind, _, _) in METRICS {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
            let sample = if kind == "histogram" {
                format!("{name}_count ")
            } else {
                name.to_string()
            };
            assert!(
                text.lines()
                    .any(|l| !l.starts_with('#') && l.starts_with(&sample)),
                "{name}"
            );
        }
        assert!(text.contains("ferrule_request_duration_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(text.contains("ferrule_request_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
    }
}

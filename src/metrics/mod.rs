//! Request metrics: counts by broker, location, operation and status class,
//! latency histograms, and upstream errors by kind.
//!
//! Each route holds an `Arc<RouteStats>` taken from [`RequestMetrics`] when
//! its table is built, so the hot path only increments atomics (no lock, no
//! map lookup), and the counters of a route survive reloads: the same
//! `(broker, location)` gets the same `RouteStats` back. Per-operation
//! blocks are allocated on first use, so ten thousand routes that each see
//! two operations cost little.

pub mod process;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::osb::Operation;
use crate::upstream::Failure;

/// Upper bounds of the latency histogram buckets, in seconds (the OSB
/// range: fast catalog answers up to the platform's 60 s limit).
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0,
];

const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Default)]
struct OpStats {
    by_class: [AtomicU64; 6],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// The counters of one route (`broker`, `location`).
pub struct RouteStats {
    broker: Arc<str>,
    location: Arc<str>,
    ops: [OnceLock<Box<OpStats>>; Operation::ALL.len()],
    upstream_errors: [AtomicU64; Failure::ALL.len()],
}

impl std::fmt::Debug for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteStats({}/{})", self.broker, self.location)
    }
}

impl RouteStats {
    /// Counters for a route.
    pub fn new(broker: &str, location: &str) -> Self {
        RouteStats {
            broker: broker.into(),
            location: location.into(),
            ops: Default::default(),
            upstream_errors: Default::default(),
        }
    }

    /// Counts one finished exchange (`status` 0: no response was sent).
    pub fn observe(&self, op: Operation, status: u16, took: Duration) {
        let s = self.ops[op as usize].get_or_init(Box::default);
        let class = match status {
            100..=599 => (status / 100) as usize,
            _ => 0,
        };
        s.by_class[class].fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            s.buckets[i].fetch_add(1, Relaxed);
        }
        s.count.fetch_add(1, Relaxed);
        s.sum_us.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// Counts one upstream failure of `kind`.
    pub fn upstream_error(&self, kind: Failure) {
        self.upstream_errors[kind.index()].fetch_add(1, Relaxed);
    }
}

/// Every route's counters, by `(broker, location)`. The lock is taken when
/// a table is built and when metrics are rendered, never per request.
#[derive(Default)]
pub struct RequestMetrics {
    routes: Mutex<BTreeMap<(String, String), Arc<RouteStats>>>,
}

impl RequestMetrics {
    /// The counters of a route, the same ones across reloads.
    pub fn route(&self, broker: &str, location: &str) -> Arc<RouteStats> {
        let mut m = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((broker.to_string(), location.to_string()))
            .or_insert_with(|| Arc::new(RouteStats::new(broker, location)))
            .clone()
    }

    /// Prometheus text for every route's counters.
    pub fn render(&self, out: &mut String) {
        let routes: Vec<Arc<RouteStats>> = {
            let m = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            m.values().cloned().collect()
        };
        let _ = writeln!(
            out,
            "# HELP osb_gateway_requests_total Platform requests by broker, location, operation and status class.\n# TYPE osb_gateway_requests_total counter"
        );
        for r in &routes {
            for op in Operation::ALL {
                let Some(s) = r.ops[op as usize].get() else {
                    continue;
                };
                for (i, class) in CLASSES.iter().enumerate() {
                    let n = s.by_class[i].load(Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "osb_gateway_requests_total{{{},operation=\"{}\",status_class=\"{class}\"}} {n}",
                            labels(r),
                            op.as_str()
                        );
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP osb_gateway_request_duration_seconds Time from request arrival to the end of the response body.\n# TYPE osb_gateway_request_duration_seconds histogram"
        );
        for r in &routes {
            for op in Operation::ALL {
                let Some(s) = r.ops[op as usize].get() else {
                    continue;
                };
                let l = format!("{},operation=\"{}\"", labels(r), op.as_str());
                let mut cum = 0;
                for (i, b) in BUCKETS.iter().enumerate() {
                    cum += s.buckets[i].load(Relaxed);
                    let _ = writeln!(
                        out,
                        "osb_gateway_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {cum}"
                    );
                }
                let count = s.count.load(Relaxed);
                let _ = writeln!(
                    out,
                    "osb_gateway_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}\nosb_gateway_request_duration_seconds_sum{{{l}}} {}\nosb_gateway_request_duration_seconds_count{{{l}}} {count}",
                    s.sum_us.load(Relaxed) as f64 / 1e6
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP osb_gateway_upstream_errors_total Failures reaching or reading a broker, by kind.\n# TYPE osb_gateway_upstream_errors_total counter"
        );
        for r in &routes {
            for kind in Failure::ALL {
                let n = r.upstream_errors[kind.index()].load(Relaxed);
                let kind = kind.as_str();
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "osb_gateway_upstream_errors_total{{{},kind=\"{kind}\"}} {n}",
                        labels(r)
                    );
                }
            }
        }
    }
}

fn labels(r: &RouteStats) -> String {
    format!(
        "broker=\"{}\",location=\"{}\"",
        escape_label(&r.broker),
        escape_label(&r.location)
    )
}

/// Escapes a Prometheus label value (`\`, `"` and newlines).
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class_and_bucket_and_survives_a_second_lookup() {
        let m = RequestMetrics::default();
        let r = m.route("pg", "eu");
        r.observe(Operation::FetchCatalog, 200, Duration::from_millis(3));
        r.observe(Operation::FetchCatalog, 503, Duration::from_secs(2));
        r.upstream_error(Failure::Connect);
        assert!(Arc::ptr_eq(&r, &m.route("pg", "eu")));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("osb_gateway_requests_total{broker=\"pg\",location=\"eu\",operation=\"FETCH_CATALOG\",status_class=\"2xx\"} 1"), "{out}");
        assert!(out.contains("status_class=\"5xx\"} 1"), "{out}");
        assert!(out.contains("le=\"0.005\"} 1"), "{out}");
        assert!(out.contains("le=\"2.5\"} 2"), "{out}");
        assert!(out.contains("le=\"+Inf\"} 2"), "{out}");
        assert!(out.contains("kind=\"connect\"} 1"), "{out}");
        assert!(
            !out.contains("PROVISION_INSTANCE"),
            "unused operations cost nothing"
        );
    }
}

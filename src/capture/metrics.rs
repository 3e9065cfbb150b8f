//! Capture counters, served by the admin plane's `/metrics` (Prometheus text).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the insert-latency histogram buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0];

/// Counters of the capture pipeline. All are monotonic except the three `_bytes` gauges.
#[derive(Debug, Default)]
pub struct CaptureMetrics {
    /// Records handed to the pipeline.
    pub captured: AtomicU64,
    /// Records acknowledged by the sink (ClickHouse or the local store).
    pub inserted: AtomicU64,
    /// Records written to the spool (sink down or slow, or queue full).
    pub spooled: AtomicU64,
    /// Spooled records later acknowledged by the sink.
    pub replayed: AtomicU64,
    /// Records the sink refused as bad data, kept in the dead-letter directory.
    pub dead_lettered: AtomicU64,
    /// Records lost: could not even be spooled (disk full or unwritable).
    pub dropped: AtomicU64,
    /// Records whose captured bodies were left out because the finished
    /// records in memory held `capture.queue_max_bytes` (the record itself
    /// is kept).
    pub bodies_shed: AtomicU64,
    /// Bodies whose kept prefix was cut short because the exchanges in
    /// flight already held `capture.inflight_max_bytes` of body data.
    pub bodies_cut: AtomicU64,
    /// Bytes waiting in the in-memory queue (and, during a slow insert,
    /// being moved from it to the spool).
    pub queue_bytes: AtomicU64,
    /// Bytes of records sent straight to the spool (the pipeline behind),
    /// not written yet. With `queue_bytes`, bounded by
    /// `capture.queue_max_bytes`.
    pub spool_pending_bytes: AtomicU64,
    /// Body bytes kept by exchanges still streaming.
    pub inflight_bytes: AtomicU64,
    /// Failed insert attempts (each batch retried later from the spool).
    pub insert_failures: AtomicU64,
    insert_seconds_sum_us: AtomicU64,
    insert_count: AtomicU64,
    insert_buckets: [AtomicU64; BUCKETS.len()],
}

impl CaptureMetrics {
    /// Records one successful insert's latency.
    pub fn observe_insert(&self, took: Duration) {
        self.insert_count.fetch_add(1, Relaxed);
        self.insert_seconds_sum_us
            .fetch_add(took.as_micros() as u64, Relaxed);
        let s = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if s <= *le {
                self.insert_buckets[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// Number of successful inserts observed.
    pub fn inserts(&self) -> u64 {
        self.insert_count.load(Relaxed)
    }

    /// Prometheus text exposition of every counter.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let counters = [
            ("captured", &self.captured, "Exchanges captured."),
            (
                "inserted",
                &self.inserted,
                "Records acknowledged by the capture store.",
            ),
            (
                "spooled",
                &self.spooled,
                "Records written to the on-disk spool.",
            ),
            ("replayed", &self.replayed, "Spooled records later stored."),
            (
                "dead_lettered",
                &self.dead_lettered,
                "Records refused by the store as bad data.",
            ),
            (
                "dropped",
                &self.dropped,
                "Records lost because the spool could not be written.",
            ),
            (
                "bodies_shed",
                &self.bodies_shed,
                "Records stored without their bodies because finished records in memory held capture.queue_max_bytes.",
            ),
            (
                "bodies_cut",
                &self.bodies_cut,
                "Bodies kept shorter than capture.max_body_bytes because the exchanges in flight held capture.inflight_max_bytes.",
            ),
            (
                "insert_failures",
                &self.insert_failures,
                "Failed insert attempts.",
            ),
        ];
        let (regions, bytes) = crate::store::segments::corruption();
        let corrupt = [
            (
                "corrupt_regions",
                regions,
                "Bad regions (CRC, length, torn tail) skipped in spool, dead-letter and local-store segments, each counted once.",
            ),
            (
                "corrupt_bytes",
                bytes,
                "Bytes in those regions (at most the records they held are lost).",
            ),
        ];
        let values = counters
            .iter()
            .map(|(n, v, h)| (*n, v.load(Relaxed), *h))
            .chain(corrupt);
        for (name, v, help) in values {
            let _ = writeln!(out, "# HELP osb_gateway_capture_{name}_total {help}");
            let _ = writeln!(out, "# TYPE osb_gateway_capture_{name}_total counter");
            let _ = writeln!(out, "osb_gateway_capture_{name}_total {v}");
        }
        let gauges = [
            (
                "queue_bytes",
                &self.queue_bytes,
                "Bytes waiting in the capture queue.",
            ),
            (
                "spool_pending_bytes",
                &self.spool_pending_bytes,
                "Bytes of records sent straight to the spool, not written yet (with queue_bytes, at most capture.queue_max_bytes).",
            ),
            (
                "inflight_bytes",
                &self.inflight_bytes,
                "Body bytes kept by exchanges still streaming.",
            ),
        ];
        for (name, v, help) in gauges {
            let _ = writeln!(out, "# HELP osb_gateway_capture_{name} {help}");
            let _ = writeln!(out, "# TYPE osb_gateway_capture_{name} gauge");
            let _ = writeln!(out, "osb_gateway_capture_{name} {}", v.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP osb_gateway_capture_insert_seconds Latency of successful inserts."
        );
        let _ = writeln!(out, "# TYPE osb_gateway_capture_insert_seconds histogram");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "osb_gateway_capture_insert_seconds_bucket{{le=\"{le}\"}} {}",
                self.insert_buckets[i].load(Relaxed)
            );
        }
        let count = self.insert_count.load(Relaxed);
        let _ = writeln!(
            out,
            "osb_gateway_capture_insert_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.insert_seconds_sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "osb_gateway_capture_insert_seconds_sum {sum}");
        let _ = writeln!(out, "osb_gateway_capture_insert_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = CaptureMetrics::default();
        m.captured.fetch_add(3, Relaxed);
        m.observe_insert(Duration::from_millis(3));
        let text = m.render_prometheus();
        assert!(
            text.contains("osb_gateway_capture_captured_total 3"),
            "{text}"
        );
        assert!(text.contains("osb_gateway_capture_insert_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("osb_gateway_capture_insert_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("osb_gateway_capture_insert_seconds_count 1"));
        assert!(text.contains("# TYPE osb_gateway_capture_inflight_bytes gauge\nosb_gateway_capture_inflight_bytes 0\n"));
    }
}

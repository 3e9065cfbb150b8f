//! Records written to the spool from here rather than through the
//! pipeline's batches: the overflow queue (the pipeline behind, the memory
//! bound reached, or the pipeline gone) and its one drain job on the
//! blocking pool, and the spool appends both use, also for the pipeline's
//! copies of slow batches. `CaptureTx::overflow` only queues and wakes the
//! drain job; the spool writes are blocking I/O, run off the reactor.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use super::{CaptureRecord, CaptureTx, RawExchange, TxInner};

/// The overflow path's queue: pushes never lock; one job on the blocking
/// pool drains it in batches (one spool append each), instead of one
/// blocking task per record (hundreds of threads, each with its own malloc
/// arena, under a sustained overflow of large bodies).
pub(super) struct Overflow {
    tx: std::sync::mpsc::Sender<RawExchange>,
    rx: Mutex<std::sync::mpsc::Receiver<RawExchange>>,
    running: AtomicBool,
}

impl Default for Overflow {
    fn default() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        Overflow {
            tx,
            rx: Mutex::new(rx),
            running: AtomicBool::new(false),
        }
    }
}

/// Leaves a record's bodies out (their sizes stay; `truncated` says so).
pub(super) fn shed_bodies(raw: &mut RawExchange) {
    for body in [&mut raw.request_body, &mut raw.response_body] {
        body.truncated |= !body.bytes.is_empty();
        body.bytes = Vec::new();
    }
}

impl CaptureTx {
    /// Pipeline behind, memory bound reached, or pipeline gone: redact and
    /// spool on the blocking pool.
    pub(super) fn overflow(&self, raw: RawExchange) {
        let weight = raw.weight() as u64;
        self.0
            .metrics
            .spool_pending_bytes
            .fetch_add(weight, Relaxed);
        if self.0.overflow.tx.send(raw).is_err() {
            return;
        }
        if self.0.overflow.running.swap(true, SeqCst) {
            return; // a drain job runs and will take it
        }
        let inner = self.0.clone();
        let job = move || inner.drain_overflow();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(job);
            }
            Err(_) => job(),
        }
    }
}

impl TxInner {
    /// Spools overflowed records in batches until none is left.
    fn drain_overflow(&self) {
        // NB: bounded in bytes too: 256 records of 1 MB bodies made a
        // 0.5 GB batch (with the JSON the spool then wrote).
        const BATCH: usize = 256;
        const BATCH_BYTES: usize = 8 << 20;
        loop {
            let mut batch = Vec::new();
            let mut bytes = 0;
            {
                let rx = self.overflow.rx.lock().unwrap_or_else(|p| p.into_inner());
                while batch.len() < BATCH && bytes < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(r) => {
                            bytes += r.weight();
                            batch.push(r);
                        }
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    self.overflow.running.store(false, SeqCst);
                    // NB: a record pushed between the last try_recv and the
                    // store above saw `running` still set: take it here.
                    match rx.try_recv() {
                        Ok(r) => {
                            self.overflow.running.store(true, SeqCst);
                            bytes += r.weight();
                            batch.push(r);
                        }
                        Err(_) => return,
                    }
                }
            }
            let records: Vec<Arc<CaptureRecord>> = batch
                .into_iter()
                .map(|raw| Arc::new(raw.into_record(&self.redactor)))
                .collect();
            for r in &records {
                self.publish(r);
            }
            self.spool_records(&records);
            self.metrics
                .spool_pending_bytes
                .fetch_sub(bytes as u64, Relaxed);
        }
    }

    /// Appends records to the spool (blocking I/O: call off the reactor);
    /// records that could not be written are lost, and counted.
    pub(super) fn spool_records(&self, records: &[Arc<CaptureRecord>]) {
        self.append_spool(records, true);
    }

    /// Appends a copy of records that are also still in memory (a batch
    /// whose insert is slow); a failure loses nothing, so counts nothing.
    /// How many of them, from the first, are on disk.
    pub(super) fn spool_copy(&self, records: &[Arc<CaptureRecord>]) -> usize {
        self.append_spool(records, false)
    }

    /// Appends `records` in order; returns how many, from the first, are
    /// on disk (the rest are dropped and counted if `lost_on_failure`).
    fn append_spool(&self, records: &[Arc<CaptureRecord>], lost_on_failure: bool) -> usize {
        let Some(spool) = &self.spool else {
            return 0;
        };
        // NB: segments are sealed at 16 MiB as well as on each replay tick,
        // so a replay never reads more than that (plus one append) at once.
        const SEGMENT_BYTES: u64 = 16 << 20;
        // NB: an append is all or nothing (segments::Segments::append), so
        // a failed one lost exactly its records, and a failed seal after a
        // good append lost none: the records are on disk. Appends go in
        // chunks of about APPEND_CHUNK bytes, so a disk with room for half
        // a batch keeps that half (one append of a whole 1 s batch of
        // catalog records was refused whole by a tmpfs with 256 KiB left).
        // Each chunk is encoded just before its append, and the segment is
        // sealed as soon as it is full: encoding a whole slow batch and the
        // queue drained with it first held their JSON (tens of MB of 1 MB
        // bodies) beside the records, and the seal after the last chunk let
        // one segment grow by all of it, which a replay then read whole.
        //
        // The frames are the local store's (`store::local::format`): each
        // distinct body once per segment, raw. As JSON records, escaping 1 MB
        // bodies was 16% of the ClickHouse gateway's CPU under 1 MB uploads
        // (`benches/ladder.py --workload 1mb --rungs clickhouse`), and each
        // repeated body was written again.
        const APPEND_CHUNK: usize = 64 << 10;
        let mut written = 0usize;
        let mut failure = None;
        while written < records.len() {
            let mut n = 0;
            let mut bytes = 0;
            for r in &records[written..] {
                if n > 0 && bytes >= APPEND_CHUNK {
                    break;
                }
                bytes += r.request_body.len() + r.response_body.len() + 512;
                n += 1;
            }
            let chunk = &records[written..written + n];
            let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
            let mut bodies = self.spool_bodies.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = bodies.append(&mut spool, chunk) {
                failure = Some(e);
                break;
            }
            drop(bodies);
            written += n;
            if let Some((_, bytes, _)) = spool.open_segment() {
                if bytes >= SEGMENT_BYTES {
                    if let Err(e) = spool.seal() {
                        tracing::warn!(error = %e, "cannot seal a spool segment; its records are kept");
                    }
                }
            }
        }
        self.metrics.spooled.fetch_add(written as u64, Relaxed);
        let Some(e) = failure else {
            return written;
        };
        let lost = (records.len() - written) as u64;
        if lost_on_failure {
            self.metrics.dropped.fetch_add(lost, Relaxed);
        }
        if !self.spool_full.swap(true, Relaxed) {
            tracing::error!(error = %e, records = lost, "cannot write the capture spool: records are being lost (see osb_gateway_capture_dropped_total); the store is probed every 250 ms meanwhile");
        }
        written
    }

    /// Whether a spool append failed since the store last answered.
    pub(super) fn spool_is_full(&self) -> bool {
        self.spool_full.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::format;
    use crate::store::segments::{self, Segments};

    /// One large spool write (a slow batch, the queue drained with it)
    /// seals its segments as they fill: none grows far past 16 MiB, so a
    /// replay never reads more than that at once.
    #[test]
    fn a_large_spool_write_seals_segments_as_they_fill() {
        let dir = tempfile::tempdir().unwrap();
        let tx = CaptureTx::disabled("test");
        let mut inner = Arc::try_unwrap(tx.0).ok().expect("a fresh queue");
        let segments = Segments::open(dir.path()).unwrap();
        inner.spool = Some(Arc::new(Mutex::new(segments)));
        let records: Vec<Arc<CaptureRecord>> = (0..40)
            .map(|i| {
                Arc::new(CaptureRecord {
                    request_body: format!("{i:02}{}", "b".repeat(1 << 20)),
                    ..Default::default()
                })
            })
            .collect();
        assert_eq!(inner.spool_copy(&records), 40);
        let all = inner.spool.as_ref().unwrap().lock().unwrap().all().unwrap();
        assert!(all.len() >= 3, "{} segments", all.len());
        for s in &all {
            assert!(
                s.bytes <= (17 << 20) + (1 << 20),
                "a segment of {} bytes",
                s.bytes
            );
        }
        let read: Vec<CaptureRecord> = all
            .iter()
            .flat_map(|s| format::decode(&segments::read(&s.path).unwrap().records))
            .collect();
        assert_eq!(read.len(), 40, "every record on disk once");
        assert!(read
            .iter()
            .zip(&records)
            .all(|(a, b)| a.request_body == b.request_body));
    }

    #[test]
    fn a_body_repeated_in_the_spool_is_written_once_per_segment() {
        let dir = tempfile::tempdir().unwrap();
        let tx = CaptureTx::disabled("test");
        let mut inner = Arc::try_unwrap(tx.0).ok().expect("a fresh queue");
        inner.spool = Some(Arc::new(Mutex::new(Segments::open(dir.path()).unwrap())));
        let upload = "u\"\\".repeat(1 << 18);
        let records: Vec<Arc<CaptureRecord>> = (0..10)
            .map(|_| {
                Arc::new(CaptureRecord {
                    id: uuid::Uuid::new_v4(),
                    request_body: upload.clone(),
                    ..Default::default()
                })
            })
            .collect();
        // NB: two writes, as two slow batches would be spooled.
        assert_eq!(inner.spool_copy(&records[..4]), 4);
        assert_eq!(inner.spool_copy(&records[4..]), 6);
        let all = inner.spool.as_ref().unwrap().lock().unwrap().all().unwrap();
        let bytes: u64 = all.iter().map(|s| s.bytes).sum();
        assert!(
            bytes < 2 * upload.len() as u64,
            "one copy of the body, raw (not escaped): {bytes} bytes"
        );
        let read: Vec<CaptureRecord> = all
            .iter()
            .flat_map(|s| format::decode(&segments::read(&s.path).unwrap().records))
            .collect();
        assert_eq!(read.len(), 10);
        for (a, b) in read.iter().zip(&records) {
            assert_eq!((a.id, a.request_body.len()), (b.id, upload.len()));
            assert!(a.request_body == upload && !a.request_body_truncated);
        }
    }
}

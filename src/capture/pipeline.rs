//! The pipeline task: queue → redacted records → batches → sink, with the
//! spool taking over while the sink is down or slow, and replaying when it
//! answers again (also after a restart: the spool is on disk). Spooling,
//! dead-lettering and replay are in `pipeline/spool.rs`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

mod spool;

use super::{CapturePaths, Queued, TxInner};
use crate::config::CaptureConfig;
use crate::store::clickhouse::ClickHouseWriter;
use crate::store::local::LocalStore;
use crate::store::segments::{self, Segments};
use crate::store::{CaptureRecord, SinkError};

/// Where batches go.
enum Sink {
    ClickHouse(Box<ClickHouseWriter>),
    Local(Arc<Mutex<LocalStore>>),
}

impl Sink {
    fn name(&self) -> &'static str {
        match self {
            Sink::ClickHouse(_) => "ClickHouse",
            Sink::Local(_) => "local store",
        }
    }

    /// Whether the store answers at all (a trivial query), within 2 s.
    async fn answers(&self) -> bool {
        match self {
            Sink::ClickHouse(w) => w.ping(Duration::from_secs(2)).await.is_ok(),
            Sink::Local(_) => true,
        }
    }

    async fn write(&mut self, rows: &[Arc<CaptureRecord>]) -> Result<(), SinkError> {
        match self {
            Sink::ClickHouse(w) => w.insert(rows).await,
            Sink::Local(store) => {
                let store = store.clone();
                let rows = rows.to_vec();
                tokio::task::spawn_blocking(move || {
                    store
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .append(&rows)
                })
                .await
                .map_err(|e| SinkError::Retryable(e.to_string()))?
                .map_err(|e| SinkError::Retryable(format!("local store: {e}")))
            }
        }
    }
}

/// A queued exchange made into its record: redacted, enriched, published
/// to live tails, and no longer counted in the queue's bytes.
fn record_of(inner: &TxInner, q: Queued) -> Arc<CaptureRecord> {
    inner
        .metrics
        .queue_bytes
        .fetch_sub(q.weight as u64, Relaxed);
    record_held(inner, q)
}

/// [`record_of`], still counted in the queue's bytes (the caller gives
/// its weight back).
fn record_held(inner: &TxInner, q: Queued) -> Arc<CaptureRecord> {
    let mut record = q.raw.into_record(&inner.redactor);
    if let Some(enrich) = inner.enricher.get() {
        enrich(&mut record);
    }
    let record = Arc::new(record);
    // NB: broadcast::send never waits; a slow subscriber lags on its own.
    inner.publish(&record);
    record
}

/// Segments replayed per tick at most, so replay never starves the queue.
const REPLAY_SEGMENTS_PER_TICK: usize = 2;

pub(super) struct Pipeline {
    inner: Arc<TxInner>,
    rx: mpsc::UnboundedReceiver<Queued>,
    spool: Arc<Mutex<Segments>>,
    dead: Arc<Mutex<Segments>>,
    sink: Sink,
    batch: Vec<Arc<CaptureRecord>>,
    batch_bytes: usize,
    cfg: CaptureConfig,
    backoff: Duration,
    down_until: Option<Instant>,
    /// When the store was last tried while the spool was full.
    last_probe: Option<Instant>,
    /// How many of the last write's rows, from the first, were also
    /// spooled because the write was slow.
    spooled_copy: usize,
    /// Spool segments the previous process left, not yet replayed, and the
    /// records replayed from them so far.
    inherited: (std::collections::HashSet<u64>, usize),
    /// Spool segments whose replay failed while the store answered
    /// otherwise, and how often in a row (see [`POISON_AFTER`]).
    poisoned: std::collections::HashMap<u64, u32>,
    stop: watch::Receiver<bool>,
    stopping: bool,
}

/// How often the store is tried while its backoff runs but the spool
/// cannot be written: each batch spooled then is a batch lost.
const FULL_SPOOL_PROBE: Duration = Duration::from_millis(250);

/// What one drain of the queue found.
enum Drained {
    Some,
    Nothing,
    Closed,
}

/// Replays of a segment that may fail in a row, while the store answers a
/// ping, before the chunk that fails is dead-lettered. Data the table
/// cannot take does not always come back as a bad-data code: a misread
/// length in RowBinary ends as "memory limit exceeded" (241) or "cannot
/// allocate" (173), which are retryable otherwise, and were retried
/// forever.
const POISON_AFTER: u32 = 5;

/// How often a flowing queue is drained (see `Pipeline::run`): the most a
/// record waits before it is batched and shown to live tails.
const DRAIN_INTERVAL: Duration = Duration::from_millis(5);

/// Longest the final flush on shutdown may take before its batch is spooled.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl Pipeline {
    pub(super) fn new(
        cfg: &CaptureConfig,
        paths: &CapturePaths,
        inner: Arc<TxInner>,
        rx: mpsc::UnboundedReceiver<Queued>,
        spool: Arc<Mutex<Segments>>,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let sink = match &cfg.clickhouse {
            Some(ch) => Sink::ClickHouse(Box::new(ClickHouseWriter::new(ch))),
            None => Sink::Local(Arc::new(Mutex::new(LocalStore::open(
                &paths.local,
                cfg.local,
            )?))),
        };
        let inherited = {
            let segs = spool.lock().unwrap_or_else(|p| p.into_inner()).all()?;
            if !segs.is_empty() {
                tracing::info!(
                    segments = segs.len(),
                    bytes = segs.iter().map(|s| s.bytes).sum::<u64>(),
                    "the capture spool holds records left by the previous process: they are replayed once the store answers"
                );
            }
            (segs.iter().map(|s| s.seq).collect(), 0)
        };
        Ok(Pipeline {
            inner,
            rx,
            spool,
            dead: Arc::new(Mutex::new(Segments::open(&paths.dead_letter)?)),
            sink,
            batch: Vec::new(),
            batch_bytes: 0,
            cfg: cfg.clone(),
            backoff: cfg.retry_initial_backoff,
            down_until: None,
            last_probe: None,
            spooled_copy: 0,
            inherited,
            poisoned: std::collections::HashMap::new(),
            stop,
            stopping: false,
        })
    }

    pub(super) async fn run(mut self) {
        let mut stop = self.stop.clone();
        tracing::info!(sink = self.sink.name(), "capture pipeline started");
        let mut tick = tokio::time::interval(self.cfg.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain = tokio::time::interval(DRAIN_INTERVAL);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // NB: while records flow, the queue is drained every DRAIN_INTERVAL
        // instead of on each record: awaiting `recv` registers a waker, and
        // waking this thread cost the proxy an eventfd write and a context
        // switch for one record in three (catalog at 10k req/s). A drain
        // that finds nothing goes back to `recv`, so an idle gateway sleeps.
        let mut flowing = false;
        loop {
            tokio::select! {
                q = self.rx.recv(), if !flowing => match q {
                    Some(q) => {
                        self.take(q).await;
                        flowing = true;
                        drain.reset();
                    }
                    None => break,
                },
                _ = drain.tick(), if flowing => match self.drain().await {
                    Drained::Some => {}
                    Drained::Nothing => flowing = false,
                    Drained::Closed => break,
                },
                _ = tick.tick() => {
                    self.flush().await;
                    // NB: the spool is replayed only while live records
                    // leave the sink room: replaying into a sink that is
                    // already behind filled the queue, which spooled more.
                    let queued = self.inner.metrics.queue_bytes.load(Relaxed);
                    if queued <= self.inner.limit / 4 {
                        self.replay().await;
                    }
                }
                _ = stop.changed() => break,
            }
        }
        // Drain: whatever is queued is stored now, or spooled for later.
        self.stopping = true;
        self.rx.close();
        while let Ok(q) = self.rx.try_recv() {
            self.accept(q);
        }
        self.flush().await;
        let spool = self.spool.clone();
        let _ = tokio::task::spawn_blocking(move || {
            spool.lock().unwrap_or_else(|p| p.into_inner()).seal()
        })
        .await;
        tracing::info!(
            inserted = self.inner.metrics.inserted.load(Relaxed),
            spooled = self.inner.metrics.spooled.load(Relaxed),
            "capture pipeline stopped"
        );
    }

    /// Takes every record queued now, without registering a waker.
    async fn drain(&mut self) -> Drained {
        let mut took = false;
        loop {
            match self.rx.try_recv() {
                Ok(q) => {
                    self.take(q).await;
                    took = true;
                }
                Err(mpsc::error::TryRecvError::Empty) if took => return Drained::Some,
                Err(mpsc::error::TryRecvError::Empty) => return Drained::Nothing,
                Err(mpsc::error::TryRecvError::Disconnected) => return Drained::Closed,
            }
        }
    }

    /// Accepts one record and flushes the batch if that filled it.
    async fn take(&mut self, q: Queued) {
        self.accept(q);
        if self.batch.len() >= self.cfg.batch_max_rows
            || self.batch_bytes >= self.cfg.batch_max_bytes
        {
            self.flush().await;
        }
    }

    fn accept(&mut self, q: Queued) {
        self.batch_bytes += q.weight;
        self.batch.push(record_of(&self.inner, q));
    }

    fn is_down(&self) -> bool {
        self.down_until.is_some_and(|t| Instant::now() < t)
    }

    /// Whether to send a batch to the store although its backoff runs:
    /// the spool is full, so spooling would lose it; at most every
    /// [`FULL_SPOOL_PROBE`].
    fn probe_due(&mut self) -> bool {
        if !self.inner.spool_is_full() {
            return false;
        }
        let due = self
            .last_probe
            .is_none_or(|t| t.elapsed() >= FULL_SPOOL_PROBE);
        if due {
            self.last_probe = Some(Instant::now());
        }
        due
    }

    fn mark_down(&mut self, err: &SinkError) {
        self.inner.metrics.insert_failures.fetch_add(1, Relaxed);
        let was_up = self.down_until.is_none();
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        self.down_until = Some(Instant::now() + self.backoff.mul_f64(jitter));
        if was_up {
            tracing::warn!(sink = self.sink.name(), error = %err, "capture store unavailable: spooling records to disk until it answers");
        } else {
            tracing::debug!(sink = self.sink.name(), error = %err, retry_in_ms = self.backoff.as_millis() as u64, "capture store still unavailable");
        }
        self.backoff = (self.backoff * 2).min(self.cfg.retry_max_backoff);
    }

    fn mark_up(&mut self) {
        self.inner.spool_full.store(false, Relaxed);
        if self.down_until.take().is_some() {
            tracing::info!(
                sink = self.sink.name(),
                "capture store answers again: replaying the spool"
            );
        }
        self.backoff = self.cfg.retry_initial_backoff;
    }

    /// Writes `rows` with the insert timeout. A shutdown request abandons
    /// a ClickHouse insert (the caller spools the rows; if ClickHouse had
    /// committed them, the replay's duplicates collapse by id); the final
    /// flush gets a short timeout of its own. Local writes always finish.
    async fn write(
        &mut self,
        rows: &[Arc<CaptureRecord>],
        from_spool: bool,
    ) -> Result<(), SinkError> {
        let started = Instant::now();
        let limit = if self.stopping {
            self.cfg.insert_timeout.min(FINAL_FLUSH_TIMEOUT)
        } else {
            self.cfg.insert_timeout
        };
        let mut stop = self.stop.clone();
        let stopping = self.stopping;
        let aborted = async move {
            if stopping {
                std::future::pending::<()>().await;
            }
            let _ = stop.wait_for(|s| *s).await.map(|_| ());
        };
        // NB: a local write runs on the blocking pool and finishes whatever
        // happens here; abandoning it and spooling the rows would store them
        // twice (the local store, unlike ClickHouse, does not collapse
        // duplicates). So it is awaited to its end: it is bounded by the disk.
        self.spooled_copy = 0;
        let attempt = if matches!(self.sink, Sink::Local(_)) {
            Some(Ok(self.sink.write(rows).await))
        } else {
            let Pipeline {
                sink,
                inner,
                rx,
                cfg,
                batch,
                batch_bytes,
                ..
            } = self;
            let insert = tokio::time::timeout(limit, sink.write(rows));
            tokio::pin!(insert);
            tokio::pin!(aborted);
            // NB: a slow or hung insert must not leave records in memory
            // only: every flush interval it is not done, the batch (once)
            // and whatever queued meanwhile go to the spool. If the insert
            // succeeds after all, the spooled copy's replay collapses by id.
            let mut slow =
                tokio::time::interval_at(Instant::now() + cfg.flush_interval, cfg.flush_interval);
            // NB: a copy that met a full disk keeps the rows it wrote
            // (a prefix); the rest stay in memory only.
            let mut copied = 0;
            let r = loop {
                tokio::select! {
                    r = &mut insert => break Some(r),
                    _ = &mut aborted => break None,
                    _ = slow.tick() => {
                        // NB: while the spool cannot be written, records
                        // stay in memory rather than be lost to it.
                        // NB: rows replayed from the spool are on disk already.
                        if copied < rows.len() && !from_spool && !inner.spool_is_full() {
                            let (inner, rest) = (inner.clone(), rows[copied..].to_vec());
                            copied += tokio::task::spawn_blocking(move || inner.spool_copy(&rest))
                                .await
                                .unwrap_or(0);
                        }
                        if inner.spool_is_full() {
                            continue;
                        }
                        // NB: they stay counted in the queue's bytes until
                        // they are on disk: the queue took more meanwhile,
                        // and memory grew past its bound.
                        let mut queued: Vec<Arc<CaptureRecord>> = Vec::new();
                        let mut weight = 0;
                        while let Ok(q) = rx.try_recv() {
                            weight += q.weight;
                            queued.push(record_held(inner, q));
                        }
                        if !queued.is_empty() {
                            let job = (inner.clone(), queued.clone());
                            let on_disk = tokio::task::spawn_blocking(move || job.0.spool_copy(&job.1))
                                .await
                                .unwrap_or(0);
                            inner.metrics.queue_bytes.fetch_sub(weight as u64, Relaxed);
                            if on_disk < queued.len() {
                                // Not lost: they wait in the next batch (the
                                // weight is an estimate once some are on disk).
                                *batch_bytes += weight;
                                batch.extend(queued.into_iter().skip(on_disk));
                            }
                        }
                    }
                }
            };
            self.spooled_copy = copied;
            r
        };
        let Some(attempt) = attempt else {
            self.stopping = true;
            return Err(SinkError::Retryable("shutting down".into()));
        };
        match attempt {
            Ok(Ok(())) => {
                self.inner.metrics.observe_insert(started.elapsed());
                self.mark_up();
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SinkError::Retryable(format!(
                "insert timed out after {:?}",
                self.cfg.insert_timeout
            ))),
        }
    }

    async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if !self.is_down() || self.probe_due() {
            match self.write(&batch, false).await {
                Ok(()) => {
                    self.inner
                        .metrics
                        .inserted
                        .fetch_add(batch.len() as u64, Relaxed);
                    return;
                }
                // NB: rows copied to the spool while their insert was slow
                // are dead-lettered when that copy is replayed, once.
                Err(SinkError::BadData(e)) => {
                    let rest = batch.split_off(self.spooled_copy.min(batch.len()));
                    if !rest.is_empty() {
                        self.dead_letter(rest, &e).await;
                    }
                    return;
                }
                Err(e) => {
                    if !self.stopping {
                        self.mark_down(&e);
                    }
                    // NB: a write slower than the flush interval spooled
                    // (some of) its rows already.
                    batch = batch.split_off(self.spooled_copy.min(batch.len()));
                    if batch.is_empty() {
                        return;
                    }
                }
            }
        }
        self.spool(batch).await;
    }
}

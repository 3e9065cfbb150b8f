//! Communication logs: one [`CaptureRecord`] per exchange, captured while
//! streaming and delivered to ClickHouse or the embedded local store without
//! slowing the proxy and without losing a record.
//!
//! ```text
//! proxy ── Exchange::drop ──try──► queue (bounded in bytes) ──► pipeline task ──► sink (ClickHouse | local store)
//!                 │ full                                        │  sink down/slow        ▲
//!                 └──spawn_blocking──► spool (segments) ◄───────┘                        │
//!                                          └──────────── replay when the sink answers ───┘
//!                                      pipeline ──► broadcast feed (live tail)
//! ```
//! Nothing on the data path waits for any of this: `CaptureTx::send` never
//! awaits, and the overflow path writes the spool on the blocking pool.
//! Arrows: `capture` uses `store` and `osb`; `proxy` uses `capture`.

pub mod body;
mod budget;
pub mod exchange;
pub mod headers;
pub mod metrics;
mod overflow;
mod pipeline;
pub mod record;
pub mod redact;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use http::header::HeaderName;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use exchange::{Exchange, Routing, Side};
pub use headers::Headers;
pub use metrics::CaptureMetrics;
pub use record::{CaptureRecord, Outcome, RawExchange};

use crate::config::CaptureConfig;
use crate::store::local::format::Bodies;
use crate::store::segments::Segments;
use budget::{Account, Budget};
use overflow::{shed_bodies, Overflow};
use redact::Redactor;

/// Where a running pipeline keeps its files.
#[derive(Debug, Clone)]
pub struct CapturePaths {
    /// Records waiting for the sink.
    pub spool: PathBuf,
    /// Batches the sink refused as bad data.
    pub dead_letter: PathBuf,
    /// The embedded local store.
    pub local: PathBuf,
}

impl CapturePaths {
    /// The directories under a data directory.
    pub fn under(data_dir: &std::path::Path) -> Self {
        CapturePaths {
            spool: data_dir.join("spool"),
            dead_letter: data_dir.join("dead-letter"),
            local: data_dir.join("captures"),
        }
    }
}

struct Queued {
    raw: RawExchange,
    weight: usize,
}

struct TxInner {
    tx: Option<mpsc::UnboundedSender<Queued>>,
    limit: u64,
    max_body: usize,
    /// Bounds `metrics.inflight_bytes`, shared between platforms.
    budget: Budget,
    instance: String,
    metrics: Arc<CaptureMetrics>,
    redactor: Arc<Redactor>,
    spool: Option<Arc<Mutex<Segments>>>,
    /// The bodies in the spool's open segment (each written once, raw;
    /// locked after `spool`).
    spool_bodies: Mutex<Bodies>,
    feed: broadcast::Sender<Arc<CaptureRecord>>,
    /// A spool append failed (a full disk) since the store last answered:
    /// the pipeline probes the store on a short timer instead of waiting
    /// out its backoff, so records stop being lost as soon as it answers.
    spool_full: AtomicBool,
    /// Set when the shutdown grace period is over: exchanges still running
    /// are being cut by the gateway, not by the platform.
    cutting: AtomicBool,
    enricher: std::sync::OnceLock<Enricher>,
    /// Records waiting to be spooled, and whether a drain job runs.
    overflow: Overflow,
}

/// Adds what the capture pipeline cannot know itself to each record before
/// it is stored or tailed (the catalog's service and plan names). Runs on
/// the pipeline task, never on the proxy's path.
pub type Enricher = Arc<dyn Fn(&mut CaptureRecord) + Send + Sync>;

/// The proxy's handle on the capture queue. Cheap to clone; `send` never blocks.
#[derive(Clone)]
pub struct CaptureTx(Arc<TxInner>);

impl CaptureTx {
    /// Subscribes to the live feed (see [`CaptureHandle::subscribe`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CaptureRecord>> {
        self.0.feed.subscribe()
    }

    /// A sender that captures nothing (capture disabled): exchanges are still logged.
    pub fn disabled(instance: &str) -> Self {
        let (feed, _) = broadcast::channel(1);
        CaptureTx(Arc::new(TxInner {
            tx: None,
            limit: 0,
            max_body: 0,
            // NB: nothing is tapped through a disabled sender (its
            // `max_body` is 0); a tap made by hand (the benches) keeps up to
            // its own cap, as before the budget.
            budget: Budget::new(u64::MAX),
            instance: instance.to_string(),
            metrics: Arc::default(),
            redactor: Arc::default(),
            spool_bodies: Mutex::default(),
            spool: None,
            feed,
            spool_full: AtomicBool::new(false),
            cutting: AtomicBool::new(false),
            enricher: std::sync::OnceLock::new(),
            overflow: Overflow::default(),
        }))
    }

    /// Whether records are captured.
    pub fn enabled(&self) -> bool {
        self.0.tx.is_some()
    }

    /// Body bytes kept per body (0 when disabled).
    pub fn max_body(&self) -> usize {
        self.0.max_body
    }

    /// The budget account of `platform`, entered by one exchange more
    /// (the exchange leaves it when it ends; see [`budget`](self::budget)).
    pub(crate) fn enter_budget(&self, platform: Option<&str>) -> Arc<Account> {
        self.0.budget.enter(platform)
    }

    /// One exchange of `account` ended.
    pub(crate) fn leave_budget(&self, account: &Account) {
        self.0.budget.leave(account)
    }

    /// Reserves up to `want` bytes of the budget all exchanges in flight
    /// share for the bodies they keep (`capture.inflight_max_bytes`), for
    /// `account`; returns how many were granted, 0 once it (or the
    /// account's share) is spent. One compare-and-swap, no lock; a tap
    /// asks once per body whose length it knows, else once per frame it
    /// keeps; `holding` is what that body holds already (a small body may
    /// use the budget's last eighth: see [`budget`](self::budget)). Give
    /// them back with [`release_body`](Self::release_body).
    pub(crate) fn reserve_body(&self, account: &Account, want: usize, holding: usize) -> usize {
        self.0
            .budget
            .reserve(&self.0.metrics.inflight_bytes, account, want, holding)
    }

    /// Whether `account` should give back what it reserved and has not
    /// filled (the budget is starved and it holds more than its share).
    pub(crate) fn over_share(&self, account: &Account) -> bool {
        self.0.budget.over_share(account)
    }

    /// Counts a body kept shorter than the cap because the budget ran out.
    pub(crate) fn count_cut_body(&self) {
        self.0.metrics.bodies_cut.fetch_add(1, Relaxed);
    }

    /// Gives back bytes from [`reserve_body`](Self::reserve_body).
    pub(crate) fn release_body(&self, account: &Account, bytes: usize) {
        self.0
            .budget
            .release(&self.0.metrics.inflight_bytes, account, bytes)
    }

    /// Says that the shutdown grace period is over: exchanges ending from
    /// now on without their end were stopped by the gateway
    /// ([`Outcome::Shutdown`]).
    pub fn grace_over(&self) {
        self.0.cutting.store(true, SeqCst);
    }

    /// Whether [`grace_over`](Self::grace_over) was called.
    pub(crate) fn cutting(&self) -> bool {
        self.0.cutting.load(SeqCst)
    }

    /// Gateway instance name.
    pub fn instance(&self) -> &str {
        &self.0.instance
    }

    /// Hands a finished exchange to the pipeline, or to the spool when the
    /// pipeline is behind. Never waits.
    ///
    /// NB: finished records held in memory, wherever they wait (the queue,
    /// the spool jobs, the pipeline's drain to the spool during a slow
    /// insert), share one bound, `capture.queue_max_bytes`: past it a record
    /// is kept without its bodies (sizes and the `truncated` flags say so)
    /// and spooled, so no exchange goes unrecorded. The queue takes at most
    /// half of it; the rest is for records spooled straight from here
    /// while the pipeline is behind. The queue and the spool jobs had a
    /// bound each, and the drain none: 1 MB bodies to a busy ClickHouse at
    /// 64 connections peaked at 275 MB RSS.
    pub fn send(&self, mut raw: RawExchange) {
        let Some(tx) = &self.0.tx else { return };
        self.0.metrics.captured.fetch_add(1, Relaxed);
        let limit = self.0.limit;
        let weight = raw.weight() as u64;
        let queued = self.0.metrics.queue_bytes.load(Relaxed);
        let held = queued + self.0.metrics.spool_pending_bytes.load(Relaxed);
        // NB: one record larger than the bound still goes whole when
        // nothing else is held.
        if held > 0 && held + weight > limit {
            shed_bodies(&mut raw);
            self.0.metrics.bodies_shed.fetch_add(1, Relaxed);
            return self.overflow(raw);
        }
        if queued + weight > limit / 2 {
            return self.overflow(raw);
        }
        let weight = weight as usize;
        self.0.metrics.queue_bytes.fetch_add(weight as u64, Relaxed);
        if let Err(mpsc::error::SendError(q)) = tx.send(Queued { raw, weight }) {
            self.0
                .metrics
                .queue_bytes
                .fetch_sub(q.weight as u64, Relaxed);
            self.overflow(q.raw);
        }
    }
}

impl TxInner {
    /// Publishes a record on the live feed, if anyone is tailing.
    ///
    /// NB: a broadcast channel keeps its last `capacity` values until they
    /// are overwritten, subscribers or not; with 1 MiB bodies a full feed of
    /// 4,096 records pinned gigabytes (seen in the load benchmark). Without
    /// a subscriber nothing is sent, so nothing is kept.
    fn publish(&self, record: &Arc<CaptureRecord>) {
        if self.feed.receiver_count() > 0 {
            let _ = self.feed.send(record.clone());
        }
    }
}

/// A running capture pipeline.
pub struct CaptureHandle {
    tx: CaptureTx,
    stop: watch::Sender<bool>,
    task: Option<oneshot::Receiver<()>>,
    metrics: Arc<CaptureMetrics>,
}

impl CaptureHandle {
    /// Starts the pipeline for `cfg`, with files under `paths`.
    ///
    /// # Errors
    /// When the spool, dead-letter or local-store directory cannot be opened.
    pub fn start(
        cfg: &CaptureConfig,
        paths: &CapturePaths,
        instance: &str,
    ) -> std::io::Result<Self> {
        if !cfg.enabled {
            let (stop, _) = watch::channel(false);
            return Ok(CaptureHandle {
                tx: CaptureTx::disabled(instance),
                stop,
                task: None,
                metrics: Arc::default(),
            });
        }
        let metrics = Arc::new(CaptureMetrics::default());
        let redactor = Arc::new(Redactor::new(
            cfg.secret_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
        ));
        let spool = Arc::new(Mutex::new(Segments::open(&paths.spool)?));
        let (tx, rx) = mpsc::unbounded_channel();
        let (feed, _) = broadcast::channel(cfg.feed_capacity.max(1));
        let inner = Arc::new(TxInner {
            tx: Some(tx),
            limit: cfg.queue_max_bytes as u64,
            max_body: cfg.max_body_bytes,
            budget: Budget::new(cfg.inflight_max_bytes as u64),
            instance: instance.to_string(),
            metrics: metrics.clone(),
            redactor: redactor.clone(),
            spool: Some(spool.clone()),
            spool_bodies: Mutex::default(),
            feed,
            spool_full: AtomicBool::new(false),
            cutting: AtomicBool::new(false),
            enricher: std::sync::OnceLock::new(),
            overflow: Overflow::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let pipeline = pipeline::Pipeline::new(cfg, paths, inner.clone(), rx, spool, stop_rx)?;
        // NB: the pipeline runs on a thread of its own, with its own
        // single-threaded runtime, not as a task among the proxy's
        // connections. On a saturated worker a task gets one turn per round
        // of all connection tasks, so record building and inserts fell
        // behind the traffic (the queue filled and records went to the
        // spool at 11k req/s); a thread gets its share from the OS
        // scheduler whatever the number of connections.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("osb-capture-io")
            .build()?;
        let (done, task) = oneshot::channel();
        std::thread::Builder::new()
            .name("osb-capture".into())
            .spawn(move || {
                rt.block_on(pipeline.run());
                // Blocking jobs (spool writes) finish before `shutdown` returns.
                drop(rt);
                let _ = done.send(());
            })?;
        Ok(CaptureHandle {
            tx: CaptureTx(inner),
            stop,
            task: Some(task),
            metrics,
        })
    }

    /// Installs the record enricher (once; later calls are ignored).
    pub fn set_enricher(&self, enricher: Enricher) {
        let _ = self.tx.0.enricher.set(enricher);
    }

    /// The proxy's sender.
    pub fn tx(&self) -> CaptureTx {
        self.tx.clone()
    }

    /// Counters.
    pub fn metrics(&self) -> Arc<CaptureMetrics> {
        self.metrics.clone()
    }

    /// Subscribes to the live feed of redacted records. A subscriber that
    /// falls behind gets `RecvError::Lagged(n)`: it lost `n` records, the
    /// proxy lost no time.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CaptureRecord>> {
        self.tx.0.feed.subscribe()
    }

    /// Stops the pipeline: what is queued is stored, or spooled when the
    /// sink does not answer, before this returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// A monotonic counter shared by tests and benches to wait on progress.
pub fn load(c: &AtomicU64) -> u64 {
    c.load(Relaxed)
}

/// A disabled queue whose taps keep up to `max_body` bytes of a body,
/// `limit` in flight together (tests of the budget and the tap).
#[cfg(test)]
fn with_budget(limit: u64, max_body: usize) -> CaptureTx {
    let tx = CaptureTx::disabled("test");
    let mut inner = Arc::try_unwrap(tx.0).ok().expect("a fresh queue");
    inner.budget = Budget::new(limit);
    inner.max_body = max_body;
    CaptureTx(Arc::new(inner))
}

//! Hot reload, validate-then-swap: every trigger (SIGHUP, a change of the
//! registry file, the admin API) builds a complete new [`RouteTable`] off
//! the reactor; only a valid table is stored, and the answer says what
//! changed. A refused reload changes nothing: the old table keeps serving.
//! Requests in flight keep the table they started with (they hold an `Arc`
//! of it), so a swap never drops one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use super::{BuildContext, RegistryErrors, RegistryFile, RouteTable, Routes};
use crate::config::{self, ConfigError, GatewayConfig, RegistrySource};

/// Environment lookup for `env:` secrets, shareable with the blocking pool.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Why a registry could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read or is not valid TOML.
    #[error("{0}")]
    File(#[from] ConfigError),
    /// The registry does not validate.
    #[error("{0}")]
    Invalid(#[from] RegistryErrors),
}

/// Reads and validates the registry a configuration points at.
///
/// # Errors
/// The file cannot be read, is not valid TOML, or does not validate.
pub fn load(
    cfg: &GatewayConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RouteTable, LoadError> {
    load_after(cfg, env, None)
}

/// As [`load`], reusing the upstream clients (and their warm connection
/// pools) of `previous` for upstreams that did not change.
///
/// # Errors
/// As [`load`].
pub fn load_after(
    cfg: &GatewayConfig,
    env: &dyn Fn(&str) -> Option<String>,
    previous: Option<&RouteTable>,
) -> Result<RouteTable, LoadError> {
    let (text, base, name) = match &cfg.registry {
        RegistrySource::File(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new("registry.file", p.display(), format!("cannot read: {e}"))
            })?;
            (
                text,
                p.parent().unwrap_or(Path::new(".")).to_path_buf(),
                p.display().to_string(),
            )
        }
        RegistrySource::Embedded(t) => (
            t.to_string(),
            PathBuf::from("."),
            "embedded registry".into(),
        ),
    };
    let file: RegistryFile = toml::from_str(&text).map_err(|e| {
        let mut ce = config::toml_error(&e);
        ce.field = format!("{name}: {}", ce.field);
        ce
    })?;
    let cx = BuildContext {
        mode: cfg.mode,
        secret_key: cfg.secret_key.as_ref(),
        base_dir: &base,
        env,
        timeouts: cfg.timeouts,
        pool: cfg.pool,
        previous,
    };
    Ok(RouteTable::build(&file, &cx)?)
}

/// What a successful reload changed.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Table generation now serving (starts at 1).
    pub generation: u64,
    /// What asked for the reload (`SIGHUP`, `file change`, `admin API`, ...).
    pub trigger: String,
    /// Routes (`broker/location`) and platforms (`platform id`) that are new.
    pub added: Vec<String>,
    /// Those that are gone.
    pub removed: Vec<String>,
    /// Those whose settings changed (endpoint, credentials, approval, timeouts, ...).
    pub changed: Vec<String>,
    /// How many stayed as they were.
    pub unchanged: usize,
    /// Validation and build time, milliseconds.
    pub took_ms: f64,
}

/// Reload counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ReloadMetrics {
    /// Reloads that swapped a new table in.
    pub reloads: AtomicU64,
    /// Reloads refused (the old table kept serving).
    pub failures: AtomicU64,
    /// Duration of the last successful reload, microseconds.
    pub last_duration_us: AtomicU64,
}

/// Rebuilds and swaps the route table; one writer at a time.
pub struct Reloader {
    routes: Routes,
    cfg: Arc<GatewayConfig>,
    env: Env,
    writer: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    /// Counters.
    pub metrics: ReloadMetrics,
}

impl Reloader {
    /// A reloader for `routes`, which were built from `cfg`.
    pub fn new(routes: Routes, cfg: Arc<GatewayConfig>, env: Env) -> Self {
        Reloader {
            routes,
            cfg,
            env,
            writer: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(1),
            metrics: ReloadMetrics::default(),
        }
    }

    /// The generation now serving.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Builds a new table from the registry source and swaps it in if valid.
    ///
    /// # Errors
    /// Why the registry was refused; the current table keeps serving.
    pub async fn reload(&self, trigger: &str) -> Result<ReloadReport, LoadError> {
        let _writer = self.writer.lock().await;
        let started = Instant::now();
        let (cfg, env, serving) = (self.cfg.clone(), self.env.clone(), self.routes.load_full());
        let built = tokio::task::spawn_blocking(move || load_after(&cfg, &*env, Some(&serving)))
            .await
            .unwrap_or_else(|e| {
                Err(ConfigError::new("registry", "", format!("reload task failed: {e}")).into())
            });
        let table = match built {
            Ok(t) => t,
            Err(e) => {
                self.metrics.failures.fetch_add(1, Relaxed);
                tracing::warn!(trigger, error = %e, "reload refused; the current routes keep serving");
                return Err(e);
            }
        };
        let (added, removed, changed, unchanged) = diff(&self.routes.load_full(), &table);
        self.routes.store(table);
        let generation = self.generation.fetch_add(1, Relaxed) + 1;
        let took = started.elapsed();
        self.metrics.reloads.fetch_add(1, Relaxed);
        self.metrics
            .last_duration_us
            .store(took.as_micros() as u64, Relaxed);
        tracing::info!(
            trigger,
            generation,
            added = ?added,
            removed = ?removed,
            changed = ?changed,
            unchanged,
            took_ms = took.as_secs_f64() * 1000.0,
            "routes reloaded"
        );
        Ok(ReloadReport {
            generation,
            trigger: trigger.to_string(),
            added,
            removed,
            changed,
            unchanged,
            took_ms: took.as_secs_f64() * 1000.0,
        })
    }

    /// Watches the registry file and reloads when its stamp differs from
    /// `seen` (take it with [`file_stamp`] *before* the
    /// table now serving was loaded, so no change slips between the two).
    /// Runs until the task is dropped.
    pub async fn watch(self: Arc<Self>, every: Duration, mut seen: Option<FileStamp>) {
        let RegistrySource::File(path) = self.cfg.registry.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamp(&path);
            if now.is_some() && now != seen {
                seen = now;
                let _ = self.reload("file change").await;
            }
        }
    }
}

/// Modification time, size and CRC32 of a registry file.
///
/// NB: time and size alone miss a rewrite of the same length within one
/// tick of the kernel's coarse file clock; the checksum does not.
pub type FileStamp = (SystemTime, u64, u32);

fn stamp(p: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(p).ok()?;
    let bytes = std::fs::read(p).ok()?;
    Some((
        m.modified().ok()?,
        bytes.len() as u64,
        crc32fast::hash(&bytes),
    ))
}

/// The stamp of the configured registry file (`None` for an embedded one).
pub fn file_stamp(source: &RegistrySource) -> Option<FileStamp> {
    match source {
        RegistrySource::File(p) => stamp(p),
        RegistrySource::Embedded(_) => None,
    }
}

/// Keys of routes and platforms that were added, removed or changed.
fn diff(old: &RouteTable, new: &RouteTable) -> (Vec<String>, Vec<String>, Vec<String>, usize) {
    let (a, b) = (old.fingerprints(), new.fingerprints());
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    let mut unchanged = 0;
    for (k, v) in &b {
        match a.get(k) {
            None => added.push(k.clone()),
            Some(old) if old != v => changed.push(k.clone()),
            Some(_) => unchanged += 1,
        }
    }
    for k in a.keys() {
        if !b.contains_key(k) {
            removed.push(k.clone());
        }
    }
    (added, removed, changed, unchanged)
}

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

use super::shared;
use super::{
    BuildContext, Fingerprints, RegistryErrors, RegistryFile, RouteTable, Routes, Snapshot,
};
use crate::config::{self, ConfigError, GatewayConfig, RegistrySource};
use crate::metrics::RequestMetrics;

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
    let (text, base, name) = read_source(cfg, None)?;
    let file = parse(&text, &name)?;
    build(cfg, &file, &base, env, None, None).map_err(|e| located(e, &text, &name))
}

/// Validation errors with the file, line and column of the field each
/// names, where it is written in the file (`registry.toml:14:1: broker "pg"`).
fn located(e: LoadError, text: &str, name: &str) -> LoadError {
    match e {
        LoadError::Invalid(mut all) => {
            for e in &mut all.0 {
                if let Some((line, col)) = config::position::locate(text, &e.field) {
                    e.object = format!("{name}:{line}:{col}: {}", e.object);
                }
            }
            LoadError::Invalid(all)
        }
        other => other,
    }
}

/// The registry text, the directory its relative paths resolve against,
/// and its name for messages. `memory` overrides an embedded registry.
fn read_source(
    cfg: &GatewayConfig,
    memory: Option<&str>,
) -> Result<(String, PathBuf, String), LoadError> {
    Ok(match &cfg.registry {
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
            memory.unwrap_or(t).to_string(),
            PathBuf::from("."),
            "embedded registry".into(),
        ),
    })
}

fn parse(text: &str, name: &str) -> Result<RegistryFile, LoadError> {
    if text.trim().is_empty() {
        return Err(ConfigError::new(
            name,
            "",
            format!(
                "the registry is empty ({} bytes, no content): refused, the routes serving stay; \
                 a file being written in place looks like this (write a temporary file, then rename it)",
                text.len()
            ),
        )
        .into());
    }
    Ok(toml::from_str(text).map_err(|e| {
        let mut ce = config::toml_error(&e, text);
        ce.field = config::at_position(std::path::Path::new(name), text, &ce.field);
        ce
    })?)
}

fn build(
    cfg: &GatewayConfig,
    file: &RegistryFile,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    previous: Option<&RouteTable>,
    metrics: Option<&RequestMetrics>,
) -> Result<RouteTable, LoadError> {
    let cx = BuildContext {
        mode: cfg.mode,
        secret_key: cfg.secret_key.as_ref(),
        base_dir: base,
        env,
        timeouts: cfg.timeouts,
        pool: cfg.pool,
        policy: &cfg.upstream_policy,
        previous,
        metrics,
    };
    Ok(RouteTable::build(file, &cx)?)
}

/// Why a change to the registry was refused. Nothing was written and the
/// serving table is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No such broker or publication (or not visible to the caller).
    #[error("{0}")]
    NotFound(String),
    /// The caller may see it but not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The lifecycle forbids it in the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed (names the field and value).
    #[error("{0}")]
    BadInput(String),
    /// The registry after the change would not validate.
    #[error("{0}")]
    Invalid(#[from] LoadError),
    /// The registry file could not be written.
    #[error("{0}")]
    Storage(String),
    /// The registry is not the version the change was meant for (a
    /// client's `If-Match`, or a file changed meanwhile): see `shared`.
    #[error("{0}")]
    Stale(String),
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
    /// The [`shared::version`] now serving (the admin API's `ETag`).
    pub version: String,
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
    requests: Arc<RequestMetrics>,
    writer: tokio::sync::Mutex<()>,
    /// The embedded registry as changed through the API (no file to write).
    memory: std::sync::Mutex<Option<String>>,
    /// The registry file's stamp as last loaded or written.
    seen: std::sync::Mutex<Option<FileStamp>>,
    /// Counters.
    pub metrics: ReloadMetrics,
}

/// A registry loaded for serving: the first snapshot, and the file's
/// stamp taken before reading (so the watcher misses no change).
pub struct Loaded {
    /// The validated table and the registry it was built from (generation 1).
    pub snapshot: Snapshot,
    /// The file's stamp (`None` for an embedded registry).
    pub stamp: Option<FileStamp>,
}

/// Loads the registry for serving, with request counters from `requests`.
///
/// # Errors
/// As [`load`].
pub fn load_for_serving(
    cfg: &GatewayConfig,
    env: &dyn Fn(&str) -> Option<String>,
    requests: &RequestMetrics,
) -> Result<Loaded, LoadError> {
    let stamp = file_stamp(&cfg.registry);
    let (text, base, name) = read_source(cfg, None)?;
    let file = parse(&text, &name)?;
    let table = build(cfg, &file, &base, env, None, Some(requests))
        .map_err(|e| located(e, &text, &name))?;
    Ok(Loaded {
        snapshot: Snapshot::new(table, file, 1).versioned(shared::version(&text)),
        stamp,
    })
}

impl Reloader {
    /// A reloader for `routes`, built from `cfg`, whose registry file had
    /// `stamp` when it was read.
    pub fn new(
        routes: Routes,
        cfg: Arc<GatewayConfig>,
        env: Env,
        requests: Arc<RequestMetrics>,
        stamp: Option<FileStamp>,
    ) -> Self {
        Reloader {
            routes,
            cfg,
            env,
            requests,
            writer: tokio::sync::Mutex::new(()),
            memory: std::sync::Mutex::new(None),
            seen: std::sync::Mutex::new(stamp),
            metrics: ReloadMetrics::default(),
        }
    }

    /// The [`shared::version`] of the registry now serving (the admin
    /// API's `ETag`).
    pub fn version(&self) -> String {
        self.routes.load().version().to_string()
    }

    /// The generation now serving.
    pub fn generation(&self) -> u64 {
        self.routes.load().generation()
    }

    /// The registry as last applied (secrets as written: `enc:v1:`, `env:`...).
    pub fn registry(&self) -> Arc<RegistryFile> {
        self.routes.load().registry().clone()
    }

    /// The live routes.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// The gateway configuration the routes are built with.
    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// Whether API changes are written to a file (else they live in memory
    /// until the process ends: the embedded development registry).
    pub fn persists(&self) -> bool {
        matches!(self.cfg.registry, RegistrySource::File(_))
    }

    fn source_text(&self) -> Result<(String, PathBuf, String), LoadError> {
        let memory = self
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        read_source(&self.cfg, memory.as_deref())
    }

    /// Builds `file` off the reactor against the serving table, and diffs
    /// it there too (a 10,000-route table takes tens of milliseconds to
    /// fingerprint; the reactor's threads serve requests meanwhile).
    async fn build_next(
        &self,
        text: String,
        name: String,
        base: PathBuf,
    ) -> Result<Built, LoadError> {
        let (cfg, env, serving) = (self.cfg.clone(), self.env.clone(), self.routes.load_full());
        let requests = self.requests.clone();
        tokio::task::spawn_blocking(move || {
            let version = shared::version(&text);
            let file = parse(&text, &name)?;
            let table = build(&cfg, &file, &base, &*env, Some(&serving), Some(&requests))
                .map_err(|e| located(e, &text, &name))?;
            refuse_unconfirmed_emptying(&file, &table, &serving)?;
            let fingerprints = table.fingerprints();
            let diff = diff(serving.fingerprints(), &fingerprints);
            Ok(Built {
                table,
                file,
                fingerprints,
                diff,
                version,
            })
        })
        .await
        .unwrap_or_else(|e| {
            Err(ConfigError::new("registry", "", format!("reload task failed: {e}")).into())
        })
    }

    /// Swaps the built table in, as one snapshot with its file,
    /// fingerprints and generation, and reports what changed. The old
    /// snapshot is dropped on the blocking pool once the last request
    /// holding it ends. Callers hold the writer lock.
    fn swap(&self, trigger: &str, built: Built, started: Instant) -> ReloadReport {
        let Built {
            table,
            file,
            fingerprints,
            diff: (added, removed, changed, unchanged),
            version,
        } = built;
        let generation = self.routes.load().generation() + 1;
        let old = self.routes.swap(
            Snapshot::with_fingerprints(table, file, fingerprints, generation)
                .versioned(version.clone()),
        );
        tokio::task::spawn_blocking(move || drop(old));
        let took = started.elapsed();
        self.metrics.reloads.fetch_add(1, Relaxed);
        self.metrics
            .last_duration_us
            .store(took.as_micros() as u64, Relaxed);
        // Milliseconds to the microsecond: `0.242` rather than `0.24240199999999998`.
        let took_ms = took.as_micros() as f64 / 1000.0;
        tracing::info!(
            trigger,
            generation,
            added = ?added,
            removed = ?removed,
            changed = ?changed,
            unchanged,
            took_ms,
            "routes reloaded"
        );
        ReloadReport {
            generation,
            trigger: trigger.to_string(),
            added,
            removed,
            changed,
            unchanged,
            took_ms,
            version,
        }
    }

    /// Builds a new table from the registry source and swaps it in if valid.
    ///
    /// # Errors
    /// Why the registry was refused; the current table keeps serving.
    pub async fn reload(&self, trigger: &str) -> Result<ReloadReport, LoadError> {
        let _writer = self.writer.lock().await;
        let started = Instant::now();
        let stamp = file_stamp(&self.cfg.registry);
        let loaded = match self.source_text() {
            Ok((text, base, name)) => self.build_next(text, name, base).await,
            Err(e) => Err(e),
        };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        match loaded {
            Ok(built) => Ok(self.swap(trigger, built, started)),
            Err(e) => {
                self.metrics.failures.fetch_add(1, Relaxed);
                tracing::warn!(trigger, error = %e, "reload refused; the current routes keep serving");
                Err(e)
            }
        }
    }

    /// Applies `edit` to the registry as it is now (read from its source
    /// under the writer lock, and for a file under the lock every replica
    /// sharing it takes: see `shared`), validates the result as a whole,
    /// writes it back (atomically, keeping the file's comments) and swaps
    /// the new table in.
    ///
    /// # Errors
    /// What `edit` refused, or why the result does not validate or could
    /// not be written; nothing changed then.
    pub async fn change<T>(
        &self,
        trigger: &str,
        edit: impl FnOnce(&mut RegistryFile) -> Result<T, ChangeError>,
    ) -> Result<(T, ReloadReport), ChangeError> {
        self.change_if(trigger, None, edit).await
    }

    /// [`Reloader::change`], refused ([`ChangeError::Stale`]) unless the
    /// registry is at version `expected` (a client's `If-Match`; `None`:
    /// any).
    ///
    /// # Errors
    /// As [`Reloader::change`], and [`ChangeError::Stale`].
    pub async fn change_if<T>(
        &self,
        trigger: &str,
        expected: Option<&str>,
        edit: impl FnOnce(&mut RegistryFile) -> Result<T, ChangeError>,
    ) -> Result<(T, ReloadReport), ChangeError> {
        let _writer = self.writer.lock().await;
        let _shared = match &self.cfg.registry {
            RegistrySource::File(p) => Some(shared::FileLock::acquire(p, shared::LOCK_WAIT).await?),
            RegistrySource::Embedded(_) => None,
        };
        let started = Instant::now();
        let (text, base, name) = self.source_text()?;
        let base_version = shared::version(&text);
        shared::check_precondition(expected, &base_version)?;
        let mut file = parse(&text, &name)?;
        let out = edit(&mut file)?;
        let new_text = super::edit::merge(&text, &file).map_err(ChangeError::Storage)?;
        // NB: built from the merged text, not from `file`, so what is
        // validated is exactly what will be read back after a restart.
        let built = match self.build_next(new_text.clone(), name, base).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(trigger, error = %e, "registry change refused");
                return Err(e.into());
            }
        };
        match &self.cfg.registry {
            RegistrySource::File(p) => {
                shared::check_unchanged(p, &base_version)?;
                super::edit::write_atomic(p, &new_text).map_err(|e| {
                    ChangeError::Storage(format!(
                        "cannot write the registry file {}: {e}; nothing changed",
                        p.display()
                    ))
                })?;
                *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = stamp(p);
            }
            RegistrySource::Embedded(_) => {
                *self.memory.lock().unwrap_or_else(|e| e.into_inner()) = Some(new_text);
            }
        }
        Ok((out, self.swap(trigger, built, started)))
    }

    /// Watches the registry file and reloads when its stamp differs from the
    /// one last loaded or written (taken *before* reading, so no change slips
    /// between the two; the gateway's own writes do not trigger a reload).
    /// Runs until the task is dropped.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let RegistrySource::File(path) = self.cfg.registry.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamp(&path);
            let seen = *self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if now.is_some() && now != seen {
                let _ = self.reload("file change").await;
            }
        }
    }
}

/// Refuses a registry that would take every route and platform away from
/// a gateway serving some, unless the file says `confirm_empty = true`.
fn refuse_unconfirmed_emptying(
    file: &RegistryFile,
    next: &RouteTable,
    serving: &RouteTable,
) -> Result<(), LoadError> {
    let (routes, platforms) = (serving.routes().len(), serving.platforms().len());
    let empties = next.routes().is_empty() && next.platforms().is_empty();
    if !empties || routes + platforms == 0 || file.confirm_empty {
        return Ok(());
    }
    Err(RegistryErrors(vec![super::RegistryError {
        object: "registry".into(),
        field: "confirm_empty".into(),
        value: "false".into(),
        reason: format!(
            "this registry has no brokers and no platforms and would take away all {routes} routes \
             and {platforms} platforms serving now; if that is meant, set confirm_empty = true at \
             the top of the file"
        ),
    }])
    .into())
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

/// Added, removed and changed keys, and how many stayed the same.
type Diff = (Vec<String>, Vec<String>, Vec<String>, usize);

/// A table built and diffed off the reactor, ready to swap in.
struct Built {
    table: RouteTable,
    file: RegistryFile,
    fingerprints: Fingerprints,
    diff: Diff,
    /// The [`shared::version`] of the text it was built from.
    version: String,
}

/// Keys of routes and platforms that were added, removed or changed.
fn diff(a: &Fingerprints, b: &Fingerprints) -> Diff {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    let mut unchanged = 0;
    for (k, v) in b {
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

//! Brokers, publications and platforms, validated into an immutable
//! [`RouteTable`] held in one `ArcSwap` ([`Routes`]).
//!
//! The check is the constructor: [`RouteTable::build`] is the only way to
//! make a table, so a table with an `http://` publication, a duplicate id or
//! a missing credential cannot exist, and the proxy has no check to forget.
//! Arrows: `registry` uses `config` and `upstream`; `proxy` and `admin` use it.

pub mod edit;
pub mod file;
pub mod lifecycle;
pub mod reload;
pub mod shared;
mod table;

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use file::RegistryFile;
pub use reload::{
    load, load_for_serving, ChangeError, Env, LoadError, Loaded, ReloadReport, Reloader,
};
pub use table::{
    BuildContext, Endpoint, LookupError, Platform, Route, RouteTable, GLOBAL, PRIVATE,
};

/// One problem in a registry, naming the broker (or platform), field and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    /// `broker "id"`, `platform "id"` or `registry`.
    pub object: String,
    /// Path of the field, e.g. `brokers[0].publications[1].endpoint`.
    pub field: String,
    /// The value as written (a secret's source, never the secret).
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} = {:?}: {}",
            self.object, self.field, self.value, self.reason
        )
    }
}

/// Every problem found in a registry (validation does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryErrors(pub Vec<RegistryError>);

impl fmt::Display for RegistryErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid registry ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RegistryErrors {}

/// One state of the registry, swapped as a whole: the validated table,
/// the registry it was built from (for the admin views), the fingerprints
/// the next reload diffs against, and its generation. An admin view or a
/// request reads all four from one `load()`, so it never sees a table of
/// one generation with the file or number of another. Derefs to its
/// [`RouteTable`].
pub struct Snapshot {
    table: RouteTable,
    registry: Arc<RegistryFile>,
    fingerprints: Fingerprints,
    generation: u64,
    /// The [`shared::version`](crate::registry::shared::version) of the text it was built from (empty when
    /// not built from a text).
    version: String,
}

/// A fingerprint per route and platform key (see [`RouteTable::fingerprints`]).
pub(crate) type Fingerprints = std::collections::BTreeMap<String, String>;

// === impl Snapshot ===

impl Snapshot {
    /// A snapshot of `table`, built from `registry`, numbered `generation`.
    pub fn new(table: RouteTable, registry: RegistryFile, generation: u64) -> Self {
        let fingerprints = table.fingerprints();
        Snapshot::with_fingerprints(table, registry, fingerprints, generation)
    }

    pub(crate) fn with_fingerprints(
        table: RouteTable,
        registry: RegistryFile,
        fingerprints: Fingerprints,
        generation: u64,
    ) -> Self {
        Snapshot {
            table,
            registry: Arc::new(registry),
            fingerprints,
            generation,
            version: String::new(),
        }
    }

    /// The same snapshot, saying it was built from a text of `version`.
    pub(crate) fn versioned(mut self, version: String) -> Self {
        self.version = version;
        self
    }

    /// The [`shared::version`](crate::registry::shared::version) of the registry text it was built from: the
    /// admin API's `ETag`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The route table.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The registry as applied (secrets as written: `enc:v1:`, `env:`...).
    pub fn registry(&self) -> &Arc<RegistryFile> {
        &self.registry
    }

    /// The generation (1 for the table the gateway started with).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn fingerprints(&self) -> &Fingerprints {
        &self.fingerprints
    }
}

impl std::ops::Deref for Snapshot {
    type Target = RouteTable;

    fn deref(&self) -> &RouteTable {
        &self.table
    }
}

/// The live registry: one `ArcSwap` of a [`Snapshot`], one `load()` per
/// request, no locks.
#[derive(Clone)]
pub struct Routes(Arc<ArcSwap<Snapshot>>);

impl Routes {
    /// Starts serving `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Routes(Arc::new(ArcSwap::from_pointee(snapshot)))
    }

    /// The current snapshot. Requests clone what they need out of it and
    /// drop the guard before their first `.await` (arc-swap's guards are
    /// not for holding).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.0.load()
    }

    /// The current snapshot as an owned `Arc`, safe to hold across `.await`.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Replaces the snapshot with a new, already validated one, handing
    /// back the one that served until now (so the caller decides where its
    /// possibly large drop happens). Requests in flight keep the snapshot
    /// they started with.
    pub fn swap(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        self.0.swap(Arc::new(snapshot))
    }
}

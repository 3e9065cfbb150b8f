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

/// The live route table: one `ArcSwap`, one `load()` per request, no locks.
#[derive(Clone)]
pub struct Routes(Arc<ArcSwap<RouteTable>>);

impl Routes {
    /// Starts serving `table`.
    pub fn new(table: RouteTable) -> Self {
        Routes(Arc::new(ArcSwap::from_pointee(table)))
    }

    /// The current table. Requests clone what they need out of it and drop the
    /// guard before their first `.await` (arc-swap's guards are not for holding).
    pub fn load(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.0.load()
    }

    /// The current table as an owned `Arc`, safe to hold across `.await`.
    pub fn load_full(&self) -> Arc<RouteTable> {
        self.0.load_full()
    }

    /// Replaces the table with a new, already validated one. Requests in
    /// flight keep the table they started with.
    pub fn store(&self, table: RouteTable) {
        self.0.store(Arc::new(table));
    }

    /// As [`Routes::store`], handing back the table that served until now
    /// (so the caller decides where its possibly large drop happens).
    pub fn swap(&self, table: RouteTable) -> Arc<RouteTable> {
        self.0.swap(Arc::new(table))
    }
}

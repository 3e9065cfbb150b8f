//! Where capture records are kept and read back: ClickHouse
//! (`clickhouse/`: schema, writer, reader), or the embedded local store
//! when no ClickHouse is configured (`local/`); the search criteria,
//! cursors and instance rules both answer (`query/`); the segment-file
//! format the local store and the capture spool share (`segments`); the
//! bodies both remember so a repeated one is stored once (`seen`).
//!
//! Arrows: `store` uses `config` only; `capture` writes through it, `admin`
//! reads through [`LogStore`].

pub mod clickhouse;
pub mod local;
pub mod query;
pub mod record;
pub(crate) mod seen;
pub mod segments;

use std::path::PathBuf;

use uuid::Uuid;

pub use record::CaptureRecord;

use query::{InstanceProblem, Page, Search, Summary};

/// Why a batch was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Network, timeout, server overload: retrying later can work.
    #[error("store unavailable: {0}")]
    Retryable(String),
    /// The store refused the data itself: retrying cannot help.
    #[error("store refused the data: {0}")]
    BadData(String),
}

/// Trouble described in text only (a node that did not answer in time):
/// retrying, maybe elsewhere, can work.
impl From<String> for SinkError {
    fn from(text: String) -> Self {
        SinkError::Retryable(text)
    }
}

/// Why a read failed.
pub type ReadError = String;

/// The newest instance operation and the newest poll of each instance.
pub(crate) type Latest = (Vec<Summary>, Vec<Summary>);

/// Where the logs are read from.
pub enum LogStore {
    /// The embedded store's directory.
    Local(PathBuf),
    /// A ClickHouse table.
    ClickHouse(Box<clickhouse::ClickHouseReader>),
}

impl LogStore {
    /// The store a gateway with this capture configuration writes to.
    pub fn for_capture(cfg: &crate::config::CaptureConfig, local_dir: PathBuf) -> Self {
        match &cfg.clickhouse {
            Some(ch) => LogStore::ClickHouse(Box::new(clickhouse::ClickHouseReader::new(ch))),
            None => LogStore::Local(local_dir),
        }
    }

    /// One page of records matching `s`.
    ///
    /// # Errors
    /// The store could not be read.
    pub async fn search(&self, s: &Search) -> Result<Page, ReadError> {
        match self {
            LogStore::Local(dir) => {
                let (dir, s) = (dir.clone(), s.clone());
                blocking(move || local::reader::search(&dir, &s)).await
            }
            LogStore::ClickHouse(ch) => ch.search(s).await,
        }
    }

    /// The whole record `id`, if it exists and belongs to `customer` (a
    /// scope; `None`: any).
    ///
    /// # Errors
    /// The store could not be read.
    pub async fn get(
        &self,
        id: Uuid,
        customer: Option<String>,
    ) -> Result<Option<CaptureRecord>, ReadError> {
        let found = match self {
            LogStore::Local(dir) => {
                let dir = dir.clone();
                blocking(move || local::reader::get(&dir, id)).await?
            }
            LogStore::ClickHouse(ch) => ch.get(id).await?,
        };
        Ok(found.filter(|r| customer.is_none_or(|c| !c.is_empty() && c == r.customer)))
    }

    /// Usage aggregates over `q`'s range (see [`query::usage`]).
    ///
    /// # Errors
    /// The store could not be read.
    pub async fn usage(
        &self,
        q: &query::usage::UsageQuery,
    ) -> Result<query::usage::Usage, ReadError> {
        match self {
            LogStore::Local(dir) => {
                let (dir, q) = (dir.clone(), q.clone());
                blocking(move || local::reader::usage(&dir, &q)).await
            }
            LogStore::ClickHouse(ch) => ch.usage(q).await,
        }
    }

    /// Instances whose latest operation failed, or has been in progress for
    /// longer than `stuck_after_us`.
    ///
    /// # Errors
    /// The store could not be read.
    pub async fn instance_problems(
        &self,
        broker: Option<String>,
        customer: Option<String>,
        now_us: i64,
        stuck_after_us: i64,
    ) -> Result<Vec<InstanceProblem>, ReadError> {
        let (ops, polls) = match self {
            LogStore::Local(dir) => {
                let dir = dir.clone();
                blocking(move || {
                    local::reader::latest(&dir, broker.as_deref(), customer.as_deref())
                })
                .await?
            }
            LogStore::ClickHouse(ch) => ch.latest(broker, customer).await?,
        };
        Ok(query::instance_problems(ops, polls, now_us, stuck_after_us))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ReadError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("log read task failed: {e}"))?
}

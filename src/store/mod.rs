//! Where capture records are kept: ClickHouse, or the embedded local store
//! when no ClickHouse is configured; plus the segment-file format both the
//! local store and the capture spool use.

pub mod clickhouse;
pub mod local;
pub mod query;
pub mod record;
pub mod search;
pub mod segments;

pub use record::CaptureRecord;

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

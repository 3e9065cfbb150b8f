//! ClickHouse: the table's columns and DDL (`schema`), the fields no search
//! reads packed in one column (`details`), each body once by
//! content hash (`bodies`), the tables on a cluster (`cluster`), the
//! batch writer (`writer`), the reader for searches (`reader`) and usage
//! aggregates (`usage`), and what they share: the nodes and failover
//! between them (`nodes`), how
//! a client is made from the configuration and how errors are sorted.

pub mod bodies;
pub mod cluster;
pub mod details;
mod nodes;
pub mod reader;
pub mod schema;
mod usage;
pub mod writer;

use clickhouse::Client;

pub use reader::ClickHouseReader;
pub use writer::ClickHouseWriter;

use super::SinkError;
use crate::config::ClickHouseConfig;

/// A client for the node at `url`, as writer and reader both use it.
fn client(cfg: &ClickHouseConfig, url: &str) -> Client {
    let mut client = Client::default()
        .with_url(url)
        .with_user(cfg.user.as_str())
        // NB: 18.16 cannot answer the metadata query that validation needs.
        .with_validation(false);
    if let Some(p) = &cfg.password {
        client = client.with_password(p.expose());
    }
    if cfg.cluster.is_some() {
        // NB: an insert into a Distributed table is acknowledged once a
        // replica of each shard has it, not when queued on the node.
        client = client.with_setting("insert_distributed_sync", "1");
    }
    client
}

/// Each node of `cfg` with `make(client)` for it.
fn nodes<N>(cfg: &ClickHouseConfig, make: impl Fn(Client) -> N) -> nodes::Nodes<N> {
    let list = cfg
        .urls
        .iter()
        .map(|u| (crate::config::mask_userinfo(u), make(client(cfg, u))))
        .collect();
    nodes::Nodes::new(list, cfg.failover_after)
}

/// ClickHouse error codes that mean "this data or schema is wrong": retrying
/// the same batch cannot succeed, so it goes to the dead-letter directory.
///
/// NB: 16 (no such column) is not among them: it means the table is older
/// than the gateway, and the writer adds the columns (see
/// [`SCHEMA_BEHIND_CODES`]) instead of dead-lettering every batch.
/// 32 (attempt to read after EOF) is among them: RowBinary that does not
/// fit the table ends so when a misread length runs past the data.
const BAD_DATA_CODES: [u32; 19] = [
    6, 8, 10, 26, 27, 32, 33, 38, 41, 47, 53, 62, 69, 70, 72, 117, 130, 131, 190,
];
/// Unknown table or database: the schema is re-created, then retried.
pub(crate) const MISSING_SCHEMA_CODES: [u32; 2] = [60, 81];
/// The table lacks a column the gateway writes: the schema is migrated
/// (`ALTER TABLE ... ADD COLUMN`), then retried.
pub(crate) const SCHEMA_BEHIND_CODES: [u32; 1] = [16];

pub(crate) fn exception_code(msg: &str) -> Option<u32> {
    let at = msg.find("Code: ")? + 6;
    msg[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Whether an error says the database or table does not exist yet (the
/// writer creates them with the first batch): nothing stored yet.
fn not_created_yet(e: &clickhouse::error::Error) -> bool {
    exception_code(&e.to_string()).is_some_and(|c| MISSING_SCHEMA_CODES.contains(&c))
}

/// Whether an error says a column the query names is not in the table
/// (16 in an insert, 47 in a `SELECT`).
fn missing_column(e: &clickhouse::error::Error) -> bool {
    exception_code(&e.to_string()).is_some_and(|c| c == 16 || c == 47)
}

pub(crate) fn classify(e: clickhouse::error::Error) -> SinkError {
    use clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut => SinkError::Retryable(e.to_string()),
        E::BadResponse(msg) => match exception_code(&msg) {
            Some(code) if BAD_DATA_CODES.contains(&code) => SinkError::BadData(msg),
            _ => SinkError::Retryable(msg),
        },
        other => SinkError::BadData(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_errors_by_what_a_retry_can_fix() {
        let bad = classify(clickhouse::error::Error::BadResponse(
            "Code: 53, e.displayText() = DB::Exception: Type mismatch".into(),
        ));
        assert!(matches!(bad, SinkError::BadData(_)));
        let behind = classify(clickhouse::error::Error::BadResponse(
            "Code: 16, e.displayText() = DB::Exception: No such column x".into(),
        ));
        assert!(
            matches!(behind, SinkError::Retryable(_)),
            "an older table is migrated, not dead-lettered"
        );
        let busy = classify(clickhouse::error::Error::BadResponse(
            "Code: 202, e.displayText() = DB::Exception: Too many simultaneous queries".into(),
        ));
        assert!(matches!(busy, SinkError::Retryable(_)));
        assert!(matches!(
            classify(clickhouse::error::Error::TimedOut),
            SinkError::Retryable(_)
        ));
        assert_eq!(
            exception_code("Code: 60. DB::Exception: Table x doesn't exist"),
            Some(60)
        );
    }
}

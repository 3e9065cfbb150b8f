//! The ClickHouse writer: schema at start, one `INSERT ... FORMAT RowBinary`
//! per batch through the `clickhouse` crate, errors sorted into retryable
//! and bad data.
//!
//! The base schema stays within what ClickHouse 18.16 (Debian's package)
//! understands and current releases accept: `DateTime` plus a microsecond
//! column (no DateTime64), parallel `Array(String)` columns for headers (no
//! Map), no TTL, codecs or LowCardinality. `ReplacingMergeTree` ordered by
//! `(broker, received_at, id)` collapses the duplicates a replay can cause;
//! queries read with `FINAL` (or `LIMIT 1 BY id`). A retention TTL is added
//! only when the server supports it (19.6+), and the log says which.
//!
//! The crate's `Inserter` is not used: it streams rows as it goes and cannot
//! resend a failed batch. Each batch is a fresh `insert()` kept by the
//! caller until acknowledged.

use std::sync::Arc;
use std::time::Duration;

use clickhouse::{Client, Row};
use serde::Serialize;

use super::{CaptureRecord, SinkError};
use crate::config::ClickHouseConfig;

/// One row of the exchanges table, borrowing from a [`CaptureRecord`].
#[derive(Row, Serialize)]
struct ExchangeRow<'a> {
    #[serde(with = "clickhouse::serde::uuid")]
    id: uuid::Uuid,
    received_at: u32,
    received_at_us: i64,
    duration_us: u64,
    ttfb_us: u64,
    gateway: &'a str,
    platform: &'a str,
    location: &'a str,
    broker: &'a str,
    upstream_url: &'a str,
    method: &'a str,
    path: &'a str,
    query: &'a str,
    operation: &'a str,
    service_id: &'a str,
    plan_id: &'a str,
    service_name: &'a str,
    plan_name: &'a str,
    instance_id: &'a str,
    binding_id: &'a str,
    accepts_incomplete: u8,
    broker_operation: &'a str,
    state: &'a str,
    description: &'a str,
    api_version: &'a str,
    originating_platform: &'a str,
    originating_user: &'a str,
    request_id: &'a str,
    status: u16,
    outcome: &'a str,
    error: &'a str,
    request_header_names: Vec<&'a str>,
    request_header_values: Vec<&'a str>,
    response_header_names: Vec<&'a str>,
    response_header_values: Vec<&'a str>,
    request_body: &'a str,
    request_body_size: u64,
    request_body_truncated: u8,
    response_body: &'a str,
    response_body_size: u64,
    response_body_truncated: u8,
}

impl<'a> From<&'a CaptureRecord> for ExchangeRow<'a> {
    fn from(r: &'a CaptureRecord) -> Self {
        let split = |h: &'a [(String, String)]| -> (Vec<&'a str>, Vec<&'a str>) {
            h.iter().map(|(k, v)| (k.as_str(), v.as_str())).unzip()
        };
        let (qn, qv) = split(&r.request_headers);
        let (sn, sv) = split(&r.response_headers);
        ExchangeRow {
            id: r.id,
            received_at: (r.received_at_us / 1_000_000).clamp(0, u32::MAX as i64) as u32,
            received_at_us: r.received_at_us,
            duration_us: r.duration_us,
            ttfb_us: r.ttfb_us,
            gateway: &r.gateway,
            platform: &r.platform,
            location: &r.location,
            broker: &r.broker,
            upstream_url: &r.upstream_url,
            method: &r.method,
            path: &r.path,
            query: &r.query,
            operation: &r.operation,
            service_id: &r.service_id,
            plan_id: &r.plan_id,
            service_name: &r.service_name,
            plan_name: &r.plan_name,
            instance_id: &r.instance_id,
            binding_id: &r.binding_id,
            accepts_incomplete: r.accepts_incomplete as u8,
            broker_operation: &r.broker_operation,
            state: &r.state,
            description: &r.description,
            api_version: &r.api_version,
            originating_platform: &r.originating_platform,
            originating_user: &r.originating_user,
            request_id: &r.request_id,
            status: r.status,
            outcome: &r.outcome,
            error: &r.error,
            request_header_names: qn,
            request_header_values: qv,
            response_header_names: sn,
            response_header_values: sv,
            request_body: &r.request_body,
            request_body_size: r.request_body_size,
            request_body_truncated: r.request_body_truncated as u8,
            response_body: &r.response_body,
            response_body_size: r.response_body_size,
            response_body_truncated: r.response_body_truncated as u8,
        }
    }
}

/// `CREATE TABLE` for the exchanges table (base schema, 18.16-compatible).
pub fn create_table_sql(database: &str, table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.{table} (
    id UUID,
    received_at DateTime,
    received_at_us Int64,
    duration_us UInt64,
    ttfb_us UInt64,
    gateway String,
    platform String,
    location String,
    broker String,
    upstream_url String,
    method String,
    path String,
    query String,
    operation String,
    service_id String,
    plan_id String,
    service_name String,
    plan_name String,
    instance_id String,
    binding_id String,
    accepts_incomplete UInt8,
    broker_operation String,
    state String,
    description String,
    api_version String,
    originating_platform String,
    originating_user String,
    request_id String,
    status UInt16,
    outcome String,
    error String,
    request_header_names Array(String),
    request_header_values Array(String),
    response_header_names Array(String),
    response_header_values Array(String),
    request_body String,
    request_body_size UInt64,
    request_body_truncated UInt8,
    response_body String,
    response_body_size UInt64,
    response_body_truncated UInt8
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (broker, received_at, id)"
    )
}

/// ClickHouse error codes that mean "this data or schema is wrong": retrying
/// the same batch cannot succeed, so it goes to the dead-letter directory.
const BAD_DATA_CODES: [u32; 19] = [
    6, 8, 10, 16, 26, 27, 33, 38, 41, 47, 53, 62, 69, 70, 72, 117, 130, 131, 190,
];
/// Unknown table or database: the schema is re-created, then retried.
const MISSING_SCHEMA_CODES: [u32; 2] = [60, 81];

fn exception_code(msg: &str) -> Option<u32> {
    let at = msg.find("Code: ")? + 6;
    msg[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Writes batches of records into one table.
pub struct ClickHouseWriter {
    client: Client,
    database: String,
    table: String,
    retention_days: Option<u32>,
    schema_ready: bool,
}

impl ClickHouseWriter {
    /// A writer for `cfg` (no I/O until the first batch).
    pub fn new(cfg: &ClickHouseConfig) -> Self {
        let mut client = Client::default()
            .with_url(cfg.url.as_str())
            .with_user(cfg.user.as_str())
            // NB: 18.16 cannot answer the metadata query that validation needs.
            .with_validation(false)
            .with_compression(clickhouse::Compression::None);
        if let Some(p) = &cfg.password {
            client = client.with_password(p.expose());
        }
        ClickHouseWriter {
            client,
            database: cfg.database.clone(),
            table: cfg.table.clone(),
            retention_days: cfg.retention_days,
            schema_ready: false,
        }
    }

    /// `database.table`.
    pub fn qualified_table(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }

    /// Creates database and table when missing, and applies newer-server
    /// features (retention TTL) when the server has them.
    ///
    /// # Errors
    /// As for inserts.
    pub async fn ensure_schema(&mut self) -> Result<(), SinkError> {
        self.client
            .query(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database))
            .execute()
            .await
            .map_err(classify)?;
        self.client
            .query(&create_table_sql(&self.database, &self.table))
            .execute()
            .await
            .map_err(classify)?;
        let version: String = self
            .client
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(classify)?;
        let (major, minor) = parse_version(&version);
        match self.retention_days {
            Some(days) if (major, minor) >= (19, 6) => {
                self.client
                    .query(&format!(
                        "ALTER TABLE {} MODIFY TTL received_at + INTERVAL {days} DAY",
                        self.qualified_table()
                    ))
                    .execute()
                    .await
                    .map_err(classify)?;
                tracing::info!(%version, days, table = %self.qualified_table(), "ClickHouse retention TTL applied");
            }
            Some(days) => {
                tracing::warn!(%version, days, "ClickHouse {version} has no TTL (needs 19.6+): retention is not enforced by the server")
            }
            None => {}
        }
        tracing::info!(%version, table = %self.qualified_table(), "ClickHouse capture table ready");
        self.schema_ready = true;
        Ok(())
    }

    /// Inserts one batch; the caller keeps it until this returns `Ok`.
    ///
    /// # Errors
    /// [`SinkError::Retryable`] for network, timeout and server-side
    /// trouble; [`SinkError::BadData`] when ClickHouse refuses the data.
    pub async fn insert(&mut self, rows: &[Arc<CaptureRecord>]) -> Result<(), SinkError> {
        if !self.schema_ready {
            self.ensure_schema().await?;
        }
        let result = async {
            let mut ins = self
                .client
                // NB: `insert()` would quote "db.table" as one identifier;
                // both names are validated as [A-Za-z0-9_] by the config.
                .insert_unescaped::<ExchangeRow<'_>>(&self.qualified_table())
                .await?;
            // NB: no yields needed here: the pipeline has a thread and a
            // runtime of its own (capture::CaptureHandle::start).
            for r in rows {
                ins.write(&ExchangeRow::from(&**r)).await?;
            }
            ins.end().await
        }
        .await;
        result.map_err(|e| {
            let err = classify(e);
            if let SinkError::Retryable(msg) = &err {
                if exception_code(msg).is_some_and(|c| MISSING_SCHEMA_CODES.contains(&c)) {
                    self.schema_ready = false;
                }
            }
            err
        })
    }

    /// `SELECT 1`.
    ///
    /// # Errors
    /// When the server does not answer.
    pub async fn ping(&self, timeout: Duration) -> Result<(), SinkError> {
        match tokio::time::timeout(timeout, self.client.query("SELECT 1").fetch_one::<u8>()).await {
            Ok(r) => r.map(|_| ()).map_err(classify),
            Err(_) => Err(SinkError::Retryable("ping timed out".into())),
        }
    }
}

fn parse_version(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn classify(e: clickhouse::error::Error) -> SinkError {
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
            "Code: 16, e.displayText() = DB::Exception: No such column x".into(),
        ));
        assert!(matches!(bad, SinkError::BadData(_)));
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
        assert_eq!(parse_version("18.16.1"), (18, 16));
        assert_eq!(parse_version("24.8.4.13"), (24, 8));
    }
}

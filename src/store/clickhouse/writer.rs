//! The ClickHouse writer: schema at start (see `schema`), per batch one
//! `INSERT ... FORMAT RowBinary` of the bodies not stored lately (see
//! `bodies`) and one of the rows, through the `clickhouse` crate, errors
//! sorted into retryable and bad data (see `classify`).
//!
//! The crate's `Inserter` is not used: it streams rows as it goes and cannot
//! resend a failed batch. Each batch is a fresh `insert()` kept by the
//! caller until acknowledged.

use std::sync::Arc;
use std::time::Duration;

use clickhouse::Client;

use super::bodies::{self, BodyRow, Stored};
use super::schema::{create_sql, parse_version, supports_ttl, upgrade_sql, Change, ExchangeRow};
use super::{classify, exception_code, MISSING_SCHEMA_CODES, SCHEMA_BEHIND_CODES};
use crate::config::ClickHouseConfig;
use crate::store::{CaptureRecord, SinkError};

/// Writes batches of records into one table.
pub struct ClickHouseWriter {
    client: Client,
    database: String,
    table: String,
    retention_days: Option<u32>,
    schema_ready: bool,
    stored: Stored,
}

impl ClickHouseWriter {
    /// A writer for `cfg` (no I/O until the first batch).
    pub fn new(cfg: &ClickHouseConfig) -> Self {
        ClickHouseWriter {
            client: super::client(cfg).with_compression(clickhouse::Compression::None),
            database: cfg.database.clone(),
            table: cfg.table.clone(),
            retention_days: cfg.retention_days,
            schema_ready: false,
            stored: Stored::default(),
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
        let version: String = self
            .client
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(classify)?;
        for sql in create_sql(&self.database, &self.table) {
            self.client.query(&sql).execute().await.map_err(classify)?;
        }
        // NB: a table made by an older gateway lacks the columns added
        // since; 18.16 and current releases both have ADD COLUMN.
        let existing: Vec<String> = self
            .client
            .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
            .bind(self.database.as_str())
            .bind(self.table.as_str())
            .fetch_all()
            .await
            .map_err(classify)?;
        let table = self.qualified_table();
        let server = parse_version(&version);
        let plan = upgrade_sql(
            server,
            &self.database,
            &self.table,
            &existing,
            self.retention_days,
        );
        for (change, sql) in plan {
            self.client.query(&sql).execute().await.map_err(classify)?;
            match change {
                Change::AddColumn(column) => {
                    tracing::info!(%table, column, "ClickHouse capture table migrated: column added")
                }
                Change::Ttl(days) => {
                    tracing::info!(%version, days, %table, "ClickHouse retention TTL applied")
                }
            }
        }
        if let Some(days) = self.retention_days.filter(|_| !supports_ttl(server)) {
            tracing::warn!(%version, days, "ClickHouse {version} has no TTL (needs 19.6+): retention is not enforced by the server");
        }
        tracing::info!(%version, %table, "ClickHouse capture table ready");
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
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().min(u32::MAX as u64) as u32);
        let plan = self.stored.plan(rows, now_s);
        let bodies_table = format!("{}.{}", self.database, bodies::table_name(&self.table));
        let result = async {
            // NB: the bodies first: a row never names a body not stored.
            if !plan.new.is_empty() {
                let mut ins = self
                    .client
                    .insert_unescaped::<BodyRow<'_>>(&bodies_table)
                    .await?;
                for b in &plan.new {
                    ins.write(b).await?;
                }
                ins.end().await?;
            }
            let mut ins = self
                .client
                // NB: `insert()` would quote "db.table" as one identifier;
                // both names are validated as [A-Za-z0-9_] by the config.
                .insert_unescaped::<ExchangeRow<'_>>(&self.qualified_table())
                .await?;
            // NB: no yields needed here: the pipeline has a thread and a
            // runtime of its own (capture::CaptureHandle::start).
            for (r, h) in rows.iter().zip(&plan.hashes) {
                ins.write(&ExchangeRow::new(r, *h)).await?;
            }
            ins.end().await
        }
        .await;
        match result {
            Ok(()) => {
                self.stored.stored(plan, rows);
                Ok(())
            }
            Err(e) => {
                let err = classify(e);
                if let SinkError::Retryable(msg) = &err {
                    if exception_code(msg).is_some_and(|c| {
                        MISSING_SCHEMA_CODES.contains(&c) || SCHEMA_BEHIND_CODES.contains(&c)
                    }) {
                        // NB: a table dropped or re-created lost its bodies.
                        self.schema_ready = false;
                        self.stored.forget();
                    }
                }
                Err(err)
            }
        }
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

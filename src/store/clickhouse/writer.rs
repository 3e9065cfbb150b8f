//! The ClickHouse writer: schema at start (see `schema`, and `cluster`
//! for the tables on a cluster), per batch one `INSERT ... FORMAT
//! RowBinary` of the bodies not stored lately (see `bodies`) and one of
//! the rows, through the `clickhouse` crate, errors sorted into retryable
//! and bad data (see `classify`). With several nodes, a batch a node
//! fails or leaves unanswered for `failover_after` goes to the next (see
//! `nodes`); a copy the silent node committed after all collapses with the
//! one the next node took (same ids, and on a replicated table the same
//! block is deduplicated).
//!
//! The crate's `Inserter` is not used: it streams rows as it goes and cannot
//! resend a failed batch. Each batch is a fresh `insert()` kept by the
//! caller until acknowledged.

use std::sync::Arc;
use std::time::Duration;

use clickhouse::Client;

use super::bodies::{self, BodyRow, Stored};
use super::cluster::{self, Layout};
use super::nodes::Nodes;
use super::schema::{create_sql, parse_version, supports_ttl, upgrade_sql, Change, ExchangeRow};
use super::{classify, exception_code, MISSING_SCHEMA_CODES, SCHEMA_BEHIND_CODES};
use crate::config::ClickHouseConfig;
use crate::store::{CaptureRecord, SinkError};

/// How long `ON CLUSTER` DDL waits for every node before it answers (the
/// nodes that are down run it when they are back).
const CLUSTER_DDL_WAIT_S: &str = "20";
/// "Watching task is executing longer than distributed_ddl_task_timeout":
/// the DDL ran on the nodes that answer, the rest will run it later.
const DDL_STILL_RUNNING: u32 = 159;

/// Writes batches of records into one table.
pub struct ClickHouseWriter {
    nodes: Nodes<Client>,
    database: String,
    table: String,
    cluster: Option<String>,
    retention_days: Option<u32>,
    schema_ready: bool,
    stored: Stored,
}

impl ClickHouseWriter {
    /// A writer for `cfg` (no I/O until the first batch).
    pub fn new(cfg: &ClickHouseConfig) -> Self {
        ClickHouseWriter {
            nodes: super::nodes(cfg, |c| c.with_compression(clickhouse::Compression::None)),
            database: cfg.database.clone(),
            table: cfg.table.clone(),
            cluster: cfg.cluster.clone(),
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
    /// features (retention TTL) when the server has them, on the node that
    /// answers first.
    ///
    /// # Errors
    /// As for inserts.
    pub async fn ensure_schema(&mut self) -> Result<(), SinkError> {
        let mut last = None;
        for i in self.nodes.order().collect::<Vec<_>>() {
            let client = self.nodes.get(i).clone();
            match self.nodes.timed(tagged(self.schema_on(&client))).await {
                Ok(()) => {
                    self.nodes.settle(i, "inserts");
                    self.schema_ready = true;
                    return Ok(());
                }
                Err(e) => {
                    let e = e.sink();
                    tracing::warn!(node = self.nodes.url(i), error = %e, "ClickHouse schema check failed on this node");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one node"))
    }

    async fn columns(&self, client: &Client, table: &str) -> Result<Vec<String>, SinkError> {
        client
            .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
            .bind(self.database.as_str())
            .bind(table)
            .fetch_all()
            .await
            .map_err(classify)
    }

    async fn schema_on(&self, client: &Client) -> Result<(), SinkError> {
        let version: String = client
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(classify)?;
        let server = parse_version(&version);
        let table = self.qualified_table();
        let plan = match &self.cluster {
            None => {
                for sql in create_sql(&self.database, &self.table) {
                    client.query(&sql).execute().await.map_err(classify)?;
                }
                // NB: a table made by an older gateway lacks the columns
                // added since; 18.16 and current releases have ADD COLUMN.
                let existing = self.columns(client, &self.table).await?;
                upgrade_sql(
                    server,
                    &self.database,
                    &self.table,
                    &existing,
                    self.retention_days,
                )
            }
            Some(name) => {
                let layout = Layout {
                    database: &self.database,
                    table: &self.table,
                    cluster: name,
                };
                let tables = [
                    cluster::local(&bodies::table_name(&self.table)),
                    bodies::table_name(&self.table),
                    cluster::local(&self.table),
                    self.table.clone(),
                ];
                let mut present = Vec::new();
                for t in &tables {
                    present.push(self.columns(client, t).await?);
                }
                // NB: ON CLUSTER waits for every node: sent only when this
                // node lacks a table, so a gateway starting while a replica
                // is down does not wait for it.
                if present.iter().any(|c| c.is_empty()) {
                    for sql in layout.create_sql() {
                        cluster_ddl(client, &sql).await?;
                    }
                    present[2] = self.columns(client, &tables[2]).await?;
                    present[3] = self.columns(client, &tables[3]).await?;
                }
                layout.upgrade_sql(server, &present[2], &present[3], self.retention_days)
            }
        };
        for (change, sql) in plan {
            match &self.cluster {
                Some(_) => cluster_ddl(client, &sql).await?,
                None => client.query(&sql).execute().await.map_err(classify)?,
            }
            match change {
                Change::AddColumn(column) => {
                    tracing::info!(%table, column, "ClickHouse capture table migrated: column added")
                }
                Change::Ttl(days) => {
                    tracing::info!(%version, days, %table, "ClickHouse retention TTL applied")
                }
                Change::Distributed => {
                    tracing::info!(%table, %sql, "ClickHouse Distributed table made again with the new columns")
                }
            }
        }
        if let Some(days) = self.retention_days.filter(|_| !supports_ttl(server)) {
            tracing::warn!(%version, days, "ClickHouse {version} has no TTL (needs 19.6+): retention is not enforced by the server");
        }
        tracing::info!(%version, %table, cluster = self.cluster.as_deref(), "ClickHouse capture table ready");
        Ok(())
    }

    /// Inserts one batch; the caller keeps it until this returns `Ok`.
    ///
    /// # Errors
    /// [`SinkError::Retryable`] for network, timeout and server-side
    /// trouble (on every node); [`SinkError::BadData`] when ClickHouse
    /// refuses the data.
    pub async fn insert(&mut self, rows: &[Arc<CaptureRecord>]) -> Result<(), SinkError> {
        if !self.schema_ready {
            self.ensure_schema().await?;
        }
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().min(u32::MAX as u64) as u32);
        let plan = self.stored.plan(rows, now_s);
        let bodies_table = format!("{}.{}", self.database, bodies::table_name(&self.table));
        let table = self.qualified_table();
        let mut last = None;
        for i in self.nodes.order().collect::<Vec<_>>() {
            let client = self.nodes.get(i);
            let attempt = async {
                // NB: the bodies first: a row never names a body not stored.
                if !plan.new.is_empty() {
                    let mut ins = client
                        .insert_unescaped::<BodyRow<'_>>(&bodies_table)
                        .await?;
                    for b in &plan.new {
                        ins.write(b).await?;
                    }
                    ins.end().await?;
                }
                let mut ins = client
                    // NB: `insert()` would quote "db.table" as one
                    // identifier; both names are validated [A-Za-z0-9_].
                    .insert_unescaped::<ExchangeRow<'_>>(&table)
                    .await?;
                // NB: no yields needed here: the pipeline has a thread and
                // a runtime of its own (capture::CaptureHandle::start).
                for (r, h) in rows.iter().zip(&plan.hashes) {
                    ins.write(&ExchangeRow::new(r, *h)).await?;
                }
                ins.end().await
            };
            let err = match self
                .nodes
                .timed(tagged(async { attempt.await.map_err(classify) }))
                .await
            {
                Ok(()) => {
                    self.nodes.settle(i, "inserts");
                    self.stored.stored(plan, rows);
                    return Ok(());
                }
                Err(e) => e.sink(),
            };
            if self.nodes.order().nth(1).is_some() {
                tracing::warn!(node = self.nodes.url(i), error = %err, "ClickHouse insert failed on this node");
            }
            match &err {
                // NB: the data itself: every node would refuse it.
                SinkError::BadData(_) => return Err(err),
                SinkError::Retryable(msg) => {
                    if exception_code(msg).is_some_and(|c| {
                        MISSING_SCHEMA_CODES.contains(&c) || SCHEMA_BEHIND_CODES.contains(&c)
                    }) {
                        // NB: a table dropped or re-created lost its bodies.
                        self.schema_ready = false;
                        self.stored.forget();
                        return Err(err);
                    }
                }
            }
            last = Some(err);
        }
        Err(last.expect("at least one node"))
    }

    /// `SELECT 1` on the current node.
    ///
    /// # Errors
    /// When the server does not answer.
    pub async fn ping(&self, timeout: Duration) -> Result<(), SinkError> {
        let client = self.nodes.get(self.nodes.order().next().unwrap_or(0));
        match tokio::time::timeout(timeout, client.query("SELECT 1").fetch_one::<u8>()).await {
            Ok(r) => r.map(|_| ()).map_err(classify),
            Err(_) => Err(SinkError::Retryable("ping timed out".into())),
        }
    }
}

/// Sends one `ON CLUSTER` statement; one still running on nodes that are
/// down is done as far as this gateway is concerned.
async fn cluster_ddl(client: &Client, sql: &str) -> Result<(), SinkError> {
    match client
        .query(sql)
        .with_setting("distributed_ddl_task_timeout", CLUSTER_DDL_WAIT_S)
        .execute()
        .await
    {
        Err(clickhouse::error::Error::BadResponse(msg))
            if exception_code(&msg) == Some(DDL_STILL_RUNNING) =>
        {
            tracing::warn!(error = %msg, "ClickHouse cluster DDL not yet done on every node; they run it when they are back");
            Ok(())
        }
        r => r.map_err(classify),
    }
}

/// An error kept sorted through `Nodes::timed`, which makes a timeout
/// from text (a timeout is retryable: the next node may answer).
enum Tagged {
    Sink(SinkError),
    Text(String),
}

impl From<String> for Tagged {
    fn from(t: String) -> Self {
        Tagged::Text(t)
    }
}

impl Tagged {
    fn sink(self) -> SinkError {
        match self {
            Tagged::Sink(e) => e,
            Tagged::Text(t) => SinkError::Retryable(t),
        }
    }
}

async fn tagged(
    fut: impl std::future::Future<Output = Result<(), SinkError>>,
) -> Result<(), Tagged> {
    fut.await.map_err(Tagged::Sink)
}

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
use super::details;
use super::nodes::Nodes;
use super::schema::{create_sql, parse_version, supports_ttl, upgrade_sql, Change, ExchangeRow};
use super::{classify, exception_code, MISSING_SCHEMA_CODES, SCHEMA_BEHIND_CODES};
use crate::config::ClickHouseConfig;
use crate::store::{CaptureRecord, SinkError};

/// How long `ON CLUSTER` DDL waits for every node before it answers (the
/// nodes that are down run it when they are back).
const CLUSTER_DDL_WAIT_S: u64 = 5;
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
    failover_after: Duration,
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
            failover_after: cfg.failover_after,
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
            match self.schema_on(&client).await {
                Ok(()) => {
                    self.nodes.settle(i, "inserts");
                    self.schema_ready = true;
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(node = self.nodes.url(i), error = %e, "ClickHouse schema check failed on this node");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one node"))
    }

    /// One query of the schema step, given `failover_after` (with several
    /// nodes) to answer.
    async fn quick<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, SinkError> {
        self.nodes
            .timed(async { fut.await.map_err(classify) })
            .await
    }

    /// One `ON CLUSTER` statement: it may wait [`CLUSTER_DDL_WAIT_S`] for
    /// every node before it answers, so only silence past that counts.
    async fn cluster_ddl(&self, client: &Client, sql: &str) -> Result<(), SinkError> {
        let limit = self.failover_after + Duration::from_secs(CLUSTER_DDL_WAIT_S);
        self.nodes.timed_for(limit, cluster_ddl(client, sql)).await
    }

    async fn columns(&self, client: &Client, table: &str) -> Result<Vec<String>, SinkError> {
        self.quick(
            client
                .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
                .bind(self.database.as_str())
                .bind(table)
                .fetch_all(),
        )
        .await
    }

    async fn schema_on(&self, client: &Client) -> Result<(), SinkError> {
        let version: String = self
            .quick(client.query("SELECT version()").fetch_one())
            .await?;
        let server = parse_version(&version);
        let table = self.qualified_table();
        let plan = match &self.cluster {
            None => {
                for sql in create_sql(&self.database, &self.table) {
                    self.quick(client.query(&sql).execute()).await?;
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
                // NB: ON CLUSTER waits for every node: each statement is
                // sent only when this node lacks its table, so a gateway
                // (re)starting while a replica is down does not wait for it
                // again and again. create_sql is the database, then one
                // statement per table, in the order of `tables`.
                let create = layout.create_sql();
                if present.iter().all(|c| c.is_empty()) {
                    self.cluster_ddl(client, &create[0]).await?;
                }
                for (k, sql) in create.iter().skip(1).enumerate() {
                    if present[k].is_empty() {
                        self.cluster_ddl(client, sql).await?;
                        present[k] = self.columns(client, &tables[k]).await?;
                    }
                }
                layout.upgrade_sql(server, &present[2], &present[3], self.retention_days)
            }
        };
        for (change, sql) in plan {
            match &self.cluster {
                Some(_) => self.cluster_ddl(client, &sql).await?,
                None => self.quick(client.query(&sql).execute()).await?,
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
                // NB: one buffer for every row's details.
                let mut buf = Vec::with_capacity(1024);
                for (r, h) in rows.iter().zip(&plan.hashes) {
                    details::encode(r, *h, &mut buf);
                    let text = std::str::from_utf8(&buf).expect("JSON is UTF-8");
                    ins.write(&ExchangeRow::new(r, text)).await?;
                }
                ins.end().await
            };
            let err = match self
                .nodes
                .timed(async { attempt.await.map_err(classify) })
                .await
            {
                Ok(()) => {
                    self.nodes.settle(i, "inserts");
                    self.stored.stored(plan, rows);
                    return Ok(());
                }
                Err(e) => e,
            };
            if self.nodes.several() {
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
        .with_setting(
            "distributed_ddl_task_timeout",
            CLUSTER_DDL_WAIT_S.to_string(),
        )
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

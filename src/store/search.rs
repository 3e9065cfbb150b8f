//! Reading the communication logs back: search, one exchange, failed
//! instances; from the embedded store (segment files, scanned newest first
//! on the blocking pool) or from ClickHouse (parameterized queries).

use std::collections::HashMap;
use std::path::PathBuf;

use clickhouse::{Client, Row};
use serde::Deserialize;
use uuid::Uuid;

use super::query::{
    self, Collector, InstanceProblem, Order, Page, Search, Summary, INSTANCE_OPERATIONS,
    INSTANCE_POLL,
};
use super::{segments, CaptureRecord};
use crate::config::ClickHouseConfig;

/// Where the logs are read from.
pub enum LogStore {
    /// The embedded store's directory.
    Local(PathBuf),
    /// A ClickHouse table.
    ClickHouse(Box<ClickHouseReader>),
}

/// Why a read failed.
pub type ReadError = String;

impl LogStore {
    /// The store a gateway with this capture configuration writes to.
    pub fn for_capture(cfg: &crate::config::CaptureConfig, local_dir: PathBuf) -> Self {
        match &cfg.clickhouse {
            Some(ch) => LogStore::ClickHouse(Box::new(ClickHouseReader::new(ch))),
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
                blocking(move || local_search(&dir, &s)).await
            }
            LogStore::ClickHouse(ch) => ch.search(s).await,
        }
    }

    /// The whole record `id`, if it exists and `brokers_in` (a scope) allows it.
    ///
    /// # Errors
    /// The store could not be read.
    pub async fn get(
        &self,
        id: Uuid,
        brokers_in: Option<Vec<String>>,
    ) -> Result<Option<CaptureRecord>, ReadError> {
        let found = match self {
            LogStore::Local(dir) => {
                let dir = dir.clone();
                blocking(move || {
                    let mut hit = None;
                    scan(&dir, true, |r| {
                        if r.id == id {
                            hit = Some(r);
                            return false;
                        }
                        true
                    })?;
                    Ok(hit)
                })
                .await?
            }
            LogStore::ClickHouse(ch) => ch.get(id).await?,
        };
        Ok(found.filter(|r| brokers_in.is_none_or(|bs| bs.contains(&r.broker))))
    }

    /// Instances whose latest operation failed, or has been in progress for
    /// longer than `stuck_after_us`.
    ///
    /// # Errors
    /// The store could not be read.
    pub async fn instance_problems(
        &self,
        broker: Option<String>,
        brokers_in: Option<Vec<String>>,
        now_us: i64,
        stuck_after_us: i64,
    ) -> Result<Vec<InstanceProblem>, ReadError> {
        let (ops, polls) = match self {
            LogStore::Local(dir) => {
                let dir = dir.clone();
                blocking(move || local_latest(&dir, broker.as_deref(), brokers_in.as_deref()))
                    .await?
            }
            LogStore::ClickHouse(ch) => ch.latest(broker, brokers_in).await?,
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

/// Calls `f` with every record of the store, segment by segment (newest
/// segment first when `newest_first`), until it returns `false`.
fn scan(
    dir: &std::path::Path,
    newest_first: bool,
    mut f: impl FnMut(CaptureRecord) -> bool,
) -> Result<(), ReadError> {
    let mut segs =
        segments::list(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    if newest_first {
        segs.reverse();
    }
    for seg in segs {
        let Ok(read) = segments::read(&seg.path) else {
            continue; // NB: trimmed away meanwhile.
        };
        let mut recs: Vec<CaptureRecord> = read
            .records
            .iter()
            .filter_map(|p| serde_json::from_slice(p).ok())
            .collect();
        if newest_first {
            recs.reverse();
        }
        for r in recs {
            if !f(r) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Scans segments in the search's order and stops once a whole segment
/// lies beyond the last record the page can hold. Records are appended when
/// their exchange ends, so a segment's times overlap its neighbours' by at
/// most one exchange's duration; one segment of look-ahead covers that.
fn local_search(dir: &std::path::Path, s: &Search) -> Result<Page, ReadError> {
    let newest_first = s.order == Order::NewestFirst;
    let mut segs =
        segments::list(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    if newest_first {
        segs.reverse();
    }
    let mut c = Collector::new(s);
    for seg in segs {
        let Ok(read) = segments::read(&seg.path) else {
            continue;
        };
        let recs: Vec<CaptureRecord> = read
            .records
            .iter()
            .filter_map(|p| serde_json::from_slice(p).ok())
            .collect();
        let Some(edge) = (if newest_first {
            recs.iter().map(|r| r.received_at_us).max()
        } else {
            recs.iter().map(|r| r.received_at_us).min()
        }) else {
            continue;
        };
        if c.complete_before(edge) {
            break;
        }
        for r in recs {
            c.offer(r);
        }
    }
    Ok(c.page())
}

type Latest = (Vec<Summary>, Vec<Summary>);

fn local_latest(
    dir: &std::path::Path,
    broker: Option<&str>,
    brokers_in: Option<&[String]>,
) -> Result<Latest, ReadError> {
    let mut ops: HashMap<(String, String), Summary> = HashMap::new();
    let mut polls: HashMap<(String, String), Summary> = HashMap::new();
    scan(dir, false, |r| {
        if r.instance_id.is_empty()
            || broker.is_some_and(|b| b != r.broker)
            || brokers_in.is_some_and(|bs| !bs.contains(&r.broker))
        {
            return true;
        }
        let map = if INSTANCE_OPERATIONS.contains(&r.operation.as_str()) {
            &mut ops
        } else if r.operation == INSTANCE_POLL {
            &mut polls
        } else {
            return true;
        };
        let k = (r.broker.clone(), r.instance_id.clone());
        if map
            .get(&k)
            .is_none_or(|old| old.received_at_us <= r.received_at_us)
        {
            map.insert(k, Summary::from(&r));
        }
        true
    })?;
    Ok((ops.into_values().collect(), polls.into_values().collect()))
}

/// The columns of [`Summary`], in its field order.
const SUMMARY_COLUMNS: &str = "id, received_at_us, duration_us, platform, location, broker, \
     operation, method, path, status, outcome, service_id, service_name, plan_id, plan_name, \
     instance_id, binding_id, request_id, state, description, error";

#[derive(Row, Deserialize)]
struct SummaryRow {
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid,
    received_at_us: i64,
    duration_us: u64,
    platform: String,
    location: String,
    broker: String,
    operation: String,
    method: String,
    path: String,
    status: u16,
    outcome: String,
    service_id: String,
    service_name: String,
    plan_id: String,
    plan_name: String,
    instance_id: String,
    binding_id: String,
    request_id: String,
    state: String,
    description: String,
    error: String,
}

impl From<SummaryRow> for Summary {
    fn from(r: SummaryRow) -> Self {
        Summary {
            id: r.id,
            received_at_us: r.received_at_us,
            duration_us: r.duration_us,
            platform: r.platform,
            location: r.location,
            broker: r.broker,
            operation: r.operation,
            method: r.method,
            path: r.path,
            status: r.status,
            outcome: r.outcome,
            service_id: r.service_id,
            service_name: r.service_name,
            plan_id: r.plan_id,
            plan_name: r.plan_name,
            instance_id: r.instance_id,
            binding_id: r.binding_id,
            request_id: r.request_id,
            state: r.state,
            description: r.description,
            error: r.error,
        }
    }
}

/// Every column, in the table's order (see `create_table_sql`).
#[derive(Row, Deserialize)]
struct FullRow {
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid,
    received_at: u32,
    received_at_us: i64,
    duration_us: u64,
    ttfb_us: u64,
    gateway: String,
    platform: String,
    location: String,
    broker: String,
    upstream_url: String,
    method: String,
    path: String,
    query: String,
    operation: String,
    service_id: String,
    plan_id: String,
    service_name: String,
    plan_name: String,
    instance_id: String,
    binding_id: String,
    accepts_incomplete: u8,
    broker_operation: String,
    state: String,
    description: String,
    api_version: String,
    originating_platform: String,
    originating_user: String,
    request_id: String,
    status: u16,
    outcome: String,
    error: String,
    request_header_names: Vec<String>,
    request_header_values: Vec<String>,
    response_header_names: Vec<String>,
    response_header_values: Vec<String>,
    request_body: String,
    request_body_size: u64,
    request_body_truncated: u8,
    response_body: String,
    response_body_size: u64,
    response_body_truncated: u8,
}

impl From<FullRow> for CaptureRecord {
    fn from(r: FullRow) -> Self {
        let _ = r.received_at;
        let zip = |n: Vec<String>, v: Vec<String>| n.into_iter().zip(v).collect();
        CaptureRecord {
            id: r.id,
            received_at_us: r.received_at_us,
            duration_us: r.duration_us,
            ttfb_us: r.ttfb_us,
            gateway: r.gateway,
            platform: r.platform,
            location: r.location,
            broker: r.broker,
            upstream_url: r.upstream_url,
            method: r.method,
            path: r.path,
            query: r.query,
            operation: r.operation,
            service_id: r.service_id,
            plan_id: r.plan_id,
            service_name: r.service_name,
            plan_name: r.plan_name,
            instance_id: r.instance_id,
            binding_id: r.binding_id,
            accepts_incomplete: r.accepts_incomplete != 0,
            broker_operation: r.broker_operation,
            state: r.state,
            description: r.description,
            api_version: r.api_version,
            originating_platform: r.originating_platform,
            originating_user: r.originating_user,
            request_id: r.request_id,
            status: r.status,
            outcome: r.outcome,
            error: r.error,
            request_headers: zip(r.request_header_names, r.request_header_values),
            response_headers: zip(r.response_header_names, r.response_header_values),
            request_body: r.request_body,
            request_body_size: r.request_body_size,
            request_body_truncated: r.request_body_truncated != 0,
            response_body: r.response_body,
            response_body_size: r.response_body_size,
            response_body_truncated: r.response_body_truncated != 0,
        }
    }
}

/// Whether a ClickHouse error says the database or table does not exist
/// yet (the writer creates them with the first batch): nothing stored yet.
fn not_created_yet(e: &clickhouse::error::Error) -> bool {
    let m = e.to_string();
    m.contains("Code: 81") || m.contains("Code: 60")
}

/// Reads the exchanges table. Every value is bound with `?` (the crate
/// escapes it); table and database names are validated `[A-Za-z0-9_]`.
pub struct ClickHouseReader {
    client: Client,
    table: String,
}

/// A query under construction: SQL text with `?` and the values to bind.
enum Bind {
    S(String),
    I(i64),
    U(u16),
    L(Vec<String>),
}

struct Sql {
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    fn and(&mut self, cond: &str, b: Bind) {
        self.text.push_str(" AND ");
        self.text.push_str(cond);
        self.binds.push(b);
    }

    fn query(self, client: &Client) -> clickhouse::query::Query {
        let mut q = client.query(&self.text);
        for b in self.binds {
            q = match b {
                Bind::S(s) => q.bind(s),
                Bind::I(i) => q.bind(i),
                Bind::U(u) => q.bind(u),
                Bind::L(l) => q.bind(l),
            };
        }
        q
    }
}

impl ClickHouseReader {
    /// A reader for the configured table.
    pub fn new(cfg: &ClickHouseConfig) -> Self {
        let mut client = Client::default()
            .with_url(cfg.url.as_str())
            .with_user(cfg.user.as_str())
            .with_validation(false);
        if let Some(p) = &cfg.password {
            client = client.with_password(p.expose());
        }
        ClickHouseReader {
            client,
            table: format!("{}.{}", cfg.database, cfg.table),
        }
    }

    fn where_filter(&self, columns: &str, final_: bool, f: &query::Filter) -> Sql {
        let fin = if final_ { " FINAL" } else { "" };
        let mut sql = Sql {
            text: format!("SELECT {columns} FROM {}{fin} WHERE 1 = 1", self.table),
            binds: Vec::new(),
        };
        if let Some(b) = f.before_us {
            // NB: the DateTime bound lets ClickHouse skip whole partitions.
            sql.and(
                "received_at <= toDateTime(?)",
                Bind::I(b.div_euclid(1_000_000) + 1),
            );
            sql.and("received_at_us <= ?", Bind::I(b));
        }
        if let Some(a) = f.after_us {
            sql.and(
                "received_at >= toDateTime(?)",
                Bind::I(a.div_euclid(1_000_000)),
            );
            sql.and("received_at_us >= ?", Bind::I(a));
        }
        for (col, v) in [
            ("broker", &f.broker),
            ("location", &f.location),
            ("platform", &f.platform),
            ("operation", &f.operation),
            ("plan_id", &f.plan_id),
            ("instance_id", &f.instance_id),
            ("request_id", &f.request_id),
            ("outcome", &f.outcome),
        ] {
            if let Some(v) = v {
                sql.and(&format!("{col} = ?"), Bind::S(v.clone()));
            }
        }
        if let Some(st) = f.status {
            sql.and("status >= ?", Bind::U(st.min));
            sql.and("status <= ?", Bind::U(st.max));
        }
        if let Some(bs) = &f.brokers_in {
            sql.and("has(?, broker)", Bind::L(bs.clone()));
        }
        sql
    }

    /// Two steps, because `FINAL` over every summary column of a large
    /// table is slow (0.5 s at a million rows on 18.16): first the page's
    /// (time, id) keys from the filtered columns only, without `FINAL`;
    /// then the summaries of just those ids, from the time range they span.
    /// A replayed duplicate can appear twice in step one; ids are
    /// deduplicated there, and step two reads `LIMIT 1 BY id`.
    async fn search(&self, s: &Search) -> Result<Page, ReadError> {
        let mut sql = self.where_filter("received_at_us, toString(id)", false, &s.filter);
        let (cmp, dir) = match s.order {
            Order::NewestFirst => ("<", "DESC"),
            Order::OldestFirst => (">", "ASC"),
        };
        if let Some(c) = &s.cursor {
            sql.text.push_str(&format!(
                " AND (received_at_us {cmp} ? OR (received_at_us = ? AND id {cmp} toUUID(?)))"
            ));
            sql.binds.push(Bind::I(c.at_us));
            sql.binds.push(Bind::I(c.at_us));
            sql.binds.push(Bind::S(c.id.clone()));
        }
        // NB: room for a few duplicates, so a page is rarely short.
        let want = s.limit + 1 + 8;
        sql.text.push_str(&format!(
            " ORDER BY received_at_us {dir}, id {dir} LIMIT {want}"
        ));
        let keys: Vec<(i64, String)> = match sql.query(&self.client).fetch_all().await {
            Ok(rows) => rows,
            Err(e) if not_created_yet(&e) => Vec::new(),
            Err(e) => return Err(format!("ClickHouse search failed: {e}")),
        };
        let raw = keys.len();
        let mut seen = std::collections::HashSet::new();
        let mut keys: Vec<(i64, String)> = keys
            .into_iter()
            .filter(|k| seen.insert(k.1.clone()))
            .collect();
        let more = keys.len() > s.limit || raw == want;
        keys.truncate(s.limit);
        if keys.is_empty() {
            return Ok(Page {
                records: Vec::new(),
                next: None,
            });
        }
        let lo = keys.iter().map(|k| k.0).min().unwrap_or(0);
        let hi = keys.iter().map(|k| k.0).max().unwrap_or(0);
        let ids: Vec<String> = keys.iter().map(|k| k.1.clone()).collect();
        let sql = Sql {
            text: format!(
                "SELECT {SUMMARY_COLUMNS} FROM {} WHERE received_at >= toDateTime(?) AND received_at <= toDateTime(?) \
                 AND received_at_us >= ? AND received_at_us <= ? AND has(?, toString(id)) LIMIT 1 BY id",
                self.table
            ),
            binds: vec![
                Bind::I(lo.div_euclid(1_000_000)),
                Bind::I(hi.div_euclid(1_000_000) + 1),
                Bind::I(lo),
                Bind::I(hi),
                Bind::L(ids),
            ],
        };
        let rows: Vec<SummaryRow> = sql
            .query(&self.client)
            .fetch_all()
            .await
            .map_err(|e| format!("ClickHouse search failed: {e}"))?;
        let mut by_id: HashMap<String, Summary> = rows
            .into_iter()
            .map(|r| (r.id.to_string(), Summary::from(r)))
            .collect();
        let records: Vec<Summary> = keys.iter().filter_map(|k| by_id.remove(&k.1)).collect();
        let next = more.then(|| records.last()).flatten().map(|r| {
            query::Cursor {
                at_us: r.received_at_us,
                id: r.id.to_string(),
            }
            .encode()
        });
        Ok(Page { records, next })
    }

    async fn get(&self, id: Uuid) -> Result<Option<CaptureRecord>, ReadError> {
        let q = self
            .client
            .query(&format!(
                "SELECT * FROM {} WHERE id = toUUID(?) LIMIT 1",
                self.table
            ))
            .bind(id.to_string());
        let rows: Vec<FullRow> = match q.fetch_all().await {
            Ok(rows) => rows,
            Err(e) if not_created_yet(&e) => Vec::new(),
            Err(e) => return Err(format!("ClickHouse read failed: {e}")),
        };
        Ok(rows.into_iter().next().map(CaptureRecord::from))
    }

    async fn latest(
        &self,
        broker: Option<String>,
        brokers_in: Option<Vec<String>>,
    ) -> Result<Latest, ReadError> {
        let f = query::Filter {
            broker,
            brokers_in,
            ..Default::default()
        };
        let ops = INSTANCE_OPERATIONS
            .iter()
            .map(|o| format!("'{o}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = Vec::new();
        for ops_in in [ops, format!("'{INSTANCE_POLL}'")] {
            // NB: no FINAL: a replayed duplicate is the same record, and
            // LIMIT 1 BY keeps one row per instance anyway.
            let mut sql = self.where_filter(SUMMARY_COLUMNS, false, &f);
            // NB: the operation names are this gateway's constants, not input.
            sql.text.push_str(&format!(
                " AND instance_id != '' AND operation IN ({ops_in}) \
                 ORDER BY received_at_us DESC LIMIT 1 BY broker, instance_id"
            ));
            let rows: Vec<SummaryRow> = match sql.query(&self.client).fetch_all().await {
                Ok(rows) => rows,
                Err(e) if not_created_yet(&e) => Vec::new(),
                Err(e) => return Err(format!("ClickHouse query failed: {e}")),
            };
            out.push(rows.into_iter().map(Summary::from).collect::<Vec<_>>());
        }
        let polls = out.pop().unwrap_or_default();
        let ops = out.pop().unwrap_or_default();
        Ok((ops, polls))
    }
}

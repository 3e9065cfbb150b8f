//! Reading the exchanges table: searches (two steps, keys then
//! summaries), one record, and the latest operation of each instance.
//! Every value is bound with `?`; columns come from the row types
//! (`?fields`), never `SELECT *`.

use std::collections::HashMap;

use clickhouse::Client;
use uuid::Uuid;

use super::bodies::{self, BodyRow};
use super::nodes::Nodes;
use super::schema::{ExchangeRow, LegacyRow};
use super::{missing_column, not_created_yet};
use crate::config::ClickHouseConfig;
use crate::store::query::usage::{Usage, UsageQuery};
use crate::store::query::{
    self, Order, Page, Search, Summary, INSTANCE_OPERATIONS, INSTANCE_POLL, REFUSED, ROUTED_REFUSAL,
};
use crate::store::{CaptureRecord, Latest, ReadError};

/// Reads the exchanges table through the first node that answers (see
/// `nodes`).
pub struct ClickHouseReader {
    nodes: Nodes<NodeReader>,
}

impl ClickHouseReader {
    /// A reader for the configured table.
    pub fn new(cfg: &ClickHouseConfig) -> Self {
        let bodies_table = format!("{}.{}", cfg.database, bodies::table_name(&cfg.table));
        ClickHouseReader {
            nodes: super::nodes(cfg, |client| NodeReader {
                client,
                table: format!("{}.{}", cfg.database, cfg.table),
                bodies_table: bodies_table.clone(),
            }),
        }
    }

    pub(crate) async fn search(&self, s: &Search) -> Result<Page, ReadError> {
        self.nodes.first(|n| n.search(s)).await
    }

    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<CaptureRecord>, ReadError> {
        self.nodes.first(|n| n.get(id)).await
    }

    pub(crate) async fn latest(
        &self,
        broker: Option<String>,
        customer: Option<String>,
    ) -> Result<Latest, ReadError> {
        self.nodes
            .first(|n| n.latest(broker.clone(), customer.clone()))
            .await
    }

    pub(crate) async fn usage(&self, q: &UsageQuery) -> Result<Usage, ReadError> {
        self.nodes.first(|n| n.usage(q)).await
    }
}

/// Reads the exchanges table on one node. Every value is bound with `?`
/// (the crate escapes it); table and database names are validated
/// `[A-Za-z0-9_]`.
pub(super) struct NodeReader {
    pub(super) client: Client,
    table: String,
    bodies_table: String,
}

/// A query under construction: SQL text with `?` and the values to bind.
enum Bind {
    S(String),
    I(i64),
    U(u16),
    L(Vec<String>),
}

pub(super) struct Sql {
    pub(super) text: String,
    binds: Vec<Bind>,
}

impl Sql {
    fn and(&mut self, cond: &str, b: Bind) {
        self.text.push_str(" AND ");
        self.text.push_str(cond);
        self.binds.push(b);
    }

    pub(super) fn query(self, client: &Client) -> clickhouse::query::Query {
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

impl NodeReader {
    pub(super) fn where_filter(&self, columns: &str, final_: bool, f: &query::Filter) -> Sql {
        let fin = if final_ { " FINAL" } else { "" };
        let mut sql = Sql {
            text: format!("SELECT {columns} FROM {}{fin} WHERE 1 = 1", self.table),
            binds: Vec::new(),
        };
        let query::Filter {
            before_us,
            after_us,
            broker,
            location,
            platform,
            operation,
            status,
            plan,
            service,
            instance_id,
            request_id,
            outcome,
            customer,
        } = f;
        if let Some(b) = *before_us {
            // NB: the DateTime bound lets ClickHouse skip whole partitions.
            sql.and(
                "received_at <= toDateTime(?)",
                Bind::I(b.div_euclid(1_000_000) + 1),
            );
            sql.and("received_at_us <= ?", Bind::I(b));
        }
        if let Some(a) = *after_us {
            sql.and(
                "received_at >= toDateTime(?)",
                Bind::I(a.div_euclid(1_000_000)),
            );
            sql.and("received_at_us >= ?", Bind::I(a));
        }
        for (col, v) in [
            ("broker", broker),
            ("location", location),
            ("platform", platform),
            ("operation", operation),
            ("instance_id", instance_id),
            ("request_id", request_id),
            ("outcome", outcome),
        ] {
            if let Some(v) = v {
                sql.and(&format!("{col} = ?"), Bind::S(v.clone()));
            }
        }
        // NB: a plan or service is searched by id or by the name the
        // catalog gave it when the record was captured.
        for (id, name, v) in [
            ("plan_id", "plan_name", plan),
            ("service_id", "service_name", service),
        ] {
            if let Some(v) = v {
                sql.and(&format!("({id} = ?"), Bind::S(v.clone()));
                sql.text
                    .push_str(&format!(" OR ({name} != '' AND {name} = ?))"));
                sql.binds.push(Bind::S(v.clone()));
            }
        }
        if let Some(st) = status {
            sql.and("status >= ?", Bind::U(st.min));
            sql.and("status <= ?", Bind::U(st.max));
        }
        match customer {
            // NB: an empty customer is nobody's scope: it matches nothing.
            Some(c) if c.is_empty() => sql.text.push_str(" AND 0 = 1"),
            Some(c) => sql.and("customer = ?", Bind::S(c.clone())),
            None => {}
        }
        sql
    }

    /// Two steps, because `FINAL` over every summary column of a large
    /// table is slow (0.5 s at a million rows on 18.16): first the page's
    /// (time, id) keys from the filtered columns only, without `FINAL`;
    /// then the summaries of just those ids, from the time range they span.
    /// A replayed duplicate can appear twice in step one; ids are
    /// deduplicated there, and step two reads `LIMIT 1 BY id`.
    pub(crate) async fn search(&self, s: &Search) -> Result<Page, ReadError> {
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
                "SELECT ?fields FROM {} WHERE received_at >= toDateTime(?) AND received_at <= toDateTime(?) \
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
        let rows: Vec<Summary> = sql
            .query(&self.client)
            .fetch_all()
            .await
            .map_err(|e| format!("ClickHouse search failed: {e}"))?;
        let mut by_id: HashMap<String, Summary> =
            rows.into_iter().map(|r| (r.id.to_string(), r)).collect();
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

    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<CaptureRecord>, ReadError> {
        let q = self.by_id(id);
        // NB: a cursor, because a row type with a lifetime is read borrowed.
        let first = async {
            let mut rows = q.fetch::<ExchangeRow<'_>>()?;
            Ok::<_, clickhouse::error::Error>(rows.next().await?.map(ExchangeRow::into_record))
        };
        let (mut record, hashes) = match first.await {
            Ok(Some(Ok(found))) => found,
            Ok(Some(Err(e))) => return Err(format!("record {id}: {e}")),
            Ok(None) => return Ok(None),
            Err(e) if not_created_yet(&e) => return Ok(None),
            Err(e) => return Err(format!("ClickHouse read failed: {e}")),
        };
        let hashes = match hashes {
            Some(h) => h,
            None => self.legacy(id, &mut record).await?,
        };
        if hashes != [bodies::NO_HASH; 2] {
            // NB: a bodies table dropped by hand loses the bodies, not the
            // records: they show as truncated.
            let found = match self.bodies(&hashes).await {
                Ok(found) => found,
                Err(e) if not_created_yet(&e) => Vec::new(),
                Err(e) => return Err(format!("ClickHouse read of the bodies failed: {e}")),
            };
            for (h, (text, truncated)) in hashes.iter().zip([
                (&mut record.request_body, &mut record.request_body_truncated),
                (
                    &mut record.response_body,
                    &mut record.response_body_truncated,
                ),
            ]) {
                if *h == bodies::NO_HASH {
                    continue;
                }
                match found.iter().find(|b| b.0 == *h) {
                    Some(b) => text.clone_from(&b.1),
                    // NB: expired or lost: say the record lacks it.
                    None => *truncated = true,
                }
            }
        }
        Ok(Some(record))
    }

    /// `SELECT ?fields` of the row `id` (one copy of it).
    fn by_id(&self, id: Uuid) -> clickhouse::query::Query {
        self.client
            .query(&format!(
                "SELECT ?fields FROM {} WHERE id = toUUID(?) LIMIT 1",
                self.table
            ))
            .bind(id.to_string())
    }

    /// The fields of a row written before `details`, from the columns it
    /// kept them in (a table made before 2026-12-07 keeps them: see
    /// `schema::LEGACY_COLUMNS`). Where they were dropped by hand, the
    /// record shows without them, its bodies marked truncated.
    async fn legacy(&self, id: Uuid, r: &mut CaptureRecord) -> Result<bodies::Hashes, ReadError> {
        let q = self.by_id(id);
        match q.fetch_optional::<LegacyRow>().await {
            Ok(Some(old)) => Ok(old.fill(r)),
            Ok(None) => Ok([bodies::NO_HASH; 2]),
            Err(e) if missing_column(&e) => {
                r.request_body_truncated = true;
                r.response_body_truncated = true;
                Ok([bodies::NO_HASH; 2])
            }
            Err(e) => Err(format!("ClickHouse read failed: {e}")),
        }
    }

    /// The bodies stored under `hashes` (one row each, whichever copy).
    async fn bodies(
        &self,
        hashes: &[[u8; 16]],
    ) -> Result<Vec<([u8; 16], String)>, clickhouse::error::Error> {
        let hex: Vec<String> = hashes
            .iter()
            .filter(|h| **h != bodies::NO_HASH)
            .map(|h| crate::digest::hex(h))
            .collect();
        // NB: `hash IN (unhex(…))` keeps to the primary key on 18.16 and
        // today (`has()` over hex strings would read the whole table).
        let list = vec!["toFixedString(unhex(?), 16)"; hex.len()].join(", ");
        let mut q = self.client.query(&format!(
            "SELECT ?fields FROM {} WHERE hash IN ({list}) LIMIT 1 BY hash",
            self.bodies_table
        ));
        for h in hex {
            q = q.bind(h);
        }
        let mut rows = q.fetch::<BodyRow<'_>>()?;
        let mut out = Vec::new();
        while let Some(b) = rows.next().await? {
            out.push((b.hash, b.body.into_owned()));
        }
        Ok(out)
    }

    pub(crate) async fn latest(
        &self,
        broker: Option<String>,
        customer: Option<String>,
    ) -> Result<Latest, ReadError> {
        let f = query::Filter {
            broker,
            customer,
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
            let mut sql = self.where_filter("?fields", false, &f);
            // NB: the operation names and the refusal rule are this gateway's
            // constants, not input (see `query::REFUSED`).
            sql.text.push_str(&format!(
                " AND instance_id != '' AND NOT (outcome = '{REFUSED}' AND status != {ROUTED_REFUSAL}) AND operation IN ({ops_in}) \
                 ORDER BY received_at_us DESC LIMIT 1 BY broker, instance_id"
            ));
            let rows: Vec<Summary> = match sql.query(&self.client).fetch_all().await {
                Ok(rows) => rows,
                Err(e) if not_created_yet(&e) => Vec::new(),
                Err(e) => return Err(format!("ClickHouse query failed: {e}")),
            };
            out.push(rows);
        }
        let polls = out.pop().unwrap_or_default();
        let ops = out.pop().unwrap_or_default();
        Ok((ops, polls))
    }
}

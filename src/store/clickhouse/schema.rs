//! The exchanges table, written once: [`exchange_columns!`] declares every
//! column with its Rust and ClickHouse types, and from that one list come
//! the `CREATE TABLE` ([`create_table_sql`]), the insert row and the full
//! read row ([`ExchangeRow`], whose `Row::COLUMN_NAMES` the `clickhouse`
//! crate turns into the insert's column list and a query's `?fields`).
//! Search summaries read `?fields` of `query::Summary`, whose names a test
//! checks against [`COLUMNS`]. Nothing reads `SELECT *` by position.
//!
//! The base schema stays within what ClickHouse 18.16 (Debian's package)
//! understands and current releases accept: `DateTime` plus a microsecond
//! column (no DateTime64), parallel `Array(String)` columns for headers (no
//! Map), no TTL, codecs or LowCardinality. `ReplacingMergeTree` ordered by
//! `(broker, received_at, id)` collapses the duplicates a replay can cause;
//! queries read with `FINAL` (or `LIMIT 1 BY id`). A retention TTL is added
//! only when the server supports it (19.6+): see [`supports_ttl`].

use std::borrow::Cow;

use clickhouse::Row as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{bodies, details};
use crate::store::CaptureRecord;

/// Declares the table's columns once: `name: RustType => "ClickHouse type"`.
macro_rules! exchange_columns {
    ($( $(#[$attr:meta])* $name:ident : $ty:ty => $ch:literal ),* $(,)?) => {
        /// One row of the exchanges table, in table order: the columns
        /// searches, summaries and aggregates read, and the rest of the
        /// record in [`details`](super::details). Borrowed from a
        /// [`CaptureRecord`] to insert, owned (`ExchangeRow<'static>`) when
        /// read back.
        #[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
        pub struct ExchangeRow<'a> {
            $( $(#[$attr])* #[allow(missing_docs)] pub $name: $ty, )*
        }

        /// Every column and its ClickHouse type, in table order.
        pub const COLUMNS: &[(&str, &str)] = &[ $( (stringify!($name), $ch), )* ];
    };
}

exchange_columns! {
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid => "UUID",
    received_at: u32 => "DateTime",
    received_at_us: i64 => "Int64",
    duration_us: u64 => "UInt64",
    gateway: Cow<'a, str> => "String",
    platform: Cow<'a, str> => "String",
    location: Cow<'a, str> => "String",
    broker: Cow<'a, str> => "String",
    customer: Cow<'a, str> => "String",
    method: Cow<'a, str> => "String",
    path: Cow<'a, str> => "String",
    operation: Cow<'a, str> => "String",
    service_id: Cow<'a, str> => "String",
    plan_id: Cow<'a, str> => "String",
    service_name: Cow<'a, str> => "String",
    plan_name: Cow<'a, str> => "String",
    instance_id: Cow<'a, str> => "String",
    binding_id: Cow<'a, str> => "String",
    state: Cow<'a, str> => "String",
    description: Cow<'a, str> => "String",
    request_id: Cow<'a, str> => "String",
    status: u16 => "UInt16",
    outcome: Cow<'a, str> => "String",
    error: Cow<'a, str> => "String",
    details: Cow<'a, str> => "String",
}

/// The columns of a table made by a gateway before 2026-12-07, in its
/// order: one per field. Such a table keeps them (its older rows are in
/// them, and `details` empty); it gains `details` and the columns it
/// lacked, and its new rows leave these empty (see the README to drop
/// them once the older rows have aged out).
pub const LEGACY_COLUMNS: &[(&str, &str)] = &[
    ("id", "UUID"),
    ("received_at", "DateTime"),
    ("received_at_us", "Int64"),
    ("duration_us", "UInt64"),
    ("ttfb_us", "UInt64"),
    ("gateway", "String"),
    ("platform", "String"),
    ("location", "String"),
    ("broker", "String"),
    ("customer", "String"),
    ("upstream_url", "String"),
    ("method", "String"),
    ("path", "String"),
    ("query", "String"),
    ("operation", "String"),
    ("service_id", "String"),
    ("plan_id", "String"),
    ("service_name", "String"),
    ("plan_name", "String"),
    ("instance_id", "String"),
    ("binding_id", "String"),
    ("accepts_incomplete", "UInt8"),
    ("broker_operation", "String"),
    ("state", "String"),
    ("description", "String"),
    ("api_version", "String"),
    ("originating_platform", "String"),
    ("originating_user", "String"),
    ("request_id", "String"),
    ("status", "UInt16"),
    ("outcome", "String"),
    ("error", "String"),
    ("request_header_names", "Array(String)"),
    ("request_header_values", "Array(String)"),
    ("response_header_names", "Array(String)"),
    ("response_header_values", "Array(String)"),
    ("request_body", "String"),
    ("request_body_size", "UInt64"),
    ("request_body_truncated", "UInt8"),
    ("response_body", "String"),
    ("response_body_size", "UInt64"),
    ("response_body_truncated", "UInt8"),
    ("request_body_hash", "FixedString(16)"),
    ("response_body_hash", "FixedString(16)"),
];

/// What an older row keeps outside today's columns (the columns of
/// [`LEGACY_COLUMNS`] that [`COLUMNS`] lacks), read when its `details` is
/// empty.
#[derive(Debug, clickhouse::Row, Deserialize)]
#[allow(missing_docs)]
pub struct LegacyRow {
    pub ttfb_us: u64,
    pub upstream_url: String,
    pub query: String,
    pub accepts_incomplete: u8,
    pub broker_operation: String,
    pub api_version: String,
    pub originating_platform: String,
    pub originating_user: String,
    pub request_header_names: Vec<String>,
    pub request_header_values: Vec<String>,
    pub response_header_names: Vec<String>,
    pub response_header_values: Vec<String>,
    pub request_body: String,
    pub request_body_size: u64,
    pub request_body_truncated: u8,
    pub response_body: String,
    pub response_body_size: u64,
    pub response_body_truncated: u8,
    pub request_body_hash: [u8; 16],
    pub response_body_hash: [u8; 16],
}

/// The columns a table with `existing` columns is brought to: today's
/// [`COLUMNS`], or for a table made before them, [`LEGACY_COLUMNS`] and
/// `details`.
fn wanted(existing: &[String]) -> Vec<(&'static str, &'static str)> {
    let legacy = existing
        .iter()
        .any(|e| LegacyRow::COLUMN_NAMES.contains(&e.as_str()));
    match legacy {
        false => COLUMNS.to_vec(),
        true => LEGACY_COLUMNS
            .iter()
            .chain(COLUMNS.iter().filter(|(n, _)| *n == "details"))
            .copied()
            .collect(),
    }
}

/// `CREATE TABLE` for the exchanges table (base schema, 18.16-compatible).
pub fn create_table_sql(database: &str, table: &str) -> String {
    table_sql(&format!("{database}.{table}"), "ReplacingMergeTree()")
}

/// `CREATE TABLE` of the exchanges table as gateways before 2026-12-07
/// made it ([`LEGACY_COLUMNS`]): for the tests of the migration.
pub fn legacy_table_sql(database: &str, table: &str) -> String {
    columns_sql(
        &format!("{database}.{table}"),
        "ReplacingMergeTree()",
        LEGACY_COLUMNS,
    )
}

/// `CREATE TABLE` of the exchanges columns as `target` (`db.t`, maybe
/// with `ON CLUSTER c`) with `engine`.
pub(super) fn table_sql(target: &str, engine: &str) -> String {
    columns_sql(target, engine, COLUMNS)
}

fn columns_sql(target: &str, engine: &str, columns: &[(&str, &str)]) -> String {
    let columns: Vec<String> = columns
        .iter()
        .map(|(name, ty)| format!("    {name} {ty}"))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {target} (\n{}\n) ENGINE = {engine}\n\
         PARTITION BY toYYYYMM(received_at)\nORDER BY (broker, received_at, id)",
        columns.join(",\n")
    )
}

/// The `ALTER TABLE ... ADD COLUMN` statements that bring a table with
/// `existing` columns to [`COLUMNS`], each with the column it adds; each
/// new column goes after the one before it in [`COLUMNS`]. Columns the
/// table has beyond the list are left alone.
pub fn migration_sql(
    database: &str,
    table: &str,
    existing: &[String],
) -> Vec<(&'static str, String)> {
    alter_sql(&format!("{database}.{table}"), existing)
}

/// [`migration_sql`] for `target` (`db.t`, maybe with `ON CLUSTER c`).
pub(super) fn alter_sql(target: &str, existing: &[String]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let wanted = wanted(existing);
    for (i, (name, ty)) in wanted.iter().enumerate() {
        if existing.iter().any(|e| e == name) {
            continue;
        }
        let place = match i {
            0 => String::new(),
            _ => format!(" AFTER {}", wanted[i - 1].0),
        };
        out.push((
            *name,
            format!("ALTER TABLE {target} ADD COLUMN {name} {ty}{place}"),
        ));
    }
    out
}

/// What one statement of [`upgrade_sql`] changes (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A column the table lacked.
    AddColumn(&'static str),
    /// The retention TTL, in days.
    Ttl(u32),
    /// A cluster's `Distributed` table, dropped and made again with the
    /// replicated table's columns.
    Distributed,
}

/// Every statement that creates the schema where it is missing, for any
/// server version: the database, the bodies table and the exchanges table
/// (base schema).
pub fn create_sql(database: &str, table: &str) -> Vec<String> {
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {database}"),
        bodies::create_table_sql(database, table),
        create_table_sql(database, table),
    ]
}

/// The statements that bring an existing table with `existing` columns to
/// what this gateway writes on a server of `version`: missing columns
/// ([`migration_sql`]), then the retention TTL where the server has TTLs
/// ([`supports_ttl`]). With [`create_sql`], this is all the DDL the writer
/// sends (the compatibility test runs both on 18.16 and on a current
/// engine).
pub fn upgrade_sql(
    version: (u32, u32),
    database: &str,
    table: &str,
    existing: &[String],
    retention_days: Option<u32>,
) -> Vec<(Change, String)> {
    let mut out: Vec<(Change, String)> = migration_sql(database, table, existing)
        .into_iter()
        .map(|(c, sql)| (Change::AddColumn(c), sql))
        .collect();
    if let Some(days) = retention_days.filter(|_| supports_ttl(version)) {
        out.push((
            Change::Ttl(days),
            format!("ALTER TABLE {database}.{table} MODIFY TTL received_at + INTERVAL {days} DAY"),
        ));
        // NB: a day longer than the records: see `bodies`.
        out.push((
            Change::Ttl(days + 1),
            format!(
                "ALTER TABLE {database}.{} MODIFY TTL stored_at + INTERVAL {} DAY",
                bodies::table_name(table),
                days + 1
            ),
        ));
    }
    out
}

/// `(major, minor)` of a `SELECT version()` answer (`18.16.1`, `24.8.4.13`).
pub fn parse_version(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Whether a server of this version has table TTLs (19.6+).
pub fn supports_ttl(version: (u32, u32)) -> bool {
    version >= (19, 6)
}

// === impl ExchangeRow ===

impl<'a> ExchangeRow<'a> {
    /// The row of `r`, its [`details`] already encoded (by
    /// [`details::encode`], into a buffer the writer keeps).
    pub fn new(r: &'a CaptureRecord, details: &'a str) -> Self {
        let b = |s: &'a String| Cow::Borrowed(s.as_str());
        ExchangeRow {
            id: r.id,
            received_at: (r.received_at_us / 1_000_000).clamp(0, u32::MAX as i64) as u32,
            received_at_us: r.received_at_us,
            duration_us: r.duration_us,
            gateway: b(&r.gateway),
            platform: b(&r.platform),
            location: b(&r.location),
            broker: b(&r.broker),
            customer: b(&r.customer),
            method: b(&r.method),
            path: b(&r.path),
            operation: b(&r.operation),
            service_id: b(&r.service_id),
            plan_id: b(&r.plan_id),
            service_name: b(&r.service_name),
            plan_name: b(&r.plan_name),
            instance_id: b(&r.instance_id),
            binding_id: b(&r.binding_id),
            state: b(&r.state),
            description: b(&r.description),
            request_id: b(&r.request_id),
            status: r.status,
            outcome: b(&r.outcome),
            error: b(&r.error),
            details: Cow::Borrowed(details),
        }
    }

    /// The record of a row and the hashes of its bodies in the bodies
    /// table (still empty in the record: the reader fills them), or `None`
    /// for the hashes when the row is older than `details` (the reader
    /// then reads its [`LegacyRow`]).
    ///
    /// # Errors
    /// When `details` is not understood (written by a newer gateway).
    pub fn into_record(self) -> Result<(CaptureRecord, Option<bodies::Hashes>), String> {
        // NB: destructured without `..`: a new column does not compile
        // until it is read back here.
        let ExchangeRow {
            id,
            received_at: _,
            received_at_us,
            duration_us,
            gateway,
            platform,
            location,
            broker,
            customer,
            method,
            path,
            operation,
            service_id,
            plan_id,
            service_name,
            plan_name,
            instance_id,
            binding_id,
            state,
            description,
            request_id,
            status,
            outcome,
            error,
            details,
        } = self;
        let mut r = CaptureRecord {
            id,
            received_at_us,
            duration_us,
            gateway: gateway.into_owned(),
            platform: platform.into_owned(),
            location: location.into_owned(),
            broker: broker.into_owned(),
            customer: customer.into_owned(),
            method: method.into_owned(),
            path: path.into_owned(),
            operation: operation.into_owned(),
            service_id: service_id.into_owned(),
            plan_id: plan_id.into_owned(),
            service_name: service_name.into_owned(),
            plan_name: plan_name.into_owned(),
            instance_id: instance_id.into_owned(),
            binding_id: binding_id.into_owned(),
            state: state.into_owned(),
            description: description.into_owned(),
            request_id: request_id.into_owned(),
            status,
            outcome: outcome.into_owned(),
            error: error.into_owned(),
            ..CaptureRecord::default()
        };
        if details.is_empty() {
            return Ok((r, None));
        }
        let hashes = details::decode(&details, &mut r)?;
        Ok((r, Some(hashes)))
    }
}

impl LegacyRow {
    /// Fills what an older row keeps in its own columns into `r`, and
    /// returns the body hashes ([`bodies::NO_HASH`] where the text is in
    /// the row).
    pub fn fill(self, r: &mut CaptureRecord) -> bodies::Hashes {
        let zip = |n: Vec<String>, v: Vec<String>| n.into_iter().zip(v).collect();
        r.ttfb_us = self.ttfb_us;
        r.upstream_url = self.upstream_url;
        r.query = self.query;
        r.accepts_incomplete = self.accepts_incomplete != 0;
        r.broker_operation = self.broker_operation;
        r.api_version = self.api_version;
        r.originating_platform = self.originating_platform;
        r.originating_user = self.originating_user;
        r.request_headers = zip(self.request_header_names, self.request_header_values);
        r.response_headers = zip(self.response_header_names, self.response_header_values);
        r.request_body = self.request_body;
        r.request_body_size = self.request_body_size;
        r.request_body_truncated = self.request_body_truncated != 0;
        r.response_body = self.response_body;
        r.response_body_size = self.response_body_size;
        r.response_body_truncated = self.response_body_truncated != 0;
        [self.request_body_hash, self.response_body_hash]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ddl_the_row_and_the_summary_name_the_same_columns() {
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        assert_eq!(ExchangeRow::COLUMN_NAMES, names.as_slice());
        for c in crate::store::query::Summary::COLUMN_NAMES {
            assert!(names.contains(c), "summary column {c} is not in the table");
        }
        let ddl = create_table_sql("db", "t");
        assert!(
            ddl.contains("    id UUID,\n    received_at DateTime,"),
            "{ddl}"
        );
        assert!(
            ddl.contains("    details String\n) ENGINE = ReplacingMergeTree()"),
            "{ddl}"
        );
        let legacy: Vec<&str> = LEGACY_COLUMNS.iter().map(|(n, _)| *n).collect();
        for c in names.iter().filter(|c| **c != "details") {
            assert!(legacy.contains(c), "{c} was a column before details");
        }
        for c in LegacyRow::COLUMN_NAMES {
            assert!(legacy.contains(c) && !names.contains(c), "{c}");
        }
        assert_eq!(
            names.len() - 1 + LegacyRow::COLUMN_NAMES.len(),
            legacy.len(),
            "every older column is read by either row"
        );
    }

    #[test]
    fn a_record_survives_the_row_both_ways() {
        let mut r = crate::store::query::tests::rec(1_700_000_000_123_456, "BIND", 201, "i");
        r.request_headers = vec![("x-a".into(), "1".into()), ("x-b".into(), "2".into())];
        r.accepts_incomplete = true;
        r.response_body_truncated = true;
        r.gateway = "gw-1".into();
        let mut buf = Vec::new();
        details::encode(&r, [bodies::NO_HASH; 2], &mut buf);
        let row = ExchangeRow::new(&r, std::str::from_utf8(&buf).unwrap());
        assert_eq!(row.received_at, 1_700_000_000);
        assert_eq!(
            row.into_record().unwrap(),
            (r.clone(), Some([bodies::NO_HASH; 2]))
        );
        r.response_body = "x".repeat(100);
        details::encode(&r, [bodies::NO_HASH, [7; 16]], &mut buf);
        let row = ExchangeRow::new(&r, std::str::from_utf8(&buf).unwrap());
        let (back, hashes) = row.into_record().unwrap();
        assert_eq!(
            (back.response_body.as_str(), hashes),
            ("", Some([bodies::NO_HASH, [7; 16]])),
            "a hashed body is not in the row"
        );
        let older = ExchangeRow::new(&r, "");
        assert_eq!(older.into_record().unwrap().1, None, "an older row");
        let bad = ExchangeRow::new(&r, "[9]");
        assert!(bad.into_record().unwrap_err().contains("version 9"));
    }

    #[test]
    fn a_table_missing_columns_gets_them_added_in_place() {
        let all: Vec<String> = COLUMNS.iter().map(|(n, _)| n.to_string()).collect();
        assert!(
            migration_sql("db", "t", &all).is_empty(),
            "a current table needs nothing"
        );
        let newer: Vec<String> = all.iter().filter(|n| *n != "error").cloned().collect();
        let sql: Vec<String> = migration_sql("db", "t", &newer)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            sql,
            ["ALTER TABLE db.t ADD COLUMN error String AFTER outcome"]
        );
        // A table of one column per field, as gateways before `details`
        // made it (and older ones without `ttfb_us` and `error`): it keeps
        // that layout, gains what it lacked, and `details` last.
        let older: Vec<String> = LEGACY_COLUMNS
            .iter()
            .map(|(n, _)| n.to_string())
            .filter(|n| n != "ttfb_us" && n != "error")
            .collect();
        let sql: Vec<String> = migration_sql("db", "t", &older)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            sql,
            [
                "ALTER TABLE db.t ADD COLUMN ttfb_us UInt64 AFTER duration_us",
                "ALTER TABLE db.t ADD COLUMN error String AFTER outcome",
                "ALTER TABLE db.t ADD COLUMN details String AFTER response_body_hash",
            ]
        );
    }

    #[test]
    fn the_ttl_is_sent_only_to_servers_that_have_it() {
        let all: Vec<String> = COLUMNS.iter().map(|(n, _)| n.to_string()).collect();
        assert!(upgrade_sql((18, 16), "db", "t", &all, Some(30)).is_empty());
        assert_eq!(
            upgrade_sql((26, 9), "db", "t", &all, Some(30)),
            [
                (
                    Change::Ttl(30),
                    "ALTER TABLE db.t MODIFY TTL received_at + INTERVAL 30 DAY".to_string()
                ),
                (
                    Change::Ttl(31),
                    "ALTER TABLE db.t_bodies MODIFY TTL stored_at + INTERVAL 31 DAY".to_string()
                )
            ]
        );
        assert!(upgrade_sql((26, 9), "db", "t", &all, None).is_empty());
    }

    #[test]
    fn versions_gate_features() {
        assert_eq!(parse_version("18.16.1"), (18, 16));
        assert_eq!(parse_version("24.8.4.13"), (24, 8));
        assert!(!supports_ttl(parse_version("18.16.1")));
        assert!(supports_ttl(parse_version("19.6.2")));
    }
}

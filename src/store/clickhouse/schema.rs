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

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::bodies;
use crate::store::CaptureRecord;

/// Declares the table's columns once: `name: RustType => "ClickHouse type"`.
macro_rules! exchange_columns {
    ($( $(#[$attr:meta])* $name:ident : $ty:ty => $ch:literal ),* $(,)?) => {
        /// One row of the exchanges table, in table order. Borrowed from a
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
    ttfb_us: u64 => "UInt64",
    gateway: Cow<'a, str> => "String",
    platform: Cow<'a, str> => "String",
    location: Cow<'a, str> => "String",
    broker: Cow<'a, str> => "String",
    customer: Cow<'a, str> => "String",
    upstream_url: Cow<'a, str> => "String",
    method: Cow<'a, str> => "String",
    path: Cow<'a, str> => "String",
    query: Cow<'a, str> => "String",
    operation: Cow<'a, str> => "String",
    service_id: Cow<'a, str> => "String",
    plan_id: Cow<'a, str> => "String",
    service_name: Cow<'a, str> => "String",
    plan_name: Cow<'a, str> => "String",
    instance_id: Cow<'a, str> => "String",
    binding_id: Cow<'a, str> => "String",
    accepts_incomplete: u8 => "UInt8",
    broker_operation: Cow<'a, str> => "String",
    state: Cow<'a, str> => "String",
    description: Cow<'a, str> => "String",
    api_version: Cow<'a, str> => "String",
    originating_platform: Cow<'a, str> => "String",
    originating_user: Cow<'a, str> => "String",
    request_id: Cow<'a, str> => "String",
    status: u16 => "UInt16",
    outcome: Cow<'a, str> => "String",
    error: Cow<'a, str> => "String",
    request_header_names: Vec<Cow<'a, str>> => "Array(String)",
    request_header_values: Vec<Cow<'a, str>> => "Array(String)",
    response_header_names: Vec<Cow<'a, str>> => "Array(String)",
    response_header_values: Vec<Cow<'a, str>> => "Array(String)",
    request_body: Cow<'a, str> => "String",
    request_body_size: u64 => "UInt64",
    request_body_truncated: u8 => "UInt8",
    response_body: Cow<'a, str> => "String",
    response_body_size: u64 => "UInt64",
    response_body_truncated: u8 => "UInt8",
    // NB: bodies of `bodies::HASHED_FROM` bytes or more are in the bodies
    // table under this hash, and the text column is empty (zero: the text
    // is in the row).
    request_body_hash: [u8; 16] => "FixedString(16)",
    response_body_hash: [u8; 16] => "FixedString(16)",
}

/// `CREATE TABLE` for the exchanges table (base schema, 18.16-compatible).
pub fn create_table_sql(database: &str, table: &str) -> String {
    table_sql(&format!("{database}.{table}"), "ReplacingMergeTree()")
}

/// `CREATE TABLE` of the exchanges columns as `target` (`db.t`, maybe
/// with `ON CLUSTER c`) with `engine`.
pub(super) fn table_sql(target: &str, engine: &str) -> String {
    let columns: Vec<String> = COLUMNS
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
    for (i, (name, ty)) in COLUMNS.iter().enumerate() {
        if existing.iter().any(|e| e == name) {
            continue;
        }
        let place = match i {
            0 => String::new(),
            _ => format!(" AFTER {}", COLUMNS[i - 1].0),
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
    /// The row of `r` whose bodies with a hash in `hashes` (request,
    /// response; [`bodies::NO_HASH`]: none) are in the bodies table.
    pub fn new(r: &'a CaptureRecord, hashes: [[u8; 16]; 2]) -> Self {
        let body = |s: &'a String, h: [u8; 16]| match h == bodies::NO_HASH {
            true => Cow::Borrowed(s.as_str()),
            false => Cow::Borrowed(""),
        };
        let split = |h: &'a [(String, String)]| -> (Vec<Cow<'a, str>>, Vec<Cow<'a, str>>) {
            h.iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                .unzip()
        };
        let b = |s: &'a String| Cow::Borrowed(s.as_str());
        let (qn, qv) = split(&r.request_headers);
        let (sn, sv) = split(&r.response_headers);
        ExchangeRow {
            id: r.id,
            received_at: (r.received_at_us / 1_000_000).clamp(0, u32::MAX as i64) as u32,
            received_at_us: r.received_at_us,
            duration_us: r.duration_us,
            ttfb_us: r.ttfb_us,
            gateway: b(&r.gateway),
            platform: b(&r.platform),
            location: b(&r.location),
            broker: b(&r.broker),
            customer: b(&r.customer),
            upstream_url: b(&r.upstream_url),
            method: b(&r.method),
            path: b(&r.path),
            query: b(&r.query),
            operation: b(&r.operation),
            service_id: b(&r.service_id),
            plan_id: b(&r.plan_id),
            service_name: b(&r.service_name),
            plan_name: b(&r.plan_name),
            instance_id: b(&r.instance_id),
            binding_id: b(&r.binding_id),
            accepts_incomplete: r.accepts_incomplete as u8,
            broker_operation: b(&r.broker_operation),
            state: b(&r.state),
            description: b(&r.description),
            api_version: b(&r.api_version),
            originating_platform: b(&r.originating_platform),
            originating_user: b(&r.originating_user),
            request_id: b(&r.request_id),
            status: r.status,
            outcome: b(&r.outcome),
            error: b(&r.error),
            request_header_names: qn,
            request_header_values: qv,
            response_header_names: sn,
            response_header_values: sv,
            request_body: body(&r.request_body, hashes[0]),
            request_body_size: r.request_body_size,
            request_body_truncated: r.request_body_truncated as u8,
            response_body: body(&r.response_body, hashes[1]),
            response_body_size: r.response_body_size,
            response_body_truncated: r.response_body_truncated as u8,
            request_body_hash: hashes[0],
            response_body_hash: hashes[1],
        }
    }
}

/// The record of a row, its hashed bodies still empty (the reader fills
/// them from the bodies table).
impl From<ExchangeRow<'_>> for CaptureRecord {
    fn from(r: ExchangeRow<'_>) -> Self {
        // NB: destructured without `..`: a new column does not compile
        // until it is read back here.
        let ExchangeRow {
            id,
            received_at: _,
            received_at_us,
            duration_us,
            ttfb_us,
            gateway,
            platform,
            location,
            broker,
            customer,
            upstream_url,
            method,
            path,
            query,
            operation,
            service_id,
            plan_id,
            service_name,
            plan_name,
            instance_id,
            binding_id,
            accepts_incomplete,
            broker_operation,
            state,
            description,
            api_version,
            originating_platform,
            originating_user,
            request_id,
            status,
            outcome,
            error,
            request_header_names,
            request_header_values,
            response_header_names,
            response_header_values,
            request_body,
            request_body_size,
            request_body_truncated,
            response_body,
            response_body_size,
            response_body_truncated,
            request_body_hash: _,
            response_body_hash: _,
        } = r;
        let zip = |n: Vec<Cow<'_, str>>, v: Vec<Cow<'_, str>>| {
            n.into_iter()
                .zip(v)
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect()
        };
        CaptureRecord {
            id,
            received_at_us,
            duration_us,
            ttfb_us,
            gateway: gateway.into_owned(),
            platform: platform.into_owned(),
            location: location.into_owned(),
            broker: broker.into_owned(),
            customer: customer.into_owned(),
            upstream_url: upstream_url.into_owned(),
            method: method.into_owned(),
            path: path.into_owned(),
            query: query.into_owned(),
            operation: operation.into_owned(),
            service_id: service_id.into_owned(),
            plan_id: plan_id.into_owned(),
            service_name: service_name.into_owned(),
            plan_name: plan_name.into_owned(),
            instance_id: instance_id.into_owned(),
            binding_id: binding_id.into_owned(),
            accepts_incomplete: accepts_incomplete != 0,
            broker_operation: broker_operation.into_owned(),
            state: state.into_owned(),
            description: description.into_owned(),
            api_version: api_version.into_owned(),
            originating_platform: originating_platform.into_owned(),
            originating_user: originating_user.into_owned(),
            request_id: request_id.into_owned(),
            status,
            outcome: outcome.into_owned(),
            error: error.into_owned(),
            request_headers: zip(request_header_names, request_header_values),
            response_headers: zip(response_header_names, response_header_values),
            request_body: request_body.into_owned(),
            request_body_size,
            request_body_truncated: request_body_truncated != 0,
            response_body: response_body.into_owned(),
            response_body_size,
            response_body_truncated: response_body_truncated != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::Row as _;

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
            ddl.contains("response_body_hash FixedString(16)\n) ENGINE = ReplacingMergeTree()"),
            "{ddl}"
        );
    }

    #[test]
    fn a_record_survives_the_row_both_ways() {
        let mut r = crate::store::query::tests::rec(1_700_000_000_123_456, "BIND", 201, "i");
        r.request_headers = vec![("x-a".into(), "1".into()), ("x-b".into(), "2".into())];
        r.accepts_incomplete = true;
        r.response_body_truncated = true;
        let row = ExchangeRow::new(&r, [bodies::NO_HASH; 2]);
        assert_eq!(row.received_at, 1_700_000_000);
        assert_eq!(CaptureRecord::from(row), r);
        r.response_body = "x".repeat(100);
        let row = ExchangeRow::new(&r, [bodies::NO_HASH, [7; 16]]);
        assert_eq!(
            (row.response_body.as_ref(), row.response_body_hash),
            ("", [7; 16]),
            "a hashed body is not in the row"
        );
    }

    #[test]
    fn a_table_missing_columns_gets_them_added_in_place() {
        let all: Vec<String> = COLUMNS.iter().map(|(n, _)| n.to_string()).collect();
        assert!(
            migration_sql("db", "t", &all).is_empty(),
            "a current table needs nothing"
        );
        let older: Vec<String> = all
            .iter()
            .filter(|n| *n != "ttfb_us" && *n != "error")
            .cloned()
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

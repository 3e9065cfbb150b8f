//! ClickHouse of 2018 and of today: the gateway's own schema code, writer
//! and reader (unchanged Rust code) run against Debian's ClickHouse 18.16
//! (a real server) and against the current engine (ClickHouse 26.x as chDB,
//! behind `tests/chdb_server.py`), and every answer the store layer can
//! give must be the same on both, and the same as the records written.

mod support;

use std::collections::BTreeSet;

use osb_gateway::capture::CaptureRecord;
use osb_gateway::config::ClickHouseConfig;
use osb_gateway::store::clickhouse::bodies;
use osb_gateway::store::clickhouse::schema::{self, COLUMNS};
use osb_gateway::store::clickhouse::{ClickHouseReader, ClickHouseWriter};
use osb_gateway::store::query::usage::{Fold, Usage, UsageQuery};
use osb_gateway::store::query::{Cursor, Filter, Order, Search, StatusExpr, Summary};
use osb_gateway::store::LogStore;
use std::sync::Arc;
use support::chdb::Chdb;
use support::clickhouse::{query_at as query_text, ClickHouse};
use support::compat_records::{records, BASE_US, CATALOG};
use uuid::Uuid;

fn cfg(url: &str, table: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        database: "osb_compat".into(),
        table: table.into(),
        // NB: long enough that no record here is expired by a merge on
        // the engine that has TTLs.
        retention_days: Some(3650),
        ..ClickHouseConfig::single(url)
    }
}

/// Writes `rows` through the gateway's writer (its DDL, its RowBinary
/// encoder), with a replayed duplicate of the first 20, as a spool replay
/// would cause.
async fn write(cfg: &ClickHouseConfig, rows: &[CaptureRecord]) {
    let mut w = ClickHouseWriter::new(cfg);
    let rows: Vec<Arc<CaptureRecord>> = rows.iter().cloned().map(Arc::new).collect();
    for chunk in rows.chunks(50) {
        w.insert(chunk).await.expect("insert");
    }
    w.insert(&rows[..20]).await.expect("replayed insert");
}

/// Every page of `filter` in `order`, `limit` at a time, through cursors.
async fn all_pages(store: &LogStore, filter: &Filter, order: Order, limit: usize) -> Vec<Summary> {
    let mut out = Vec::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..1000 {
        let page = store
            .search(&Search {
                filter: filter.clone(),
                order,
                limit,
                cursor: cursor.clone(),
            })
            .await
            .expect("search");
        out.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(Cursor::decode(&next).unwrap()),
            None => return out,
        }
    }
    panic!("more than 1000 pages");
}

/// Each criterion alone, then combined.
fn filters() -> Vec<(&'static str, Filter)> {
    let at = |n: i64| BASE_US + n * 7_000_003;
    let status = |s: &str| Some(StatusExpr::parse(s).unwrap());
    let f = Filter::default;
    vec![
        ("everything", f()),
        (
            "before",
            Filter {
                before_us: Some(at(40)),
                ..f()
            },
        ),
        (
            "before, on a tie",
            Filter {
                before_us: Some(at(40) - 1),
                ..f()
            },
        ),
        (
            "after",
            Filter {
                after_us: Some(at(60)),
                ..f()
            },
        ),
        (
            "broker",
            Filter {
                broker: Some("redis".into()),
                ..f()
            },
        ),
        (
            "location",
            Filter {
                location: Some("ap".into()),
                ..f()
            },
        ),
        (
            "platform",
            Filter {
                platform: Some("k8s-us".into()),
                ..f()
            },
        ),
        (
            "operation",
            Filter {
                operation: Some("BIND".into()),
                ..f()
            },
        ),
        (
            "status exact",
            Filter {
                status: status("403"),
                ..f()
            },
        ),
        (
            "status >399",
            Filter {
                status: status(">399"),
                ..f()
            },
        ),
        (
            "status 4xx",
            Filter {
                status: status("4xx"),
                ..f()
            },
        ),
        (
            "status range",
            Filter {
                status: status("201-410"),
                ..f()
            },
        ),
        (
            "plan, non-ASCII",
            Filter {
                plan: Some("größer".into()),
                ..f()
            },
        ),
        (
            "plan by name",
            Filter {
                plan: Some("Größer \"XL\"".into()),
                ..f()
            },
        ),
        (
            "service by name",
            Filter {
                service: Some("PostgreSQL".into()),
                ..f()
            },
        ),
        (
            "instance",
            Filter {
                instance_id: Some("i-3".into()),
                ..f()
            },
        ),
        (
            "request id",
            Filter {
                request_id: Some("req-77".into()),
                ..f()
            },
        ),
        (
            "outcome",
            Filter {
                outcome: Some("gateway_error".into()),
                ..f()
            },
        ),
        (
            "an owner's scope",
            Filter {
                customer: Some("acme".into()),
                ..f()
            },
        ),
        (
            "an empty scope",
            Filter {
                customer: Some(String::new()),
                ..f()
            },
        ),
        (
            "nothing matches",
            Filter {
                broker: Some("nope".into()),
                ..f()
            },
        ),
        (
            "combined",
            Filter {
                before_us: Some(at(70)),
                after_us: Some(at(10)),
                broker: Some("pg".into()),
                status: status(">=200"),
                customer: Some("acme".into()),
                ..f()
            },
        ),
        (
            "combined, injection-shaped",
            Filter {
                instance_id: Some("i-1' OR '1'='1".into()),
                platform: Some("cf-eu\\".into()),
                ..f()
            },
        ),
    ]
}

/// What a search must find: the written records `filter` matches, newest
/// (or oldest) first, ties broken by id.
fn expected(rows: &[CaptureRecord], filter: &Filter, order: Order) -> Vec<Uuid> {
    let mut hits: Vec<&CaptureRecord> = rows.iter().filter(|r| filter.matches(r)).collect();
    hits.sort_by_key(|r| (r.received_at_us, r.id));
    if order == Order::NewestFirst {
        hits.reverse();
    }
    hits.iter().map(|r| r.id).collect()
}

/// Runs every query the store layer builds on both stores; each answer
/// must equal the other engine's and what was written.
async fn assert_same_answers(old: &LogStore, new: &LogStore, rows: &[CaptureRecord]) {
    for (what, filter) in filters() {
        for order in [Order::NewestFirst, Order::OldestFirst] {
            for limit in [7, 1000] {
                let a = all_pages(old, &filter, order, limit).await;
                let b = all_pages(new, &filter, order, limit).await;
                assert_eq!(
                    a, b,
                    "{what}, {order:?}, {limit} a page: 18.16 and today differ"
                );
                let ids: Vec<Uuid> = a.iter().map(|s| s.id).collect();
                assert_eq!(
                    ids,
                    expected(rows, &filter, order),
                    "{what}, {order:?}, {limit} a page"
                );
            }
        }
    }
    // Show: every field read back as written, on both.
    // NB: the last row too: in the migration test it is the older gateway's.
    for r in rows.iter().step_by(13).chain(rows.last()) {
        let a = old.get(r.id, None).await.unwrap();
        let b = new.get(r.id, None).await.unwrap();
        assert_eq!(a.as_ref(), Some(r), "show on 18.16");
        assert_eq!(b.as_ref(), Some(r), "show on today's engine");
        assert_eq!(new.get(r.id, Some("elsewhere".into())).await.unwrap(), None);
    }
    assert_eq!(new.get(Uuid::from_u128(42), None).await.unwrap(), None);
    // Failed and stuck instances, for everyone, one broker, one scope.
    let now = BASE_US + 400 * 7_000_003;
    for (broker, scope) in [
        (None, None),
        (Some("pg".to_string()), None),
        (None, Some("globex".to_string())),
    ] {
        for stuck_after in [1_000_000, 3_600_000_000] {
            let mut a = old
                .instance_problems(broker.clone(), scope.clone(), now, stuck_after)
                .await
                .unwrap();
            let mut b = new
                .instance_problems(broker.clone(), scope.clone(), now, stuck_after)
                .await
                .unwrap();
            let key = |p: &osb_gateway::store::query::InstanceProblem| {
                (p.broker.clone(), p.instance_id.clone(), p.problem.clone())
            };
            a.sort_by_key(key);
            b.sort_by_key(key);
            assert!(
                !a.is_empty() || broker.is_some() || scope.is_some(),
                "the records make problems"
            );
            assert_eq!(a, b, "instance problems for {broker:?} {scope:?}");
            for p in &a {
                let r = rows.iter().find(|r| r.id == p.record_id).unwrap();
                assert_ne!(r.outcome, "rejected", "a refusal made {p:?}");
            }
        }
    }
    // Usage: the same aggregates on both engines and from the embedded
    // store's fold over the records as written.
    for (what, filter) in [
        ("everything", Filter::default()),
        (
            "one broker, one scope",
            Filter {
                broker: Some("pg".into()),
                customer: Some("acme".into()),
                ..Filter::default()
            },
        ),
        (
            "plan by name",
            Filter {
                plan: Some("Large".into()),
                ..Filter::default()
            },
        ),
    ] {
        for bucket_us in [60_000_000, 3_600_000_000] {
            let q = UsageQuery {
                filter: Filter {
                    after_us: Some(BASE_US + 100_000_000),
                    before_us: Some(BASE_US + 500_000_000),
                    ..filter.clone()
                },
                from_us: BASE_US + 100_000_000,
                to_us: BASE_US + 500_000_000,
                bucket_us,
            };
            let a = old.usage(&q).await.unwrap();
            let b = new.usage(&q).await.unwrap();
            let mut fold = Fold::new(&q);
            for r in rows {
                fold.offer(r);
            }
            let want = fold.finish();
            assert!(want.total.count > 0, "{what}: the range holds records");
            assert_usage_eq(&a, &want, &format!("{what}, {bucket_us}: 18.16"));
            assert_usage_eq(&b, &want, &format!("{what}, {bucket_us}: today's engine"));
        }
    }
}

/// Equal, percentiles to a millionth (floating point summed in another order).
fn assert_usage_eq(got: &Usage, want: &Usage, what: &str) {
    let round = |u: &Usage| {
        let mut u = u.clone();
        let r = |v: &mut Vec<f64>| v.iter_mut().for_each(|x| *x = (*x * 1e3).round() / 1e3);
        r(&mut u.total.latency_us);
        u.latency
            .iter_mut()
            .for_each(|p| r(&mut p.stats.latency_us));
        u.operations
            .iter_mut()
            .for_each(|o| r(&mut o.stats.latency_us));
        u
    };
    assert_eq!(round(got), round(want), "{what}");
}

async fn store(url: &str, table: &str) -> LogStore {
    LogStore::ClickHouse(Box::new(ClickHouseReader::new(&cfg(url, table))))
}

#[tokio::test]
async fn the_same_batches_give_the_same_answers_on_18_16_and_on_todays_engine() {
    let old = ClickHouse::start().await;
    let new = Chdb::start();
    let rows = records();
    write(&cfg(&old.url(), "exchanges"), &rows).await;
    write(&cfg(&new.url(), "exchanges"), &rows).await;
    let (a, b) = (
        store(&old.url(), "exchanges").await,
        store(&new.url(), "exchanges").await,
    );
    assert_same_answers(&a, &b, &rows).await;

    // The DDL each engine got: the base schema on both, the retention TTL
    // only where the server has TTLs.
    let ddl_old = old
        .query("SHOW CREATE TABLE osb_compat.exchanges FORMAT TabSeparatedRaw")
        .await;
    assert!(!ddl_old.contains("TTL"), "18.16 has no TTL: {ddl_old}");
    let ddl_new = query_text(
        &new.url(),
        "SHOW CREATE TABLE osb_compat.exchanges FORMAT TabSeparatedRaw",
    )
    .await;
    assert!(
        ddl_new.contains("TTL received_at + toIntervalDay(3650)"),
        "{ddl_new}"
    );
    for (name, ty) in COLUMNS {
        for ddl in [&ddl_old, &ddl_new] {
            assert!(
                ddl.contains(&format!("{name} {ty}")) || ddl.contains(&format!("`{name}` {ty}")),
                "{name} {ty} in {ddl}"
            );
        }
    }
    // The replayed duplicates collapse on both.
    for (what, n) in [
        (
            "18.16",
            old.number("SELECT count() FROM osb_compat.exchanges FINAL")
                .await,
        ),
        (
            "today",
            query_text(&new.url(), "SELECT count() FROM osb_compat.exchanges FINAL")
                .await
                .trim()
                .parse()
                .unwrap(),
        ),
    ] {
        assert_eq!(n, rows.len() as u64, "{what}: rows through FINAL");
    }
    // Each long body stored once, replay included; short ones in the row.
    let long: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| [r.request_body.as_str(), r.response_body.as_str()])
        .filter(|b| b.len() >= bodies::HASHED_FROM)
        .collect();
    assert!(long.len() > 20 && long.contains(CATALOG), "{}", long.len());
    let sql = "SELECT count() FROM osb_compat.exchanges_bodies";
    assert_eq!(old.number(sql).await, long.len() as u64, "18.16");
    let n: u64 = query_text(&new.url(), sql).await.trim().parse().unwrap();
    assert_eq!(n, long.len() as u64, "today");
    // NB: the catalog is a long body: named by its hash, not copied.
    let inline = "SELECT countIf(position(details, 'PostgreSQL') > 0) FROM osb_compat.exchanges";
    assert_eq!(old.number(inline).await, 0, "no long body in a row");
    // The bodies table dropped by hand: records still show, their long
    // bodies empty and marked truncated, short ones as written.
    let r = rows
        .iter()
        .find(|r| r.response_body == CATALOG && r.request_body.len() < bodies::HASHED_FROM)
        .unwrap();
    for (what, url) in [("18.16", old.url()), ("today", new.url())] {
        query_text(&url, "DROP TABLE osb_compat.exchanges_bodies").await;
        let shown = store(&url, "exchanges")
            .await
            .get(r.id, None)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: the record"));
        assert_eq!(shown.request_body, r.request_body, "{what}");
        assert!(
            shown.response_body.is_empty() && shown.response_body_truncated,
            "{what}: {shown:?}"
        );
    }
}

#[tokio::test]
async fn a_table_made_by_an_older_gateway_is_migrated_on_both_engines() {
    let old = ClickHouse::start().await;
    let new = Chdb::start();
    // A table of one column per field less three columns, with one row in
    // it, as an older gateway left it.
    let older = schema::legacy_table_sql("osb_compat", "legacy")
        .replace("    ttfb_us UInt64,\n", "")
        .replace("    error String,\n", "")
        .replace(
            ",\n    request_body_hash FixedString(16),\n    response_body_hash FixedString(16)",
            "",
        );
    assert!(!older.contains("ttfb_us") && !older.contains(" error "));
    assert!(
        !older.contains("body_hash") && !older.contains("details"),
        "{older}"
    );
    // NB: its long body is in the row, as gateways before 2026-12 kept it.
    let legacy_body = "l".repeat(100);
    let legacy_row = format!("INSERT INTO osb_compat.legacy (id, received_at, received_at_us, broker, operation, status, instance_id, response_body) \
                      VALUES ('00000000-0000-0000-0000-0000000000aa', toDateTime(1793490000), 1793490000000000, 'pg', 'PROVISION_INSTANCE', 500, 'i-legacy', '{legacy_body}')");
    for url in [old.url(), new.url()] {
        query_text(&url, "CREATE DATABASE osb_compat").await;
        query_text(&url, &older).await;
        query_text(&url, &legacy_row).await;
    }
    let mut rows = records();
    rows.truncate(60);
    // The current writer migrates, then inserts.
    write(&cfg(&old.url(), "legacy"), &rows).await;
    write(&cfg(&new.url(), "legacy"), &rows).await;
    let mut legacy: CaptureRecord = CaptureRecord {
        id: Uuid::from_u128(0xaa),
        received_at_us: 1_793_490_000_000_000,
        broker: "pg".into(),
        operation: "PROVISION_INSTANCE".into(),
        status: 500,
        instance_id: "i-legacy".into(),
        response_body: legacy_body,
        ..Default::default()
    };
    legacy.outcome = String::new();
    rows.push(legacy);
    let (a, b) = (
        store(&old.url(), "legacy").await,
        store(&new.url(), "legacy").await,
    );
    assert_same_answers(&a, &b, &rows).await;
    for url in [old.url(), new.url()] {
        let cols = query_text(
            &url,
            "SELECT name FROM system.columns WHERE database = 'osb_compat' AND table = 'legacy' FORMAT TabSeparated",
        )
        .await;
        let cols: Vec<&str> = cols.lines().collect();
        let want: Vec<&str> = schema::LEGACY_COLUMNS
            .iter()
            .map(|(n, _)| *n)
            .chain(["details"])
            .collect();
        assert_eq!(cols, want, "{url}: every column, in the schema's order");
    }
    // A second start finds nothing left to migrate.
    let names: BTreeSet<String> = schema::LEGACY_COLUMNS
        .iter()
        .chain(COLUMNS)
        .map(|(n, _)| n.to_string())
        .collect();
    let names: Vec<String> = names.into_iter().collect();
    assert!(schema::upgrade_sql((26, 9), "osb_compat", "legacy", &names, None).is_empty());
}

#[tokio::test]
async fn an_older_row_whose_columns_were_dropped_still_shows_and_bad_details_are_refused() {
    let old = ClickHouse::start().await;
    let new = Chdb::start();
    // Today's table, with a row as an older gateway wrote it (its fields
    // in columns an operator has since dropped: `details` empty), and a
    // row whose `details` no gateway wrote.
    let rows = "INSERT INTO osb_compat.dropped (id, received_at, received_at_us, broker, operation, status, instance_id, details) VALUES \
                ('00000000-0000-0000-0000-0000000000bb', toDateTime(1793490000), 1793490000000000, 'pg', 'BIND', 201, 'i-old', ''), \
                ('00000000-0000-0000-0000-0000000000cc', toDateTime(1793490001), 1793490001000000, 'pg', 'BIND', 201, 'i-bad', '[7,\"x\"]')";
    for (what, url) in [("18.16", old.url()), ("today", new.url())] {
        for sql in schema::create_sql("osb_compat", "dropped") {
            query_text(&url, &sql).await;
        }
        query_text(&url, rows).await;
        let s = store(&url, "dropped").await;
        let shown = s
            .get(Uuid::from_u128(0xbb), None)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: the older record"));
        assert_eq!(
            (shown.instance_id.as_str(), shown.status),
            ("i-old", 201),
            "{what}"
        );
        assert!(
            shown.request_body_truncated && shown.response_body_truncated,
            "{what}: its bodies are lost, and it says so: {shown:?}"
        );
        let e = s.get(Uuid::from_u128(0xcc), None).await.unwrap_err();
        assert!(
            e.contains("details") && e.contains("version 7"),
            "{what}: {e}"
        );
    }
}

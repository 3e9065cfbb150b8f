//! Communication logs lose nothing: a real ClickHouse (18.16 from Debian)
//! under load, outages, restarts, a blocked sink and bad data; the spool and
//! its replay; the live feed's slow subscriber. What is recorded:
//! `tests/capture.rs`; the files on disk: `tests/capture_disk.rs`.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use osb_gateway::capture::CaptureRecord;
use osb_gateway::store::local;
use support::broker::{answer, Broker};
use support::capture::{
    capture_tables, load, osb_broker, registry, send, start, stored, three_catalogs_to_clickhouse,
    with_clickhouse,
};
use support::clickhouse::ClickHouse;
use support::client::{get, platform};
use support::gateway::{Options, TestGateway};
use support::{eventually, within};

/// Every request sent is recorded, and each exchange the gateway captured is
/// stored exactly once.
///
/// NB: "records == requests sent" would be wrong: hyper-util's client may
/// retry a request whose pooled connection closed, and then the gateway saw
/// (and rightly recorded) one exchange more. The gateway's own `captured`
/// counter is the number of exchanges.
fn assert_one_record_per_exchange(records: &[CaptureRecord], sent: &[String], captured: u64) {
    let ids: HashSet<_> = records.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), records.len(), "a record was stored twice");
    assert_eq!(
        records.len() as u64,
        captured,
        "one record per captured exchange"
    );
    let rids: HashSet<&str> = records.iter().map(|r| r.request_id.as_str()).collect();
    for rid in sent {
        assert!(rids.contains(rid.as_str()), "request {rid} has no record");
    }
}

/// The same over ClickHouse, reading as a query would (with FINAL).
async fn assert_clickhouse_has(
    ch: &ClickHouse,
    sent: &[String],
    metrics: &osb_gateway::capture::CaptureMetrics,
) {
    let n = sent.len() as u64;
    let ch_ref = &ch;
    eventually(
        60,
        &format!("all {n} exchanges in ClickHouse"),
        || async move {
            ch_ref
                .try_number("SELECT uniqExact(request_id) FROM osb_test.exchanges")
                .await
                .is_some_and(|c| c >= n)
        },
    )
    .await;
    let captured = osb_gateway::capture::load(&metrics.captured);
    assert!(captured >= n);
    let table = "osb_test.exchanges";
    eventually(60, "every captured exchange stored", || async move {
        ch_ref
            .try_number(&format!("SELECT count() FROM {table} FINAL"))
            .await
            == Some(captured)
    })
    .await;
    assert_eq!(
        ch.number(&format!(
            "SELECT count() FROM (SELECT id FROM {table} LIMIT 1 BY id)"
        ))
        .await,
        captured,
        "no duplicate visible"
    );
    assert_eq!(
        ch.number(&format!("SELECT uniqExact(request_id) FROM {table}"))
            .await,
        n
    );
    let listed = ch
        .query(&format!(
            "SELECT DISTINCT request_id FROM {table} FORMAT TabSeparated"
        ))
        .await;
    let listed: HashSet<&str> = listed.lines().collect();
    for rid in sent {
        assert!(listed.contains(rid.as_str()), "request {rid} has no record");
    }
}

#[tokio::test]
async fn two_thousand_exchanges_give_two_thousand_records_in_clickhouse() {
    let ch = ClickHouse::start().await;
    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    let gw = start(
        &registry(&[("pg", &b.url(""), false)]),
        with_clickhouse(&ch.url(), ""),
    )
    .await;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent = within(
        120,
        "load",
        load(gw.url("/private/pg/v2/catalog"), 2000, 32, done),
    )
    .await;
    let m = gw.handle.as_ref().unwrap().capture.metrics();
    assert_clickhouse_has(&ch, &sent, &m).await;
    // NB: batches whose insert outlasted the flush interval were also
    // spooled and replayed (the copies collapse by id).
    assert!(
        osb_gateway::capture::load(&m.inserted) + osb_gateway::capture::load(&m.replayed)
            >= osb_gateway::capture::load(&m.captured)
    );
    assert_eq!(osb_gateway::capture::load(&m.dropped), 0);
}

#[tokio::test]
async fn clickhouse_outage_mid_load_loses_nothing_and_shows_no_duplicates() {
    let mut ch = ClickHouse::start().await;
    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    let gw = start(
        &registry(&[("pg", &b.url(""), false)]),
        with_clickhouse(&ch.url(), ""),
    )
    .await;
    let metrics = gw.handle.as_ref().unwrap().capture.metrics();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load_task = tokio::spawn(load(
        gw.url("/private/pg/v2/catalog"),
        2000,
        16,
        done.clone(),
    ));
    let d = done.clone();
    eventually(60, "500 exchanges", || {
        let d = d.clone();
        async move { d.load(std::sync::atomic::Ordering::SeqCst) >= 500 }
    })
    .await;
    ch.stop();
    let m = metrics.clone();
    eventually(30, "the pipeline notices the outage", || {
        let m = m.clone();
        async move { osb_gateway::capture::load(&m.insert_failures) > 0 }
    })
    .await;
    let d = done.clone();
    eventually(60, "1500 exchanges", || {
        let d = d.clone();
        async move { d.load(std::sync::atomic::Ordering::SeqCst) >= 1500 }
    })
    .await;
    ch.restart().await;
    let sent = within(120, "load", load_task).await.unwrap();
    assert_clickhouse_has(&ch, &sent, &metrics).await;
    assert!(
        osb_gateway::capture::load(&metrics.spooled) > 0,
        "the outage went through the spool"
    );
    // NB: eventually: a spooled batch may also have been inserted directly
    // (a slow insert is spooled too), so ClickHouse can hold every record
    // before the spool is replayed.
    let m = metrics.clone();
    eventually(60, "the spool replayed", || {
        let m = m.clone();
        async move { osb_gateway::capture::load(&m.replayed) > 0 }
    })
    .await;
    assert_eq!(osb_gateway::capture::load(&metrics.dropped), 0);
}

#[tokio::test]
async fn a_restarted_gateway_replays_its_spool() {
    let mut ch = ClickHouse::start().await;
    ch.stop();
    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    let reg = registry(&[("pg", &b.url(""), false)]);
    let data = tempfile::tempdir().unwrap();
    let top = format!("data_dir = \"{}\"\n", data.path().display());
    let ch_url = ch.url();
    let opts = || Options {
        top: top.clone(),
        tables: with_clickhouse(&ch_url, ""),
        ..Default::default()
    };
    let mut gw = TestGateway::start(&reg, opts()).await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent = within(
        60,
        "load",
        load(gw.url("/private/pg/v2/catalog"), 50, 8, done),
    )
    .await;
    let first = gw.handle.as_ref().unwrap().capture.metrics();
    gw.shutdown().await;
    let spooled = local::read_all(&data.path().join("spool")).unwrap();
    assert_one_record_per_exchange(&spooled, &sent, osb_gateway::capture::load(&first.captured));

    ch.restart().await;
    let gw2 = TestGateway::start(&reg, opts()).await.unwrap();
    assert_clickhouse_has(&ch, &sent, &first).await;
    let m = gw2.handle.as_ref().unwrap().capture.metrics();
    assert_eq!(
        osb_gateway::capture::load(&m.replayed),
        spooled.len() as u64
    );
    let d = data.path().join("spool");
    eventually(10, "spool emptied", || {
        let d = d.clone();
        async move { local::read_all(&d).unwrap().is_empty() }
    })
    .await;
}

#[tokio::test]
async fn a_blocked_sink_and_a_full_queue_never_delay_proxied_requests() {
    // A "ClickHouse" that accepts connections and never answers.
    let (port, held) = support::black_hole().await;
    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    let tables = with_clickhouse(
        &format!("http://127.0.0.1:{port}"),
        "queue_max_bytes = 20000\n",
    )
    .replace("insert_timeout = \"3s\"", "insert_timeout = \"60s\"");
    let mut gw = start(&registry(&[("pg", &b.url(""), false)]), tables).await;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Hang guard only: the requests complete while the sink is blocked.
    let sent = within(
        30,
        "requests while the sink is blocked",
        load(gw.url("/private/pg/v2/catalog"), 300, 16, done),
    )
    .await;
    let m = gw.handle.as_ref().unwrap().capture.metrics();
    let m2 = m.clone();
    eventually(10, "overflow records spooled", || {
        let m = m2.clone();
        async move { osb_gateway::capture::load(&m.spooled) > 0 }
    })
    .await;
    assert!(osb_gateway::capture::load(&m.queue_bytes) <= 20000);
    assert_eq!(osb_gateway::capture::load(&m.dropped), 0);
    assert_eq!(osb_gateway::capture::load(&m.inserted), 0);
    // Shutdown does not wait out the hung insert (60 s here): the batch is
    // spooled and the gateway stops within the final-flush bound.
    within(20, "shutdown with a hung sink", gw.shutdown()).await;
    let spooled = local::read_all(&gw.path("data/spool")).unwrap();
    assert_one_record_per_exchange(&spooled, &sent, osb_gateway::capture::load(&m.captured));
    held.abort();
}

#[tokio::test]
async fn batches_clickhouse_refuses_as_bad_data_go_to_the_dead_letter_directory() {
    let ch = ClickHouse::start().await;
    ch.query("CREATE DATABASE osb_test").await;
    // A table whose `status` is text: RowBinary's UInt16 cannot be read
    // as a String, so the server refuses the data itself.
    let wrong = osb_gateway::store::clickhouse::schema::create_table_sql("osb_test", "exchanges")
        .replace("    status UInt16,", "    status String,");
    assert!(wrong.contains("status String"));
    ch.query(&wrong).await;
    let (mut gw, _b) = three_catalogs_to_clickhouse(&ch.url(), 200, "{}").await;
    let m = gw.handle.as_ref().unwrap().capture.metrics();
    // NB: a refused insert slower than the flush interval was spooled too,
    // and is dead-lettered when that copy is replayed: wait for it.
    let m2 = m.clone();
    let counters = move || {
        use osb_gateway::capture::load;
        format!(
            "captured {} inserted {} spooled {} replayed {} dead-lettered {} dropped {} insert failures {}",
            load(&m2.captured),
            load(&m2.inserted),
            load(&m2.spooled),
            load(&m2.replayed),
            load(&m2.dead_lettered),
            load(&m2.dropped),
            load(&m2.insert_failures),
        )
    };
    for _ in 0..400 {
        if osb_gateway::capture::load(&m.dead_lettered) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        osb_gateway::capture::load(&m.dead_lettered) >= 3,
        "3 records dead-lettered within 20 s: {}; spool: {:?}",
        counters(),
        local::files(&gw.path("data/spool")).unwrap_or_default()
    );
    gw.shutdown().await;
    assert_eq!(osb_gateway::capture::load(&m.dead_lettered), 3, "once each");
    assert_eq!(
        local::read_all(&gw.path("data/dead-letter")).unwrap().len(),
        3
    );
    assert_eq!(ch.number("SELECT count() FROM osb_test.exchanges").await, 0);
}

#[tokio::test]
async fn a_table_made_by_an_older_gateway_is_migrated_not_dead_lettered() {
    let ch = ClickHouse::start().await;
    ch.query("CREATE DATABASE osb_test").await;
    // A table of one column per field without two of them, as an older
    // gateway made it.
    let older = osb_gateway::store::clickhouse::schema::legacy_table_sql("osb_test", "exchanges")
        .replace("    ttfb_us UInt64,\n", "")
        .replace("    error String,\n", "");
    assert!(!older.contains("ttfb_us") && !older.contains("error String"));
    ch.query(&older).await;
    let (mut gw, _b) =
        three_catalogs_to_clickhouse(&ch.url(), 500, r#"{"description":"boom"}"#).await;
    let m = gw.handle.as_ref().unwrap().capture.metrics();
    gw.shutdown().await;
    assert_eq!(osb_gateway::capture::load(&m.dead_lettered), 0);
    assert_eq!(
        ch.number("SELECT count() FROM system.columns WHERE database = 'osb_test' AND table = 'exchanges' AND name IN ('ttfb_us', 'error', 'details')")
            .await,
        3,
        "the columns it lacked added"
    );
    // NB: the new rows' time to first byte is in `details`, sixth in its
    // array (a regular expression: 18.16 has no JSON functions).
    assert_eq!(
        ch.number(
            "SELECT count() FROM osb_test.exchanges FINAL WHERE status = 500 \
             AND toUInt64(extract(details, '^\\\\[1,\\\\d+,\\\\w+,\\\\d+,\\\\w+,(\\\\d+),')) > 0"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn the_live_feed_tells_a_slow_subscriber_how_many_it_missed() {
    let b = Broker::http(answer(200, "{}")).await;
    let gw = start(
        &registry(&[("pg", &b.url(""), false)]),
        capture_tables("feed_capacity = 4\n"),
    )
    .await;
    let mut slow = gw.handle.as_ref().unwrap().capture.subscribe();
    for _ in 0..10 {
        assert_eq!(
            send(&gw, "GET", "/private/pg/v2/catalog", "", &[]).await,
            200
        );
    }
    let m = gw.handle.as_ref().unwrap().capture.metrics();
    eventually(10, "10 stored (so all 10 went through the feed)", || {
        let m = m.clone();
        async move { osb_gateway::capture::load(&m.inserted) == 10 }
    })
    .await;
    let first = within(10, "feed", slow.recv()).await;
    match first {
        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 6),
        other => panic!("expected a lag notice, got {other:?}"),
    }
}

/// With a queue too small for any record, every exchange takes the overflow
/// path (spooled off the reactor in batches, then replayed into the store):
/// still exactly one record each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_spools_every_record_once() {
    let b = Broker::http(osb_broker()).await;
    let reg = registry(&[("pg", &b.url(""), false)]);
    let mut gw = start(&reg, capture_tables("queue_max_bytes = 1")).await;
    let url = gw.url("/private/pg/v2/catalog");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    get(&url, Some(platform("cf-eu"))).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Everything went through the spool; the replay moves it into the store.
    let m = gw.handle.as_ref().unwrap().capture.metrics();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..200 {
        if load(&m.spooled) >= 200 && load(&m.replayed) >= load(&m.spooled) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let captured = load(&m.captured);
    assert!(captured >= 200);
    assert_eq!(
        load(&m.spooled),
        captured,
        "every record took the overflow path"
    );
    assert_eq!(
        load(&m.replayed),
        captured,
        "and was replayed into the store"
    );
    gw.shutdown().await;
    let recs = stored(&gw);
    let ids: std::collections::HashSet<_> = recs.iter().map(|r| r.id).collect();
    assert_eq!((recs.len() as u64, ids.len() as u64), (captured, captured));
}

#[tokio::test]
async fn a_spool_left_by_an_earlier_version_is_replayed() {
    let ch = ClickHouse::start().await;
    let (mut gw, _b) = three_catalogs_to_clickhouse(&ch.url(), 200, "{}").await;
    gw.shutdown().await;
    // The fixture: a segment of JSON records, as gateways before 2026-12-07
    // spooled them (they now write each body once, raw).
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/records-v1/0000000000000000.seg");
    std::fs::copy(&fixture, gw.path("data/spool/0000000000009999.seg")).unwrap();
    gw.restart().await;
    let ch_ref = &ch;
    eventually(
        30,
        "the 3 records of the older spool in ClickHouse",
        || async move {
            ch_ref
                .try_number(
                    "SELECT count() FROM osb_test.exchanges FINAL \
                 WHERE toString(id) LIKE '0d6a1f4e-3c7b-4a41-9a51-5a0f0c1e000%'",
                )
                .await
                == Some(3)
        },
    )
    .await;
    assert!(
        !gw.path("data/spool/0000000000009999.seg").exists(),
        "replayed, then removed"
    );
    gw.shutdown().await;
}

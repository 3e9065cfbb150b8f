//! The capture files on disk: local-store segments written by an earlier
//! version still read, a flipped bit costs at most the record it hit, and a
//! full disk under the spool is survived and counted exactly (with
//! ClickHouse refusing, and hung).

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use osb_gateway::capture::CaptureRecord;
use osb_gateway::store::local;
use support::broker::{answer, Broker, Handler};
use support::capture::{
    capture_tables, load, registry, send, start, stored, three_catalogs_to_clickhouse,
};
use support::clickhouse::ClickHouse;
use support::client::{self, platform};
use support::gateway::{Options, TestGateway};
use support::{eventually, within};

/// The records of `tests/fixtures/records-v1`, a local-store segment
/// written by the gateway of 2026-12 (see `write_the_records_fixture`).
fn fixture_records() -> Vec<CaptureRecord> {
    let mut r: Vec<CaptureRecord> =
        serde_json::from_str(include_str!("fixtures/records-v1.json")).unwrap();
    r.sort_by_key(|r| r.received_at_us);
    r
}

/// Rewrites the fixture with today's format; run by hand only when the
/// format of today is the one to keep (`cargo test --test capture_disk --
/// --ignored write_the_records_fixture`).
#[test]
#[ignore]
fn write_the_records_fixture() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records-v1");
    let _ = std::fs::remove_dir_all(&dir);
    let mut segs = osb_gateway::store::segments::Segments::open(&dir).unwrap();
    let records = fixture_records();
    let payloads: Vec<Vec<u8>> = records
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap())
        .collect();
    segs.append(payloads.iter().map(Vec::as_slice)).unwrap();
    segs.seal().unwrap();
}

#[test]
fn segments_written_by_an_earlier_version_still_read() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records-v1");
    let mut got = local::read_all(&dir).unwrap();
    got.sort_by_key(|r| r.received_at_us);
    assert_eq!(got.len(), 3);
    assert_eq!(got, fixture_records());
    assert_eq!(got[1].operation, "PROVISION_INSTANCE");
    assert_eq!(got[1].request_headers[0].1, "[redacted]");
}

#[tokio::test]
async fn a_flipped_bit_in_the_local_store_costs_at_most_the_record_it_hit() {
    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    let mut gw = start(&registry(&[("pg", &b.url(""), false)]), capture_tables("")).await;
    // Four runs of the gateway: each writes a segment of its own.
    for round in 0..4 {
        if round > 0 {
            gw.restart().await;
        }
        for _ in 0..10 {
            assert_eq!(
                send(&gw, "GET", "/private/pg/v2/catalog", "", &[]).await,
                200
            );
        }
    }
    gw.shutdown().await;
    let before = stored(&gw);
    assert_eq!(before.len(), 40);
    let dir = gw.path("data/captures");
    let segs = local::files(&dir).unwrap();
    assert!(
        segs.len() >= 3,
        "several segments: {:?}",
        segs.iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect::<Vec<_>>()
    );
    // One bit in the middle of an older segment, four bytes in the newest.
    let flip = |path: &std::path::Path, at: f64, bytes: usize| {
        let mut data = std::fs::read(path).unwrap();
        let i = (data.len() as f64 * at) as usize;
        for b in &mut data[i..i + bytes] {
            *b ^= 0x10;
        }
        std::fs::write(path, data).unwrap();
    };
    flip(&segs[0], 0.5, 1);
    flip(&segs[segs.len() - 1], 0.3, 4);
    let after = stored(&gw);
    // NB: the bit costs its record; the four bytes may straddle the end of
    // one record and the header of the next, so they cost at most two.
    assert!(
        after.len() >= 37 && after.len() < 40,
        "at most the records hit are lost: {} of 40 kept",
        after.len()
    );
    let kept: Vec<usize> = segs
        .iter()
        .map(|p| osb_gateway::store::segments::read(p).unwrap().records.len())
        .collect();
    // NB: frames, not records: each segment holds the catalog body once
    // (a small frame at its start, before the ten records that refer to it).
    assert_eq!(kept.len(), 4);
    assert_eq!(kept[0], 10, "the bit cost its record only");
    assert_eq!((kept[1], kept[2]), (11, 11), "untouched segments");
    assert!(kept[3] >= 9, "the four bytes cost at most two records");
    // The gateway starts over the damaged store and keeps writing to it.
    gw.restart().await;
    assert_eq!(
        send(&gw, "GET", "/private/pg/v2/catalog", "", &[]).await,
        200
    );
    gw.shutdown().await;
    assert_eq!(stored(&gw).len(), after.len() + 1);
    let (regions, _) = osb_gateway::store::segments::corruption();
    assert!(regions >= 2, "counted: {regions}");
}

/// How ClickHouse fails while the disk under the spool is full.
#[derive(Clone, Copy, PartialEq)]
enum StoreFault {
    /// Killed: connections are refused, every insert fails at once.
    Refused,
    /// SIGSTOPped: connections are accepted and never answered, every
    /// insert runs into `insert_timeout`, far slower than the flush
    /// interval (so the crash bound's spool copies meet the full disk).
    Hung,
}

#[tokio::test]
async fn a_full_disk_under_the_spool_is_survived_and_counted_exactly() {
    full_disk_under_the_spool(StoreFault::Refused, "1s").await;
}

#[tokio::test]
async fn a_full_disk_while_inserts_hang_is_counted_exactly() {
    full_disk_under_the_spool(StoreFault::Hung, "100ms").await;
}

/// Stages a full disk under the spool while ClickHouse fails as `fault`
/// says, then brings ClickHouse back: no torn frame is left, records reach
/// the store at once although its backoff runs, and what is stored in the
/// end is exactly what was captured less `dropped_total`.
async fn full_disk_under_the_spool(fault: StoreFault, flush_interval: &str) {
    let Some(disk) = support::Tmpfs::mount(256 * 1024) else {
        eprintln!("SKIPPED a_full_disk_under_the_spool: mounting a tmpfs needs root");
        return;
    };
    let mut ch = ClickHouse::start().await;
    // NB: the table exists before the fault, as it would in production, so
    // that the hung case hangs inserts and not the gateway's start.
    ch.query("CREATE DATABASE osb_test").await;
    ch.query(&osb_gateway::store::clickhouse::schema::create_table_sql(
        "osb_test",
        "exchanges",
    ))
    .await;
    match fault {
        StoreFault::Refused => ch.stop(),
        StoreFault::Hung => ch.signal("STOP"),
    }
    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    // NB: a backoff far longer than the test: only the full-spool probe can
    // send records to the store once it is back.
    let tables = format!(
        "\n[capture]\nflush_interval = \"{flush_interval}\"\nretry_initial_backoff = \"60s\"\nretry_max_backoff = \"60s\"\ninsert_timeout = \"2s\"\n\
         [capture.clickhouse]\nurl = \"{}\"\ndatabase = \"osb_test\"\ntable = \"exchanges\"\n",
        ch.url()
    );
    let mut gw = TestGateway::start(
        &registry(&[("pg", &b.url(""), false)]),
        Options {
            top: format!("data_dir = \"{}\"\n", disk.path().join("data").display()),
            tables,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let url = gw.url("/private/pg/v2/catalog");
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut sent = load(url.clone(), 600, 8, done.clone()).await;
    let m = gw.handle.as_ref().unwrap().capture.metrics();
    let m2 = m.clone();
    // NB: with hung inserts a record may be in memory (behind the insert)
    // for up to insert_timeout before it is spooled or dropped; the spool
    // fills up either way.
    eventually(30, "the disk fills up", || {
        let m = m2.clone();
        async move { osb_gateway::capture::load(&m.dropped) > 0 }
    })
    .await;
    if fault == StoreFault::Refused {
        let m2 = m.clone();
        eventually(20, "every record spooled or dropped", || {
            let m = m2.clone();
            async move {
                let c = osb_gateway::capture::load(&m.captured);
                c >= 600
                    && osb_gateway::capture::load(&m.spooled)
                        + osb_gateway::capture::load(&m.dropped)
                        == c
            }
        })
        .await;
    }
    // No torn frame: every spool segment reads whole.
    for seg in local::files(&disk.path().join("data/spool")).unwrap() {
        let r = osb_gateway::store::segments::read(&seg).unwrap();
        assert!(r.corrupt.is_empty(), "{}: {:?}", seg.display(), r.corrupt);
    }
    // The store comes back: records go to it at once, though the backoff runs.
    match fault {
        StoreFault::Refused => ch.restart().await,
        StoreFault::Hung => ch.signal("CONT"),
    }
    let more: Vec<String> = (0..50).map(|i| format!("after-{i}")).collect();
    for rid in &more {
        assert_eq!(
            send(
                &gw,
                "GET",
                "/private/pg/v2/catalog",
                "",
                &[("x-broker-api-request-identity", rid)]
            )
            .await,
            200
        );
    }
    sent.extend(more.iter().cloned());
    let ch_ref = &ch;
    // NB: the first try after the restart may still fail (a connection to
    // the old server) and its batch is lost to the full disk, counted; the
    // next ones get through, long before the 60 s backoff.
    eventually(30, "records after the outage stored", || async move {
        ch_ref
            .try_number(
                "SELECT uniqExact(request_id) FROM osb_test.exchanges WHERE startsWith(request_id, 'after-')",
            )
            .await
            .is_some_and(|n| n > 0)
    })
    .await;
    // Every record not dropped is stored (the spool replays while the
    // gateway runs); the dropped count is exactly what is missing.
    let captured = osb_gateway::capture::load(&m.captured);
    let dropped = osb_gateway::capture::load(&m.dropped);
    eprintln!(
        "full disk, {}: captured {captured}, dropped {dropped}, spooled {}, inserted {}",
        if fault == StoreFault::Hung {
            "hung"
        } else {
            "refused"
        },
        osb_gateway::capture::load(&m.spooled),
        osb_gateway::capture::load(&m.inserted),
    );
    assert!(dropped > 0 && dropped < captured, "{dropped} of {captured}");
    let mut stored = None;
    for _ in 0..600 {
        stored = ch
            .try_number("SELECT count() FROM osb_test.exchanges FINAL")
            .await;
        if stored == Some(captured - dropped) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.shutdown().await;
    assert_eq!(osb_gateway::capture::load(&m.captured), captured);
    assert_eq!(osb_gateway::capture::load(&m.dropped), dropped);
    assert_eq!(
        stored,
        Some(captured - dropped),
        "stored = captured - dropped"
    );
    drop(disk);
}

/// A broker that answers with headers and a first chunk, then streams one
/// chunk a second for 30 s: an exchange a shutdown has to cut.
fn streaming_broker() -> Handler {
    Arc::new(|_req| {
        Box::pin(async {
            let (tx, rx) = tokio::sync::mpsc::channel::<
                Result<hyper::body::Frame<bytes::Bytes>, Box<dyn std::error::Error + Send + Sync>>,
            >(1);
            tokio::spawn(async move {
                for _ in 0..30 {
                    let chunk =
                        hyper::body::Frame::data(bytes::Bytes::from_static(b"{\"tick\":1}\n"));
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            let body = http_body_util::StreamBody::new(futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
            ));
            http::Response::builder()
                .status(200)
                .body(body.boxed())
                .unwrap()
        })
    })
}

#[tokio::test]
async fn a_request_cut_by_shutdown_is_recorded_as_stopped_by_the_gateway() {
    let b = Broker::http(streaming_broker()).await;
    let mut gw = start(
        &registry(&[("stream", &b.url(""), false)]),
        capture_tables("\n[shutdown]\ngrace_period = \"500ms\"\n"),
    )
    .await;
    let req = Request::get(gw.url("/private/stream/v2/catalog"))
        .header("authorization", platform("cf-eu"))
        .header("x-broker-api-request-identity", "cut-by-shutdown")
        .body(client::empty())
        .unwrap();
    let resp = client::plain().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let reading = tokio::spawn(resp.into_body().collect());
    let started = std::time::Instant::now();
    within(15, "shutdown within grace + the final flush", gw.shutdown()).await;
    // NB: a bound, not a timing assertion: the grace is 0.5 s, the final
    // flush at most 5 s; the streaming response would run 30 s.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        reading.await.unwrap().is_err(),
        "the platform sees the response cut, not a short success"
    );
    let cut: Vec<CaptureRecord> = stored(&gw)
        .into_iter()
        .filter(|r| r.request_id == "cut-by-shutdown")
        .collect();
    assert_eq!(cut.len(), 1, "one record for the cut exchange");
    assert_eq!((cut[0].status, cut[0].outcome.as_str()), (200, "shutdown"));
    assert!(
        cut[0].error.contains("shutdown grace period"),
        "{}",
        cut[0].error
    );
    assert!(cut[0].response_body.starts_with("{\"tick\":1}"));
}

#[tokio::test]
async fn a_batch_the_store_keeps_refusing_while_it_answers_is_dead_lettered_not_retried_forever() {
    let ch = ClickHouse::start().await;
    ch.query("CREATE DATABASE osb_test").await;
    ch.query(&osb_gateway::store::clickhouse::schema::create_table_sql(
        "osb_test",
        "exchanges",
    ))
    .await;
    // Every insert fails with a code that is retryable in general (395,
    // an exception from a function), while the server answers anything
    // else: as data that misparses into "memory limit exceeded" does.
    ch.query(
        "CREATE MATERIALIZED VIEW osb_test.poison ENGINE = Memory AS \
         SELECT throwIf(status > 0) AS refused FROM osb_test.exchanges",
    )
    .await;
    let (mut gw, _b) = three_catalogs_to_clickhouse(&ch.url(), 200, "{}").await;
    let m = gw.handle.as_ref().unwrap().capture.metrics();
    let m2 = m.clone();
    eventually(30, "3 records dead-lettered", || {
        let m = m2.clone();
        async move { osb_gateway::capture::load(&m.dead_lettered) >= 3 }
    })
    .await;
    gw.shutdown().await;
    assert_eq!(osb_gateway::capture::load(&m.dead_lettered), 3);
    assert_eq!(osb_gateway::capture::load(&m.dropped), 0);
    assert_eq!(
        local::read_all(&gw.path("data/dead-letter")).unwrap().len(),
        3
    );
}

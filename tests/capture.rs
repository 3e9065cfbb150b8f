//! Communication logs end to end: one record per exchange for every outcome,
//! ids read from paths, queries and bodies, bodies past the cap and the
//! in-flight budget, and redaction of every stored byte (local store, live
//! feed, ClickHouse). Losing nothing under faults: `tests/capture_faults.rs`
//! and `tests/capture_disk.rs`.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::Request;
use http_body_util::BodyExt;
use support::broker::{full, Broker, Handler};
use support::capture::{
    capture_tables, osb_broker, registry, send, start, stored, with_clickhouse,
};
use support::clickhouse::ClickHouse;
use support::client::{self, basic, get, platform};
use support::gateway::{TestGateway, BROKER_PW, PLATFORM_PW};
use support::{eventually, within};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn every_operation_is_classified_with_ids_from_path_query_and_body() {
    let b = Broker::http(osb_broker()).await;
    let mut gw = start(&registry(&[("pg", &b.url(""), false)]), capture_tables("")).await;
    let base = "/private/pg/v2";
    let identity = (
        "x-broker-api-originating-identity",
        "cloudfoundry eyJ1c2VyX2lkIjoidTEifQ==",
    );
    send(&gw, "GET", &format!("{base}/catalog"), "", &[]).await;
    send(
        &gw,
        "PUT",
        &format!("{base}/service_instances/inst%201?accepts_incomplete=true"),
        r#"{"service_id":"svc","plan_id":"small"}"#,
        &[identity],
    )
    .await;
    send(
        &gw,
        "GET",
        &format!(
            "{base}/service_instances/inst%201/last_operation?operation=prov-op-1&plan_id=small"
        ),
        "",
        &[],
    )
    .await;
    send(
        &gw,
        "GET",
        &format!("{base}/service_instances/inst%201"),
        "",
        &[],
    )
    .await;
    send(
        &gw,
        "PATCH",
        &format!("{base}/service_instances/inst%201"),
        r#"{"service_id":"svc","plan_id":"large","previous_values":{"plan_id":"small"}}"#,
        &[],
    )
    .await;
    send(
        &gw,
        "PUT",
        &format!("{base}/service_instances/inst%201/service_bindings/b1"),
        r#"{"service_id":"svc","plan_id":"small"}"#,
        &[],
    )
    .await;
    send(
        &gw,
        "GET",
        &format!("{base}/service_instances/inst%201/service_bindings/b1"),
        "",
        &[],
    )
    .await;
    send(
        &gw,
        "GET",
        &format!("{base}/service_instances/inst%201/service_bindings/b1/last_operation"),
        "",
        &[],
    )
    .await;
    send(
        &gw,
        "DELETE",
        &format!(
            "{base}/service_instances/inst%201/service_bindings/b1?service_id=svc&plan_id=small"
        ),
        "",
        &[],
    )
    .await;
    send(&gw, "DELETE", &format!("{base}/service_instances/inst%201?service_id=svc&plan_id=small&accepts_incomplete=true"), "", &[]).await;
    send(
        &gw,
        "POST",
        &format!("{base}/service_instances/inst%201/service_bindings/b1/adapt_credentials"),
        "{}",
        &[],
    )
    .await;
    gw.shutdown().await;

    let recs = stored(&gw);
    let got: Vec<(&str, &str, &str, &str, &str)> = recs
        .iter()
        .map(|r| {
            (
                r.operation.as_str(),
                r.instance_id.as_str(),
                r.binding_id.as_str(),
                r.service_id.as_str(),
                r.plan_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("FETCH_CATALOG", "", "", "", ""),
            ("PROVISION_INSTANCE", "inst 1", "", "svc", "small"),
            ("POLL_INSTANCE_LAST_OPERATION", "inst 1", "", "", "small"),
            ("FETCH_INSTANCE", "inst 1", "", "", ""),
            ("UPDATE_INSTANCE", "inst 1", "", "svc", "large"),
            ("BIND", "inst 1", "b1", "svc", "small"),
            ("FETCH_BINDING", "inst 1", "b1", "", ""),
            ("POLL_BINDING_LAST_OPERATION", "inst 1", "b1", "", ""),
            ("UNBIND", "inst 1", "b1", "svc", "small"),
            ("DEPROVISION_INSTANCE", "inst 1", "", "svc", "small"),
            ("OTHER", "inst 1", "b1", "", ""),
        ]
    );
    let prov = &recs[1];
    assert!(prov.accepts_incomplete);
    assert_eq!(
        (prov.status, prov.broker_operation.as_str()),
        (202, "prov-op-1")
    );
    assert_eq!(
        (
            prov.originating_platform.as_str(),
            prov.originating_user.as_str()
        ),
        ("cloudfoundry", r#"{"user_id":"u1"}"#)
    );
    assert_eq!(
        (
            prov.api_version.as_str(),
            prov.platform.as_str(),
            prov.location.as_str(),
            prov.broker.as_str()
        ),
        ("2.17", "cf-eu", "private", "pg")
    );
    assert_eq!(
        prov.upstream_url,
        format!(
            "{}/v2/service_instances/inst%201?accepts_incomplete=true",
            b.url("")
        )
    );
    assert!(prov.request_body.contains("\"plan_id\":\"small\"") && prov.request_body_size > 0);
    assert!(prov.ttfb_us > 0 && prov.duration_us >= prov.ttfb_us);
    let poll = &recs[2];
    assert_eq!(
        (
            poll.state.as_str(),
            poll.broker_operation.as_str(),
            poll.description.as_str()
        ),
        ("failed", "prov-op-1", "quota exceeded")
    );
    assert_eq!(
        (recs[4].status, recs[4].outcome.as_str()),
        (422, "broker_error")
    );
    let ids: HashSet<_> = recs.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), recs.len(), "unique ids");
}

#[tokio::test]
async fn one_record_per_exchange_for_every_outcome() {
    let b = Broker::http(osb_broker()).await;
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::channel::<()>(1);
    let arrived_tx = Arc::new(arrived_tx);
    let slow_reader: Handler = Arc::new(move |req| {
        let tx = arrived_tx.clone();
        Box::pin(async move {
            let mut body = req.into_body();
            let _ = body.frame().await;
            let _ = tx.send(()).await;
            while let Some(Ok(_)) = body.frame().await {}
            full(200, "{}")
        })
    });
    let upload = Broker::http(slow_reader).await;
    let sleepy: Handler = Arc::new(|_req| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            full(200, "{}")
        })
    });
    let slow = Broker::http(sleepy).await;
    let dead = support::RefusedPort::new();
    let reg = registry(&[
        ("pg", &b.url(""), false),
        ("upload", &upload.url(""), false),
        ("slow", &slow.url(""), false),
        ("gone", &dead.url, false),
    ]);
    let mut gw = start(&reg, capture_tables("")).await;

    assert_eq!(
        send(&gw, "GET", "/private/pg/v2/catalog", "", &[]).await,
        200
    );
    assert_eq!(
        send(
            &gw,
            "PATCH",
            "/private/pg/v2/service_instances/i",
            "{}",
            &[]
        )
        .await,
        422
    );
    assert_eq!(
        get(
            &gw.url("/private/pg/v2/catalog"),
            Some(basic("cf-eu", "nope"))
        )
        .await
        .status,
        401
    );
    assert_eq!(send(&gw, "GET", "/eu/pg/v2/catalog", "", &[]).await, 404);
    assert_eq!(
        send(&gw, "GET", "/private/gone/v2/catalog", "", &[]).await,
        502
    );
    assert_eq!(
        send(&gw, "GET", "/private/slow/v2/catalog", "", &[]).await,
        504
    );
    // A platform that hangs up mid-upload.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let auth = platform("cf-eu");
    let head = format!(
        "PUT /private/upload/v2/service_instances/up HTTP/1.1\r\nhost: gw\r\nauthorization: {}\r\ncontent-length: 1000000\r\n\r\n",
        auth.to_str().unwrap()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b'x'; 4096]).await.unwrap();
    within(10, "upload reaches the broker", arrived_rx.recv()).await;
    drop(s);

    let metrics = gw.handle.as_ref().unwrap().capture.metrics();
    eventually(10, "7 records captured", || {
        let m = metrics.clone();
        async move { osb_gateway::capture::load(&m.captured) == 7 }
    })
    .await;
    gw.shutdown().await;
    let recs = stored(&gw);
    let mut got: Vec<(u16, &str)> = recs
        .iter()
        .map(|r| (r.status, r.outcome.as_str()))
        .collect();
    got.sort();
    let mut want = vec![
        (200, "ok"),
        (422, "broker_error"),
        (401, "rejected"),
        (404, "rejected"),
        (502, "upstream_error"),
        (504, "timeout"),
    ];
    let aborted: Vec<_> = recs.iter().filter(|r| r.outcome == "aborted").collect();
    assert_eq!(aborted.len(), 1, "{got:?}");
    assert_eq!(aborted[0].broker, "upload");
    assert!(
        aborted[0].request_body_size >= 4096,
        "{:?}",
        aborted[0].request_body_size
    );
    want.push((aborted[0].status, "aborted"));
    want.sort();
    assert_eq!(got, want);
    let rejected = recs.iter().find(|r| r.status == 401).unwrap();
    assert!(rejected.response_body.contains("Unauthorized") && rejected.platform.is_empty());
    let timeout = recs.iter().find(|r| r.status == 504).unwrap();
    assert!(timeout.error.contains("\"slow\""), "{}", timeout.error);
}

#[tokio::test]
async fn bodies_past_the_cap_are_forwarded_whole_and_recorded_truncated() {
    let echo: Handler = Arc::new(|req| {
        Box::pin(async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            full(200, body)
        })
    });
    let b = Broker::http(echo).await;
    let mut gw = start(
        &registry(&[("pg", &b.url(""), false)]),
        capture_tables("max_body_bytes = 1000\n"),
    )
    .await;
    let big = "y".repeat(5000);
    let req = Request::put(gw.url("/private/pg/v2/service_instances/i"))
        .header("authorization", platform("cf-eu"))
        .body(client::bytes(big.clone()))
        .unwrap();
    let r = client::collect(client::plain().request(req).await.unwrap()).await;
    assert_eq!(r.body.len(), 5000, "the platform gets the whole body");
    gw.shutdown().await;
    let rec = &stored(&gw)[0];
    assert_eq!(
        (
            rec.request_body.len(),
            rec.request_body_size,
            rec.request_body_truncated
        ),
        (1000, 5000, true)
    );
    assert_eq!(
        (
            rec.response_body.len(),
            rec.response_body_size,
            rec.response_body_truncated
        ),
        (1000, 5000, true)
    );
}

#[tokio::test]
async fn bodies_in_flight_share_one_memory_budget() {
    // NB: the broker echoes; it says when it holds 4000 bytes of "a"'s body,
    // so "b" runs while "a" keeps 4000 bytes of the 6000-byte budget.
    let a_half = Arc::new(tokio::sync::Notify::new());
    let notify = a_half.clone();
    let echo: Handler = Arc::new(move |req| {
        let notify = notify.clone();
        Box::pin(async move {
            let is_a = req.uri().path().ends_with("/a");
            let mut body = req.into_body();
            let mut got = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    let before = got.len();
                    got.extend_from_slice(&data);
                    if is_a && before < 4000 && got.len() >= 4000 {
                        notify.notify_one();
                    }
                }
            }
            full(200, got)
        })
    });
    let b = Broker::http(echo).await;
    let mut gw = start(
        &registry(&[("pg", &b.url(""), false)]),
        capture_tables("max_body_bytes = 5000\ninflight_max_bytes = 6000\n"),
    )
    .await;
    let put = |instance: &str, body: client::ReqBody| {
        Request::put(gw.url(&format!("/private/pg/v2/service_instances/{instance}")))
            .header("authorization", platform("cf-eu"))
            .body(body)
            .unwrap()
    };
    let (a_tx, a_rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, _>>(2);
    let a_body =
        http_body_util::StreamBody::new(futures_util::stream::unfold(a_rx, |mut rx| async move {
            rx.recv().await.map(|x| (x, rx))
        }));
    let a = tokio::spawn(client::plain().request(put("a", a_body.boxed())));
    a_tx.send(Ok(http_body::Frame::data(vec![b'a'; 4000].into())))
        .await
        .unwrap();
    within(10, "4000 bytes of a at the broker", a_half.notified()).await;

    let r = client::collect(
        client::plain()
            .request(put("b", client::bytes(vec![b'b'; 5000])))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.body.len(), 5000, "a cut record, never a cut body");
    let metric = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    let url = gw.admin_url("/metrics");
    eventually(10, "b's bytes given back, a's 4000 still held", || {
        let url = url.clone();
        async move {
            let m = client::admin("GET", &url, None, None).await;
            metric(
                &String::from_utf8_lossy(&m.body),
                "osb_gateway_capture_inflight_bytes ",
            ) == 4000
        }
    })
    .await;

    a_tx.send(Ok(http_body::Frame::data(vec![b'a'; 1000].into())))
        .await
        .unwrap();
    drop(a_tx);
    let r = client::collect(within(10, "a answered", a).await.unwrap().unwrap()).await;
    assert_eq!(r.body.len(), 5000);
    let m = client::admin("GET", &url, None, None).await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert_eq!(
        metric(&text, "osb_gateway_capture_bodies_cut_total "),
        3,
        "{text}"
    );
    assert_eq!(
        metric(&text, "osb_gateway_capture_inflight_bytes "),
        0,
        "{text}"
    );
    gw.shutdown().await;

    let recs = stored(&gw);
    let kept = |id: &str| {
        let r = recs.iter().find(|r| r.instance_id == id).unwrap();
        (
            (
                r.request_body.len(),
                r.request_body_size,
                r.request_body_truncated,
            ),
            (
                r.response_body.len(),
                r.response_body_size,
                r.response_body_truncated,
            ),
        )
    };
    // b: 2000 bytes left of the budget for its request, none for its
    // response (its own request still holds 2000 until the record is sent).
    assert_eq!(kept("b"), ((2000, 5000, true), (0, 5000, true)));
    // a: its whole request once b was done, then the 1000 left for the response.
    assert_eq!(kept("a"), ((5000, 5000, false), (1000, 5000, true)));
}

/// The secrets one exchange sequence uses, in every form they could be stored in.
fn secrets() -> Vec<String> {
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    vec![
        PLATFORM_PW.to_string(),
        b64(format!("cf-eu:{PLATFORM_PW}")),
        BROKER_PW.to_string(),
        b64(format!("u:{BROKER_PW}")),
        "bind-secret-Y7".into(),
        "param-secret-Q2".into(),
        "cookie-secret-K1".into(),
        "header-secret-H5".into(),
    ]
}

async fn secret_laden_exchanges(gw: &TestGateway) {
    let h: &[(&str, &str)] = &[
        ("cookie", "session=cookie-secret-K1"),
        ("x-api-key", "header-secret-H5"),
    ];
    send(
        gw,
        "PUT",
        "/private/pg/v2/service_instances/i/service_bindings/b",
        r#"{"service_id":"s","plan_id":"p"}"#,
        h,
    )
    .await;
    send(
        gw,
        "GET",
        "/private/pg/v2/service_instances/i/service_bindings/b",
        "",
        h,
    )
    .await;
    send(
        gw,
        "PUT",
        "/private/secretive/v2/service_instances/j",
        r#"{"service_id":"s","plan_id":"p","parameters":{"admin_password":"param-secret-Q2"}}"#,
        h,
    )
    .await;
    send(
        gw,
        "GET",
        "/private/secretive/v2/service_instances/j",
        "",
        h,
    )
    .await;
    assert_eq!(
        get(
            &gw.url("/private/pg/v2/catalog"),
            Some(basic("cf-eu", "wrong"))
        )
        .await
        .status,
        401
    );
}

fn assert_no_secret(haystack: &[u8], what: &str) {
    for s in secrets() {
        assert!(
            !haystack.windows(s.len()).any(|w| w == s.as_bytes()),
            "{s} found in {what}"
        );
    }
}

fn all_bytes_under(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes_under(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn no_secret_reaches_the_local_store_or_the_live_feed() {
    let b = Broker::http(osb_broker()).await;
    let reg = registry(&[("pg", &b.url(""), false), ("secretive", &b.url(""), true)]);
    let mut gw = start(&reg, capture_tables("")).await;
    let mut feed = gw.handle.as_ref().unwrap().capture.subscribe();
    secret_laden_exchanges(&gw).await;
    gw.shutdown().await;
    let recs = stored(&gw);
    assert_eq!(recs.len(), 5);
    let bind = &recs[0];
    assert!(
        bind.response_body.contains("\"password\":\"[REDACTED]\""),
        "keys kept: {}",
        bind.response_body
    );
    let mut fed = Vec::new();
    while let Ok(r) = feed.try_recv() {
        fed.extend(serde_json::to_vec(&*r).unwrap());
    }
    assert!(!fed.is_empty(), "the live feed saw the records");
    assert_no_secret(&fed, "the live feed");
    let disk = all_bytes_under(&gw.path("data"));
    assert!(disk.len() > 1000);
    assert_no_secret(&disk, "the data directory");
}

#[tokio::test]
async fn no_secret_reaches_clickhouse() {
    let ch = ClickHouse::start().await;
    let b = Broker::http(osb_broker()).await;
    let reg = registry(&[("pg", &b.url(""), false), ("secretive", &b.url(""), true)]);
    let mut gw = start(&reg, with_clickhouse(&ch.url(), "")).await;
    secret_laden_exchanges(&gw).await;
    gw.shutdown().await;
    assert_eq!(
        ch.number("SELECT count() FROM osb_test.exchanges FINAL")
            .await,
        5
    );
    // NB: long bodies are in the bodies table: both tables, every byte.
    let dump = ch
        .query("SELECT * FROM osb_test.exchanges FORMAT TabSeparated")
        .await
        + &ch
            .query("SELECT * FROM osb_test.exchanges_bodies FORMAT TabSeparated")
            .await;
    assert!(
        ch.number("SELECT count() FROM osb_test.exchanges_bodies")
            .await
            > 0,
        "the long bodies went to the bodies table"
    );
    assert!(dump.contains("[REDACTED]"));
    assert_no_secret(dump.as_bytes(), "ClickHouse");
    assert_no_secret(&all_bytes_under(&gw.path("data")), "the data directory");
}

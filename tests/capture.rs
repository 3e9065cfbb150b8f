//! Communication logs end to end: one record per exchange for every outcome,
//! redaction of every stored byte, the embedded store, and a real
//! ClickHouse (18.16 from Debian) with outages, restarts and a blocked sink.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::Request;
use http_body_util::BodyExt;
use osb_gateway::capture::CaptureRecord;
use osb_gateway::store::local;
use support::broker::{answer, full, Broker, Handler};
use support::clickhouse::ClickHouse;
use support::client::{self, basic, get, platform};
use support::gateway::{Options, TestGateway, BROKER_PW, PLATFORM_PW};
use support::{eventually, within};
use tokio::io::AsyncWriteExt;

const PLATFORMS: &str = support::gateway::CF_EU_REGISTRY_HEAD;

fn registry(brokers: &[(&str, &str, bool)]) -> String {
    let mut r = PLATFORMS.to_string();
    for (id, url, redact) in brokers {
        r.push_str(&format!(
            "\n[[brokers]]\nid = \"{id}\"\nowner = \"acme\"\nredact_parameters = {redact}\n[brokers.private]\nendpoint = \"{url}\"\nusername = \"u\"\npassword = \"env:BROKER_PW\"\ndevelopment_mode = true\nresponse_timeout = \"500ms\"\n"
        ));
    }
    r
}

/// Capture settings for tests: fast flushes and retries.
fn capture_tables(extra: &str) -> String {
    format!("\n[capture]\nflush_interval = \"100ms\"\nretry_initial_backoff = \"100ms\"\nretry_max_backoff = \"400ms\"\ninsert_timeout = \"3s\"\nsecret_headers = [\"x-api-key\"]\n{extra}")
}

fn with_clickhouse(ch_url: &str, extra: &str) -> String {
    capture_tables(&format!("{extra}\n[capture.clickhouse]\nurl = \"{ch_url}\"\ndatabase = \"osb_test\"\ntable = \"exchanges\"\n"))
}

/// A development-mode gateway over `registry` with these capture settings.
async fn start(registry: &str, tables: String) -> TestGateway {
    TestGateway::start(
        registry,
        Options {
            tables,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Records in the gateway's local store (after shutdown has drained it).
fn stored(gw: &TestGateway) -> Vec<CaptureRecord> {
    local::read_all(&gw.path("data/captures")).unwrap()
}

/// A broker that answers like a real one for every OSB operation.
fn osb_broker() -> Handler {
    Arc::new(|req| {
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let method = req.method().clone();
            let _ = req.into_body().collect().await;
            match (method.as_str(), path.as_str()) {
                ("PUT", p) if p.contains("service_bindings") => full(
                    201,
                    r#"{"credentials":{"username":"app-user","password":"bind-secret-Y7"},"endpoints":[]}"#,
                ),
                ("GET", p) if p.ends_with("last_operation") => {
                    full(200, r#"{"state":"failed","description":"quota exceeded"}"#)
                }
                ("GET", p) if p.contains("service_bindings") => {
                    full(200, r#"{"credentials":{"password":"bind-secret-Y7"}}"#)
                }
                ("GET", "/v2/catalog") => full(200, r#"{"services":[]}"#),
                ("PUT", _) => full(202, r#"{"operation":"prov-op-1"}"#),
                ("PATCH", _) => full(
                    422,
                    r#"{"error":"MaintenanceInfoConflict","description":"no"}"#,
                ),
                ("GET", _) => full(
                    200,
                    r#"{"service_id":"svc","plan_id":"small","parameters":{"admin_password":"param-secret-Q2"}}"#,
                ),
                ("DELETE", _) => full(200, "{}"),
                _ => full(404, "{}"),
            }
        })
    })
}

async fn send(
    gw: &TestGateway,
    method: &str,
    path: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> u16 {
    let mut b = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .header("authorization", platform("cf-eu"))
        .header("x-broker-api-version", "2.17")
        .header("content-type", "application/json");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let resp = client::plain()
        .request(b.body(client::bytes(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

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

/// Sends `n` catalog requests, `conc` at a time; returns the request ids used.
async fn load(
    gw_url: String,
    n: usize,
    conc: usize,
    done: Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<String> {
    let client = client::plain();
    let sem = Arc::new(tokio::sync::Semaphore::new(conc));
    let mut tasks = Vec::new();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (client, url, done) = (client.clone(), gw_url.clone(), done.clone());
        let rid = format!("load-{i}");
        tasks.push(tokio::spawn(async move {
            let req = Request::get(url)
                .header("authorization", platform("cf-eu"))
                .header("x-broker-api-request-identity", &rid)
                .body(client::empty())
                .unwrap();
            let resp = client.request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let _ = resp.into_body().collect().await;
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(permit);
            rid
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids
}

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
    let b = Broker::http(answer(200, "{}")).await;
    let mut gw = start(
        &registry(&[("pg", &b.url(""), false)]),
        with_clickhouse(&ch.url(), ""),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            send(&gw, "GET", "/private/pg/v2/catalog", "", &[]).await,
            200
        );
    }
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
    // Today's table without two of its columns, as an older gateway made it.
    let older = osb_gateway::store::clickhouse::schema::create_table_sql("osb_test", "exchanges")
        .replace("    ttfb_us UInt64,\n", "")
        .replace("    error String,\n", "");
    assert!(!older.contains("ttfb_us") && !older.contains("error String"));
    ch.query(&older).await;
    let b = Broker::http(answer(500, r#"{"description":"boom"}"#)).await;
    let mut gw = start(
        &registry(&[("pg", &b.url(""), false)]),
        with_clickhouse(&ch.url(), ""),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            send(&gw, "GET", "/private/pg/v2/catalog", "", &[]).await,
            500
        );
    }
    let m = gw.handle.as_ref().unwrap().capture.metrics();
    gw.shutdown().await;
    assert_eq!(osb_gateway::capture::load(&m.dead_lettered), 0);
    assert_eq!(
        ch.number("SELECT count() FROM system.columns WHERE database = 'osb_test' AND table = 'exchanges' AND name IN ('ttfb_us', 'error')")
            .await,
        2,
        "both columns added"
    );
    assert_eq!(
        ch.number(
            "SELECT count() FROM osb_test.exchanges FINAL WHERE status = 500 AND ttfb_us > 0"
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

/// The records of `tests/fixtures/records-v1`, a local-store segment
/// written by the gateway of 2026-12 (see `write_the_records_fixture`).
fn fixture_records() -> Vec<CaptureRecord> {
    let mut r: Vec<CaptureRecord> =
        serde_json::from_str(include_str!("fixtures/records-v1.json")).unwrap();
    r.sort_by_key(|r| r.received_at_us);
    r
}

/// Rewrites the fixture with today's format; run by hand only when the
/// format of today is the one to keep (`cargo test --test capture --
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
    let b = Broker::http(answer(200, "{}")).await;
    let mut gw = start(
        &registry(&[("pg", &b.url(""), false)]),
        with_clickhouse(&ch.url(), ""),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            send(&gw, "GET", "/private/pg/v2/catalog", "", &[]).await,
            200
        );
    }
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

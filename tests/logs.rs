//! Searching, showing and tailing the communication logs, and finding failed
//! and stuck instances, through the admin API over a real ClickHouse and
//! over the embedded store alike.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::broker::{full, Broker, Handler};
use support::clickhouse::ClickHouse;
use support::client::{self, platform, send, Collected};
use support::gateway::{Options, TestGateway, ACME_TOKEN, OPERATOR_TOKEN};

const REGISTRY: &str = r#"locations = ["eu"]

[[platforms]]
id = "cf-eu"
customer = "acme"
username = "cf-eu"
password_hash = "{HASH}"
locations = ["eu"]

[[platforms]]
id = "k8s"
customer = "globex"
username = "k8s"
password_hash = "{HASH}"
locations = ["eu"]

[[brokers]]
id = "pg"
owner = "acme"
  [brokers.private]
  endpoint = "{BROKER_URL}"
  username = "u"
  password = "env:BROKER_PW"
  development_mode = true

[[brokers]]
id = "globex-db"
owner = "globex"
  [brokers.private]
  endpoint = "{BROKER_URL}"
  username = "u"
  password = "env:BROKER_PW"
  development_mode = true
"#;

/// A broker scripted by plan and instance id:
/// plan `fail` → 400 with a description; plan `async` → 202; polls answer
/// `failed` for instances starting with `af-`, else `in progress`;
/// everything else succeeds.
fn scripted() -> Handler {
    Arc::new(|req| {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let big = req.uri().query().is_some_and(|q| q.contains("big"));
        Box::pin(async move {
            use http_body_util::BodyExt as _;
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let raw = path.split('/').nth(3).unwrap_or("");
            let instance = percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .into_owned();
            match (method.as_str(), path.ends_with("/last_operation")) {
                ("GET", true) if instance.starts_with("af-") => full(
                    200,
                    r#"{"state":"failed","description":"quota exceeded in eu"}"#,
                ),
                ("GET", true) => full(200, r#"{"state":"in progress"}"#),
                ("PUT", false) if v["plan_id"] == "fail" => full(
                    400,
                    r#"{"error":"BadPlan","description":"plan \"fail\" cannot be provisioned"}"#,
                ),
                ("PUT", false) if v["plan_id"] == "async" => full(202, r#"{"operation":"op-1"}"#),
                ("PUT", false) => full(201, "{}"),
                ("DELETE", false) => full(200, "{}"),
                // 64 KiB catalogs make tail records large: a stalled reader
                // then overflows any socket buffer quickly.
                _ if big => full(
                    200,
                    format!(r#"{{"services":[],"pad":"{}"}}"#, "x".repeat(64 << 10)),
                ),
                _ => full(200, r#"{"services":[]}"#),
            }
        })
    })
}

async fn gateway(broker: &Broker, ch: Option<&ClickHouse>) -> TestGateway {
    let mut tables = "\n[capture]\nflush_interval = \"100ms\"\nretry_initial_backoff = \"100ms\"\nfeed_capacity = 16\n".to_string();
    if let Some(ch) = ch {
        tables.push_str(&format!(
            "[capture.clickhouse]\nurl = \"{}\"\ndatabase = \"osb_logs\"\ntable = \"exchanges\"\n",
            ch.url()
        ));
    }
    TestGateway::start(
        &REGISTRY.replace("{BROKER_URL}", &broker.url("")),
        Options {
            tables,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn q(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn api(gw: &TestGateway, token: &str, path: &str) -> Collected {
    client::admin("GET", &gw.admin_url(path), Some(token), None).await
}

async fn search(gw: &TestGateway, token: &str, query: &str) -> Vec<Value> {
    let r = api(gw, token, &format!("/admin/v1/logs?{query}")).await;
    assert_eq!(r.status, 200, "{query}: {:?}", r.body);
    r.json()["records"].as_array().unwrap().clone()
}

/// Waits until the store holds `n` records for the operator.
async fn stored(gw: &TestGateway, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = search(gw, OPERATOR_TOKEN, "limit=1000").await.len();
        if got >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{got} of {n} records stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const ODD: &str = r#"x'); DROP TABLE exchanges; -- \" OR 1=1 \\"#;

/// The scripted traffic; returns how many exchanges it made.
async fn traffic(gw: &TestGateway) -> usize {
    let put = |inst: &str, plan: &str| {
        let url = gw.url(&format!(
            "/private/pg/v2/service_instances/{}?accepts_incomplete=true",
            q(inst)
        ));
        let body = json!({"service_id": "svc", "plan_id": plan}).to_string();
        async move { send("PUT", &url, Some(platform("cf-eu")), &body).await }
    };
    let poll = |inst: &str| {
        let url = gw.url(&format!(
            "/private/pg/v2/service_instances/{}/last_operation",
            q(inst)
        ));
        async move { send("GET", &url, Some(platform("cf-eu")), "").await }
    };
    let status = |method: &'static str, path: &str, who: &'static str, body: &'static str| {
        let url = gw.url(path);
        async move {
            send(method, &url, Some(platform(who)), body)
                .await
                .status
                .as_u16()
        }
    };
    assert_eq!(
        status("GET", "/private/pg/v2/catalog", "cf-eu", "").await,
        200
    );
    assert_eq!(put("ok-1", "small").await.status, 201);
    assert_eq!(put("sync-fail", "fail").await.status, 400);
    assert_eq!(put(ODD, "small").await.status, 201);
    // An async provision that fails, then the platform's orphan mitigation.
    assert_eq!(put("af-1", "async").await.status, 202);
    assert_eq!(poll("af-1").await.json()["state"], "failed");
    let del = "/private/pg/v2/service_instances/af-1?service_id=svc&plan_id=async";
    assert_eq!(status("DELETE", del, "cf-eu", "").await, 200);
    // An async provision that stays in progress.
    assert_eq!(put("slow-1", "async").await.status, 202);
    assert_eq!(poll("slow-1").await.json()["state"], "in progress");
    // An async provision that fails, with no orphan mitigation (yet).
    assert_eq!(put("af-2", "async").await.status, 202);
    assert_eq!(poll("af-2").await.json()["state"], "failed");
    // Another customer's traffic, and a refused request.
    let g1 = "/private/globex-db/v2/service_instances/g-1";
    assert_eq!(status("PUT", g1, "k8s", r#"{"plan_id":"fail"}"#).await, 400);
    assert_eq!(
        status("GET", "/private/nope/v2/catalog", "cf-eu", "").await,
        404
    );
    13
}

fn ids(v: &[Value], key: &str) -> Vec<String> {
    v.iter()
        .map(|r| r[key].as_str().unwrap_or("").to_string())
        .collect()
}

/// The broker URL the gateway routes `pg` to.
fn gw_broker_url(gw: &TestGateway) -> String {
    let table = gw.handle.as_ref().unwrap().routes.load_full();
    let pg = table
        .routes()
        .into_iter()
        .find(|(r, _)| &*r.broker == "pg")
        .unwrap();
    format!("{}/v2/service_instances/", pg.0.endpoint.url())
}

async fn scenario(gw: &TestGateway) {
    let n = traffic(gw).await;
    stored(gw, n).await;
    let all = search(gw, OPERATOR_TOKEN, "limit=1000").await;
    assert_eq!(all.len(), n);
    let times: Vec<i64> = all
        .iter()
        .map(|r| r["received_at_us"].as_i64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    // Each criterion alone.
    let count = |q: &'static str| async move { search(gw, OPERATOR_TOKEN, q).await.len() };
    assert_eq!(count("broker=pg").await, 11);
    assert_eq!(count("location=private").await, n);
    assert_eq!(count("platform=k8s").await, 1);
    assert_eq!(count("operation=PROVISION_INSTANCE").await, 7);
    assert_eq!(count("operation=poll_instance_last_operation").await, 3);
    assert_eq!(count("status=400").await, 2);
    assert_eq!(count("status=%3E399").await, 3);
    assert_eq!(count("status=%3E%3D500").await, 0);
    assert_eq!(count("status=%3C300").await, 10);
    assert_eq!(count("status=400-499").await, 3);
    assert_eq!(count("status=2xx").await, 10);
    assert_eq!(count("plan_id=async").await, 4, "three PUTs and a DELETE");
    assert_eq!(count("instance_id=af-1").await, 3);
    assert_eq!(count("outcome=rejected").await, 1);
    let one = &all[3];
    let rid = one["request_id"].as_str().unwrap();
    assert_eq!(
        ids(
            &search(gw, OPERATOR_TOKEN, &format!("request_id={rid}")).await,
            "id"
        ),
        [one["id"].as_str().unwrap()]
    );
    // Combined.
    let failed_provisions = search(
        gw,
        OPERATOR_TOKEN,
        "operation=PROVISION_INSTANCE&status=%3E399&broker=pg",
    )
    .await;
    assert_eq!(ids(&failed_provisions, "instance_id"), ["sync-fail"]);
    // Values with quotes, backslashes and SQL keywords are searched literally.
    let odd = search(gw, OPERATOR_TOKEN, &format!("instance_id={}", q(ODD))).await;
    assert_eq!(ids(&odd, "instance_id"), [ODD]);
    assert!(search(
        gw,
        OPERATOR_TOKEN,
        &format!("instance_id={}", q("x' OR '1'='1"))
    )
    .await
    .is_empty());
    // Bad criteria are refused, naming the parameter.
    let bad = api(gw, OPERATOR_TOKEN, "/admin/v1/logs?status=lots").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["description"]
        .as_str()
        .unwrap()
        .contains("status"));
    assert_eq!(
        api(gw, OPERATOR_TOKEN, "/admin/v1/logs?colour=red")
            .await
            .status,
        400
    );

    // The date bound: newest first from the bound, the closest first.
    let bound = all[4]["received_at"].as_str().unwrap();
    let before = search(gw, OPERATOR_TOKEN, &format!("before={}", q(bound))).await;
    assert_eq!(before.len(), n - 4);
    assert_eq!(before[0]["id"], all[4]["id"]);

    // Correlation: one instance's PUT, poll and orphan-mitigation DELETE, in order.
    let history = search(gw, OPERATOR_TOKEN, "instance_id=af-1&order=oldest").await;
    assert_eq!(
        ids(&history, "operation"),
        [
            "PROVISION_INSTANCE",
            "POLL_INSTANCE_LAST_OPERATION",
            "DEPROVISION_INSTANCE"
        ]
    );

    // Show: the whole exchange.
    let fail_id = failed_provisions[0]["id"].as_str().unwrap();
    let shown = api(gw, OPERATOR_TOKEN, &format!("/admin/v1/logs/{fail_id}"))
        .await
        .json();
    assert_eq!(shown["status"], 400);
    assert!(shown["response_body"]
        .as_str()
        .unwrap()
        .contains("cannot be provisioned"));
    assert!(shown["request_body"].as_str().unwrap().contains("\"fail\""));
    assert_eq!(shown["description"], "plan \"fail\" cannot be provisioned");
    let upstream = shown["upstream_url"].as_str().unwrap();
    assert!(
        upstream.starts_with(&gw_broker_url(gw)) && upstream.ends_with("?accepts_incomplete=true"),
        "{upstream}"
    );
    assert!(shown["request_headers"].to_string().contains("[REDACTED]"));

    // Paging with a cursor stays stable while new records arrive.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/v1/logs?limit=3&cursor={c}"),
            None => "/admin/v1/logs?limit=3".into(),
        };
        let page = api(gw, OPERATOR_TOKEN, &path).await.json();
        seen.extend(ids(page["records"].as_array().unwrap(), "id"));
        // New traffic between pages.
        send(
            "GET",
            &gw.url("/private/pg/v2/catalog"),
            Some(platform("cf-eu")),
            "",
        )
        .await;
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ids(&all, "id"),
        "pages cover exactly the records there were, in order"
    );
    let bad_cursor = api(gw, OPERATOR_TOKEN, "/admin/v1/logs?cursor=junk").await;
    assert_eq!(bad_cursor.status, 400);

    // Failed and stuck instances. af-1 failed, but the DELETE that followed
    // (orphan mitigation) succeeded: its latest operation did not fail.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let problems = api(
        gw,
        OPERATOR_TOKEN,
        "/admin/v1/failed-instances?stuck_after=1s",
    )
    .await
    .json();
    let mut found: Vec<(String, String)> = problems["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["instance_id"].as_str().unwrap().into(),
                p["problem"].as_str().unwrap().into(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("af-2".to_string(), "failed".to_string()),
            ("g-1".into(), "failed".into()),
            ("slow-1".into(), "stuck".into()),
            ("sync-fail".into(), "failed".into()),
        ],
        "{problems}"
    );
    let af = problems["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["instance_id"] == "af-2")
        .unwrap();
    assert_eq!(af["description"], "quota exceeded in eu");
    let not_yet = api(gw, OPERATOR_TOKEN, "/admin/v1/failed-instances")
        .await
        .json();
    assert!(
        !not_yet.to_string().contains("slow-1"),
        "stuck only after 24 h by default"
    );

    // An owner token never sees another customer's records.
    let mine = search(gw, ACME_TOKEN, "limit=1000").await;
    assert!(!mine.is_empty());
    assert!(
        mine.iter().all(|r| r["broker"] == "pg"),
        "acme sees only pg"
    );
    assert!(search(gw, ACME_TOKEN, "broker=globex-db").await.is_empty());
    let g = search(gw, OPERATOR_TOKEN, "broker=globex-db").await;
    let g_id = g[0]["id"].as_str().unwrap();
    assert_eq!(
        api(gw, ACME_TOKEN, &format!("/admin/v1/logs/{g_id}"))
            .await
            .status,
        404
    );
    assert_eq!(
        api(gw, OPERATOR_TOKEN, &format!("/admin/v1/logs/{g_id}"))
            .await
            .status,
        200
    );
    let acme_problems = api(gw, ACME_TOKEN, "/admin/v1/failed-instances")
        .await
        .json();
    assert!(
        !acme_problems.to_string().contains("g-1"),
        "{acme_problems}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_over_the_embedded_store() {
    let b = Broker::http(scripted()).await;
    let mut gw = gateway(&b, None).await;
    scenario(&gw).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_over_clickhouse() {
    let ch = ClickHouse::start().await;
    let b = Broker::http(scripted()).await;
    let mut gw = gateway(&b, Some(&ch)).await;
    scenario(&gw).await;
    gw.shutdown().await;
}

/// Reads a tail stream line by line.
async fn tail(gw: &TestGateway, token: &str, query: &str) -> http::Response<hyper::body::Incoming> {
    let req = http::Request::get(gw.admin_url(&format!("/admin/v1/logs/tail?{query}")))
        .header("authorization", format!("Bearer {token}"))
        .body(client::empty())
        .unwrap();
    client::plain().request(req).await.unwrap()
}

async fn next_line(body: &mut hyper::body::Incoming, buf: &mut Vec<u8>) -> String {
    use http_body_util::BodyExt as _;
    loop {
        if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            return String::from_utf8_lossy(&line[..nl]).into_owned();
        }
        let frame = body.frame().await.expect("stream open").unwrap();
        if let Ok(d) = frame.into_data() {
            buf.extend_from_slice(&d);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_streams_records_filters_by_scope_and_reports_lag() {
    let b = Broker::http(scripted()).await;
    let gw = gateway(&b, None).await;
    let resp = tail(&gw, ACME_TOKEN, "status=%3E399").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    // Not acme's, and not >399: neither shows.
    send(
        "PUT",
        &gw.url("/private/globex-db/v2/service_instances/g-1"),
        Some(platform("k8s")),
        r#"{"plan_id":"fail"}"#,
    )
    .await;
    send(
        "GET",
        &gw.url("/private/pg/v2/catalog"),
        Some(platform("cf-eu")),
        "",
    )
    .await;
    let sent = tokio::time::Instant::now();
    send(
        "PUT",
        &gw.url("/private/pg/v2/service_instances/x-1"),
        Some(platform("cf-eu")),
        r#"{"plan_id":"fail"}"#,
    )
    .await;
    let line = tokio::time::timeout(Duration::from_secs(1), next_line(&mut body, &mut buf))
        .await
        .expect("a record within a second of the exchange");
    assert!(sent.elapsed() < Duration::from_secs(1));
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (
            v["broker"].as_str(),
            v["instance_id"].as_str(),
            v["status"].as_u64()
        ),
        (Some("pg"), Some("x-1"), Some(400))
    );

    // SSE when asked for.
    let req = http::Request::get(gw.admin_url("/admin/v1/logs/tail"))
        .header("authorization", format!("Bearer {OPERATOR_TOKEN}"))
        .header("accept", "text/event-stream")
        .body(client::empty())
        .unwrap();
    let resp = client::plain().request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut sse = resp.into_body();
    let mut sbuf = Vec::new();
    send(
        "GET",
        &gw.url("/private/pg/v2/catalog"),
        Some(platform("cf-eu")),
        "",
    )
    .await;
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.starts_with("data: ")) {
        lines.push(next_line(&mut sse, &mut sbuf).await);
    }
    assert!(lines.contains(&"event: record".to_string()), "{lines:?}");

    // A slow reader: it reads nothing while 1,500 exchanges pass, then is
    // told how many it missed. The proxy does not wait for it.
    let slow = tail(&gw, OPERATOR_TOKEN, "").await;
    let mut slow_body = slow.into_body();
    let started = tokio::time::Instant::now();
    let url = gw.url("/private/pg/v2/catalog?big=1");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..190 {
                    send("GET", &url, Some(platform("cf-eu")), "").await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let mut sbuf = Vec::new();
    let mut lagged = None;
    for _ in 0..2000 {
        let l = tokio::time::timeout(Duration::from_secs(5), next_line(&mut slow_body, &mut sbuf))
            .await
            .expect("the slow reader still gets lines");
        let v: Value = serde_json::from_str(&l).unwrap();
        if let Some(n) = v["lagged"].as_u64() {
            lagged = Some(n);
            break;
        }
    }
    let n = lagged.expect("the slow reader is told it lagged");
    assert!(n > 0);
    // A reader that went away costs nothing: traffic goes on.
    drop(body);
    drop(sse);
    drop(slow_body);
    let r = send(
        "GET",
        &gw.url("/private/pg/v2/catalog"),
        Some(platform("cf-eu")),
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    eprintln!("1520 exchanges with a stalled tail reader took {took:?}; it missed {n}");
}

//! Shared by the capture tests (`tests/capture.rs`, `capture_faults.rs`,
//! `capture_disk.rs`): a registry of brokers, capture settings, a gateway,
//! its stored records, an OSB broker, one request and a catalog load.

use std::sync::Arc;

use http::Request;
use http_body_util::BodyExt;
use osb_gateway::capture::CaptureRecord;
use osb_gateway::store::local;

use super::broker::{answer, full, Broker, Handler};
use super::client::{self, platform};
use super::gateway::{Options, TestGateway};

const PLATFORMS: &str = super::gateway::CF_EU_REGISTRY_HEAD;

/// cf-eu and its peers (`CF_EU_REGISTRY_HEAD`) and brokers of acme, each
/// `(id, endpoint, redact_parameters)`, in development mode with a 500 ms
/// response timeout.
pub fn registry(brokers: &[(&str, &str, bool)]) -> String {
    let mut r = PLATFORMS.to_string();
    for (id, url, redact) in brokers {
        r.push_str(&format!(
            "\n[[brokers]]\nid = \"{id}\"\nowner = \"acme\"\nredact_parameters = {redact}\n[brokers.private]\nendpoint = \"{url}\"\nusername = \"u\"\npassword = \"env:BROKER_PW\"\ndevelopment_mode = true\nresponse_timeout = \"500ms\"\n"
        ));
    }
    r
}

/// Capture settings for tests: fast flushes and retries.
pub fn capture_tables(extra: &str) -> String {
    format!("\n[capture]\nflush_interval = \"100ms\"\nretry_initial_backoff = \"100ms\"\nretry_max_backoff = \"400ms\"\ninsert_timeout = \"3s\"\nsecret_headers = [\"x-api-key\"]\n{extra}")
}

/// [`capture_tables`] writing to `osb_test.exchanges` on `ch_url`.
pub fn with_clickhouse(ch_url: &str, extra: &str) -> String {
    capture_tables(&format!("{extra}\n[capture.clickhouse]\nurl = \"{ch_url}\"\ndatabase = \"osb_test\"\ntable = \"exchanges\"\n"))
}

/// A development-mode gateway over `registry` with these capture settings.
pub async fn start(registry: &str, tables: String) -> TestGateway {
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
pub fn stored(gw: &TestGateway) -> Vec<CaptureRecord> {
    local::read_all(&gw.path("data/captures")).unwrap()
}

/// A broker that answers like a real one for every OSB operation.
pub fn osb_broker() -> Handler {
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

/// Sends one request as platform cf-eu (OSB 2.17, JSON); its status.
pub async fn send(
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

/// Sends `n` catalog requests, `conc` at a time; returns the request ids used.
pub async fn load(
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

/// A broker answering every request `status` with `body`, a gateway
/// capturing to `ch_url` (database `osb_test`), and three catalog requests
/// through it, each answered `status`.
pub async fn three_catalogs_to_clickhouse(
    ch_url: &str,
    status: u16,
    body: &'static str,
) -> (TestGateway, Broker) {
    let b = Broker::http(answer(status, body)).await;
    let gw = start(
        &registry(&[("pg", &b.url(""), false)]),
        with_clickhouse(ch_url, ""),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            send(&gw, "GET", "/private/pg/v2/catalog", "", &[]).await,
            status
        );
    }
    (gw, b)
}

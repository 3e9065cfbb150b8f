//! The data the console shows, through the admin API: usage aggregates
//! (embedded store and ClickHouse), failed instances that refusals cannot
//! fake, and metrics that name the location a platform asked for.

mod support;

use std::sync::Arc;

use serde_json::{json, Value};
use support::broker::{full, Broker, Handler};
use support::clickhouse::ClickHouse;
use support::client::{self, platform, send};
use support::gateway::{Options, TestGateway, GLOBEX_TOKEN, OPERATOR_TOKEN};
use support::tls::TestCa;

const REGISTRY: &str = r#"locations = ["eu"]

[[platforms]]
id = "cf-eu"
customer = "acme"
username = "cf-eu"
password_hash = "{HASH}"
locations = ["eu"]

[[brokers]]
id = "pg"
owner = "acme"
  [[brokers.publications]]
  location = "global"
  endpoint = "{BROKER_URL}"
  username = "u"
  password = "env:BROKER_PW"
  ca_bundle = '''{CA}'''
  approved = true
"#;

const CATALOG: &str = r#"{"services":[{"id":"svc-pg","name":"postgresql","description":"PostgreSQL","bindable":true,
  "plans":[{"id":"plan-s","name":"small","description":"1 CPU"}]}]}"#;

fn broker() -> Handler {
    Arc::new(|req| {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        Box::pin(async move {
            match method.as_str() {
                "GET" if path.ends_with("/catalog") => full(200, CATALOG),
                "PUT" => full(201, "{}"),
                _ => full(200, "{}"),
            }
        })
    })
}

async fn gateway(broker: &Broker, ca: &TestCa, ch: Option<&ClickHouse>) -> TestGateway {
    let mut tables = "\n[capture]\nflush_interval = \"100ms\"\n".to_string();
    if let Some(ch) = ch {
        tables.push_str(&format!(
            "[capture.clickhouse]\nurl = \"{}\"\ndatabase = \"osb_logs\"\ntable = \"exchanges\"\n",
            ch.url()
        ));
    }
    let gw = TestGateway::start(
        &REGISTRY
            .replace("{BROKER_URL}", &broker.url(""))
            .replace("{CA}", &ca.pem()),
        Options {
            tables,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = client::admin(
        "POST",
        &gw.admin_url("/admin/v1/brokers/pg/catalog/refresh"),
        Some(OPERATOR_TOKEN),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    gw
}

async fn api(gw: &TestGateway, token: &str, path: &str) -> (u16, Value) {
    let r = client::admin("GET", &gw.admin_url(path), Some(token), None).await;
    (r.status.as_u16(), r.json())
}

/// An instance's whole life through the `global` publication, called as
/// `eu`; then a refused (401) delete of the same instance. Returns the
/// number of exchanges.
async fn lifecycle(gw: &TestGateway) -> u64 {
    let base = "/eu/pg/v2/service_instances/i-1";
    let plan = json!({"service_id": "svc-pg", "plan_id": "plan-s"}).to_string();
    let del = "?service_id=svc-pg&plan_id=plan-s";
    let steps = [
        ("PUT", base.to_string(), plan.clone(), 201),
        (
            "PUT",
            format!("{base}/service_bindings/b-1"),
            plan.clone(),
            201,
        ),
        (
            "DELETE",
            format!("{base}/service_bindings/b-1{del}"),
            String::new(),
            200,
        ),
        ("DELETE", format!("{base}{del}"), String::new(), 200),
    ];
    for (m, path, body, want) in &steps {
        let r = send(m, &gw.url(path), Some(platform("cf-eu")), body).await;
        assert_eq!(r.status.as_u16(), *want, "{m} {path}");
    }
    let r = send(
        "DELETE",
        &gw.url(&format!("{base}{del}")),
        Some(client::basic("cf-eu", "wrong")),
        "",
    )
    .await;
    assert_eq!(r.status.as_u16(), 401);
    steps.len() as u64 + 1
}

async fn check(gw: &TestGateway) {
    let n = lifecycle(gw).await;
    support::eventually(20, "records stored", || async {
        let (_, v) = api(gw, OPERATOR_TOKEN, "/admin/v1/logs?limit=100").await;
        v["records"].as_array().map(|a| a.len() as u64) == Some(n)
    })
    .await;

    // The refused delete names its broker and location, and fails nothing:
    // the instance's last exchange that reached the broker succeeded.
    let (_, v) = api(gw, OPERATOR_TOKEN, "/admin/v1/logs?status=401").await;
    let refused = &v["records"][0];
    assert_eq!(
        (refused["broker"].as_str(), refused["location"].as_str()),
        (Some("pg"), Some("eu")),
        "{v}"
    );
    let (_, v) = api(gw, OPERATOR_TOKEN, "/admin/v1/failed-instances").await;
    assert_eq!(
        v["instances"],
        json!([]),
        "a refusal made an instance failed: {v}"
    );

    // Usage: every exchange, the lifecycle per plan, by name.
    let (s, u) = api(gw, OPERATOR_TOKEN, "/admin/v1/usage?broker=pg").await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["total"]["count"], n, "{u}");
    assert_eq!(u["total"]["client_errors"], 1, "{u}");
    assert_eq!(u["total"]["errors"], 0, "{u}");
    assert_eq!(u["total"]["latency_us"].as_array().unwrap().len(), 3);
    let series: u64 = u["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(series, n);
    assert_eq!(
        u["plans"],
        json!([{"plan_id": "plan-s", "plan_name": "small", "service_name": "postgresql",
                "instances_created": 1, "instances_deleted": 1, "bindings_created": 1, "bindings_deleted": 1}]),
        "{u}"
    );
    let ops: Vec<&str> = u["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops[0], "DEPROVISION_INSTANCE", "busiest first: {ops:?}");
    let (_, by_name) = api(
        gw,
        OPERATOR_TOKEN,
        "/admin/v1/usage?plan=small&service=postgresql",
    )
    .await;
    assert_eq!(
        by_name["total"]["count"], n,
        "every exchange names plan-s, the refusal too: {by_name}"
    );
    // Another customer's token sees none of it.
    let (_, other) = api(gw, GLOBEX_TOKEN, "/admin/v1/usage?broker=pg").await;
    assert_eq!(other["total"]["count"], 0, "{other}");
    // Bad ranges are refused, naming the parameter.
    for (q, says) in [
        ("bucket=0s", "bucket"),
        ("bucket=soon", "bucket"),
        (
            "after=2026-01-02T00:00:00Z&before=2026-01-01T00:00:00Z",
            "later than",
        ),
        (
            "after=2020-01-01T00:00:00Z&bucket=1s",
            "more than 2000 buckets",
        ),
        ("fruit=apple", "unknown parameter"),
    ] {
        let (s, v) = api(gw, OPERATOR_TOKEN, &format!("/admin/v1/usage?{q}")).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert!(
            v["description"].as_str().unwrap().contains(says),
            "{q}: {v}"
        );
    }

    // Metrics: counted under the location asked for (`eu`), as the records
    // are, though the `global` publication served them; the refusal too.
    let m = client::admin("GET", &gw.admin_url("/metrics"), Some(OPERATOR_TOKEN), None).await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    for line in [
        "osb_gateway_requests_total{broker=\"pg\",location=\"eu\",operation=\"PROVISION_INSTANCE\",status_class=\"2xx\"} 1",
        "osb_gateway_requests_total{broker=\"pg\",location=\"eu\",operation=\"DEPROVISION_INSTANCE\",status_class=\"4xx\"} 1",
    ] {
        assert!(text.contains(line), "missing {line}:\n{text}");
    }
    assert!(
        !text.contains("location=\"global\",operation=\"PROVISION"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_failed_instances_and_metrics_over_the_embedded_store() {
    let ca = TestCa::new("usage test CA");
    let b = Broker::https(&ca.issue(), broker()).await;
    let mut gw = gateway(&b, &ca, None).await;
    check(&gw).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_failed_instances_and_metrics_over_clickhouse() {
    let ch = ClickHouse::start().await;
    let ca = TestCa::new("usage test CA");
    let b = Broker::https(&ca.issue(), broker()).await;
    let mut gw = gateway(&b, &ca, Some(&ch)).await;
    check(&gw).await;
    gw.shutdown().await;
}

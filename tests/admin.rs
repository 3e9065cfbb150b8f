//! The admin listener: health, metrics, routes by token scope, reload.

mod support;

use http::Request;
use support::broker::{answer, Broker};
use support::client::{self, get, platform, Collected};
use support::gateway::{Options, TestGateway, ACME_TOKEN, BROKER_PW, OPERATOR_TOKEN};

fn bearer(t: &str) -> http::HeaderValue {
    format!("Bearer {t}").parse().unwrap()
}

async fn admin(method: &str, url: &str, token: Option<&str>) -> Collected {
    client::admin(method, url, token, None).await
}

fn registry(a: &str, b: &str) -> String {
    format!(
        r#"locations = ["eu"]
[[platforms]]
id = "cf-eu"
customer = "acme"
username = "cf-eu"
password_hash = "{{HASH}}"
locations = ["eu"]

[[brokers]]
id = "pg"
owner = "acme"
[brokers.private]
endpoint = "{a}"
username = "u"
password = "env:BROKER_PW"
development_mode = true

[[brokers]]
id = "globex-db"
owner = "globex"
[brokers.private]
endpoint = "{b}"
username = "g"
password = "env:BROKER_PW"
development_mode = true
"#
    )
}

/// Every line is a comment (`# HELP name text`, `# TYPE name kind`) or a
/// sample `name{labels} value` of a family declared by TYPE.
fn assert_prometheus_text(text: &str) {
    let mut families = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            families.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "bad value in {line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| families.contains(*f))
            .unwrap_or(name);
        assert!(families.contains(family), "sample without TYPE: {line}");
        if let Some(labels) = series.split_once('{').map(|x| x.1) {
            assert!(
                labels.ends_with('}') && labels.contains("=\""),
                "bad labels in {line}"
            );
        }
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let a = Broker::http(answer(200, "{}")).await;
    let gw = TestGateway::dev(&registry(&a.url(""), &a.url(""))).await;
    assert_eq!(
        admin("GET", &gw.admin_url("/healthz"), None).await.status,
        200
    );
    assert_eq!(
        admin("GET", &gw.admin_url("/readyz"), None).await.status,
        200
    );
    get(&gw.url("/private/pg/v2/catalog"), Some(platform("cf-eu"))).await;
    let m = admin("GET", &gw.admin_url("/metrics"), Some(OPERATOR_TOKEN)).await;
    assert_eq!(m.status, 200);
    assert!(m.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    assert_prometheus_text(&text);
    assert!(
        text.contains("osb_gateway_capture_captured_total 1"),
        "{text}"
    );
    assert!(text.contains("osb_gateway_routes 2"), "{text}");
    assert!(text.contains("osb_gateway_route_table_generation 1"));
}

#[tokio::test]
async fn routes_are_listed_by_token_scope_without_secrets() {
    let a = Broker::http(answer(200, "{}")).await;
    let gw = TestGateway::dev(&registry(&a.url(""), &a.url(""))).await;
    let url = gw.admin_url("/admin/v1/routes");
    for token in [None, Some("wrong-token")] {
        let r = admin("GET", &url, token).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"], "Unauthorized");
        assert!(r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
    }
    let ops = admin("GET", &url, Some(OPERATOR_TOKEN)).await;
    assert_eq!(ops.status, 200);
    let brokers: Vec<_> = ops.json()["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["broker"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(brokers, vec!["globex-db", "pg"]);
    assert_eq!(ops.json()["routes"][1]["password"], "env:BROKER_PW");
    assert_eq!(ops.json()["routes"][1]["timeouts"]["response"], "125s");
    let owner = admin("GET", &url, Some(ACME_TOKEN)).await;
    let brokers: Vec<_> = owner.json()["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["broker"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(brokers, vec!["pg"], "an owner sees only its own brokers");
    for body in [&ops.body, &owner.body] {
        let text = String::from_utf8_lossy(body);
        assert!(
            !text.contains(BROKER_PW),
            "a broker password in an API answer"
        );
    }
}

#[tokio::test]
async fn reload_through_the_api() {
    let a = Broker::http(answer(200, r#"{"from":"a"}"#)).await;
    let b = Broker::http(answer(200, r#"{"from":"b"}"#)).await;
    let gw = TestGateway::dev(&registry(&a.url(""), &a.url(""))).await;
    let url = gw.admin_url("/admin/v1/reload");
    gw.write_registry(&registry(&b.url(""), &a.url("")));
    let r = admin("POST", &url, Some(ACME_TOKEN)).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (403, Some("Forbidden"))
    );
    assert_eq!(admin("GET", &url, Some(OPERATOR_TOKEN)).await.status, 405);
    let r = admin("POST", &url, Some(OPERATOR_TOKEN)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["changed"], serde_json::json!(["pg/private"]));
    assert_eq!(r.json()["generation"], 2);
    assert_eq!(
        get(&gw.url("/private/pg/v2/catalog"), Some(platform("cf-eu")))
            .await
            .json()["from"],
        "b"
    );

    gw.write_registry(&registry("ftp://nope", &a.url("")));
    let r = admin("POST", &url, Some(OPERATOR_TOKEN)).await;
    assert_eq!(r.status, 400);
    let d = r.json()["description"].as_str().unwrap().to_string();
    assert!(
        d.contains("brokers[0].private.endpoint") && d.contains("keep serving"),
        "{d}"
    );
    assert_eq!(
        get(&gw.url("/private/pg/v2/catalog"), Some(platform("cf-eu")))
            .await
            .json()["from"],
        "b"
    );
}

#[tokio::test]
async fn the_admin_listener_serves_tls_outside_development_mode() {
    let a = Broker::http(answer(200, "{}")).await;
    let gw = TestGateway::start(
        &registry(&a.url(""), &a.url("")),
        Options {
            tls: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let addr = gw.handle.as_ref().unwrap().admin_addr.unwrap();
    let req = Request::get(format!("https://localhost:{}/admin/v1/routes", addr.port()))
        .header("authorization", bearer(OPERATOR_TOKEN))
        .body(client::empty())
        .unwrap();
    let (r, _) = client::send_tls(addr, &gw.ca.as_ref().unwrap().pem(), false, req).await;
    assert_eq!(r.status, 200);
    // Plain HTTP to the admin port is not served.
    let plain = client::plain()
        .request(
            Request::get(format!("http://127.0.0.1:{}/healthz", addr.port()))
                .body(client::empty())
                .unwrap(),
        )
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test]
async fn request_metrics_by_route_operation_and_status_class() {
    let a = Broker::http(answer(503, r#"{"description":"busy"}"#)).await;
    // A port nobody listens on: a connect error.
    let closed = support::RefusedPort::new();
    let dead = closed.url.clone();
    let gw = TestGateway::dev(&registry(&a.url(""), &a.url(""))).await;
    for _ in 0..3 {
        get(&gw.url("/private/pg/v2/catalog"), Some(platform("cf-eu"))).await;
    }
    get(&gw.url("/private/nope/v2/catalog"), Some(platform("cf-eu"))).await;
    let m = admin("GET", &gw.admin_url("/metrics"), Some(OPERATOR_TOKEN)).await;
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    assert_prometheus_text(&text);
    let pg = "broker=\"pg\",location=\"private\",operation=\"FETCH_CATALOG\"";
    assert!(
        text.contains(&format!(
            "osb_gateway_requests_total{{{pg},status_class=\"5xx\"}} 3"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "osb_gateway_request_duration_seconds_count{{{pg}}} 3"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "osb_gateway_request_duration_seconds_bucket{{{pg},le=\"+Inf\"}} 3"
        )),
        "{text}"
    );
    assert!(
        text.contains("osb_gateway_requests_total{broker=\"(none)\",location=\"(none)\",operation=\"FETCH_CATALOG\",status_class=\"4xx\"} 1"),
        "unrouted requests are counted apart: {text}"
    );
    // The counters survive a reload; an unreachable broker counts as a
    // connect error of its route.
    gw.write_registry(&registry(&dead, &dead));
    gw.reloader().reload("test").await.unwrap();
    let r = get(&gw.url("/private/pg/v2/catalog"), Some(platform("cf-eu"))).await;
    assert_eq!(r.status, 502);
    let text = String::from_utf8(
        admin("GET", &gw.admin_url("/metrics"), Some(OPERATOR_TOKEN))
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(&format!(
            "osb_gateway_requests_total{{{pg},status_class=\"5xx\"}} 4"
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "osb_gateway_upstream_errors_total{broker=\"pg\",location=\"private\",kind=\"connect\"} 1"
        ),
        "{text}"
    );
}

//! Hostile input, end to end against a real gateway and a real broker:
//! each case gets a clear no (OSB error JSON for platforms, a message
//! naming the field and value for admin input), nothing reaches the
//! broker that should not, and the gateway keeps serving everyone.
//! (Issue 16; more classes join this file as they are built.)

mod support;

use http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::broker::Broker;
use support::client::{self, platform};
use support::gateway::{Options, TestGateway, ACME_TOKEN, GLOBEX_TOKEN, OPERATOR_TOKEN};
use support::one_broker::{leaky_broker, registry};
use support::{eventually, within};

async fn gateway(broker: &Broker) -> TestGateway {
    gateway_over(&registry(&broker.url(""))).await
}

/// A development-mode gateway over `registry`, with a secret key (the
/// admin API stores passwords encrypted) and fast capture flushes.
async fn gateway_over(registry: &str) -> TestGateway {
    TestGateway::start(
        registry,
        Options {
            tables: "[secrets]\nkey_file = \"secret.key\"\n[capture]\nflush_interval = \"100ms\"\n"
                .into(),
            files: vec![(
                "secret.key".into(),
                osb_gateway::config::SecretKey::generate().to_base64(),
            )],
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn call(gw: &TestGateway, method: &str, path: &str) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .header("authorization", platform("cf-eu"))
        .header("x-broker-api-version", "2.17")
        .body(client::bytes("{}".to_string()))
        .unwrap();
    let resp = client::plain().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn non_canonical_osb_paths_are_refused_before_the_broker_sees_them() {
    let b = Broker::http(leaky_broker()).await;
    let mut gw = gateway(&b).await;
    let tricks = [
        ("PUT", "/v2/service_%69nstances/i/service_bindings/b"),
        ("PUT", "/v2/service_instances/i/service%5Fbindings/b"),
        ("PUT", "/v2/Service_Instances/i/service_bindings/b"),
        ("PUT", "/v2/service_instances;x=1/i/service_bindings/b"),
        ("PUT", "/v2/service_instances/i/service_bindings;v=1/b"),
        ("PUT", "/v2/service_instances//i/service_bindings/b"),
        ("PUT", "/v2/service_instances/i/service_bindings/b/"),
        ("PUT", "/v2/service_instances/i/service_bindings%2Fb"),
        ("GET", "/v2/../../other-tenant/osb/v2/catalog"),
        ("GET", "/v2/%2e%2e/%2E%2E/other-tenant/osb/v2/catalog"),
        ("GET", "/v2/./catalog"),
        ("GET", "/v2/catalog/"),
    ];
    for (method, path) in tricks {
        let (status, body) = call(&gw, method, &format!("/private/pg{path}")).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert_eq!(body["error"], "BadRequest", "{path}");
        assert!(
            body["description"]
                .as_str()
                .unwrap()
                .contains("path refused"),
            "{body}"
        );
    }
    assert!(b.seen().is_empty(), "nothing reached the broker");
    // The canonical bind still works, and its credentials are masked.
    let (status, _) = call(
        &gw,
        "PUT",
        "/private/pg/v2/service_instances/i/service_bindings/b",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(b.seen().len(), 1);
    assert_eq!(
        b.seen()[0].uri.path(),
        "/base/v2/service_instances/i/service_bindings/b"
    );
    gw.shutdown().await;
    let records = osb_gateway::store::local::read_all(&gw.path("data/captures")).unwrap();
    assert_eq!(records.len(), tricks.len() + 1, "every refusal is recorded");
    for r in &records {
        assert!(!r.response_body.contains("hunter2"), "{}", r.response_body);
    }
}

#[tokio::test]
async fn credentials_in_any_response_are_masked_before_storage() {
    let b = Broker::http(leaky_broker()).await;
    let mut gw = gateway(&b).await;
    for (method, path) in [
        (
            "POST",
            "/v2/service_instances/i/service_bindings/b/adapt_credentials",
        ),
        ("GET", "/v2/service_instances/i"),
        ("GET", "/v2/some/extension"),
        ("GET", "/v2/catalog"),
    ] {
        let (status, body) = call(&gw, method, &format!("/private/pg{path}")).await;
        assert_eq!(status, 200, "{path}");
        // The platform gets the broker's answer as it is ...
        assert_eq!(body["credentials"]["password"], "hunter2");
    }
    gw.shutdown().await;
    // ... and the logs never hold it.
    let records = osb_gateway::store::local::read_all(&gw.path("data/captures")).unwrap();
    assert_eq!(records.len(), 4);
    for r in &records {
        assert!(
            !r.response_body.contains("hunter2"),
            "{} {}: {}",
            r.operation,
            r.path,
            r.response_body
        );
    }
}

#[tokio::test]
async fn huge_durations_from_an_owner_are_refused_naming_the_field() {
    let b = Broker::http(leaky_broker()).await;
    let gw = gateway(&b).await;
    for (field, value) in [
        ("catalog_refresh", "18446744073709551615s"),
        ("catalog_refresh", "99999999999999999999h"),
        ("catalog_refresh", "400d"),
        ("idle_timeout", "18446744073709551615s"),
        ("response_timeout", "5000000h"),
        ("connect_timeout", "0s"),
        ("connect_timeout", "1ns"),
    ] {
        let (status, text) = register(&gw, &b, "huge", field, value).await;
        assert_eq!(status, 400, "{field} = {value}: {text}");
        assert!(
            text.contains(field) && text.contains(value),
            "{field} = {value}: {text}"
        );
    }
    // The gateway still serves, and takes a sane value.
    let (status, _) = call(&gw, "GET", "/private/pg/v2/catalog").await;
    assert_eq!(status, 200);
    let (status, text) = register(&gw, &b, "fine", "catalog_refresh", "1m30s").await;
    assert_eq!(status, 201, "{text}");
}

/// Registers broker `id` at `b` through acme's owner token, with one extra
/// field; the status and the answer's text.
async fn register(
    gw: &TestGateway,
    b: &Broker,
    id: &str,
    field: &str,
    value: &str,
) -> (u16, String) {
    let r = client::admin(
        "POST",
        &gw.admin_url("/admin/v1/brokers"),
        Some(ACME_TOKEN),
        Some(&json!({
            "id": id, "endpoint": b.url(""), "username": "u", "password": "pw-x",
            "development_mode": true, field: value,
        })),
    )
    .await;
    (
        r.status.as_u16(),
        String::from_utf8_lossy(&r.body).into_owned(),
    )
}

/// Publishes acme's broker `pg` in `eu` with this `ca_bundle`, as `token`.
async fn publish_with_ca(gw: &TestGateway, token: &str, ca_bundle: &str) -> (u16, String) {
    let r = client::admin(
        "PUT",
        &gw.admin_url("/admin/v1/brokers/pg/publications/eu"),
        Some(token),
        Some(&json!({
            "endpoint": "https://127.0.0.1:9/osb", "username": "u", "password": "pw-x",
            "ca_bundle": ca_bundle,
        })),
    )
    .await;
    (
        r.status.as_u16(),
        String::from_utf8_lossy(&r.body).into_owned(),
    )
}

#[tokio::test]
async fn ca_bundles_cannot_read_devices_fifos_or_an_owners_choice_of_host_files() {
    let b = Broker::http(leaky_broker()).await;
    let gw = gateway(&b).await;
    let fifo = gw.path("ca.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let fifo = fifo.display().to_string();
    // Owners give PEM text; a path is refused before anything is opened,
    // with the same answer whether the path exists or not.
    for path in [
        "/dev/zero",
        "/dev/urandom",
        "/etc/passwd",
        "/nonexistent/ca.pem",
        "../../secret.key",
        "secret.key",
        fifo.as_str(),
    ] {
        let (status, text) = within(5, path, publish_with_ca(&gw, ACME_TOKEN, path)).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(
            text.contains("ca_bundle")
                && text.contains("PEM text")
                && !text.contains("No such file"),
            "{path}: {text}"
        );
    }
    let junk = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
    let (status, text) = publish_with_ca(&gw, ACME_TOKEN, junk).await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("ca_bundle") && !text.contains("bm90"),
        "PEM not echoed: {text}"
    );
    // Operators may name files, but only regular ones of bounded size:
    // neither a device nor a FIFO is read or waited on.
    for path in ["/dev/zero", fifo.as_str()] {
        let (status, text) = within(5, path, publish_with_ca(&gw, OPERATOR_TOKEN, path)).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("not a regular file"), "{path}: {text}");
    }
    // The change lock is free: a reload goes through at once.
    let r = within(
        5,
        "reload",
        client::admin(
            "POST",
            &gw.admin_url("/admin/v1/reload"),
            Some(OPERATOR_TOKEN),
            None,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

const TWO_TENANTS: &str = r#"
locations = ["eu"]

[[platforms]]
id = "cf-acme"
customer = "acme"
username = "cf-eu"
password_hash = "{HASH}"
locations = ["eu"]

[[platforms]]
id = "k8s-globex"
customer = "globex"
username = "k8s-globex"
password_hash = "{HASH}"
locations = ["eu"]

[[brokers]]
id = "shared"
owner = "acme"
  [brokers.private]
  endpoint = "{URL}"
  username = "u"
  password = "env:BROKER_PW"
  development_mode = true

[[brokers]]
id = "gone"
owner = "acme"
deactivated = true
  [brokers.private]
  endpoint = "{URL}"
  username = "u"
  password = "env:BROKER_PW"
  development_mode = true
"#;

/// `method path` with `token`: status and JSON.
async fn admin_json(
    gw: &TestGateway,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let r = client::admin(method, &gw.admin_url(path), Some(token), body.as_ref()).await;
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status.as_u16(), v)
}

/// The request ids of the records `token` finds for `query`.
async fn found(gw: &TestGateway, token: &str, query: &str) -> Vec<String> {
    let (status, v) = admin_json(
        gw,
        "GET",
        &format!("/admin/v1/logs?{query}&limit=1000"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect()
}

async fn platform_call(
    gw: &TestGateway,
    user: Option<&str>,
    method: &str,
    path: &str,
    rid: &str,
) -> u16 {
    let mut b = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .header("x-broker-api-version", "2.17")
        .header("x-broker-api-request-identity", rid);
    if let Some(u) = user {
        b = b.header(
            "authorization",
            client::basic(u, support::gateway::PLATFORM_PW),
        );
    }
    let resp = client::plain()
        .request(
            b.body(client::bytes(
                r#"{"service_id":"s","plan_id":"p","parameters":{"db_password":"acme-secret"}}"#
                    .to_string(),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_records_even_under_a_reused_id() {
    let b = Broker::http(leaky_broker()).await;
    let gw = gateway_over(&TWO_TENANTS.replace("{URL}", &b.url(""))).await;
    let inst = "/private/shared/v2/service_instances/i-1";
    // acme's own platform provisions on acme's broker ...
    assert_eq!(
        platform_call(&gw, Some("cf-eu"), "PUT", inst, "acme-own").await,
        200
    );
    // ... globex's platform is refused on it (403), and someone without
    // credentials tries it (401).
    assert_eq!(
        platform_call(&gw, Some("k8s-globex"), "PUT", inst, "globex-refused").await,
        403
    );
    assert_eq!(
        platform_call(&gw, None, "PUT", inst, "anonymous").await,
        401
    );
    let every = ["acme-own", "globex-refused", "anonymous"];
    eventually(10, "three records", || async {
        found(&gw, OPERATOR_TOKEN, "broker=shared").await.len() == 3
    })
    .await;
    // The operator sees all three; acme its own platform's call and the
    // unauthenticated one on its path; globex's refusal is not written
    // into acme's logs or its failed instances.
    let mut ops = found(&gw, OPERATOR_TOKEN, "broker=shared").await;
    ops.sort();
    let mut want = every.map(String::from).to_vec();
    want.sort();
    assert_eq!(ops, want);
    let mut acme = found(&gw, ACME_TOKEN, "broker=shared").await;
    acme.sort();
    assert_eq!(acme, ["acme-own", "anonymous"]);
    let (_, failed) = admin_json(&gw, "GET", "/admin/v1/failed-instances", ACME_TOKEN, None).await;
    assert!(!failed.to_string().contains("globex"), "{failed}");

    // acme deletes its broker: the id stays reserved, for globex and for
    // an operator registering it for globex alike.
    let (status, v) = admin_json(&gw, "DELETE", "/admin/v1/brokers/shared", ACME_TOKEN, None).await;
    assert_eq!(status, 200, "{v}");
    let again = json!({"id": "shared", "endpoint": b.url(""), "username": "u", "password": "pw-x", "development_mode": true});
    let (status, v) = admin_json(
        &gw,
        "POST",
        "/admin/v1/brokers",
        GLOBEX_TOKEN,
        Some(again.clone()),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    let mut for_globex = again.clone();
    for_globex["owner"] = json!("globex");
    let (status, _) = admin_json(
        &gw,
        "POST",
        "/admin/v1/brokers",
        OPERATOR_TOKEN,
        Some(for_globex),
    )
    .await;
    assert_eq!(status, 409);
    // globex finds nothing of acme's, by any way in: search, the id of a
    // record, failed instances.
    assert!(found(&gw, GLOBEX_TOKEN, "broker=shared").await.is_empty());
    assert!(found(&gw, GLOBEX_TOKEN, "instance_id=i-1").await.is_empty());
    let (_, page) = admin_json(
        &gw,
        "GET",
        "/admin/v1/logs?broker=shared",
        OPERATOR_TOKEN,
        None,
    )
    .await;
    for r in page["records"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        let (status, v) = admin_json(
            &gw,
            "GET",
            &format!("/admin/v1/logs/{id}"),
            GLOBEX_TOKEN,
            None,
        )
        .await;
        assert_eq!(status, 404, "{v}");
        assert!(!v.to_string().contains("acme-secret"));
    }
    let (_, failed) =
        admin_json(&gw, "GET", "/admin/v1/failed-instances", GLOBEX_TOKEN, None).await;
    assert!(!failed.to_string().contains("i-1"), "{failed}");
    // acme keeps its history after the delete.
    assert_eq!(found(&gw, ACME_TOKEN, "broker=shared").await.len(), 2);

    // A deactivation is permanent: delete, register again: refused.
    let (status, v) = admin_json(&gw, "DELETE", "/admin/v1/brokers/gone", ACME_TOKEN, None).await;
    assert_eq!(status, 200, "{v}");
    let mut gone = again;
    gone["id"] = json!("gone");
    let (status, v) = admin_json(&gw, "POST", "/admin/v1/brokers", ACME_TOKEN, Some(gone)).await;
    assert_eq!(status, 409, "{v}");
    assert!(
        v["description"].as_str().unwrap().contains("never reused"),
        "{v}"
    );
}

#[tokio::test]
async fn broker_ids_that_a_path_would_resolve_are_refused() {
    let b = Broker::http(leaky_broker()).await;
    let gw = gateway(&b).await;
    for id in [
        ".",
        "..",
        ".hidden",
        "-rf",
        "~x",
        "a/b",
        "a b",
        "é",
        "a\u{1b}[31m",
        &"a".repeat(129),
    ] {
        let (status, text) = register(&gw, &b, id, "name", "n").await;
        assert_eq!(status, 400, "{id:?}: {text}");
        assert!(text.contains("id"), "{id:?}: {text}");
    }
    let (status, text) = register(&gw, &b, "ok.id-1_x~", "name", "n").await;
    assert_eq!(status, 201, "{text}");
}

/// A catalog request from `source` as `user`:`password` over a fresh
/// connection: the status and the `Retry-After` header, if any.
async fn login(
    gw: &TestGateway,
    source: &str,
    user: &str,
    password: &str,
) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(gw.addr).await.unwrap();
    let auth = client::basic(user, password);
    s.write_all(
        format!(
            "GET /private/pg/v2/catalog HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            auth.to_str().unwrap()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let retry = text.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("retry-after: ")
            .map(str::to_string)
    });
    (status, retry)
}

#[tokio::test]
async fn password_guessing_is_throttled_and_never_delays_a_verified_platform() {
    let b = Broker::http(leaky_broker()).await;
    let gw = gateway(&b).await;
    let pw = support::gateway::PLATFORM_PW;
    assert_eq!(login(&gw, "127.0.0.1", "cf-eu", pw).await.0, 200, "warm");
    // Guesses in a row from one address: a burst, then 429 before argon2.
    let mut statuses = Vec::new();
    for i in 0..15 {
        let (status, retry) = login(&gw, "127.0.0.1", "cf-eu", &format!("guess-{i}")).await;
        if status == 429 {
            assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)));
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );
    // The platform whose password is verified is served at once, from the
    // same address.
    assert_eq!(login(&gw, "127.0.0.1", "cf-eu", pw).await.0, 200);
    // Guesses sent all at once, from one address under made-up names: as
    // limited as guesses in a row (a try counts before it is verified).
    let flood: Vec<_> = (0..100)
        .map(|i| {
            let gw = &gw;
            async move { login(gw, "127.0.0.7", &format!("nobody-{i}"), "x").await.0 }
        })
        .collect();
    let flood = futures_util::future::join_all(flood).await;
    assert!(
        flood.iter().filter(|s| **s == 401).count() <= 10,
        "at most a burst reaches argon2: {flood:?}"
    );
    assert!(
        flood.iter().all(|s| [401, 429, 503].contains(s)),
        "{flood:?}"
    );
}

#[tokio::test]
async fn a_full_verification_queue_answers_503_at_once() {
    let b = Broker::http(leaky_broker()).await;
    let gw = gateway(&b).await;
    let pw = support::gateway::PLATFORM_PW;
    assert_eq!(login(&gw, "127.0.0.1", "cf-eu", pw).await.0, 200, "warm");
    // 40 addresses, 8 guesses each, all at once: more than the queue holds.
    let flood: Vec<_> = (0..320)
        .map(|i| {
            let gw = &gw;
            async move {
                let ip = format!("127.0.2.{}", i / 8 + 1);
                login(gw, &ip, &format!("nobody-{i}"), "x").await
            }
        })
        .collect();
    let flood_done = std::sync::atomic::AtomicBool::new(false);
    let flood = async {
        let r = futures_util::future::join_all(flood).await;
        flood_done.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    };
    // The verified platform, meanwhile: answered before the flood is.
    let verified = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let status = login(&gw, "127.0.0.1", "cf-eu", pw).await.0;
        (status, flood_done.load(std::sync::atomic::Ordering::SeqCst))
    };
    let (flood, (status, flood_was_done)) = tokio::join!(flood, verified);
    assert_eq!(status, 200);
    assert!(
        !flood_was_done,
        "the verified platform waited behind the guesses"
    );
    let busy: Vec<_> = flood.iter().filter(|(s, _)| *s == 503).collect();
    assert!(
        !busy.is_empty(),
        "{:?}",
        flood.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    assert!(busy.iter().all(|(_, r)| r.as_deref() == Some("1")));
    assert!(flood.iter().all(|(s, _)| [401, 503].contains(s)));
}

#[tokio::test]
async fn a_platform_opening_many_connections_at_once_is_not_throttled() {
    let b = Broker::http(leaky_broker()).await;
    let gw = gateway(&b).await;
    let pw = support::gateway::PLATFORM_PW;
    // A cold cache, 50 connections at once: one verification, the others
    // find it verified, and none takes a try from the throttle.
    let all: Vec<_> = (0..50)
        .map(|_| login(&gw, "127.0.0.9", "cf-eu", pw))
        .collect();
    let all = futures_util::future::join_all(all).await;
    assert!(all.iter().all(|(s, _)| *s == 200), "{all:?}");
}

/// An admin call as acme over the TLS admin listener (production mode).
async fn admin_tls(
    gw: &TestGateway,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    let addr = gw.handle.as_ref().unwrap().admin_addr.unwrap();
    let req = Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", addr.port()))
        .header("authorization", format!("Bearer {ACME_TOKEN}"))
        .header("content-type", "application/json")
        .body(client::bytes(
            body.map(|b| b.to_string()).unwrap_or_default(),
        ))
        .unwrap();
    let (r, _) = client::send_tls(addr, &gw.ca.as_ref().unwrap().pem(), false, req).await;
    (
        r.status.as_u16(),
        String::from_utf8_lossy(&r.body).into_owned(),
    )
}

/// Registers a development-mode private broker at `endpoint` as acme.
async fn register_at(gw: &TestGateway, id: &str, endpoint: &str) -> (u16, String) {
    let body = json!({
        "id": id, "endpoint": endpoint, "username": "u", "password": "pw-x",
        "development_mode": true,
    });
    admin_tls(gw, "POST", "/admin/v1/brokers", Some(body)).await
}

#[tokio::test]
async fn owners_cannot_point_brokers_at_metadata_the_gateway_itself_or_private_networks() {
    let b = Broker::http(leaky_broker()).await;
    // Production mode with its default policy (no network allowed).
    let gw = TestGateway::start(
        &registry("https://broker.invalid"),
        Options {
            tls: true,
            tables:
                "[secrets]\nkey_file = \"secret.key\"\n[upstream]\nprivate_allow_networks = []\n"
                    .into(),
            files: vec![(
                "secret.key".into(),
                osb_gateway::config::SecretKey::generate().to_base64(),
            )],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let admin = gw.handle.as_ref().unwrap().admin_addr.unwrap();
    let loopback = b.url("");
    for (endpoint, says) in [
        ("http://169.254.169.254/latest/meta-data", "169.254.0.0/16"),
        ("http://[::ffff:169.254.169.254]/", "169.254.0.0/16"),
        ("http://[fe80::1]:80/", "fe80::/10"),
        ("http://0.0.0.0:80/", "0.0.0.0/8"),
        (
            &format!("http://127.0.0.1:{}/", admin.port()),
            "own listeners",
        ),
        (
            &format!("http://127.0.0.1:{}/", gw.addr.port()),
            "own listeners",
        ),
        (loopback.as_str(), "127.0.0.0/8"),
        ("http://10.1.2.3:8080/", "10.0.0.0/8"),
        ("http://192.168.0.1/", "192.168.0.0/16"),
    ] {
        let (status, text) = register_at(&gw, "ssrf", endpoint).await;
        assert_eq!(status, 400, "{endpoint}: {text}");
        assert!(
            text.contains(says) && text.contains("endpoint"),
            "{endpoint}: {text}"
        );
    }
    // A name that resolves to loopback passes validation, and is refused
    // on what it resolves to when the gateway connects: the broker never
    // sees a request, and the answer is the gateway's, not the target's.
    let by_name = loopback.replace("127.0.0.1", "localhost");
    let (status, text) = register_at(&gw, "by-name", &by_name).await;
    assert_eq!(status, 201, "{text}");
    let ca = gw.ca.as_ref().unwrap().pem();
    let req = Request::get("/private/by-name/v2/catalog")
        .header("authorization", platform("cf-eu"))
        .header("x-broker-api-version", "2.17")
        .body(client::empty())
        .unwrap();
    let (resp, _) = client::send_tls(gw.addr, &ca, false, req).await;
    assert_eq!(resp.status, 502, "{:?}", resp.body);
    let text = String::from_utf8_lossy(&resp.body);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(b.seen().is_empty(), "nothing reached the loopback broker");
    // The catalog refresh says why, without anything the target answered.
    let (_, text) = admin_tls(
        &gw,
        "POST",
        "/admin/v1/brokers/by-name/catalog/refresh",
        None,
    )
    .await;
    assert!(
        text.contains("refused") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(b.seen().is_empty());
}

#[tokio::test]
async fn an_operator_can_open_a_private_network_for_private_registrations() {
    let b = Broker::http(leaky_broker()).await;
    let gw = TestGateway::start(
        &registry(&b.url("")),
        Options {
            tls: true,
            tables: "[upstream]\nprivate_allow_networks = [\"127.0.0.0/8\"]\n".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ca = gw.ca.as_ref().unwrap().pem();
    let req = Request::get("/private/pg/v2/catalog")
        .header("authorization", platform("cf-eu"))
        .header("x-broker-api-version", "2.17")
        .body(client::empty())
        .unwrap();
    let (resp, _) = client::send_tls(gw.addr, &ca, false, req).await;
    assert_eq!(resp.status, 200);
    assert_eq!(b.seen().len(), 1);
}

#[tokio::test]
async fn per_broker_metrics_need_a_token_and_show_only_the_tokens_brokers() {
    let b = Broker::http(leaky_broker()).await;
    let gw = TestGateway::start(
        &TWO_TENANTS.replace("{URL}", &b.url("")),
        Options::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        platform_call(
            &gw,
            Some("cf-eu"),
            "GET",
            "/private/shared/v2/catalog",
            "m1"
        )
        .await,
        200
    );
    assert_eq!(
        platform_call(&gw, Some("cf-eu"), "GET", "/private/nope/v2/catalog", "m2").await,
        404
    );
    let scrape = |token: Option<&'static str>| {
        let url = gw.admin_url("/metrics");
        async move {
            let r = client::admin("GET", &url, token, None).await;
            assert_eq!(r.status, 200);
            String::from_utf8(r.body.to_vec()).unwrap()
        }
    };
    let anonymous = scrape(None).await;
    assert!(
        anonymous.contains("osb_gateway_capture_captured_total"),
        "{anonymous}"
    );
    assert!(!anonymous.contains("broker=\""), "{anonymous}");
    let acme = scrape(Some(ACME_TOKEN)).await;
    assert!(acme.contains("broker=\"shared\""), "{acme}");
    assert!(!acme.contains("broker=\"(none)\""), "{acme}");
    let globex = scrape(Some(GLOBEX_TOKEN)).await;
    assert!(!globex.contains("broker=\""), "{globex}");
    let ops = scrape(Some(OPERATOR_TOKEN)).await;
    assert!(
        ops.contains("broker=\"shared\"") && ops.contains("broker=\"(none)\""),
        "{ops}"
    );
}

#[tokio::test]
async fn passwords_in_endpoint_urls_are_never_echoed() {
    let b = Broker::http(leaky_broker()).await;
    // At start (and so in `config check` and reload warnings) ...
    let refused = TestGateway::start(
        &registry("http://u:hunter2@127.0.0.1:9"),
        Options::default(),
    )
    .await
    .err()
    .expect("refused");
    let text = format!("{refused} {refused:?}");
    assert!(
        text.contains("***@127.0.0.1") && !text.contains("hunter2"),
        "{text}"
    );
    // ... and in the admin API's answers.
    let gw = gateway(&b).await;
    let (status, text) = register(
        &gw,
        &b,
        "userinfo",
        "endpoint",
        "https://u:hunter2@broker.example/osb",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("***@broker.example") && !text.contains("hunter2"),
        "{text}"
    );
}

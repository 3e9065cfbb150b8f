//! Gateway replicas sharing one registry file (a shared volume): a change
//! made through one replica's admin API is served by the other within the
//! watch interval; concurrent changes through both are applied one after
//! the other, and a change made to a version of the registry another
//! replica has since changed is refused, never written over it.

mod support;

use std::path::Path;
use std::time::Instant;

use serde_json::json;
use support::broker::{answer, Broker};
use support::client::{self, platform, Collected};
use support::eventually;
use support::gateway::{platform_hash, Options, TestGateway, ACME_TOKEN, CF_EU_REGISTRY_HEAD};

/// One broker, `pg`, at `{URL}`.
const BROKER: &str = r#"
[[brokers]]
id = "pg"
owner = "acme"
[brokers.private]
endpoint = "{URL}"
username = "u"
password = "env:BROKER_PW"
development_mode = true
"#;

/// Two gateways over `shared/registry.toml`, watching it every 200 ms,
/// with the same secret key (each stores passwords the other must read).
async fn replicas(shared: &Path, b: &Broker) -> (TestGateway, TestGateway) {
    let reg = shared.join("registry.toml");
    std::fs::write(
        &reg,
        format!("{CF_EU_REGISTRY_HEAD}{BROKER}")
            .replace("{HASH}", platform_hash())
            .replace("{URL}", &b.url("")),
    )
    .unwrap();
    let key = osb_gateway::config::SecretKey::generate().to_base64();
    let mut out = Vec::new();
    for name in ["gw-a", "gw-b"] {
        let gw = TestGateway::start(
            "",
            Options {
                top: format!("instance = \"{name}\"\n"),
                tables: format!(
                    "[registry]\nfile = \"{}\"\nwatch_interval = \"200ms\"\n[secrets]\nkey_file = \"secret.key\"\n",
                    reg.display()
                ),
                files: vec![("secret.key".into(), key.clone())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        out.push(gw);
    }
    let b = out.pop().unwrap();
    (out.pop().unwrap(), b)
}

async fn register(gw: &TestGateway, id: &str, b: &Broker) -> Collected {
    register_at(gw.admin_url("/admin/v1/brokers"), id.to_string(), b.url("")).await
}

/// Registers `id` (as acme) at the brokers endpoint `admin`, pointing at
/// `endpoint` (owned values: a task can send it).
async fn register_at(admin: String, id: String, endpoint: String) -> Collected {
    let body = json!({
        "id": id, "endpoint": endpoint, "username": "u", "password": "pw-x",
        "development_mode": true,
    });
    client::admin("POST", &admin, Some(ACME_TOKEN), Some(&body)).await
}

/// `GET path` on `gw`'s admin API as acme.
async fn read(gw: &TestGateway, path: &str) -> Collected {
    client::admin("GET", &gw.admin_url(path), Some(ACME_TOKEN), None).await
}

async fn catalog_status(gw: &TestGateway, broker: &str) -> u16 {
    client::get(
        &gw.url(&format!("/private/{broker}/v2/catalog")),
        Some(platform("cf-eu")),
    )
    .await
    .status
    .as_u16()
}

fn etag(c: &Collected) -> String {
    c.headers["etag"].to_str().unwrap().to_string()
}

async fn rename(gw: &TestGateway, name: &str, if_match: Option<&str>) -> Collected {
    let mut b = http::Request::patch(gw.admin_url("/admin/v1/brokers/pg"))
        .header("authorization", format!("Bearer {ACME_TOKEN}"));
    if let Some(tag) = if_match {
        b = b.header("if-match", tag);
    }
    let req = b
        .body(client::bytes(json!({ "name": name }).to_string()))
        .unwrap();
    client::collect(client::plain().request(req).await.unwrap()).await
}

#[tokio::test]
async fn a_change_on_one_replica_is_served_by_the_other() {
    let shared = tempfile::tempdir().unwrap();
    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    let (a, bb) = replicas(shared.path(), &b).await;
    assert_eq!(catalog_status(&bb, "redis").await, 404);
    let r = register(&a, "redis", &b).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let t = Instant::now();
    eventually(10, "replica B routes what replica A registered", || async {
        catalog_status(&bb, "redis").await == 200
    })
    .await;
    eprintln!(
        "replica B served A's change after {} ms (watch interval 200 ms)",
        t.elapsed().as_millis()
    );
    // Both answer with the same registry version once B has reloaded.
    let (va, vb) = (
        read(&a, "/admin/v1/brokers").await,
        read(&bb, "/admin/v1/brokers").await,
    );
    assert_eq!(etag(&va), etag(&vb));
}

#[tokio::test]
async fn concurrent_changes_through_two_replicas_lose_nothing_and_stale_ones_are_refused() {
    let shared = tempfile::tempdir().unwrap();
    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    let (a, bb) = replicas(shared.path(), &b).await;

    // A client read pg through B, then someone renamed it through A: the
    // client's change, made to what it read, is refused; nothing is lost.
    let before = read(&bb, "/admin/v1/brokers/pg").await;
    let seen = etag(&before);
    let first = rename(&a, "renamed through A", Some(&seen)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        etag(&first),
        format!(
            "\"{}\"",
            first.json()["reload"]["version"].as_str().unwrap()
        ),
        "a change answers with the version it made"
    );
    let stale = rename(&bb, "renamed through B", Some(&seen)).await;
    assert_eq!(stale.status, 412, "{}", stale.text());
    assert_eq!(stale.json()["error"], "PreconditionFailed");
    let text = std::fs::read_to_string(shared.path().join("registry.toml")).unwrap();
    assert!(text.contains("renamed through A") && !text.contains("renamed through B"));
    // With the version A answered, B's change goes through.
    let ok = rename(&bb, "renamed through B", Some(&etag(&first))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    // The same id registered through both at once: one wins, the other is
    // told it exists.
    let (x, y) = tokio::join!(register(&a, "same", &b), register(&bb, "same", &b));
    let mut codes = [x.status.as_u16(), y.status.as_u16()];
    codes.sort();
    assert_eq!(codes, [201, 409], "{} / {}", x.text(), y.text());

    // Twenty registrations through both replicas at once: all twenty kept.
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let admin = if i % 2 == 0 { &a } else { &bb }.admin_url("/admin/v1/brokers");
            tokio::spawn(register_at(admin, format!("svc-{i}"), b.url("")))
        })
        .collect();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let text = std::fs::read_to_string(shared.path().join("registry.toml")).unwrap();
    for i in 0..20 {
        assert!(
            text.contains(&format!("id = \"svc-{i}\"")),
            "svc-{i} lost:\n{text}"
        );
    }
    eventually(10, "both replicas route all of them", || async {
        catalog_status(&a, "svc-19").await == 200 && catalog_status(&bb, "svc-18").await == 200
    })
    .await;
}

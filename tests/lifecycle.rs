//! Broker lifecycle through the admin API, against a real gateway and real
//! brokers: every rule and every refusal, owner scoping on every endpoint,
//! write-back to the registry file, deactivation, credential rotation and
//! catalog refresh.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::broker::{full, Broker, Handler};
use support::client::{self, get, platform, send, Collected};
use support::gateway::{Options, TestGateway, ACME_TOKEN, OPERATOR_TOKEN};
use support::tls::TestCa;

/// Every log line the gateways in this test binary write (debug level).
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("osb_gateway=debug"))
        .with_writer(|| LogWriter)
        .with_ansi(false)
        .try_init();
}

fn assert_not_logged(secrets: &[&str]) {
    let log = String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned();
    assert!(log.contains("routes reloaded"), "logs were captured");
    for s in secrets {
        assert!(!log.contains(s), "a password in a log line");
    }
}

/// The secret key the test gateways encrypt broker passwords with.
fn key_file() -> (String, String) {
    (
        "secret.key".into(),
        osb_gateway::config::SecretKey::generate().to_base64(),
    )
}

const REGISTRY: &str = r#"# Registry of the lifecycle tests.
locations = ["eu", "us"]   # two locations

[[platforms]]
id = "cf-eu"
customer = "acme"
username = "cf-eu"
password_hash = "{HASH}"
locations = ["eu", "us"]

# A broker of another customer: acme's owner token must never see it.
[[brokers]]
id = "globex-db"
owner = "globex"
  [brokers.private]
  endpoint = "http://127.0.0.1:9"
  username = "g"
  password = "env:BROKER_PW"
  development_mode = true
"#;

async fn gateway(extra_tables: &str, ca: Option<&TestCa>) -> TestGateway {
    capture_logs();
    let mut files = vec![key_file()];
    if let Some(ca) = ca {
        files.push(("ca.pem".into(), ca.pem()));
    }
    TestGateway::start(
        REGISTRY,
        Options {
            tables: format!("[secrets]\nkey_file = \"secret.key\"\n{extra_tables}"),
            files,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Every answer the test saw, to check that no password is in any of them.
#[derive(Default)]
struct Answers(Mutex<Vec<String>>);

impl Answers {
    async fn call(
        &self,
        gw: &TestGateway,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Collected {
        let r = client::admin(method, &gw.admin_url(path), Some(token), body.as_ref()).await;
        self.0
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&r.body).into_owned());
        r
    }

    fn assert_never_contain(&self, secrets: &[&str]) {
        for a in self.0.lock().unwrap().iter() {
            for s in secrets {
                assert!(!a.contains(s), "a password in an API answer: {a}");
            }
        }
    }
}

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

fn auth_of(b: &Broker) -> Vec<String> {
    b.seen()
        .iter()
        .map(|s| s.headers["authorization"].to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_broker_lifecycle_end_to_end() {
    let ca = TestCa::new("lifecycle CA");
    let dev = Broker::http(Arc::new(|_req| {
        Box::pin(async { full(200, r#"{"from":"dev"}"#) })
    }))
    .await;
    let eu = Broker::https(
        &ca.issue(),
        Arc::new(|_req| Box::pin(async { full(200, r#"{"from":"eu"}"#) })),
    )
    .await;
    let mut gw = gateway("", Some(&ca)).await;
    let api = Answers::default();
    let registry_path = gw.path("registry.toml");
    let registry_text = || std::fs::read_to_string(&registry_path).unwrap();

    // Register, as the owner (the owner is implied by the token).
    let r = api
        .call(
            &gw,
            "POST",
            "/admin/v1/brokers",
            ACME_TOKEN,
            Some(json!({
                "id": "mq", "name": "Message Queue", "endpoint": dev.url(""),
                "username": "mq-user", "password": "first-pw-7f3", "development_mode": true
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["broker"]["owner"], "acme");
    assert_eq!(v["broker"]["state"], "private");
    assert_eq!(v["broker"]["private"]["password"], "enc:v1:***");
    assert_eq!(v["reload"]["added"], json!(["mq/private"]));
    let text = registry_text();
    assert!(
        text.contains("# Registry of the lifecycle tests.") && text.contains("# two locations"),
        "comments survive the write-back:\n{text}"
    );
    assert!(text.contains("enc:v1:"), "{text}");
    assert!(!text.contains("first-pw-7f3"), "plain password in the file");

    // It routes at once, with the broker's credentials.
    let c = get(&gw.url("/private/mq/v2/catalog"), Some(platform("cf-eu"))).await;
    assert_eq!(c.json()["from"], "dev");
    assert_eq!(auth_of(&dev), vec![basic("mq-user", "first-pw-7f3")]);

    // Refusals: a taken id, a missing field, another owner, an id change,
    // an unknown field, and (by validation, naming the field) an http://
    // endpoint without development mode. Nothing changes.
    let refusals = [
        (
            "POST",
            "/admin/v1/brokers",
            OPERATOR_TOKEN,
            json!({"id": "mq", "owner": "acme", "endpoint": dev.url(""), "username": "u", "password": "p"}),
            409,
            "already exists",
        ),
        (
            "POST",
            "/admin/v1/brokers",
            OPERATOR_TOKEN,
            json!({"id": "x", "owner": "acme", "username": "u", "password": "p"}),
            400,
            "endpoint",
        ),
        (
            "POST",
            "/admin/v1/brokers",
            ACME_TOKEN,
            json!({"id": "y", "owner": "globex", "endpoint": dev.url(""), "username": "u", "password": "p"}),
            403,
            "globex",
        ),
        (
            "PATCH",
            "/admin/v1/brokers/mq",
            ACME_TOKEN,
            json!({"id": "mq2"}),
            400,
            "immutable",
        ),
        (
            "PATCH",
            "/admin/v1/brokers/mq",
            ACME_TOKEN,
            json!({"passwd": "x"}),
            400,
            "passwd",
        ),
        (
            "PATCH",
            "/admin/v1/brokers/mq",
            ACME_TOKEN,
            json!({"development_mode": false}),
            400,
            "brokers[1].private.endpoint",
        ),
    ];
    for (method, path, token, body, status, says) in refusals {
        let r = api.call(&gw, method, path, token, Some(body)).await;
        assert_eq!(r.status, status, "{method} {path}: {:?}", r.body);
        let d = r.json()["description"].as_str().unwrap().to_string();
        assert!(d.contains(says), "{method} {path}: {d}");
    }
    assert_eq!(
        get(&gw.url("/private/mq/v2/catalog"), Some(platform("cf-eu")))
            .await
            .status,
        200
    );

    // Edit: name and password (replaced at once).
    let r = api
        .call(
            &gw,
            "PATCH",
            "/admin/v1/brokers/mq",
            ACME_TOKEN,
            Some(json!({"name": "MQ", "password": "second-pw-a21"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["broker"]["name"], "MQ");
    get(&gw.url("/private/mq/v2/catalog"), Some(platform("cf-eu"))).await;
    assert_eq!(
        auth_of(&dev).last().unwrap(),
        &basic("mq-user", "second-pw-a21")
    );

    // Publish to eu: https only, never development mode, pending until approved.
    let pub_url = "/admin/v1/brokers/mq/publications/eu";
    let http_pub = api
        .call(
            &gw,
            "PUT",
            pub_url,
            ACME_TOKEN,
            Some(json!({"endpoint": dev.url(""), "username": "p", "password": "pub-pw-93x"})),
        )
        .await;
    assert_eq!(http_pub.status, 400);
    assert!(http_pub.json()["description"]
        .as_str()
        .unwrap()
        .contains("https://"));
    let dev_pub = api
        .call(
            &gw,
            "PUT",
            pub_url,
            ACME_TOKEN,
            Some(json!({"endpoint": eu.url(""), "username": "p", "password": "pub-pw-93x", "development_mode": true})),
        )
        .await;
    assert_eq!(dev_pub.status, 400);
    let r = api
        .call(
            &gw,
            "PUT",
            pub_url,
            ACME_TOKEN,
            Some(json!({"endpoint": eu.url(""), "username": "p", "password": "pub-pw-93x", "ca_bundle": ca.pem()})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.json()["broker"]["state"], "pending_approval");
    assert_eq!(
        get(&gw.url("/eu/mq/v2/catalog"), Some(platform("cf-eu")))
            .await
            .status,
        403,
        "not routable before approval"
    );
    // Revoke an unapproved publication (global), after publishing it.
    let global = api
        .call(
            &gw,
            "PUT",
            "/admin/v1/brokers/mq/publications/global",
            ACME_TOKEN,
            Some(json!({"endpoint": eu.url(""), "username": "p", "password": "pub-pw-93x", "ca_bundle": ca.pem()})),
        )
        .await;
    assert_eq!(global.status, 201);
    let revoked = api
        .call(
            &gw,
            "DELETE",
            "/admin/v1/brokers/mq/publications/global",
            ACME_TOKEN,
            None,
        )
        .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(revoked.json()["reload"]["removed"], json!(["mq/global"]));

    // Approval: operators only.
    let approve = format!("{pub_url}/approve");
    assert_eq!(
        api.call(&gw, "POST", &approve, ACME_TOKEN, None)
            .await
            .status,
        403
    );
    let r = api.call(&gw, "POST", &approve, OPERATOR_TOKEN, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["broker"]["state"], "published");
    let c = get(&gw.url("/eu/mq/v2/catalog"), Some(platform("cf-eu"))).await;
    assert_eq!(c.json()["from"], "eu");
    assert_eq!(auth_of(&eu), vec![basic("p", "pub-pw-93x")]);

    // An approved publication cannot be revoked, nor re-pointed by its owner;
    // the broker cannot be deleted.
    let r = api.call(&gw, "DELETE", pub_url, ACME_TOKEN, None).await;
    assert_eq!(r.status, 409);
    let r = api
        .call(
            &gw,
            "PUT",
            pub_url,
            ACME_TOKEN,
            Some(json!({"endpoint": "https://elsewhere.example"})),
        )
        .await;
    assert_eq!(r.status, 409);
    let r = api
        .call(&gw, "DELETE", "/admin/v1/brokers/mq", ACME_TOKEN, None)
        .await;
    assert_eq!(r.status, 409);
    assert!(r.json()["description"]
        .as_str()
        .unwrap()
        .contains("deactivate"));

    // Changes survive a restart: they were written to the registry file.
    gw.restart().await;
    assert_eq!(
        get(&gw.url("/eu/mq/v2/catalog"), Some(platform("cf-eu")))
            .await
            .json()["from"],
        "eu"
    );

    // Deactivation: permanent; the catalog comes empty from the gateway,
    // provisions are refused, everything else still reaches the broker.
    let r = api
        .call(
            &gw,
            "POST",
            "/admin/v1/brokers/mq/deactivate",
            ACME_TOKEN,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["broker"]["state"], "deactivated");
    let seen_before = eu.seen().len();
    let c = get(&gw.url("/eu/mq/v2/catalog"), Some(platform("cf-eu"))).await;
    assert_eq!(
        (c.status.as_u16(), c.json()),
        (200, json!({"services": []}))
    );
    let p = send(
        "PUT",
        &gw.url("/eu/mq/v2/service_instances/i-1?accepts_incomplete=true"),
        Some(platform("cf-eu")),
        r#"{"service_id":"s","plan_id":"p"}"#,
    )
    .await;
    p.osb_error(422, "BrokerDeactivated");
    assert_eq!(eu.seen().len(), seen_before, "the broker was not called");
    for (method, path) in [
        (
            "DELETE",
            "/eu/mq/v2/service_instances/i-0?service_id=s&plan_id=p",
        ),
        ("PATCH", "/eu/mq/v2/service_instances/i-0"),
        (
            "PUT",
            "/eu/mq/v2/service_instances/i-0/service_bindings/b-1",
        ),
        ("GET", "/eu/mq/v2/service_instances/i-0/last_operation"),
    ] {
        let r = send(method, &gw.url(path), Some(platform("cf-eu")), "{}").await;
        assert_eq!(r.json()["from"], "eu", "{method} {path} reaches the broker");
    }
    for (method, path) in [
        ("POST", "/admin/v1/brokers/mq/deactivate"),
        ("PUT", "/admin/v1/brokers/mq/publications/us"),
        ("POST", "/admin/v1/brokers/mq/publications/eu/approve"),
    ] {
        let r = api
            .call(
                &gw,
                method,
                path,
                OPERATOR_TOKEN,
                Some(json!({"endpoint": eu.url(""), "username": "p", "password": "x"})),
            )
            .await;
        assert_eq!(r.status, 409, "{method} {path} on a deactivated broker");
    }
    // Not even by editing the file.
    let deactivated = registry_text();
    std::fs::write(
        &registry_path,
        deactivated.replace("deactivated = true", "deactivated = false"),
    )
    .unwrap();
    let r = api
        .call(&gw, "POST", "/admin/v1/reload", OPERATOR_TOKEN, None)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["description"]
        .as_str()
        .unwrap()
        .contains("permanent"));
    std::fs::write(&registry_path, &deactivated).unwrap();

    // Deleting a never-published broker works and calls nothing.
    let r = api
        .call(
            &gw,
            "POST",
            "/admin/v1/brokers",
            ACME_TOKEN,
            Some(json!({"id": "tmp", "endpoint": dev.url(""), "username": "u", "password": "tmp-pw-55", "development_mode": true})),
        )
        .await;
    assert_eq!(r.status, 201);
    let dev_seen = dev.seen().len();
    let r = api
        .call(&gw, "DELETE", "/admin/v1/brokers/tmp", ACME_TOKEN, None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(dev.seen().len(), dev_seen);
    assert_eq!(
        get(&gw.url("/private/tmp/v2/catalog"), Some(platform("cf-eu")))
            .await
            .status,
        404
    );

    let secrets = [
        "first-pw-7f3",
        "second-pw-a21",
        "pub-pw-93x",
        "tmp-pw-55",
        support::gateway::BROKER_PW,
    ];
    api.assert_never_contain(&secrets);
    assert_not_logged(&secrets);
    // Nor their basic-auth encodings.
    assert_not_logged(&[
        basic("mq-user", "second-pw-a21").trim_start_matches("Basic "),
        basic("p", "pub-pw-93x").trim_start_matches("Basic "),
    ]);
    let text = registry_text();
    for pw in ["first-pw-7f3", "second-pw-a21", "pub-pw-93x"] {
        assert!(!text.contains(pw), "plain password in the registry file");
    }
}

#[tokio::test]
async fn owner_tokens_get_404_for_other_customers_brokers_on_every_endpoint() {
    let gw = gateway("", None).await;
    let api = Answers::default();
    let body =
        json!({"endpoint": "https://x.example", "username": "u", "password": "p", "name": "n"});
    let calls = [
        ("GET", "/admin/v1/brokers/globex-db"),
        ("PATCH", "/admin/v1/brokers/globex-db"),
        ("DELETE", "/admin/v1/brokers/globex-db"),
        ("POST", "/admin/v1/brokers/globex-db/deactivate"),
        ("PUT", "/admin/v1/brokers/globex-db/password"),
        ("PUT", "/admin/v1/brokers/globex-db/publications/eu"),
        ("DELETE", "/admin/v1/brokers/globex-db/publications/eu"),
        (
            "POST",
            "/admin/v1/brokers/globex-db/publications/eu/approve",
        ),
        ("GET", "/admin/v1/brokers/globex-db/catalog"),
        ("POST", "/admin/v1/brokers/globex-db/catalog/refresh"),
    ];
    for (method, path) in calls {
        let mine = api
            .call(&gw, method, path, ACME_TOKEN, Some(body.clone()))
            .await;
        let missing = api
            .call(
                &gw,
                method,
                &path.replace("globex-db", "no-such-broker"),
                ACME_TOKEN,
                Some(body.clone()),
            )
            .await;
        assert_eq!(mine.status, 404, "{method} {path}: {:?}", mine.body);
        assert_eq!(
            mine.json()["description"]
                .as_str()
                .unwrap()
                .replace("globex-db", "X"),
            missing.json()["description"]
                .as_str()
                .unwrap()
                .replace("no-such-broker", "X"),
            "{method} {path}: the answer tells nothing a missing broker would not"
        );
    }
    let list = api
        .call(&gw, "GET", "/admin/v1/brokers", ACME_TOKEN, None)
        .await;
    assert_eq!(list.json()["brokers"], json!([]));
    let routes = api
        .call(&gw, "GET", "/admin/v1/routes", ACME_TOKEN, None)
        .await;
    assert_eq!(routes.json()["routes"], json!([]));
    // The registry is untouched.
    let r = api
        .call(
            &gw,
            "GET",
            "/admin/v1/brokers/globex-db",
            OPERATOR_TOKEN,
            None,
        )
        .await;
    assert_eq!(r.json()["state"], "private");
    assert_eq!(r.json()["name"], "");
}

/// A broker that accepts the passwords in `accepted` and counts catalogs.
fn picky(accepted: Arc<Mutex<Vec<String>>>) -> Handler {
    Arc::new(move |req| {
        let ok = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| accepted.lock().unwrap().iter().any(|p| a == basic("u", p)));
        Box::pin(async move {
            if ok {
                full(200, r#"{"services":[]}"#)
            } else {
                full(401, r#"{"description":"bad credentials"}"#)
            }
        })
    })
}

#[tokio::test]
async fn a_staged_password_is_used_only_once_the_broker_accepts_it() {
    let accepted = Arc::new(Mutex::new(vec!["old-pw-1".to_string()]));
    let b = Broker::http(picky(accepted.clone())).await;
    let gw = gateway("", None).await;
    let api = Answers::default();
    let r = api
        .call(
            &gw,
            "POST",
            "/admin/v1/brokers",
            ACME_TOKEN,
            Some(json!({"id": "rot", "endpoint": b.url(""), "username": "u", "password": "old-pw-1", "development_mode": true})),
        )
        .await;
    assert_eq!(r.status, 201);

    // Staged while the broker does not know it yet: not confirmed, the old
    // password stays in use.
    let r = api
        .call(
            &gw,
            "PUT",
            "/admin/v1/brokers/rot/password",
            ACME_TOKEN,
            Some(json!({"password": "new-pw-2"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let confirmation = r.json()["confirmation"].as_str().unwrap().to_string();
    assert!(confirmation.starts_with("not confirmed"), "{confirmation}");
    assert_eq!(
        r.json()["broker"]["private"]["staged_password"],
        "enc:v1:***"
    );
    let c = get(&gw.url("/private/rot/v2/catalog"), Some(platform("cf-eu"))).await;
    assert_eq!(
        c.status, 200,
        "platforms keep working with the old password"
    );
    assert_eq!(auth_of(&b).last().unwrap(), &basic("u", "old-pw-1"));

    // The broker learns the new password (both valid during its rotation);
    // the next refresh confirms and promotes it.
    accepted.lock().unwrap().push("new-pw-2".into());
    let r = api
        .call(
            &gw,
            "POST",
            "/admin/v1/brokers/rot/catalog/refresh",
            ACME_TOKEN,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["results"][0]["staged_password"], "confirmed");
    accepted.lock().unwrap().retain(|p| p == "new-pw-2");
    let c = get(&gw.url("/private/rot/v2/catalog"), Some(platform("cf-eu"))).await;
    assert_eq!(c.status, 200);
    assert_eq!(auth_of(&b).last().unwrap(), &basic("u", "new-pw-2"));
    let text = std::fs::read_to_string(gw.path("registry.toml")).unwrap();
    assert!(!text.contains("staged_password"), "promoted: {text}");
    let r = api
        .call(&gw, "GET", "/admin/v1/brokers/rot", ACME_TOKEN, None)
        .await;
    assert_eq!(r.json()["private"]["staged_password"], Value::Null);
    api.assert_never_contain(&["old-pw-1", "new-pw-2"]);
    assert_not_logged(&["old-pw-1", "new-pw-2"]);
}

const CATALOG: &str =
    r#"{"services":[{"id":"svc-1","name":"postgres","plans":[{"id":"plan-s","name":"small"}]}]}"#;

/// A broker whose catalog has an ETag: a conditional request gets 304.
fn etag_broker() -> Handler {
    Arc::new(|req| {
        let catalog = req.uri().path().ends_with("/v2/catalog");
        let fresh = req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"");
        Box::pin(async move {
            if catalog && fresh {
                let mut r = full(304, "");
                r.headers_mut().remove("content-type");
                r
            } else if catalog {
                let mut r = full(200, CATALOG);
                r.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
                r
            } else {
                full(201, "{}")
            }
        })
    })
}

#[tokio::test]
async fn catalogs_refresh_on_a_timer_and_on_demand_and_name_captured_plans() {
    let b = Broker::http(etag_broker()).await;
    let failing = Broker::http(Arc::new(|_req| {
        Box::pin(async { full(500, r#"{"description":"down"}"#) })
    }))
    .await;
    let gw = gateway("[catalog]\nrefresh = true\n", None).await;
    let api = Answers::default();
    for (id, url) in [("cat", b.url("")), ("bad", failing.url(""))] {
        let r = api
            .call(
                &gw,
                "POST",
                "/admin/v1/brokers",
                ACME_TOKEN,
                Some(json!({"id": id, "endpoint": url, "username": "u", "password": "pw-x", "development_mode": true, "catalog_refresh": "1s"})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    // The timer: the first fetch at once, then every second, conditional.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = b.seen();
        if seen.len() >= 3 {
            assert!(seen[0].headers.get("if-none-match").is_none());
            assert_eq!(seen[1].headers["if-none-match"], "\"v1\"");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timer refreshes: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = api
        .call(
            &gw,
            "GET",
            "/admin/v1/brokers/cat/catalog",
            ACME_TOKEN,
            None,
        )
        .await;
    let route = &c.json()["routes"]["private"];
    assert_eq!(route["services"][0]["plans"][0]["name"], "small", "{route}");
    assert!(route["not_modified"].as_u64().unwrap() >= 1, "{route}");
    assert_eq!(route["last_error"], Value::Null);

    // On demand.
    let r = api
        .call(
            &gw,
            "POST",
            "/admin/v1/brokers/cat/catalog/refresh",
            ACME_TOKEN,
            None,
        )
        .await;
    assert_eq!(r.json()["results"][0]["result"], "not_modified");
    assert_eq!(r.json()["results"][0]["services"], 1);

    // A failing refresh is visible per route and counted.
    let r = api
        .call(
            &gw,
            "POST",
            "/admin/v1/brokers/bad/catalog/refresh",
            ACME_TOKEN,
            None,
        )
        .await;
    assert_eq!(r.json()["results"][0]["result"], "failed");
    let v = api
        .call(&gw, "GET", "/admin/v1/brokers/bad", ACME_TOKEN, None)
        .await
        .json();
    assert!(
        v["private"]["catalog"]["last_error"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{v}"
    );
    let metrics = String::from_utf8(
        client::admin("GET", &gw.admin_url("/metrics"), Some(OPERATOR_TOKEN), None)
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics
            .contains("osb_gateway_catalog_refresh_failing{broker=\"bad\",location=\"private\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("osb_gateway_catalog_not_modified_total"));

    // The cached names enrich capture records.
    let mut feed = gw.handle.as_ref().unwrap().capture.subscribe();
    let p = send(
        "PUT",
        &gw.url("/private/cat/v2/service_instances/i-9"),
        Some(platform("cf-eu")),
        r#"{"service_id":"svc-1","plan_id":"plan-s"}"#,
    )
    .await;
    assert_eq!(p.status, 201);
    let rec = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = feed.recv().await.unwrap();
            if r.instance_id == "i-9" {
                return r;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        (rec.service_name.as_str(), rec.plan_name.as_str()),
        ("postgres", "small")
    );
}

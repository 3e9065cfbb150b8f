//! Hot reload: validate-then-swap under load, refused reloads, triggers.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use http::Request;
use http_body_util::BodyExt;
use support::broker::{answer, full, Broker, Handler};
use support::client::{self, get, platform};
use support::gateway::{Options, TestGateway};
use support::{eventually, within};

const PLATFORMS: &str = support::gateway::CF_EU_REGISTRY_HEAD;

fn registry(brokers: &[(&str, &str)]) -> String {
    let mut r = PLATFORMS.to_string();
    for (id, url) in brokers {
        r.push_str(&format!(
            "\n[[brokers]]\nid = \"{id}\"\nowner = \"acme\"\n[brokers.private]\nendpoint = \"{url}\"\nusername = \"u\"\npassword = \"env:BROKER_PW\"\ndevelopment_mode = true\n"
        ));
    }
    r
}

async fn from(gw: &TestGateway, broker: &str) -> String {
    let r = get(
        &gw.url(&format!("/private/{broker}/v2/catalog")),
        Some(platform("cf-eu")),
    )
    .await;
    match r.status.as_u16() {
        200 => r.json()["from"].as_str().unwrap_or("").to_string(),
        s => format!("status {s}"),
    }
}

#[tokio::test]
async fn reload_swaps_routes_and_reports_what_changed() {
    let a = Broker::http(answer(200, r#"{"from":"a"}"#)).await;
    let b = Broker::http(answer(200, r#"{"from":"b"}"#)).await;
    let gw = TestGateway::dev(&registry(&[("pg", &a.url("")), ("old", &a.url(""))])).await;
    assert_eq!(from(&gw, "pg").await, "a");
    gw.write_registry(&registry(&[("pg", &b.url("")), ("new", &b.url(""))]));
    let report = gw.reloader().reload("test").await.unwrap();
    assert_eq!(report.added, vec!["new/private"]);
    assert_eq!(report.removed, vec!["old/private"]);
    assert_eq!(report.changed, vec!["pg/private"]);
    assert_eq!(
        (report.unchanged, report.generation),
        (1, 2),
        "the platform is unchanged"
    );
    assert_eq!(from(&gw, "pg").await, "b");
    assert_eq!(from(&gw, "new").await, "b");
    assert_eq!(from(&gw, "old").await, "status 404");
}

#[tokio::test]
async fn a_refused_reload_keeps_the_old_routes() {
    let a = Broker::http(answer(200, r#"{"from":"a"}"#)).await;
    let gw = TestGateway::dev(&registry(&[("pg", &a.url(""))])).await;
    let bad = registry(&[("pg", &a.url(""))])
        .replace("development_mode = true", "development_mode = false");
    gw.write_registry(&bad);
    let err = gw.reloader().reload("test").await.unwrap_err().to_string();
    assert!(
        err.contains("brokers[0].private.endpoint") && err.contains("development_mode"),
        "{err}"
    );
    gw.write_registry("not toml [");
    let err = gw.reloader().reload("test").await.unwrap_err().to_string();
    assert!(err.contains("registry.toml"), "{err}");
    assert_eq!(from(&gw, "pg").await, "a", "the old table still serves");
    assert_eq!(gw.reloader().generation(), 1);
    assert_eq!(gw.reloader().metrics.failures.load(SeqCst), 2);
}

#[tokio::test]
async fn reloads_under_steady_load_lose_no_request() {
    let a = Broker::http(answer(200, r#"{"from":"a"}"#)).await;
    let b = Broker::http(answer(200, r#"{"from":"b"}"#)).await;
    let (ra, rb) = (
        registry(&[("pg", &a.url(""))]),
        registry(&[("pg", &b.url(""))]),
    );
    let gw = TestGateway::dev(&ra).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut loops = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed, url) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            gw.url("/private/pg/v2/catalog"),
        );
        loops.push(tokio::spawn(async move {
            let c = client::plain();
            while !stop.load(SeqCst) {
                let req = Request::get(&url)
                    .header("authorization", platform("cf-eu"))
                    .body(client::empty())
                    .unwrap();
                let good = match c.request(req).await {
                    Ok(r) => r.status() == 200 && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if good {
                    ok.fetch_add(1, SeqCst);
                } else {
                    failed.fetch_add(1, SeqCst);
                }
            }
        }));
    }
    for i in 0..20 {
        gw.write_registry(if i % 2 == 0 { &rb } else { &ra });
        let before = ok.load(SeqCst);
        gw.reloader().reload("test").await.unwrap();
        // Pace the reloads by the traffic itself: some requests between two swaps.
        let ok2 = ok.clone();
        eventually(10, "requests between reloads", || {
            let ok = ok2.clone();
            async move { ok.load(SeqCst) >= before + 20 }
        })
        .await;
    }
    stop.store(true, SeqCst);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(failed.load(SeqCst), 0, "no request lost across 20 reloads");
    assert!(ok.load(SeqCst) >= 400);
    assert_eq!(gw.reloader().generation(), 21);
    assert_eq!(
        from(&gw, "pg").await,
        "a",
        "the last table (a) serves new requests"
    );
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_table_it_started_with() {
    let release = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(tokio::sync::Notify::new());
    let (r2, a2) = (release.clone(), arrived.clone());
    let slow: Handler = Arc::new(move |_req| {
        let (r, a) = (r2.clone(), a2.clone());
        Box::pin(async move {
            a.notify_one();
            r.notified().await;
            full(200, r#"{"from":"slow-old"}"#)
        })
    });
    let old = Broker::http(slow).await;
    let new = Broker::http(answer(200, r#"{"from":"new"}"#)).await;
    let gw = TestGateway::dev(&registry(&[("pg", &old.url(""))])).await;
    let url = gw.url("/private/pg/v2/catalog");
    let in_flight = tokio::spawn(async move { get(&url, Some(platform("cf-eu"))).await });
    within(10, "request reaches the old broker", arrived.notified()).await;
    gw.write_registry(&registry(&[("pg", &new.url(""))]));
    gw.reloader().reload("test").await.unwrap();
    assert_eq!(
        from(&gw, "pg").await,
        "new",
        "new requests take the new route"
    );
    release.notify_one();
    let r = within(10, "in-flight request", in_flight).await.unwrap();
    assert_eq!(r.json()["from"], "slow-old");
}

#[tokio::test]
async fn a_changed_registry_file_is_picked_up() {
    let a = Broker::http(answer(200, r#"{"from":"a"}"#)).await;
    let b = Broker::http(answer(200, r#"{"from":"b"}"#)).await;
    let gw = TestGateway::start(
        &registry(&[("pg", &a.url(""))]),
        Options {
            tables: "\n[registry]\nwatch_interval = \"100ms\"\n".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    gw.write_registry(&registry(&[("pg", &b.url(""))]));
    let gw_ref = &gw;
    eventually(10, "the watcher reloads", || async move {
        from(gw_ref, "pg").await == "b"
    })
    .await;
    assert_eq!(gw.reloader().generation(), 2);
}

#[tokio::test]
async fn a_reload_keeps_the_warm_pools_of_unchanged_upstreams() {
    let a = Broker::http(answer(200, r#"{"from":"a"}"#)).await;
    let b = Broker::http(answer(200, r#"{"from":"b"}"#)).await;
    let gw = TestGateway::dev(&registry(&[("pg", &a.url("")), ("other", &b.url(""))])).await;
    assert_eq!(from(&gw, "pg").await, "a");
    assert_eq!(a.connections.load(SeqCst), 1);
    // Unchanged upstream a; broker "other" moves from b to a new path on b.
    gw.write_registry(&registry(&[("pg", &a.url("")), ("other", &b.url("/v9"))]));
    gw.reloader().reload("test").await.unwrap();
    for _ in 0..3 {
        assert_eq!(from(&gw, "pg").await, "a");
    }
    assert_eq!(
        a.connections.load(SeqCst),
        1,
        "the keep-alive connection survived the reload"
    );
}

#[tokio::test]
async fn an_empty_or_cut_registry_file_is_refused_and_the_routes_keep_serving() {
    let a = Broker::http(answer(200, r#"{"from":"a"}"#)).await;
    let full = registry(&[("pg", &a.url(""))]);
    let gw = TestGateway::dev(&full).await;
    for (what, text) in [
        ("empty", String::new()),
        ("blank", "\n  \n".to_string()),
        ("cut in a string", full[..full.len() - 12].to_string()),
        (
            "cut in a table header",
            full[..full.find("[brokers.private]").unwrap() + 5].to_string(),
        ),
    ] {
        gw.write_registry(&text);
        let err = gw.reloader().reload("test").await.unwrap_err().to_string();
        assert!(!err.is_empty(), "{what}");
        if what == "empty" || what == "blank" {
            assert!(err.contains("the registry is empty"), "{what}: {err}");
        }
        assert_eq!(from(&gw, "pg").await, "a", "{what}: the old routes serve");
    }
    assert_eq!(gw.reloader().generation(), 1, "nothing was swapped in");
}

#[tokio::test]
async fn taking_every_route_and_platform_away_needs_confirm_empty() {
    let a = Broker::http(answer(200, r#"{"from":"a"}"#)).await;
    let gw = TestGateway::dev(&registry(&[("pg", &a.url(""))])).await;
    // Comments only: valid TOML, no brokers, no platforms.
    gw.write_registry("# emptied by a tool\n");
    let err = gw.reloader().reload("test").await.unwrap_err().to_string();
    assert!(
        err.contains("confirm_empty") && err.contains("1 routes") && err.contains("1 platforms"),
        "{err}"
    );
    assert_eq!(from(&gw, "pg").await, "a");
    // Fewer routes, but not none: an ordinary reload.
    gw.write_registry(&registry(&[]));
    let report = gw.reloader().reload("test").await.unwrap();
    assert_eq!(report.removed, vec!["pg/private"]);
    // Said on purpose: accepted.
    gw.write_registry("confirm_empty = true\n");
    let report = gw.reloader().reload("test").await.unwrap();
    assert_eq!(report.removed, vec!["platform cf-eu"]);
}

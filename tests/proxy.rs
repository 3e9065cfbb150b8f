//! Gateway core, end to end: real brokers on 127.0.0.1, a real gateway,
//! certificates generated at test time.

mod support;

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};
use support::broker::{answer, full, Broker, Handler};
use support::client::{self, basic, get, platform};
use support::gateway::{Options, TestGateway, BROKER_PW, PLATFORM_PW};
use support::tls::TestCa;
use support::within;
use tempfile::TempDir;

/// Upstream TLS material: a CA whose bundle the registry can name.
struct Pki {
    ca: TestCa,
    _dir: TempDir,
    bundle: String,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("broker test CA");
    let bundle = ca.write(dir.path(), "brokers-ca.pem").display().to_string();
    Pki {
        ca,
        _dir: dir,
        bundle,
    }
}

fn publication(location: &str, url: &str, user: &str, approved: bool, ca: &str) -> String {
    format!(
        "[[brokers.publications]]\nlocation = \"{location}\"\nendpoint = \"{url}\"\nusername = \"{user}\"\npassword = \"env:BROKER_PW\"\napproved = {approved}\nca_bundle = \"{ca}\"\n"
    )
}

fn private(url: &str, extra: &str) -> String {
    format!("[brokers.private]\nendpoint = \"{url}\"\nusername = \"priv-user\"\npassword = \"env:BROKER_PW\"\ndevelopment_mode = true\n{extra}\n")
}

const PLATFORMS: &str = r#"
locations = ["eu", "us", "ap"]

[[platforms]]
id = "cf-eu"
customer = "acme"
username = "cf-eu"
password_hash = "{HASH}"
locations = ["eu", "us"]

[[platforms]]
id = "k8s-globex"
customer = "globex"
username = "globex"
password_hash = "{HASH}"
locations = ["eu", "us", "ap"]
"#;

fn broker_auth(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{BROKER_PW}"))
    )
}

/// A world with broker "pg" (private + eu + global) and broker "redis"
/// (unapproved eu, approved ap) owned by another customer.
struct World {
    gw: TestGateway,
    private: Broker,
    eu: Broker,
    global: Broker,
    redis: Broker,
    _pki: Pki,
}

async fn world() -> World {
    let pki = pki();
    let private_b = Broker::http(answer(200, r#"{"from":"private"}"#)).await;
    let eu = Broker::https(&pki.ca.issue(), answer(200, r#"{"from":"eu"}"#)).await;
    let global = Broker::https(&pki.ca.issue(), answer(200, r#"{"from":"global"}"#)).await;
    let redis = Broker::https(&pki.ca.issue(), answer(200, r#"{"from":"redis"}"#)).await;
    let registry = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"pg\"\nname = \"Postgres\"\nowner = \"acme\"\n{}{}{}\n[[brokers]]\nid = \"redis\"\nowner = \"globex\"\n{}{}",
        private(&private_b.url("/"), ""),
        publication("eu", &eu.url("/osb/"), "eu-user", true, &pki.bundle),
        publication("global", &global.url(""), "global-user", true, &pki.bundle),
        publication("eu", &redis.url(""), "redis-user", false, &pki.bundle),
        publication("ap", &redis.url(""), "redis-user", true, &pki.bundle),
    );
    let gw = TestGateway::dev(&registry).await;
    World {
        gw,
        private: private_b,
        eu,
        global,
        redis,
        _pki: pki,
    }
}

#[tokio::test]
async fn routes_per_location_with_global_fallback() {
    let w = world().await;
    let r = get(&w.gw.url("/eu/pg/v2/catalog"), Some(platform("cf-eu"))).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["from"].as_str()),
        (200, Some("eu"))
    );
    assert_eq!(
        w.eu.one().uri.path(),
        "/osb/v2/catalog",
        "joined to the endpoint's base path"
    );

    let r = get(
        &w.gw
            .url("/us/pg/v2/service_instances/a%2Fb?accepts_incomplete=true"),
        Some(platform("cf-eu")),
    )
    .await;
    assert_eq!(
        r.json()["from"],
        "global",
        "us has no publication: global serves it"
    );
    let seen = w.global.one();
    assert_eq!(
        seen.uri.path(),
        "/v2/service_instances/a%2Fb",
        "percent-encoded ids pass unchanged"
    );
    assert_eq!(seen.uri.query(), Some("accepts_incomplete=true"));

    let r = get(&w.gw.url("/private/pg/v2/catalog"), Some(platform("cf-eu"))).await;
    assert_eq!(r.json()["from"], "private");
    assert_eq!(w.private.one().uri.path(), "/v2/catalog");

    let r = get(&w.gw.url("/ap/redis/v2/catalog"), Some(platform("globex"))).await;
    assert_eq!(r.json()["from"], "redis");
}

#[tokio::test]
async fn upstream_sees_broker_credentials_never_the_platforms() {
    let w = world().await;
    get(&w.gw.url("/eu/pg/v2/catalog"), Some(platform("cf-eu"))).await;
    get(&w.gw.url("/private/pg/v2/catalog"), Some(platform("cf-eu"))).await;
    let eu = w.eu.one();
    assert_eq!(eu.headers["authorization"], broker_auth("eu-user").as_str());
    assert_eq!(eu.headers.get_all("authorization").iter().count(), 1);
    assert_eq!(
        w.private.one().headers["authorization"],
        broker_auth("priv-user").as_str()
    );
    let platform_token =
        base64::engine::general_purpose::STANDARD.encode(format!("cf-eu:{PLATFORM_PW}"));
    for seen in w.eu.seen().into_iter().chain(w.private.seen()) {
        for (name, v) in &seen.headers {
            let v = v.to_str().unwrap_or("");
            assert!(
                !v.contains(&platform_token) && !v.contains(PLATFORM_PW),
                "platform secret leaked in {name}"
            );
        }
    }
}

#[tokio::test]
async fn unauthenticated_platforms_get_401_with_challenge() {
    let w = world().await;
    let url = w.gw.url("/eu/pg/v2/catalog");
    for auth in [
        None,
        Some(basic("cf-eu", "wrong")),
        Some(basic("nobody", PLATFORM_PW)),
        Some("Bearer x".parse().unwrap()),
    ] {
        let r = get(&url, auth.clone()).await;
        r.osb_error(401, "Unauthorized");
        assert!(
            r.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic realm="),
            "{auth:?}"
        );
    }
    assert!(w.eu.seen().is_empty(), "nothing reaches the broker");
}

#[tokio::test]
async fn forbidden_routes_get_403() {
    let w = world().await;
    let d = get(
        &w.gw.url("/private/pg/v2/catalog"),
        Some(platform("globex")),
    )
    .await
    .osb_error(403, "Forbidden");
    assert!(d.contains("private to its owner"), "{d}");
    let d = get(&w.gw.url("/ap/pg/v2/catalog"), Some(platform("cf-eu")))
        .await
        .osb_error(403, "Forbidden");
    assert!(d.contains("not allowed to call location \"ap\""), "{d}");
    let d = get(&w.gw.url("/eu/redis/v2/catalog"), Some(platform("cf-eu")))
        .await
        .osb_error(403, "Forbidden");
    assert!(d.contains("not approved"), "{d}");
    assert!(w.private.seen().is_empty() && w.redis.seen().is_empty());
}

#[tokio::test]
async fn unknown_brokers_and_locations_get_404() {
    let w = world().await;
    let cases = [
        ("/eu/nope/v2/catalog", "unknown broker \"nope\""),
        ("/mars/pg/v2/catalog", "unknown location \"mars\""),
        ("/us/redis/v2/catalog", "not published in location \"us\""),
        ("/eu/pg/v3/catalog", "not an OSB path"),
        ("/eu/pg", "not an OSB path"),
    ];
    for (path, want) in cases {
        let d = get(&w.gw.url(path), Some(platform("cf-eu")))
            .await
            .osb_error(404, "NotFound");
        assert!(d.contains(want), "{path}: {d}");
    }
}

#[tokio::test]
async fn request_identity_is_added_when_absent_and_kept_when_sent() {
    let w = world().await;
    let r = get(&w.gw.url("/eu/pg/v2/catalog"), Some(platform("cf-eu"))).await;
    assert_eq!(r.status, 200);
    let id = w.eu.one().headers["x-broker-api-request-identity"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a new UUID: {id}");

    let req = Request::get(w.gw.url("/eu/pg/v2/catalog"))
        .header("authorization", platform("cf-eu"))
        .header("x-broker-api-request-identity", "platform-chosen-id")
        .body(client::empty())
        .unwrap();
    client::plain().request(req).await.unwrap();
    assert_eq!(
        w.eu.seen()[1].headers["x-broker-api-request-identity"],
        "platform-chosen-id"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_osb_headers_pass_unchanged() {
    let handler: Handler = Arc::new(|_req| {
        Box::pin(async {
            let mut r = full(200, "{}");
            let h = r.headers_mut();
            h.insert("connection", "x-upstream-hop".parse().unwrap());
            h.insert("x-upstream-hop", "1".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("x-broker-end-to-end", "kept".parse().unwrap());
            r
        })
    });
    let b = Broker::http(handler).await;
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"pg\"\nowner = \"acme\"\n{}",
        private(&b.url(""), "")
    );
    let gw = TestGateway::dev(&reg).await;
    let identity = "cloudfoundry eyJ1c2VyX2lkIjoiNjgzZWE3NDgifQ==";
    let req = Request::get(gw.url("/private/pg/v2/catalog"))
        .header("authorization", platform("cf-eu"))
        .header("connection", "x-platform-hop")
        .header("x-platform-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-broker-api-version", "2.17")
        .header("x-broker-api-originating-identity", identity)
        .header("x-custom", "end-to-end")
        .body(client::empty())
        .unwrap();
    let r = client::collect(client::plain().request(req).await.unwrap()).await;
    let seen = b.one();
    for gone in ["x-platform-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the broker"
        );
    }
    assert_eq!(seen.headers["x-broker-api-version"], "2.17");
    assert_eq!(seen.headers["x-broker-api-originating-identity"], identity);
    assert_eq!(seen.headers["x-custom"], "end-to-end");
    assert_eq!(
        seen.headers["host"],
        format!("127.0.0.1:{}", b.addr.port()).as_str(),
        "Host names the broker"
    );
    assert!(!r.headers.contains_key("x-upstream-hop") && !r.headers.contains_key("keep-alive"));
    assert_eq!(r.headers["x-broker-end-to-end"], "kept");
}

#[tokio::test]
async fn verified_upstream_with_unknown_certificate_is_502_while_dev_mode_and_ca_bundle_work() {
    let pki = pki();
    let stranger = TestCa::new("self-signed stranger");
    let cert = stranger.issue();
    let unknown = Broker::https(&cert, answer(200, r#"{"ok":1}"#)).await;
    let dev = Broker::https(&cert, answer(200, r#"{"ok":"dev"}"#)).await;
    let trusted = Broker::https(&pki.ca.issue(), answer(200, r#"{"ok":"bundle"}"#)).await;
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"strict\"\nowner = \"acme\"\n{}\n[[brokers]]\nid = \"dev\"\nowner = \"acme\"\n{}\n[[brokers]]\nid = \"bundle\"\nowner = \"acme\"\n{}",
        "[[brokers.publications]]\nlocation = \"eu\"\nendpoint = \"".to_string() + &unknown.url("") + "\"\nusername = \"u\"\npassword = \"env:BROKER_PW\"\napproved = true\n",
        private(&dev.url(""), ""),
        publication("eu", &trusted.url(""), "u", true, &pki.bundle),
    );
    let gw = TestGateway::dev(&reg).await;
    let d = get(&gw.url("/eu/strict/v2/catalog"), Some(platform("cf-eu")))
        .await
        .osb_error(502, "BadGateway");
    assert!(
        d.contains("\"strict\"") && d.to_lowercase().contains("certificate"),
        "{d}"
    );
    assert!(!d.contains(BROKER_PW));
    assert_eq!(
        get(&gw.url("/private/dev/v2/catalog"), Some(platform("cf-eu")))
            .await
            .json()["ok"],
        "dev"
    );
    assert_eq!(
        get(&gw.url("/eu/bundle/v2/catalog"), Some(platform("cf-eu")))
            .await
            .json()["ok"],
        "bundle"
    );
}

#[tokio::test]
async fn connection_refused_is_502_naming_the_broker() {
    let dead = support::RefusedPort::new();
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"gone\"\nowner = \"acme\"\n{}",
        private(&dead.url, "")
    );
    let gw = TestGateway::dev(&reg).await;
    let d = get(&gw.url("/private/gone/v2/catalog"), Some(platform("cf-eu")))
        .await
        .osb_error(502, "BadGateway");
    assert!(
        d.contains("\"gone\"") && d.contains("cannot connect"),
        "{d}"
    );
}

#[tokio::test]
async fn slow_broker_gives_504() {
    let slow: Handler = Arc::new(|_req| {
        Box::pin(async {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            full(200, "{}")
        })
    });
    let b = Broker::http(slow).await;
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"slow\"\nowner = \"acme\"\n{}",
        private(&b.url(""), "response_timeout = \"300ms\"")
    );
    let gw = TestGateway::dev(&reg).await;
    let r = within(
        10,
        "504",
        get(&gw.url("/private/slow/v2/catalog"), Some(platform("cf-eu"))),
    )
    .await;
    let d = r.osb_error(504, "GatewayTimeout");
    assert!(d.contains("\"slow\"") && d.contains("300ms"), "{d}");
}

#[tokio::test]
async fn stalled_response_body_is_cut_after_idle_timeout() {
    let stall: Handler = Arc::new(|_req| {
        Box::pin(async {
            let (tx, rx) = tokio::sync::mpsc::channel::<
                Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
            >(1);
            tx.send(Ok(Frame::data(Bytes::from_static(b"{\"par"))))
                .await
                .unwrap();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                drop(tx);
            });
            let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|x| (x, rx))
            }));
            http::Response::builder()
                .status(200)
                .body(body.boxed())
                .unwrap()
        })
    });
    let b = Broker::http(stall).await;
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"stall\"\nowner = \"acme\"\n{}",
        private(&b.url(""), "idle_timeout = \"300ms\"")
    );
    let gw = TestGateway::dev(&reg).await;
    let req = Request::get(gw.url("/private/stall/v2/catalog"))
        .header("authorization", platform("cf-eu"))
        .body(client::empty())
        .unwrap();
    let resp = client::plain().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let res = within(10, "idle cut", resp.into_body().collect()).await;
    assert!(
        res.is_err(),
        "the platform sees the body end abnormally, not a truncated success"
    );
}

const MB: usize = 1024 * 1024;

fn pattern_chunk(i: usize, size: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; size])
}

#[tokio::test]
async fn fifty_megabytes_stream_up_and_down() {
    const TOTAL: usize = 50 * MB;
    const CHUNK: usize = 64 * 1024;
    let handler: Handler = Arc::new(|req| {
        Box::pin(async move {
            if req.method() == http::Method::PUT {
                let mut body = req.into_body();
                let (mut n, mut h) = (0usize, Sha256::new());
                while let Some(f) = body.frame().await {
                    if let Ok(d) = f.unwrap().into_data() {
                        n += d.len();
                        h.update(&d);
                    }
                }
                full(
                    200,
                    format!("{{\"bytes\":{n},\"sha256\":\"{:x}\"}}", h.finalize()),
                )
            } else {
                let chunks = futures_util::stream::iter(
                    (0..TOTAL / CHUNK).map(|i| Ok(Frame::data(pattern_chunk(i, CHUNK)))),
                );
                http::Response::builder()
                    .status(200)
                    .body(StreamBody::new(chunks).boxed())
                    .unwrap()
            }
        })
    });
    let b = Broker::http(handler).await;
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"big\"\nowner = \"acme\"\n{}",
        private(&b.url(""), "")
    );
    let gw = TestGateway::dev(&reg).await;

    let mut want = Sha256::new();
    for i in 0..TOTAL / CHUNK {
        want.update(pattern_chunk(i, CHUNK));
    }
    let want = format!("{:x}", want.finalize());
    let up = futures_util::stream::iter((0..TOTAL / CHUNK).map(|i| {
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(pattern_chunk(i, CHUNK)))
    }));
    let req = Request::put(gw.url("/private/big/v2/service_instances/big-1"))
        .header("authorization", platform("cf-eu"))
        .body(StreamBody::new(up).boxed())
        .unwrap();
    let r = within(60, "upload", async {
        client::collect(client::plain().request(req).await.unwrap()).await
    })
    .await;
    assert_eq!(r.json()["bytes"], TOTAL);
    assert_eq!(r.json()["sha256"], want.as_str());

    let req = Request::get(gw.url("/private/big/v2/service_instances/big-1"))
        .header("authorization", platform("cf-eu"))
        .body(client::empty())
        .unwrap();
    let resp = client::plain().request(req).await.unwrap();
    let mut body = resp.into_body();
    let (mut n, mut h) = (0usize, Sha256::new());
    within(60, "download", async {
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.unwrap().into_data() {
                n += d.len();
                h.update(&d);
            }
        }
    })
    .await;
    assert_eq!(n, TOTAL);
    assert_eq!(format!("{:x}", h.finalize()), want);
}

/// The broker must see the first request chunk before the platform sends the
/// second, and the platform the first response chunk before the broker sends
/// the second: a gateway that buffered whole bodies would deadlock here.
#[tokio::test]
async fn bodies_stream_chunk_by_chunk_in_both_directions() {
    type Tx =
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>;
    let (got_tx, mut got_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let (resp_ctl_tx, resp_ctl_rx) = tokio::sync::mpsc::channel::<Tx>(1);
    let got_tx = Arc::new(got_tx);
    let resp_ctl_tx = Arc::new(resp_ctl_tx);
    let handler: Handler = Arc::new(move |req| {
        let got = got_tx.clone();
        let ctl = resp_ctl_tx.clone();
        Box::pin(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            ctl.send(tx).await.unwrap();
            let mut body = req.into_body();
            tokio::spawn(async move {
                while let Some(Ok(f)) = body.frame().await {
                    if let Ok(d) = f.into_data() {
                        got.send(d).await.unwrap();
                    }
                }
            });
            let s = futures_util::stream::unfold(
                rx,
                |mut rx: tokio::sync::mpsc::Receiver<_>| async move { rx.recv().await.map(|x| (x, rx)) },
            );
            http::Response::builder()
                .status(200)
                .body(StreamBody::new(s).boxed())
                .unwrap()
        })
    });
    let b = Broker::http(handler).await;
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"s\"\nowner = \"acme\"\n{}",
        private(&b.url(""), "")
    );
    let gw = TestGateway::dev(&reg).await;

    let (up_tx, up_rx) = tokio::sync::mpsc::channel::<
        Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(1);
    let up =
        futures_util::stream::unfold(
            up_rx,
            |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
        );
    let req = Request::put(gw.url("/private/s/v2/service_instances/x"))
        .header("authorization", platform("cf-eu"))
        .body(StreamBody::new(up).boxed())
        .unwrap();
    let pending = tokio::spawn(async move { client::plain().request(req).await.unwrap() });
    let mut resp_ctl_rx = resp_ctl_rx;
    within(10, "first up chunk", async {
        up_tx
            .send(Ok(Frame::data(Bytes::from_static(b"up-1"))))
            .await
            .unwrap();
        assert_eq!(got_rx.recv().await.unwrap(), "up-1");
    })
    .await;
    let down = within(10, "broker handler", resp_ctl_rx.recv())
        .await
        .unwrap();
    let resp = within(10, "response head", pending).await.unwrap();
    let mut body = resp.into_body();
    within(10, "chunk by chunk", async {
        up_tx
            .send(Ok(Frame::data(Bytes::from_static(b"up-2"))))
            .await
            .unwrap();
        assert_eq!(got_rx.recv().await.unwrap(), "up-2");
        down.send(Ok(Frame::data(Bytes::from_static(b"down-1"))))
            .await
            .unwrap();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "down-1"
        );
        down.send(Ok(Frame::data(Bytes::from_static(b"down-2"))))
            .await
            .unwrap();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "down-2"
        );
    })
    .await;
}

#[tokio::test]
async fn tls_listener_serves_http1_and_http2() {
    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"pg\"\nowner = \"acme\"\n{}",
        private(&b.url(""), "")
    );
    let gw = TestGateway::start(
        &reg,
        Options {
            tls: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ca = gw.ca.as_ref().unwrap().pem();
    for h2 in [false, true] {
        let req = Request::get(format!(
            "https://localhost:{}/private/pg/v2/catalog",
            gw.addr.port()
        ))
        .header("authorization", platform("cf-eu"))
        .header("x-broker-api-version", "2.17")
        .body(client::empty())
        .unwrap();
        let (r, alpn) = within(10, "tls request", client::send_tls(gw.addr, &ca, h2, req)).await;
        assert_eq!(r.status, 200, "h2={h2}");
        assert_eq!(r.json()["services"], serde_json::json!([]));
        assert_eq!(
            alpn.as_deref(),
            Some(if h2 { &b"h2"[..] } else { &b"http/1.1"[..] })
        );
    }
    let seen = b.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|s| s.headers["authorization"] == broker_auth("priv-user").as_str()));
}

#[tokio::test]
async fn plain_text_listener_is_refused_outside_development_mode() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[listen]\naddress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let e = osb_gateway::config::GatewayConfig::load(&dir.path().join("gateway.toml"), &|_| None)
        .unwrap_err();
    assert!(
        e.to_string().contains("listen.tls_cert") && e.to_string().contains("TLS only"),
        "{e}"
    );
}

#[tokio::test]
async fn invalid_registry_refuses_to_start_with_field_named() {
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"pg\"\nowner = \"acme\"\n[[brokers.publications]]\nlocation = \"eu\"\nendpoint = \"http://plain.example\"\nusername = \"u\"\npassword = \"env:BROKER_PW\"\napproved = true\n"
    );
    let e = TestGateway::start(&reg, Options::default())
        .await
        .err()
        .expect("must refuse")
        .to_string();
    assert!(e.contains("broker \"pg\": brokers[0].publications[0].endpoint = \"http://plain.example\": publication endpoints must use https://"), "{e}");
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let release = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(tokio::sync::Notify::new());
    let (r2, a2) = (release.clone(), arrived.clone());
    let handler: Handler = Arc::new(move |_req| {
        let (r, a) = (r2.clone(), a2.clone());
        Box::pin(async move {
            a.notify_one();
            r.notified().await;
            full(200, r#"{"done":true}"#)
        })
    });
    let b = Broker::http(handler).await;
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"pg\"\nowner = \"acme\"\n{}",
        private(&b.url(""), "")
    );
    let mut gw = TestGateway::dev(&reg).await;
    let url = gw.url("/private/pg/v2/catalog");
    let in_flight = tokio::spawn(async move { get(&url, Some(platform("cf-eu"))).await });
    within(10, "request reaches broker", arrived.notified()).await;
    let handle = gw.handle.take().unwrap();
    let shutting = tokio::spawn(handle.shutdown());
    // New connections are refused once the listener is closed.
    within(10, "listener closed", async {
        while tokio::net::TcpStream::connect(gw.addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    release.notify_one();
    let r = within(10, "in-flight request", in_flight).await.unwrap();
    assert_eq!(r.json()["done"], true);
    within(10, "shutdown completes", shutting).await.unwrap();
}

#[tokio::test]
async fn connect_timeout_gives_504() {
    // A listener that never accepts, its backlog filled: the kernel drops
    // further SYNs, so connecting hangs until the gateway's connect timeout.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
        assert!(fillers.len() < 64, "backlog never filled");
    }
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"hung\"\nowner = \"acme\"\n{}",
        private(&format!("http://{addr}"), "connect_timeout = \"300ms\"")
    );
    let gw = TestGateway::dev(&reg).await;
    let r = within(
        10,
        "connect timeout",
        get(&gw.url("/private/hung/v2/catalog"), Some(platform("cf-eu"))),
    )
    .await;
    let d = r.osb_error(504, "GatewayTimeout");
    assert!(d.contains("\"hung\"") && d.contains("300ms"), "{d}");
    drop(listener);
}

/// A bare HTTP/1.1 broker on a raw socket: answers every GET with
/// `{"n":N}`, N counting the requests on that connection, and closes a
/// connection idle for `idle` (as brokers' keep-alive timeouts do).
struct RawBroker {
    addr: std::net::SocketAddr,
    opened: Arc<std::sync::atomic::AtomicUsize>,
    closed: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBroker {
    async fn start(idle: std::time::Duration) -> RawBroker {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (o, c) = (opened.clone(), closed.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                o.fetch_add(1, SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut n = 0;
                    loop {
                        let mut chunk = [0u8; 4096];
                        match tokio::time::timeout(idle, s.read(&mut chunk)).await {
                            Ok(Ok(k)) if k > 0 => buf.extend_from_slice(&chunk[..k]),
                            _ => break,
                        }
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            n += 1;
                            let body = format!("{{\"n\":{n}}}");
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if s.write_all(resp.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                    c.fetch_add(1, SeqCst);
                });
            }
        });
        RawBroker {
            addr,
            opened,
            closed,
            task,
        }
    }
}

fn raw_registry(b: &RawBroker) -> String {
    format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"raw\"\nowner = \"acme\"\n{}",
        private(&format!("http://{}", b.addr), "")
    )
}

#[tokio::test]
async fn pooled_connections_are_reused_and_brokers_may_close_them() {
    use std::sync::atomic::Ordering::SeqCst;
    let b = RawBroker::start(std::time::Duration::from_millis(300)).await;
    let gw = TestGateway::dev(&raw_registry(&b)).await;
    let url = gw.url("/private/raw/v2/catalog");
    for n in 1..=3 {
        assert_eq!(get(&url, Some(platform("cf-eu"))).await.json()["n"], n);
    }
    assert_eq!(b.opened.load(SeqCst), 1, "one keep-alive connection");
    // The broker closes the idle connection; the next request gets a new one.
    support::eventually(5, "broker closed the idle connection", || async {
        b.closed.load(SeqCst) == 1
    })
    .await;
    let r = get(&url, Some(platform("cf-eu"))).await;
    assert_eq!((r.status.as_u16(), r.json()["n"].as_u64()), (200, Some(1)));
    assert_eq!(b.opened.load(SeqCst), 2);
}

#[tokio::test]
async fn idle_upstream_connections_close_after_the_pool_idle_timeout() {
    use std::sync::atomic::Ordering::SeqCst;
    let b = RawBroker::start(std::time::Duration::from_secs(60)).await;
    let opts = Options {
        tables: "\n[upstream]\npool_idle_timeout = \"200ms\"\n".into(),
        ..Options::default()
    };
    let gw = TestGateway::start(&raw_registry(&b), opts).await.unwrap();
    let url = gw.url("/private/raw/v2/catalog");
    assert_eq!(get(&url, Some(platform("cf-eu"))).await.status, 200);
    support::eventually(5, "the gateway closed its idle connection", || async {
        b.closed.load(SeqCst) == 1
    })
    .await;
    assert_eq!(get(&url, Some(platform("cf-eu"))).await.json()["n"], 1);
}

#[tokio::test]
async fn unread_and_refused_bodies_do_not_leak_into_the_next_exchange() {
    // GET catalog: 1 MB; PUT: 413 at once, without reading the request body;
    // anything else: the path, so each answer can be told from the others.
    let h: Handler = Arc::new(|req| {
        Box::pin(async move {
            let path = req.uri().path().to_string();
            match (req.method().as_str(), path.as_str()) {
                ("GET", "/v2/catalog") => full(200, vec![b'x'; MB]),
                ("PUT", _) => full(413, r#"{"error":"TooLarge"}"#),
                _ => full(200, format!("{{\"path\":\"{path}\"}}")),
            }
        })
    });
    let b = Broker::http(h).await;
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"pg\"\nowner = \"acme\"\n{}",
        private(&b.url(""), "")
    );
    let gw = TestGateway::dev(&reg).await;
    let check = |i: usize| {
        let url = gw.url(&format!(
            "/private/pg/v2/service_instances/i{i}/last_operation"
        ));
        async move {
            let r = get(&url, Some(platform("cf-eu"))).await;
            assert_eq!(
                r.json()["path"],
                format!("/v2/service_instances/i{i}/last_operation")
            );
        }
    };
    for round in 0..3 {
        // The platform reads the head of a 1 MB answer and goes away.
        let req = Request::get(gw.url("/private/pg/v2/catalog"))
            .header("authorization", platform("cf-eu"))
            .body(client::empty())
            .unwrap();
        let resp = client::plain().request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        drop(resp);
        check(round * 10).await;
        // The broker refuses a 4 MB body before reading it.
        let r = support::client::send(
            "PUT",
            &gw.url("/private/pg/v2/service_instances/big"),
            Some(platform("cf-eu")),
            &"y".repeat(4 * MB),
        )
        .await;
        assert!(matches!(r.status.as_u16(), 413 | 502), "{r:?}");
        for i in 1..4 {
            check(round * 10 + i).await;
        }
    }
}

/// The gateway's request metrics as Prometheus text.
fn metrics(gw: &TestGateway) -> String {
    let mut out = String::new();
    gw.handle.as_ref().unwrap().requests.render(&mut out);
    out
}

#[tokio::test]
async fn a_broker_that_accepts_and_never_speaks_tls_times_out_at_connect_timeout() {
    // Accepts TCP, then says nothing: the TLS handshake never finishes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"mute\"\nowner = \"acme\"\n{}",
        private(&format!("https://{addr}"), "connect_timeout = \"300ms\"")
    );
    let gw = TestGateway::dev(&reg).await;
    let r = within(
        10,
        "connect timeout covering the TLS handshake",
        get(&gw.url("/private/mute/v2/catalog"), Some(platform("cf-eu"))),
    )
    .await;
    let d = r.osb_error(504, "GatewayTimeout");
    assert!(
        d.contains("\"mute\"") && d.contains("300ms") && d.contains("TLS handshake"),
        "{d}"
    );
    let m = metrics(&gw);
    assert!(
        m.contains("osb_gateway_upstream_errors_total{broker=\"mute\",location=\"private\",kind=\"connect_timeout\"} 1"),
        "{m}"
    );
    silent.abort();
}

#[tokio::test]
async fn tls_failures_are_counted_as_tls_not_connect() {
    // A plain-HTTP broker behind an https:// endpoint: the handshake fails.
    let plain = Broker::http(answer(200, r#"{"ok":1}"#)).await;
    let stranger = TestCa::new("self-signed stranger");
    let unknown = Broker::https(&stranger.issue(), answer(200, r#"{"ok":1}"#)).await;
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"plain\"\nowner = \"acme\"\n{}\n[[brokers]]\nid = \"strict\"\nowner = \"acme\"\n{}",
        private(&plain.url("").replace("http://", "https://"), ""),
        "[[brokers.publications]]\nlocation = \"eu\"\nendpoint = \"".to_string()
            + &unknown.url("")
            + "\"\nusername = \"u\"\npassword = \"env:BROKER_PW\"\napproved = true\n",
    );
    let gw = TestGateway::dev(&reg).await;
    get(
        &gw.url("/private/plain/v2/catalog"),
        Some(platform("cf-eu")),
    )
    .await
    .osb_error(502, "BadGateway");
    get(&gw.url("/eu/strict/v2/catalog"), Some(platform("cf-eu")))
        .await
        .osb_error(502, "BadGateway");
    let m = metrics(&gw);
    for (broker, location) in [("plain", "private"), ("strict", "eu")] {
        assert!(
            m.contains(&format!("osb_gateway_upstream_errors_total{{broker=\"{broker}\",location=\"{location}\",kind=\"tls\"}} 1")),
            "{broker}: {m}"
        );
    }
    assert!(!m.contains("kind=\"connect\""), "{m}");
}

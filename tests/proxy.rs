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
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let reg = format!(
        "{PLATFORMS}\n[[brokers]]\nid = \"gone\"\nowner = \"acme\"\n{}",
        private(&format!("http://127.0.0.1:{port}"), "")
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

//! The in-flight budget for captured bodies, shared between platforms: one
//! platform's slow uploads cannot keep every other platform's records
//! without their bodies (issue 19). End to end, with a real gateway and
//! broker, records read from the local store.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use osb_gateway::store::local;
use support::broker::{full, Broker, Handler};
use support::client::{self, platform};
use support::gateway::{Options, TestGateway, CF_EU_REGISTRY_HEAD};
use support::{eventually, within};

/// Two platforms of one customer (cf-eu, k8s-eu) and a broker that reads
/// each body whole before it answers.
fn registry(url: &str) -> String {
    format!(
        "{CF_EU_REGISTRY_HEAD}
[[platforms]]
id = \"k8s-eu\"
customer = \"acme\"
username = \"k8s-eu\"
password_hash = \"{{HASH}}\"
locations = [\"eu\"]

[[brokers]]
id = \"pg\"
owner = \"acme\"
[brokers.private]
endpoint = \"{url}\"
username = \"u\"
password = \"env:BROKER_PW\"
development_mode = true
"
    )
}

fn reading_broker() -> Handler {
    Arc::new(|req| {
        Box::pin(async move {
            let _ = req.into_body().collect().await;
            full(200, "{}")
        })
    })
}

/// `name` from the gateway's /metrics.
async fn metric(gw: &TestGateway, name: &str) -> u64 {
    let m = client::admin("GET", &gw.admin_url("/metrics"), None, None).await;
    String::from_utf8_lossy(&m.body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(u64::MAX)
}

fn put(
    gw: &TestGateway,
    who: &str,
    instance: &str,
    body: client::ReqBody,
) -> Request<client::ReqBody> {
    Request::put(gw.url(&format!("/private/pg/v2/service_instances/{instance}")))
        .header("authorization", platform(who))
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn slow_uploads_of_one_platform_give_the_budget_back_to_the_others() {
    let b = Broker::http(reading_broker()).await;
    let mut gw = TestGateway::start(
        &registry(&b.url("")),
        Options {
            tables: "\n[capture]\nflush_interval = \"100ms\"\nmax_body_bytes = 100000\ninflight_max_bytes = 200000\n"
                .into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // cf-eu: two uploads that claim 100,000 bytes each, then trickle. Each
    // reserves its whole length at its first byte: the budget is spent.
    let mut trickles = Vec::new();
    let mut uploads = Vec::new();
    for i in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, _>>(4);
        let body = http_body_util::StreamBody::new(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
        ));
        let mut req = put(&gw, "cf-eu", &format!("slow-{i}"), body.boxed());
        req.headers_mut()
            .insert("content-length", "100000".parse().unwrap());
        uploads.push(tokio::spawn(client::plain().request(req)));
        tx.send(Ok(http_body::Frame::data(Bytes::from(vec![b's'; 1000]))))
            .await
            .unwrap();
        trickles.push(tx);
    }
    eventually(10, "cf-eu's uploads hold the whole budget", || async {
        metric(&gw, "osb_gateway_capture_inflight_bytes").await == 200_000
    })
    .await;

    // k8s-eu's first upload finds the budget spent: its body is cut, and
    // that tells cf-eu (over its half) to give back what it has not filled.
    let fast = |n: u32| {
        client::plain().request(put(
            &gw,
            "k8s-eu",
            &format!("fast-{n}"),
            client::bytes(vec![b'f'; 5000]),
        ))
    };
    assert_eq!(fast(1).await.unwrap().status(), 200);
    // cf-eu sends a little more: at that frame its taps give back.
    for tx in &trickles {
        tx.send(Ok(http_body::Frame::data(Bytes::from(vec![b's'; 10]))))
            .await
            .unwrap();
    }
    eventually(10, "cf-eu's unfilled reservations given back", || async {
        metric(&gw, "osb_gateway_capture_inflight_bytes").await < 10_000
    })
    .await;
    // From then on k8s-eu's bodies are kept whole, while cf-eu still uploads.
    for n in 2..5 {
        assert_eq!(fast(n).await.unwrap().status(), 200);
    }

    // cf-eu finishes its uploads; nothing of the budget stays held.
    for tx in trickles {
        tx.send(Ok(http_body::Frame::data(Bytes::from(vec![
            b's';
            100_000 - 1010
        ]))))
        .await
        .unwrap();
    }
    for u in uploads {
        let r = within(10, "cf-eu's upload answered", u)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    eventually(10, "the budget all given back", || async {
        metric(&gw, "osb_gateway_capture_inflight_bytes").await == 0
    })
    .await;
    gw.shutdown().await;

    let recs = local::read_all(&gw.path("data/captures")).unwrap();
    let body = |id: &str| {
        let r = recs.iter().find(|r| r.instance_id == id).unwrap();
        (
            r.request_body.len(),
            r.request_body_size,
            r.request_body_truncated,
        )
    };
    for n in 2..5 {
        assert_eq!(
            body(&format!("fast-{n}")),
            (5000, 5000, false),
            "k8s-eu's body {n} is kept whole"
        );
    }
    assert_eq!(
        body("fast-1"),
        (0, 5000, true),
        "refused while cf-eu held it all"
    );
    for i in 0..2 {
        let (kept, size, cut) = body(&format!("slow-{i}"));
        assert_eq!((size, cut), (100_000, true));
        assert!(kept < 2000, "cf-eu keeps what it had filled: {kept}");
    }
}

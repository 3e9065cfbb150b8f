//! Certificates that change while the gateway serves: reloaded on a file
//! change and on SIGHUP (the handle's `certificates.reload`, which the
//! binary's SIGHUP handler calls), for both listeners, without dropping the
//! connections open; a bad pair keeps the old one. And plain HTTP sent to
//! a TLS port gets a readable 400.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use support::client::{self, Collected};
use support::eventually;
use support::gateway::{Options, TestGateway};
use support::tls::TestCa;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const REGISTRY: &str = support::gateway::CF_EU_REGISTRY_HEAD;

/// Whether a new TLS handshake to `addr` verifies against `ca_pem`.
async fn trusted_by(addr: std::net::SocketAddr, ca_pem: &str) -> bool {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client::tls_config(ca_pem, &[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .is_ok()
}

/// An HTTP/1.1 connection kept open across the reload.
struct Kept(hyper::client::conn::http1::SendRequest<client::ReqBody>);

impl Kept {
    async fn open(addr: std::net::SocketAddr, ca_pem: &str) -> Kept {
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(client::tls_config(ca_pem, &[b"http/1.1"])));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Kept(s)
    }

    async fn get(&mut self, path: &str) -> Collected {
        let req = Request::get(path)
            .header("host", "localhost")
            .header("x-broker-api-version", "2.17")
            .body(client::empty())
            .unwrap();
        client::collect(self.0.send_request(req).await.unwrap()).await
    }
}

async fn tls_gateway() -> TestGateway {
    TestGateway::start(
        REGISTRY,
        Options {
            tls: true,
            listen: "tls_watch_interval = \"100ms\"\n".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Puts a new pair in place the way cert-manager or certbot do: write
/// beside, then rename over.
fn replace_files(gw: &TestGateway, cert: &str, key: &str) {
    for (name, text) in [("gateway.key", key), ("gateway.crt", cert)] {
        let tmp = gw.path(&format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, gw.path(name)).unwrap();
    }
}

#[tokio::test]
async fn a_new_certificate_is_served_after_a_file_change_and_open_connections_stay() {
    let mut gw = tls_gateway().await;
    let old_ca = gw.ca.as_ref().unwrap().pem();
    let admin = gw.handle.as_ref().unwrap().admin_addr.unwrap();
    let mut kept = Kept::open(gw.addr, &old_ca).await;
    assert_eq!(kept.get("/v2/catalog").await.status, 401);
    let mut kept_admin = Kept::open(admin, &old_ca).await;
    assert_eq!(kept_admin.get("/healthz").await.status, 200);
    let before = gw.handle.as_ref().unwrap().certificates.all()[0].not_after();

    let new_ca = TestCa::new("rotated CA");
    let leaf = new_ca.issue();
    replace_files(&gw, &leaf.cert_pem, &leaf.key_pem);
    let new_pem = new_ca.pem();
    eventually(
        5,
        "the platform listener serves the new certificate",
        || {
            let pem = new_pem.clone();
            async move { trusted_by(gw.addr, &pem).await }
        },
    )
    .await;
    // The admin listener shares the files by default: the same swap.
    assert!(
        trusted_by(admin, &new_ca.pem()).await,
        "admin listener rotated too"
    );
    assert!(
        !trusted_by(gw.addr, &old_ca).await,
        "the old certificate is gone"
    );
    // Connections opened before the swap keep working.
    assert_eq!(kept.get("/v2/catalog").await.status, 401);
    assert_eq!(kept_admin.get("/healthz").await.status, 200);
    let after = gw.handle.as_ref().unwrap().certificates.all()[0].not_after();
    assert!(after > 0 && before > 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_bad_certificate_keeps_the_old_one_and_says_why() {
    let mut gw = tls_gateway().await;
    let ca = gw.ca.as_ref().unwrap().pem();
    let certs = gw.handle.as_ref().unwrap().certificates.clone();
    let listen = certs.listen.clone().unwrap();

    // Half-written: a truncated certificate.
    let good = std::fs::read_to_string(gw.path("gateway.crt")).unwrap();
    std::fs::write(gw.path("gateway.crt"), &good[..good.len() / 2]).unwrap();
    let e = listen.reload(true).unwrap_err();
    assert!(
        e.contains("listen.tls_cert") && e.contains("gateway.crt"),
        "{e}"
    );
    // A certificate with another key.
    let other = TestCa::new("other").issue();
    std::fs::write(gw.path("gateway.crt"), &other.cert_pem).unwrap();
    let e = listen.reload(true).unwrap_err();
    assert!(e.contains("do not fit"), "{e}");
    // SIGHUP's path logs and keeps serving.
    certs.reload("SIGHUP").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        trusted_by(gw.addr, &ca).await,
        "the old certificate still serves"
    );

    // A good pair on SIGHUP is taken.
    let next = TestCa::new("next CA");
    let leaf = next.issue();
    std::fs::write(gw.path("gateway.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(gw.path("gateway.key"), &leaf.key_pem).unwrap();
    certs.reload("SIGHUP").await;
    assert!(trusted_by(gw.addr, &next.pem()).await);
    gw.shutdown().await;
}

#[tokio::test]
async fn plain_http_to_a_tls_port_gets_a_readable_400() {
    let mut gw = tls_gateway().await;
    for addr in [gw.addr, gw.handle.as_ref().unwrap().admin_addr.unwrap()] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v2/catalog HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
        assert!(answer.contains("HTTPS"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "PlainHttpToHttpsPort");
    }
    // TLS still works on the same port.
    assert!(trusted_by(gw.addr, &gw.ca.as_ref().unwrap().pem()).await);
    gw.shutdown().await;
}

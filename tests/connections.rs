//! What keeps silence, slowness and floods of connections from using up
//! the listeners, end to end against a real gateway and broker: the
//! deadline to a connection's first request, the header read timeout of
//! every later request, the keep-alive idle timeout, and the connection
//! caps.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::broker::{full, Broker};
use support::client::{self, platform};
use support::gateway::{Options, TestGateway};
use support::one_broker::{leaky_broker, registry};
use support::within;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Reads until the gateway closes the connection; fails after `secs`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, secs: u64, what: &str) {
    let mut buf = [0u8; 4096];
    within(secs, what, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
}

/// One HTTP/1.1 catalog request over a connection from `source`; the
/// status line.
async fn catalog_from(gw: &TestGateway, source: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(gw.addr).await.unwrap();
    let auth = platform("cf-eu");
    s.write_all(
        format!(
            "GET /private/pg/v2/catalog HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\nX-Broker-API-Version: 2.17\r\nConnection: close\r\n\r\n",
            auth.to_str().unwrap()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = within(10, "the answer", s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

async fn limited_gateway(b: &Broker, listen: &str, tls: bool) -> TestGateway {
    TestGateway::start(
        &registry(&b.url("")),
        Options {
            listen: listen.into(),
            tls,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    // A broker slower than the keep-alive timeout: its request is in
    // flight, so its connection is not idle.
    let slow = Broker::http(Arc::new(|_req| {
        Box::pin(async {
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            full(200, r#"{"services":[]}"#)
        })
    }))
    .await;
    let gw = limited_gateway(
        &slow,
        "header_read_timeout = \"300ms\"\nkeepalive_timeout = \"500ms\"\n",
        false,
    )
    .await;
    for (what, bytes) in [
        ("silence", &b""[..]),
        ("half an HTTP/2 preface", &b"PRI * HTTP/2.0\r\n"[..]),
        (
            "a request line without headers' end",
            &b"GET /private/pg/v2/catalog HTTP/1.1\r\nHost: x\r\n"[..],
        ),
        ("one byte", &b"G"[..]),
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        closed_within(&mut s, 5, what).await;
    }
    // A request slower than keepalive_timeout is answered ...
    assert!(catalog_from(&gw, "127.0.0.1").await.contains(" 200 "));
    // ... and a kept-alive connection with nothing in flight is closed.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(keep_alive_catalog().as_bytes()).await.unwrap();
    closed_within(&mut s, 10, "an idle kept-alive connection").await;
}

#[tokio::test]
async fn silence_after_the_tls_handshake_is_closed() {
    let b = Broker::http(leaky_broker()).await;
    let gw = limited_gateway(&b, "header_read_timeout = \"300ms\"\n", true).await;
    let ca = gw.ca.as_ref().unwrap().pem();
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(client::tls_config(&ca, &[alpn])));
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let mut tls = connector
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        closed_within(&mut tls, 5, "silence after the handshake").await;
    }
    // A TLS handshake that never starts is cut by the same deadline.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    closed_within(&mut s, 5, "no ClientHello").await;
}

#[tokio::test]
async fn one_client_cannot_take_every_connection() {
    let b = Broker::http(leaky_broker()).await;
    let gw = limited_gateway(
        &b,
        "header_read_timeout = \"30s\"\nmax_connections_per_client = 4\nmax_connections = 6\n",
        false,
    )
    .await;
    // Four silent connections from one address take its share ...
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    // NB: accepted in order, so the fifth is seen after the four.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut fifth = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    closed_within(&mut fifth, 5, "a fifth connection from the same address").await;
    // ... and a platform elsewhere is still served.
    assert!(catalog_from(&gw, "127.0.0.2").await.contains(" 200 "));
    // The global cap: two more from other addresses fill it.
    let other = |ip: &'static str| async move {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        s.connect(gw.addr).await.unwrap()
    };
    held.push(other("127.0.0.3").await);
    held.push(other("127.0.0.4").await);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut over = other("127.0.0.5").await;
    closed_within(&mut over, 5, "past max_connections").await;
    // A closed connection gives its place back.
    held.truncate(3);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(catalog_from(&gw, "127.0.0.1").await.contains(" 200 "));
}

/// A kept-alive HTTP/1.1 catalog request (no `Connection: close`).
fn keep_alive_catalog() -> String {
    format!(
        "GET /private/pg/v2/catalog HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\nX-Broker-API-Version: 2.17\r\n\r\n",
        platform("cf-eu").to_str().unwrap()
    )
}

/// Reads one response (its head and a `Content-Length` or chunked body)
/// off a kept-alive connection; its status line.
async fn one_response(s: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    within(10, "a response", async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before a whole response: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let head = text[..end].to_ascii_lowercase();
            let body = &text[end + 4..];
            let whole = match head.lines().find_map(|l| l.strip_prefix("content-length:")) {
                Some(n) => body.len() >= n.trim().parse::<usize>().unwrap(),
                None => body.ends_with("0\r\n\r\n"),
            };
            if whole {
                return;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A gateway with `listen` settings and a connection that has had one
/// answered request and is kept alive (the broker lives as long as it).
async fn after_one_request(listen: &str) -> (Broker, TestGateway, tokio::net::TcpStream) {
    let b = Broker::http(leaky_broker()).await;
    let gw = limited_gateway(&b, listen, false).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(keep_alive_catalog().as_bytes()).await.unwrap();
    assert!(one_response(&mut s).await.contains(" 200 "));
    (b, gw, s)
}

#[tokio::test]
async fn a_kept_alive_connection_lives_for_keepalive_timeout_not_the_header_read_timeout() {
    // NB: hyper's own header read timeout used to run while a connection
    // waited for its next request: kept-alive connections were closed after
    // header_read_timeout (30 s by default), whatever keepalive_timeout said.
    let (_b, _gw, mut s) =
        after_one_request("header_read_timeout = \"300ms\"\nkeepalive_timeout = \"2s\"\n").await;
    // Idle three header read timeouts long: still open, and serving.
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(keep_alive_catalog().as_bytes()).await.unwrap();
    assert!(
        one_response(&mut s).await.contains(" 200 "),
        "a second request after 900 ms idle (keepalive_timeout 2s)"
    );
    // Then idle past keepalive_timeout: closed.
    let idle = std::time::Instant::now();
    closed_within(&mut s, 10, "a connection idle past keepalive_timeout").await;
    assert!(
        idle.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}, before keepalive_timeout",
        idle.elapsed()
    );
}

#[tokio::test]
async fn a_later_request_dribbled_byte_by_byte_is_closed_after_the_header_read_timeout() {
    let (_b, _gw, mut s) =
        after_one_request("header_read_timeout = \"500ms\"\nkeepalive_timeout = \"30s\"\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next request's head, a byte every 50 ms, never finished.
    let started = std::time::Instant::now();
    let dribble = keep_alive_catalog();
    let closed = within(10, "a dribbled request head is cut", async {
        for byte in dribble.as_bytes().iter().take(dribble.len() - 2) {
            if s.write_all(&[*byte]).await.is_err() {
                return true;
            }
            let mut probe = [0u8; 64];
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(50), s.read(&mut probe)).await
            {
                if matches!(r, Ok(0) | Err(_)) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert!(closed);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "closed after {took:?}: the header read timeout is 500ms, keepalive 30s"
    );
}

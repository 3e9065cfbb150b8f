//! Clients toward the gateway: HTTP/1.1 plain, HTTP/1.1 or HTTP/2 over TLS.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::gateway::PLATFORM_PW;

pub type ReqBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn basic(user: &str, pw: &str) -> HeaderValue {
    let t = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    HeaderValue::from_str(&format!("Basic {t}")).unwrap()
}

/// `Authorization` for a test platform with the shared password.
pub fn platform(user: &str) -> HeaderValue {
    basic(user, PLATFORM_PW)
}

pub fn empty() -> ReqBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub fn bytes(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A plain HTTP/1.1 client.
pub fn plain() -> Client<HttpConnector, ReqBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A collected response.
#[derive(Debug)]
pub struct Collected {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Collected {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts an OSB error body and returns its description.
    pub fn osb_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {:?}", self.body);
        assert_eq!(self.headers["content-type"], "application/json");
        let v = self.json();
        assert_eq!(v["error"], code, "{v}");
        v["description"]
            .as_str()
            .expect("description is a string")
            .to_string()
    }
}

pub async fn collect(resp: Response<Incoming>) -> Collected {
    let (parts, body) = resp.into_parts();
    Collected {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// GET `url` with optional `Authorization`, over plain HTTP/1.1.
pub async fn get(url: &str, auth: Option<HeaderValue>) -> Collected {
    let mut b = Request::get(url).header("x-broker-api-version", "2.17");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    collect(plain().request(b.body(empty()).unwrap()).await.unwrap()).await
}

/// `method url` with a JSON (or empty) body and optional `Authorization`,
/// as a platform sends OSB requests.
pub async fn send(method: &str, url: &str, auth: Option<HeaderValue>, body: &str) -> Collected {
    let mut b = Request::builder()
        .method(method)
        .uri(url)
        .header("x-broker-api-version", "2.17")
        .header("content-type", "application/json");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let body = if body.is_empty() {
        empty()
    } else {
        bytes(body.to_string())
    };
    collect(plain().request(b.body(body).unwrap()).await.unwrap()).await
}

/// An admin API call with a bearer token and an optional JSON body.
pub async fn admin(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Collected {
    let mut b = Request::builder().method(method).uri(url);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => bytes(v.to_string()),
        None => empty(),
    };
    collect(plain().request(b.body(body).unwrap()).await.unwrap()).await
}

/// Like [`get`], but `None` when the request fails (for polling a server
/// that may not listen yet).
pub async fn try_get(url: &str, auth: Option<HeaderValue>) -> Option<Collected> {
    let mut b = Request::get(url).header("x-broker-api-version", "2.17");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let resp = plain().request(b.body(empty()).unwrap()).await.ok()?;
    Some(collect(resp).await)
}

/// A rustls client config trusting `ca_pem`, offering `alpn`.
pub fn tls_config(ca_pem: &str, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    c
}

/// Sends one request over a fresh TLS connection; `h2` selects HTTP/2 by ALPN.
/// Returns the response and the negotiated ALPN protocol.
pub async fn send_tls(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    h2: bool,
    req: Request<ReqBody>,
) -> (Collected, Option<Vec<u8>>) {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(ca_pem, alpn)));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let negotiated = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    };
    (collect(resp).await, negotiated)
}

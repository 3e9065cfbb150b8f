//! A real broker on 127.0.0.1:0 (plain HTTP or TLS) with a handler closure;
//! every request's head is recorded for the test to inspect.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::tls::Issued;

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// What the broker saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

pub struct Broker {
    pub addr: SocketAddr,
    pub tls: bool,
    /// Connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn full(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(body.into()).map_err(|e| match e {}).boxed())
        .unwrap()
}

/// A handler answering every request with `status` and `body`.
pub fn answer(status: u16, body: &'static str) -> Handler {
    Arc::new(move |_req| Box::pin(async move { full(status, body) }))
}

impl Broker {
    /// A plain-HTTP broker.
    pub async fn http(handler: Handler) -> Broker {
        Self::start(None, handler).await
    }

    /// A TLS broker presenting `cert`.
    pub async fn https(cert: &Issued, handler: Handler) -> Broker {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        Self::start(Some(TlsAcceptor::from(Arc::new(cfg))), handler).await
    }

    async fn start(tls: Option<TlsAcceptor>, handler: Handler) -> Broker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let is_tls = tls.is_some();
        let seen2 = seen.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let handler = handler.clone();
                let seen = seen2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        seen.lock().unwrap().push(Seen {
                            method: req.method().clone(),
                            uri: req.uri().clone(),
                            headers: req.headers().clone(),
                        });
                        let h = handler.clone();
                        async move { Ok::<_, Infallible>(h(req).await) }
                    });
                    let b = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acc) => {
                            if let Ok(s) = acc.accept(stream).await {
                                let _ = b.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Broker {
            addr,
            tls: is_tls,
            connections,
            seen,
            task,
        }
    }

    /// Base URL (with an optional base path).
    pub fn url(&self, base: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{base}", self.addr.port())
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The only request seen.
    pub fn one(&self) -> Seen {
        let s = self.seen();
        assert_eq!(
            s.len(),
            1,
            "expected exactly one request at the broker, saw {s:?}"
        );
        s.into_iter().next().unwrap()
    }
}

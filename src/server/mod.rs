//! The listeners both planes run on (the platform proxy and the admin API):
//! TCP accept, TLS (tokio-rustls, ALPN h2 and http/1.1), HTTP/1.1 and
//! HTTP/2 (`protocol`: hyper's own server for the protocol the connection
//! speaks), and graceful shutdown (stop accepting, let requests in flight
//! finish within a bound).
//!
//! Connection limits (caps, the first-request deadline, the header read
//! and keep-alive idle timeouts) are in `limits`.
//!
//! Arrows: uses `body` and `config`; `lib.rs` starts one [`serve`] per
//! listener with a [`Handler`] (`proxy::Proxy`, `admin::Admin`).

mod limits;
mod protocol;
pub mod tls;

pub use tls::{Certificates, Certs};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::body::BoxError;
use crate::config::ConnectionLimits;
use limits::{Admission, Tracked, Verdict, Watched};
use protocol::{Proto, Servers};

/// Something that answers HTTP requests: the proxy, or the admin plane.
pub trait Handler: Clone + Send + Sync + 'static {
    /// The body of its answers.
    type Body: http_body::Body<Data = bytes::Bytes, Error = BoxError> + Send + 'static;

    /// Answers one request from `client` (the peer's address). Never
    /// fails: every error is an answer.
    fn call(
        &self,
        req: http::Request<hyper::body::Incoming>,
        client: std::net::IpAddr,
    ) -> impl std::future::Future<Output = http::Response<Self::Body>> + Send;
}

/// Connection counters of one listener (gauges and counters on /metrics,
/// and the admin status view).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections accepted (admitted) since start.
    pub accepted: AtomicU64,
    /// Connections refused by the connection caps.
    pub refused: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub handshake_failures: AtomicU64,
    /// Plain HTTP requests sent to a TLS port (answered 400).
    pub plain_http: AtomicU64,
}

/// Counts one open connection for as long as it lives.
struct OpenGuard(Arc<ListenerStats>);

impl OpenGuard {
    fn new(stats: &Arc<ListenerStats>) -> Self {
        stats.accepted.fetch_add(1, Relaxed);
        stats.open.fetch_add(1, Relaxed);
        OpenGuard(stats.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// Listener settings.
pub struct ServeOptions {
    /// TLS, or `None` for plain text (development mode only; checked by config).
    pub tls: Option<TlsAcceptor>,
    /// Limit from accept to the first request's headers (TLS handshake,
    /// protocol detection, HTTP/2 preface), and on reading each later
    /// HTTP/1 request's headers from their first byte.
    pub header_read_timeout: Duration,
    /// Caps and the keep-alive idle timeout.
    pub limits: ConnectionLimits,
    /// How long requests in flight get after shutdown begins.
    pub grace: Duration,
    /// Called when the grace period is over, just before the connections
    /// still open are closed (the proxy marks their exchanges as stopped
    /// by the gateway).
    pub on_grace_over: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Where the connection counters go.
    pub stats: Arc<ListenerStats>,
}

/// Accepts connections for `handler` until `shutdown` turns true, then drains.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: H,
    opts: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let servers = Arc::new(Servers::new());
    let graceful = GracefulShutdown::new();
    // NB: the connection tasks are kept, so that at the end of the grace
    // period they are closed here, and the exchanges they carry end (and
    // are recorded) before the capture pipeline stops, not when the
    // runtime is dropped after it.
    let mut connections = tokio::task::JoinSet::new();
    let admission = Admission::new(opts.limits);
    let (header_read, keepalive) = (opts.header_read_timeout, opts.limits.keepalive_timeout);
    let mut accept_errors: (u64, Duration) = (0, Duration::ZERO);
    let accept_warned = std::sync::Mutex::new(None);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // NB: EMFILE and friends: back off (50 ms doubling to 1 s)
                    // instead of spinning, and say so every 10 s at most.
                    accept_errors.0 += 1;
                    accept_errors.1 = (accept_errors.1 * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
                    if limits::due(&accept_warned) {
                        tracing::warn!(error = %e, failures = accept_errors.0, backoff_ms = accept_errors.1.as_millis() as u64, "accept failed");
                    }
                    tokio::time::sleep(accept_errors.1).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        accept_errors.1 = Duration::ZERO;
        let Some(admitted) = admission.admit(peer.ip()) else {
            opts.stats.refused.fetch_add(1, Relaxed);
            drop(stream);
            continue;
        };
        let open = OpenGuard::new(&opts.stats);
        let stats = opts.stats.clone();
        let accepted = tokio::time::Instant::now();
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let servers = servers.clone();
        let handler = handler.clone();
        let tls = opts.tls.clone();
        let first_deadline = accepted + opts.header_read_timeout;
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _admitted = (admitted, open);
            let activity = limits::Activity::new(header_read, keepalive);
            let svc = {
                let activity = activity.clone();
                service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    let request = activity.begin(req.version());
                    async move {
                        let resp = handler.call(req, peer.ip()).await;
                        Ok::<_, std::convert::Infallible>(resp.map(|b| Tracked::new(b, request)))
                    }
                })
            };
            // NB: one deadline from accept to the first request: the TLS
            // handshake gets what is left of it, and the watchdog below
            // closes a connection that sends no request headers by then
            // (after a handshake, mid-preface, or on plain TCP alike).
            let watched = async {
                match tls {
                    Some(_) if plain_http(&stream).await => {
                        stats.plain_http.fetch_add(1, Relaxed);
                        refuse_plain_http(stream, first_deadline).await;
                        Ok(())
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout_at(first_deadline, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls_stream)) => {
                                let proto =
                                    Proto::from_alpn(tls_stream.get_ref().1.alpn_protocol());
                                let io = Watched::new(tls_stream, activity.clone());
                                servers.serve(io, proto, svc, watcher).await
                            }
                            Ok(Err(e)) => {
                                stats.handshake_failures.fetch_add(1, Relaxed);
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => {
                                stats.handshake_failures.fetch_add(1, Relaxed);
                                tracing::debug!(%peer, "TLS handshake timed out");
                                Ok(())
                            }
                        }
                    }
                    None => {
                        let proto = Proto::sniff(&stream).await;
                        let io = Watched::new(stream, activity.clone());
                        servers.serve(io, proto, svc, watcher).await
                    }
                }
            };
            tokio::pin!(watched);
            let result = loop {
                let wake = match activity.check(first_deadline) {
                    Verdict::Wait(t) => t,
                    Verdict::Close(why) => {
                        tracing::debug!(%peer, why, "connection closed");
                        break Ok(());
                    }
                };
                tokio::select! {
                    r = &mut watched => break r,
                    _ = tokio::time::sleep_until(wake) => {}
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let started = tokio::time::Instant::now();
    tracing::info!(
        grace_ms = opts.grace.as_millis() as u64,
        connections = connections.len(),
        "stopped accepting; waiting for requests in flight"
    );
    if tokio::time::timeout(opts.grace, graceful.shutdown())
        .await
        .is_err()
    {
        if let Some(f) = &opts.on_grace_over {
            f();
        }
        tracing::warn!(
            grace_ms = opts.grace.as_millis() as u64,
            waited_ms = started.elapsed().as_millis() as u64,
            connections = connections.len(),
            "grace period over; closing the connections still open (their exchanges are recorded as stopped by the gateway)"
        );
    }
    // NB: after a clean drain only connections still in their TLS
    // handshake are left (GracefulShutdown does not know them yet).
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Whether a connection to a TLS port opens with plain HTTP (a method
/// name) instead of a TLS handshake (a record starting 0x16).
async fn plain_http(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase())
}

/// Answers plain HTTP sent to a TLS port with a readable 400 (as nginx
/// does), in the OSB error shape, instead of TLS alert bytes.
async fn refuse_plain_http(mut stream: tokio::net::TcpStream, deadline: tokio::time::Instant) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const BODY: &str = "{\"error\":\"PlainHttpToHttpsPort\",\"description\":\"this port speaks HTTPS only: the request was sent as plain HTTP; use an https:// URL\"}\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout_at(deadline, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // NB: read what the client sent (a bounded amount) before closing,
        // or the kernel answers the unread bytes with a reset and the
        // client may never see the 400.
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left -= n.min(left),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Resolves once shutdown was requested (or the sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // NB: the `Ref` that `wait_for` returns is not `Send`; drop it here.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

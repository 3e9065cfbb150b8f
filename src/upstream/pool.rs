//! A keep-alive pool of HTTP/1.1 connections to one upstream origin, on
//! hyper's connection API.
//!
//! NB: this replaced hyper-util's legacy `Client` on the proxy path. Per
//! request that client locked its pool twice, built a lazy connect future
//! even when an idle connection was there, and spawned a task to put the
//! connection back once the response body was read: 8-10 µs of a 40 µs
//! request in the load benchmark. Here a request pops an idle connection
//! from a lock-free queue, sends on it, and the response body puts the
//! connection back itself when it ends (a task only in the rare case where
//! the connection is not ready yet at that moment).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use http::header::{HeaderValue, HOST};
use http::uri::Uri;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use tokio::time::Instant;
use tower_service::Service;

use super::Connector;
use crate::body::BoxError;

/// The body the gateway's pools send: boxed, so `upstream` names no body
/// type of the proxy or of capture (the proxy's captured body, the catalog
/// refresher's empty one).
///
/// NB: one allocation per forwarded request (~100 bytes); the load
/// benchmark's proxy CPU per request did not move beyond its noise.
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: refused, unreachable, connect timeout, TLS failure.
    #[error("cannot connect")]
    Connect(#[source] BoxError),
    /// The connection failed while sending or before the response head.
    #[error("request failed")]
    Request(#[source] hyper::Error),
}

impl SendError {
    /// `true` when no connection could be made.
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

struct Idle<B> {
    tx: SendRequest<B>,
    since: Instant,
}

struct Inner<B> {
    connector: Connector,
    /// `scheme://authority/`, what the connector is called with.
    origin: Uri,
    /// The `Host` header for every request.
    host: HeaderValue,
    idle: ArrayQueue<Idle<B>>,
    idle_timeout: Duration,
    /// Limit on TCP connect plus the TLS handshake.
    connect_timeout: Duration,
    builder: Builder,
    reaper: AtomicBool,
}

/// Connections to one upstream origin (`scheme://host:port`), sending
/// request bodies of type `B`.
pub struct Pool<B = RequestBody> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<B> std::fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.inner.origin)
            .field("idle", &self.inner.idle.len())
            .finish()
    }
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A pool toward `origin` (`scheme://host[:port]`), keeping at most
    /// `max_idle` idle connections, each for at most `idle_timeout`; a new
    /// connection (TCP connect and TLS handshake together) must be ready
    /// within `connect_timeout`.
    ///
    /// # Errors
    /// When `origin` has no scheme or host.
    pub fn new(
        connector: Connector,
        origin: &str,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let uri: Uri = origin
            .parse()
            .map_err(|e| format!("{origin:?} is not a URL: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!("{origin:?} is not an absolute URL"));
        };
        let default_port = if *scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        let host = match authority.port_u16() {
            Some(p) if p != default_port => format!("{}:{p}", authority.host()),
            _ => authority.host().to_string(),
        };
        let host = HeaderValue::try_from(host).map_err(|e| format!("{origin:?}: {e}"))?;
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("{origin:?}: {e}"))?;
        let mut builder = Builder::new();
        builder.max_buf_size(crate::body::MAX_CONNECTION_BUF);
        Ok(Pool {
            inner: Arc::new(Inner {
                connector,
                origin,
                host,
                idle: ArrayQueue::new(max_idle.max(1)),
                idle_timeout,
                connect_timeout,
                builder,
                reaper: AtomicBool::new(false),
            }),
        })
    }

    /// Sends `req` (its URI in origin form: `/path?query`) on an idle
    /// connection or a new one, and returns the response head with a body
    /// that puts the connection back when it ends.
    ///
    /// A request that could not be written on a pooled connection (closed
    /// by the broker meanwhile) is retried on another; one that was written
    /// is never resent.
    ///
    /// # Errors
    /// [`SendError`] when no connection could be made or the exchange failed.
    pub async fn send(&self, mut req: Request<B>) -> Result<Response<PooledBody<B>>, SendError> {
        req.headers_mut()
            .entry(HOST)
            .or_insert_with(|| self.inner.host.clone());
        loop {
            let (mut tx, reused) = match self.checkout() {
                Some(tx) => (tx, true),
                None => (self.connect().await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let pool = Arc::downgrade(&self.inner);
                    let body = PooledBody {
                        inner: body,
                        conn: Some(Release { tx, pool }),
                    };
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// The number of idle connections (for tests and debugging).
    pub fn idle(&self) -> usize {
        self.inner.idle.len()
    }

    fn checkout(&self) -> Option<SendRequest<B>> {
        while let Some(idle) = self.inner.idle.pop() {
            if idle.tx.is_ready() && idle.since.elapsed() < self.inner.idle_timeout {
                return Some(idle.tx);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<B>, SendError> {
        let mut connector = self.inner.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        // NB: the connector's own timeout covers the TCP connect only; a
        // broker that accepts and never speaks TLS would hold the request
        // until the response timeout (125 s by default).
        let limit = self.inner.connect_timeout;
        let io = match tokio::time::timeout(limit, connector.call(self.inner.origin.clone())).await
        {
            Ok(r) => r.map_err(SendError::Connect)?,
            Err(_) => {
                return Err(SendError::Connect(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("TCP connect and TLS handshake did not finish within {limit:?}"),
                ))))
            }
        };
        let (tx, conn) = self
            .inner
            .builder
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }
}

impl<B: Send + 'static> Inner<B> {
    /// Keeps a ready connection for the next request.
    fn put(self: &Arc<Self>, tx: SendRequest<B>) {
        let idle = Idle {
            tx,
            since: Instant::now(),
        };
        // NB: a full queue drops (and so closes) the connection.
        if self.idle.push(idle).is_ok() && !self.reaper.swap(true, Ordering::Relaxed) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(reap(Arc::downgrade(self)));
            }
        }
    }
}

/// Closes connections idle longer than the pool's idle timeout, until the
/// pool is gone.
async fn reap<B>(pool: Weak<Inner<B>>) {
    let every = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(p) = pool.upgrade() else { return };
        for _ in 0..p.idle.len() {
            let Some(idle) = p.idle.pop() else { break };
            if idle.since.elapsed() < p.idle_timeout && !idle.tx.is_closed() {
                let _ = p.idle.push(idle);
            }
        }
    }
}

/// What a response body hands back to its pool when it ends.
struct Release<B: Send + 'static> {
    tx: SendRequest<B>,
    pool: Weak<Inner<B>>,
}

impl<B: Send + 'static> Release<B> {
    fn release(mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if self.tx.is_ready() {
            pool.put(self.tx);
        } else if let (false, Ok(rt)) = (self.tx.is_closed(), tokio::runtime::Handle::try_current())
        {
            // NB: the connection task has not yet seen the exchange end
            // (or the request body is still being sent): wait for it.
            rt.spawn(async move {
                if self.tx.ready().await.is_ok() {
                    pool.put(self.tx);
                }
            });
        }
    }
}

/// The broker's response body; its connection goes back to the pool when
/// the body was read to its end, and is closed when it was not.
pub struct PooledBody<B: Send + 'static = RequestBody> {
    inner: Incoming,
    conn: Option<Release<B>>,
}

impl<B: Send + 'static> Body for PooledBody<B> {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(c) = self.conn.take() {
                    c.release();
                }
            }
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Send + 'static> Drop for PooledBody<B> {
    fn drop(&mut self) {
        // NB: hyper does not poll a body whose `is_end_stream()` is already
        // true (empty, or its last frame read): that one ended too.
        if let Some(c) = self.conn.take() {
            if self.inner.is_end_stream() {
                c.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolSettings;
    use crate::upstream::{ClientFactory, Trust};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    /// A loopback HTTP/1.1 server answering every request with its body,
    /// counting the connections it accepted.
    async fn echo() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(Response::new(Full::new(body)))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), accepted)
    }

    #[tokio::test]
    async fn a_pool_of_full_bodies_reuses_its_connection() {
        let (origin, accepted) = echo().await;
        let connector = ClientFactory::new(
            PoolSettings::default(),
            Default::default(),
            Default::default(),
        )
        .connector(&Trust::Development, Duration::from_secs(1), true)
        .unwrap();
        let pool: Pool<Full<Bytes>> = Pool::new(
            connector,
            &origin,
            4,
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .unwrap();
        for body in ["one", "two", "three"] {
            let req = Request::post("/echo")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let resp = pool.send(req).await.unwrap();
            let got = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(got, body);
            // NB: the connection goes back when the body ends; the next
            // checkout sees it once hyper's task has read the end too.
            for _ in 0..100 {
                if pool.idle() == 1 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for three requests"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure() {
        // NB: bound but not listening, and held: no parallel test can take
        // the port, and a connect is always refused.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let connector = ClientFactory::new(
            PoolSettings::default(),
            Default::default(),
            Default::default(),
        )
        .connector(&Trust::Development, Duration::from_secs(1), true)
        .unwrap();
        let pool: Pool<Full<Bytes>> = Pool::new(
            connector,
            &format!("http://{addr}"),
            4,
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .unwrap();
        let Err(err) = pool
            .send(Request::get("/").body(Full::new(Bytes::new())).unwrap())
            .await
        else {
            panic!("a refused port answered");
        };
        let (kind, cause) = err.failure();
        assert_eq!(kind, crate::upstream::Failure::Connect, "{cause}");
        assert!(cause.starts_with("cannot connect"), "{cause}");
    }
}

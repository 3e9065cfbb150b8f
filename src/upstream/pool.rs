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
use crate::body::{BoxError, ForwardBody};

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

struct Idle {
    tx: SendRequest<ForwardBody>,
    since: Instant,
}

struct Inner {
    connector: Connector,
    /// `scheme://authority/`, what the connector is called with.
    origin: Uri,
    /// The `Host` header for every request.
    host: HeaderValue,
    idle: ArrayQueue<Idle>,
    idle_timeout: Duration,
    builder: Builder,
    reaper: AtomicBool,
}

/// Connections to one upstream origin (`scheme://host:port`).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.inner.origin)
            .field("idle", &self.inner.idle.len())
            .finish()
    }
}

impl Pool {
    /// A pool toward `origin` (`scheme://host[:port]`), keeping at most
    /// `max_idle` idle connections, each for at most `idle_timeout`.
    ///
    /// # Errors
    /// When `origin` has no scheme or host.
    pub fn new(
        connector: Connector,
        origin: &str,
        max_idle: usize,
        idle_timeout: Duration,
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
    pub async fn send(
        &self,
        mut req: Request<ForwardBody>,
    ) -> Result<Response<PooledBody>, SendError> {
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
                    let body = PooledBody {
                        inner: body,
                        conn: Some(Release {
                            tx,
                            pool: Arc::downgrade(&self.inner),
                        }),
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

    fn checkout(&self) -> Option<SendRequest<ForwardBody>> {
        while let Some(idle) = self.inner.idle.pop() {
            if idle.tx.is_ready() && idle.since.elapsed() < self.inner.idle_timeout {
                return Some(idle.tx);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<ForwardBody>, SendError> {
        let mut connector = self.inner.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.inner.origin.clone())
            .await
            .map_err(SendError::Connect)?;
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

impl Inner {
    /// Keeps a ready connection for the next request.
    fn put(self: &Arc<Self>, tx: SendRequest<ForwardBody>) {
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
async fn reap(pool: Weak<Inner>) {
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
struct Release {
    tx: SendRequest<ForwardBody>,
    pool: Weak<Inner>,
}

impl Release {
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
pub struct PooledBody {
    inner: Incoming,
    conn: Option<Release>,
}

impl Body for PooledBody {
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

impl Drop for PooledBody {
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

//! The response body the platform receives, and the exchange log line that
//! is written exactly once when it ends (completed, failed or abandoned).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{BoxError, IdleTimeout, TimedBody};
use crate::osb::Operation;

/// What the log line says about an exchange. Filled in as the exchange goes;
/// written once, on drop (pingora's `logging` phase: once, success or failure).
pub(crate) struct ExchangeLog {
    pub start: Instant,
    pub request_id: String,
    pub method: Method,
    pub path: String,
    pub operation: Operation,
    pub platform: Option<Arc<str>>,
    pub location: Option<String>,
    pub broker: Option<String>,
    pub status: Option<StatusCode>,
    /// `None` until the exchange ended; `aborted` if dropped before that.
    pub outcome: Option<&'static str>,
    pub error: Option<String>,
}

impl ExchangeLog {
    fn finish_body(&mut self, err: Option<&BoxError>) {
        if self.outcome.is_some() {
            return;
        }
        match err {
            None => {
                let broker_error = self
                    .status
                    .is_some_and(|s| s.is_client_error() || s.is_server_error());
                self.outcome = Some(if broker_error { "broker_error" } else { "ok" });
            }
            Some(e) => {
                let timeout = e.is::<IdleTimeout>();
                self.outcome = Some(if timeout { "timeout" } else { "upstream_error" });
                self.error = Some(format!("response body: {e}"));
            }
        }
    }
}

impl Drop for ExchangeLog {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or("aborted");
        let millis = self.start.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "osb_gateway::exchange",
            request_id = %self.request_id,
            platform = self.platform.as_deref().unwrap_or("-"),
            location = self.location.as_deref().unwrap_or("-"),
            broker = self.broker.as_deref().unwrap_or("-"),
            operation = self.operation.as_str(),
            method = %self.method,
            path = %self.path,
            status = self.status.map(|s| s.as_u16()).unwrap_or(0),
            outcome,
            duration_ms = format_args!("{millis:.3}"),
            error = self.error.as_deref().unwrap_or(""),
            "exchange"
        );
    }
}

enum Kind {
    Upstream(TimedBody<Incoming>),
    Synthetic(Option<Bytes>),
}

/// Either the broker's body, streamed, or a body the gateway wrote.
pub struct ResponseBody {
    kind: Kind,
    log: Option<ExchangeLog>,
}

impl ResponseBody {
    pub(crate) fn upstream(body: TimedBody<Incoming>, log: ExchangeLog) -> Self {
        ResponseBody {
            kind: Kind::Upstream(body),
            log: Some(log),
        }
    }

    pub(crate) fn synthetic(bytes: Bytes, mut log: ExchangeLog) -> Self {
        log.outcome.get_or_insert("rejected");
        ResponseBody {
            kind: Kind::Synthetic(Some(bytes)),
            log: Some(log),
        }
    }

    /// A body without a log line (admin or internal answers).
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Synthetic(Some(bytes)),
            log: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match &mut this.kind {
            Kind::Synthetic(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(log) = &mut this.log {
                            log.finish_body(None);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        if let Some(log) = &mut this.log {
                            log.finish_body(Some(e));
                        }
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Synthetic(b) => b.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Synthetic(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Synthetic(None) => SizeHint::with_exact(0),
            Kind::Upstream(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // NB: hyper does not poll a body whose `is_end_stream()` is already
        // true (empty or fully read), so "ended" is also judged here.
        if let (Some(log), Kind::Upstream(body)) = (&mut self.log, &self.kind) {
            if body.is_end_stream() {
                log.finish_body(None);
            }
        }
    }
}

//! [`Exchange`]: one platform request from arrival to its end. It is owned
//! by the handler until the request is forwarded, then shared (`Arc`) with
//! the request and response body taps. When the last holder lets go, `Drop`
//! writes the exchange's log line and hands one [`RawExchange`] to the
//! capture queue: exactly once, whether the broker answered, the gateway
//! refused, the upstream failed or the platform went away (pingora's
//! `logging` phase; linkerd's `BodyWithEosFn::Cancelled`).
//!
//! The exchange is shared from its start; each part learnt later (the
//! [`Routing`], the response head, each body) is written once through a
//! `OnceLock`: no lock is taken per frame, and none on the data path at all.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use http::{HeaderMap, Method, StatusCode};
use tokio::time::Instant;
use uuid::Uuid;

use super::body::Tap;
use super::budget::Account;
use super::headers::Headers;
use super::record::{self, BodyData, Outcome, RawExchange};
use super::CaptureTx;
use crate::metrics::RouteStats;
use crate::osb::Operation;
use crate::upstream::Failure;

/// Which body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Platform → broker.
    Request,
    /// Broker → platform.
    Response,
}

/// How a body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// Read to the end.
    Complete,
    /// The source failed (`timeout`: an idle timeout).
    Error {
        /// What failed.
        cause: String,
        /// An idle timeout rather than a connection error.
        timeout: bool,
    },
    /// Dropped before its end (the reader went away).
    Cancelled,
}

struct ResponseHead {
    status: StatusCode,
    headers: Headers,
    ttfb: Option<std::time::Duration>,
}

/// Where an exchange went: set once, by the proxy, when the request was
/// routed (forwarded or answered by the gateway) or refused.
#[derive(Debug, Default)]
pub struct Routing {
    /// Authenticated platform.
    pub platform: Option<Arc<str>>,
    /// Location from the URL.
    pub location: String,
    /// Broker from the URL.
    pub broker: String,
    /// Whose logs the exchange belongs to (see `CaptureRecord::customer`).
    pub customer: Option<Arc<str>>,
    /// Upstream URL, once routed.
    pub upstream_url: String,
    /// Request headers (as forwarded, or as received); empty when not capturing.
    pub request_headers: Headers,
    /// The route redacts `parameters`.
    pub redact_parameters: bool,
    /// Request counters of the route (or of unrouted requests).
    pub stats: Option<Arc<RouteStats>>,
}

/// One exchange. Public fields are filled by the proxy before the exchange
/// is shared.
pub struct Exchange {
    tx: CaptureTx,
    start: Instant,
    received_at: SystemTime,
    /// Record id.
    pub id: Uuid,
    /// `X-Broker-API-Request-Identity`.
    pub request_id: String,
    /// Request method.
    pub method: Method,
    /// Path as received.
    pub path: String,
    /// Query as received.
    pub query: String,
    /// Path from `/v2` on (empty when the URL had another shape).
    pub osb_path: String,
    /// Classified operation.
    pub operation: Operation,
    routing: OnceLock<Routing>,
    failure_kind: OnceLock<Failure>,
    response: OnceLock<ResponseHead>,
    failure: OnceLock<(Outcome, String)>,
    request_body: OnceLock<(BodyData, BodyEnd)>,
    response_body: OnceLock<(BodyData, BodyEnd)>,
    /// Body bytes held here against the in-flight budget, given back when
    /// the record goes to the queue.
    reserved: AtomicUsize,
    /// Its platform's part of the in-flight budget, entered at its first
    /// reservation (exchanges whose bodies keep nothing never enter).
    account: OnceLock<Arc<Account>>,
}

impl Exchange {
    /// A new exchange, starting now.
    pub fn new(
        tx: &CaptureTx,
        method: Method,
        path: &str,
        query: &str,
        request_id: String,
    ) -> Self {
        Exchange {
            tx: tx.clone(),
            start: Instant::now(),
            received_at: SystemTime::now(),
            id: Uuid::new_v4(),
            request_id,
            method,
            path: path.to_string(),
            query: query.to_string(),
            osb_path: String::new(),
            operation: Operation::Other,
            routing: OnceLock::new(),
            failure_kind: OnceLock::new(),
            response: OnceLock::new(),
            failure: OnceLock::new(),
            request_body: OnceLock::new(),
            response_body: OnceLock::new(),
            reserved: AtomicUsize::new(0),
            account: OnceLock::new(),
        }
    }

    /// Records where the exchange went (once; later calls are ignored).
    pub fn set_routing(&self, routing: Routing) {
        let _ = self.routing.set(routing);
    }

    /// Whether bodies and headers are kept (capture enabled).
    pub fn capturing(&self) -> bool {
        self.tx.enabled()
    }

    /// A tap for one of this exchange's bodies (the response's once its
    /// head is set): it scans the body as it passes when record building
    /// reads fields from it.
    pub fn tap(self: &Arc<Self>, side: Side) -> Tap {
        let op = self.operation;
        let scan = match side {
            Side::Request => record::reads_request_fields(op),
            Side::Response => {
                let status = self.response.get().map_or(0, |r| r.status.as_u16());
                let redact = self.routing.get().is_some_and(|r| r.redact_parameters);
                record::reads_response_fields(op, status, redact)
            }
        };
        Tap::new(self.clone(), side, self.tx.max_body(), scan)
    }

    /// The capture queue this exchange goes to.
    pub(crate) fn capture_tx(&self) -> &CaptureTx {
        &self.tx
    }

    /// This exchange's platform's budget account (entered now, at the
    /// first reservation: its routing is known by then).
    fn account(&self) -> &Account {
        self.account.get_or_init(|| {
            let platform = self.routing.get().and_then(|r| r.platform.as_deref());
            self.tx.enter_budget(platform)
        })
    }

    /// Reserves up to `want` bytes of the in-flight budget for one of this
    /// exchange's bodies, which holds `holding` already
    /// ([`CaptureTx::reserve_body`]).
    pub(crate) fn reserve_body(&self, want: usize, holding: usize) -> usize {
        self.tx.reserve_body(self.account(), want, holding)
    }

    /// Gives back bytes from [`reserve_body`](Self::reserve_body).
    pub(crate) fn release_body(&self, bytes: usize) {
        if bytes > 0 {
            self.tx.release_body(self.account(), bytes);
        }
    }

    /// Whether this exchange's platform holds more than its share of a
    /// starved budget: its taps give back what they have not filled.
    pub(crate) fn over_share(&self) -> bool {
        self.account.get().is_some_and(|a| self.tx.over_share(a))
    }

    /// Records the response head sent to the platform.
    pub fn set_response(&self, status: StatusCode, headers: &HeaderMap, from_upstream: bool) {
        let headers = if self.capturing() {
            Headers::capture(headers)
        } else {
            Headers::default()
        };
        let ttfb = from_upstream.then(|| self.start.elapsed());
        let _ = self.response.set(ResponseHead {
            status,
            headers,
            ttfb,
        });
    }

    /// Records that the gateway answered itself, and why.
    pub fn fail(&self, outcome: Outcome, cause: String) {
        let _ = self.failure.set((outcome, cause));
    }

    /// Names the kind of an upstream failure (for the metrics).
    pub fn set_failure(&self, kind: Failure) {
        let _ = self.failure_kind.set(kind);
    }

    /// Records a body the gateway wrote itself (error answers).
    pub fn set_synthetic_body(&self, bytes: &[u8]) {
        let data = BodyData {
            bytes: bytes.to_vec(),
            size: bytes.len() as u64,
            truncated: false,
            scanned: None,
        };
        let _ = self.response_body.set((data, BodyEnd::Complete));
    }

    /// Stores a tapped body; `reserved` bytes of the in-flight budget now
    /// belong to the exchange (given back when it is sent).
    pub(crate) fn set_body(&self, side: Side, data: BodyData, end: BodyEnd, reserved: usize) {
        let slot = match side {
            Side::Request => &self.request_body,
            Side::Response => &self.response_body,
        };
        if slot.set((data, end)).is_ok() {
            self.reserved.fetch_add(reserved, Relaxed);
        } else {
            self.release_body(reserved);
        }
    }

    /// A tapped body, as stored so far (tests).
    #[cfg(test)]
    pub(crate) fn body(&self, side: Side) -> Option<&BodyData> {
        match side {
            Side::Request => self.request_body.get(),
            Side::Response => self.response_body.get(),
        }
        .map(|(d, _)| d)
    }

    fn outcome(&self) -> (Outcome, String) {
        if let Some((
            _,
            BodyEnd::Error {
                cause,
                timeout: false,
            },
        )) = self.request_body.get()
        {
            return (Outcome::Aborted, format!("request body: {cause}"));
        }
        if let Some((o, cause)) = self.failure.get() {
            return (*o, cause.clone());
        }
        // NB: after the grace period the gateway drops the connections
        // still open; what looks like a platform leaving is the gateway.
        let cut = |by_platform: &str| {
            if self.tx.cutting() {
                (
                    Outcome::Shutdown,
                    "the gateway stopped it: still running when the shutdown grace period ended"
                        .to_string(),
                )
            } else {
                (Outcome::Aborted, by_platform.to_string())
            }
        };
        let Some(head) = self.response.get() else {
            return cut("the platform went away before the broker answered");
        };
        match self.response_body.get() {
            Some((_, BodyEnd::Complete)) => {
                let s = head.status;
                let o = if s.is_client_error() || s.is_server_error() {
                    Outcome::BrokerError
                } else {
                    Outcome::Ok
                };
                (o, String::new())
            }
            Some((_, BodyEnd::Error { cause, timeout })) => {
                let o = if *timeout {
                    Outcome::Timeout
                } else {
                    Outcome::UpstreamError
                };
                (o, format!("response body: {cause}"))
            }
            Some((_, BodyEnd::Cancelled)) | None => {
                cut("the platform stopped reading the response")
            }
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let (outcome, error) = self.outcome();
        let duration = self.start.elapsed();
        let head = self.response.take();
        let status = head.as_ref().map(|h| h.status.as_u16()).unwrap_or(0);
        let routing = self.routing.take().unwrap_or_default();
        if let Some(stats) = &routing.stats {
            stats.observe(self.operation, status, duration);
            if matches!(outcome, Outcome::Timeout | Outcome::UpstreamError) {
                let kind = match (self.failure_kind.get(), outcome) {
                    (Some(k), _) => *k,
                    (None, Outcome::Timeout) => Failure::IdleTimeout,
                    (None, _) => Failure::Protocol,
                };
                stats.upstream_error(kind);
            }
        }
        tracing::info!(
            target: "osb_gateway::exchange",
            request_id = %self.request_id,
            platform = routing.platform.as_deref(),
            location = %routing.location,
            broker = %routing.broker,
            operation = self.operation.as_str(),
            method = %self.method,
            path = %self.path,
            status = (status != 0).then_some(status),
            outcome = outcome.as_str(),
            duration_ms = duration.as_micros() as f64 / 1000.0,
            error = (!error.is_empty()).then_some(error.as_str()),
            "exchange"
        );
        if let Some(account) = self.account.get() {
            self.tx.release_body(account, *self.reserved.get_mut());
            self.tx.leave_budget(account);
        }
        if !self.tx.enabled() {
            return;
        }
        let request_body = self.request_body.take().map(|(d, _)| d).unwrap_or_default();
        let response_body = self
            .response_body
            .take()
            .map(|(d, _)| d)
            .unwrap_or_default();
        let (response_headers, ttfb) = match head {
            Some(h) => (h.headers, h.ttfb),
            None => (Headers::default(), None),
        };
        self.tx.send(RawExchange {
            id: self.id,
            received_at: self.received_at,
            duration_us: duration.as_micros() as u64,
            ttfb_us: ttfb.map(|d| d.as_micros() as u64).unwrap_or(0),
            gateway: self.tx.instance().to_string(),
            platform: routing.platform.as_deref().unwrap_or("").to_string(),
            location: routing.location,
            broker: routing.broker,
            customer: routing.customer,
            upstream_url: routing.upstream_url,
            method: self.method.clone(),
            path: std::mem::take(&mut self.path),
            query: std::mem::take(&mut self.query),
            osb_path: std::mem::take(&mut self.osb_path),
            operation: self.operation,
            request_id: std::mem::take(&mut self.request_id),
            request_headers: routing.request_headers,
            response_headers,
            status,
            outcome,
            error,
            request_body,
            response_body,
            redact_parameters: routing.redact_parameters,
        });
    }
}

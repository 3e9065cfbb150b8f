//! The hot path: authenticate, route, rewrite, forward, stream back.
//!
//! Per request: one `ArcSwap` load of the route table (the request keeps that
//! snapshot to its end), a cached credential check, one pooled upstream
//! request. Bodies are never buffered: the platform's body is handed to the
//! upstream pool as it arrives and the broker's body goes back the same way.
//! [`Proxy::handle`] runs one inner function and builds every error answer
//! in one place, [`error_response`].
//!
//! Arrows: `proxy` uses `registry`, `upstream`, `osb`, `capture`, `metrics`
//! and `body`; `lib.rs` serves it through `server`; nothing uses `proxy`.

pub mod auth;
pub mod body;
pub mod error;
pub mod forward;
pub mod throttle;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;

use self::auth::Authenticator;
use self::body::{ForwardBody, ResponseBody};
use self::error::ProxyError;
use crate::body::TimedBody;
use crate::capture::body::CaptureBody;
use crate::capture::{CaptureTx, Exchange, Headers, Routing, Side};
use crate::metrics::{RequestMetrics, RouteStats};
use crate::osb::{self, OsbError};
use crate::registry::{Route, RouteTable, Routes};
use crate::upstream::Failure;

/// The request handler shared by every connection.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Shared>,
}

struct Shared {
    routes: Routes,
    auth: Authenticator,
    capture: CaptureTx,
    /// Counters of requests refused before a route was found.
    unrouted: Arc<RouteStats>,
}

/// `/{location}/{broker}` and where the rest (from `/v2` on) starts.
struct Target {
    location: String,
    broker: String,
    /// Byte offset of `/v2` in the path (and so in path-and-query).
    offset: usize,
}

impl Target {
    /// Splits a path of the form `/{location}/{broker}/v2[/...]`: not an
    /// OSB path for any other shape, refused when the part from `/v2` on is
    /// not canonical (`osb::path::check`).
    fn parse(path: &str) -> Result<Target, ProxyError> {
        let t = Self::split(path).ok_or(ProxyError::NotOsbPath)?;
        crate::osb::path::check(&path[t.offset..])?;
        Ok(t)
    }

    fn split(path: &str) -> Option<Target> {
        let p = path.strip_prefix('/')?;
        let (location, p) = p.split_once('/')?;
        let (broker, _) = p.split_once('/')?;
        let offset = 1 + location.len() + 1 + broker.len();
        let osb_path = &path[offset..];
        if !(osb_path == "/v2" || osb_path.starts_with("/v2/")) {
            return None;
        }
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        };
        Some(Target {
            location: decode(location)?,
            broker: decode(broker)?,
            offset,
        })
    }
}

impl Proxy {
    /// A handler over `routes`, capturing into `capture`, counting requests
    /// refused before routing in `requests`.
    pub fn new(routes: Routes, capture: CaptureTx, requests: Arc<RequestMetrics>) -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Proxy {
            inner: Arc::new(Shared {
                routes,
                auth: Authenticator::new(cpus),
                capture,
                unrouted: requests.route("(none)", "(none)"),
            }),
        }
    }

    /// Handles one platform request. Never fails: every error becomes an
    /// OSB error response. The [`Exchange`] made here logs and records the
    /// exchange when its last holder (this handler or a body) lets go.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client: std::net::IpAddr,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let request_id = match req
            .headers()
            .get(osb::REQUEST_IDENTITY)
            .and_then(|v| v.to_str().ok())
        {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let uri = req.uri();
        let mut ex = Exchange::new(
            &self.inner.capture,
            req.method().clone(),
            uri.path(),
            uri.query().unwrap_or(""),
            request_id,
        );
        let target = Target::parse(uri.path());
        if let Ok(t) = &target {
            let osb_path = &uri.path()[t.offset..];
            ex.osb_path = osb_path.to_string();
            ex.operation = osb::classify(req.method(), osb_path).0;
        }
        let ex = Arc::new(ex);
        Ok(match self.handle_inner(req, target, client, &ex).await {
            Ok(resp) => resp,
            Err(err) => error_response(&err, &ex),
        })
    }

    /// Everything between the request and its answer; every refusal or
    /// failure is returned, for [`handle`](Self::handle) to answer.
    async fn handle_inner(
        &self,
        req: Request<Incoming>,
        target: Result<Target, ProxyError>,
        client: std::net::IpAddr,
        ex: &Arc<Exchange>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        // NB: `load_full` clones the Arc out of the ArcSwap guard, so no guard
        // is held across an await, and this request keeps its snapshot.
        let table = self.inner.routes.load_full();
        let mut routing = Routing::default();
        let routed = self.route(&table, &req, target, client, &mut routing).await;
        match routed {
            Ok((route, offset)) if !(route.deactivated && answers_deactivated(ex.operation)) => {
                // NB: boxed, as is authentication's slow path: the
                // forwarding state (the upstream send, its timeout) was
                // most of the handler's future, which every connection
                // holds while a request runs (5.5 -> 2.7 KB). CPU per
                // request did not move (benches/load.py side by side).
                Box::pin(self.forward(req, offset, route, routing, ex)).await
            }
            refused => {
                // NB: a refused request is recorded with the headers it came
                // with; a forwarded one with the headers the broker got.
                // NB: a refusal on a broker's path counts under the broker
                // and the location asked for, as its record names them.
                if refused.is_err() {
                    let stats = table.stats(&routing.broker, &routing.location);
                    routing.stats = Some(stats.unwrap_or(&self.inner.unrouted).clone());
                }
                if ex.capturing() {
                    routing.request_headers = Headers::capture(req.headers());
                }
                ex.set_routing(routing);
                deactivated_catalog(&refused?.0, ex)
            }
        }
    }

    /// Authenticates the platform and finds its route; fills `routing`
    /// with what is known so far.
    async fn route(
        &self,
        table: &RouteTable,
        req: &Request<Incoming>,
        target: Result<Target, ProxyError>,
        client: std::net::IpAddr,
        routing: &mut Routing,
    ) -> Result<(Arc<Route>, usize), ProxyError> {
        // NB: a refused exchange goes into the broker owner's logs only
        // where the owner needs it to debug a connection: calls on its path
        // that did not authenticate, and its own customer's platforms. A
        // platform of another customer refused on it is the operator's
        // business (it was written into the owner's logs and failed
        // instances). Forwarded exchanges are the owner's.
        let authenticated = self
            .inner
            .auth
            .authenticate(table, req.headers().get(header::AUTHORIZATION), client)
            .await;
        let platform = match authenticated {
            Ok(p) => p,
            Err(e) => {
                if let Ok(t) = &target {
                    routing.location.clone_from(&t.location);
                    routing.broker.clone_from(&t.broker);
                    routing.customer = table.owner_of(&t.broker).map(Arc::from);
                }
                return Err(e);
            }
        };
        routing.platform = Some(platform.id.clone());
        let target = target?;
        routing.location = target.location;
        routing.broker = target.broker;
        // NB: the owner is looked up again only for a refusal; a routed
        // request takes it from its route (no copy, no lookup).
        let route = match table.lookup(&platform, &routing.location, &routing.broker) {
            Ok(r) => r,
            Err(e) => {
                if table.owner_of(&routing.broker) == Some(platform.customer.as_str()) {
                    routing.customer = Some(Arc::from(platform.customer.as_str()));
                }
                return Err(e.into());
            }
        };
        routing.customer = Some(route.owner.clone());
        // NB: served by `global` for another location: counted under the
        // location asked for (a map lookup only for that case).
        let stats = if *route.location == *routing.location {
            None
        } else {
            table.stats(&routing.broker, &routing.location)
        };
        routing.stats = Some(stats.unwrap_or(&route.stats).clone());
        Ok((route.clone(), target.offset))
    }

    /// Rewrites the request for the broker, sends it, and streams the answer back.
    async fn forward(
        &self,
        req: Request<Incoming>,
        offset: usize,
        route: Arc<Route>,
        mut routing: Routing,
        ex: &Arc<Exchange>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let pq = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let rest = &pq[offset..];
        let target = route
            .endpoint
            .target(rest)
            .map_err(|e| ProxyError::Internal(format!("cannot build upstream URL: {e}")))?;
        let upstream_url = route.endpoint.url_for(rest);
        let (mut parts, body) = req.into_parts();
        forward::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        parts
            .headers
            .insert(header::AUTHORIZATION, route.authorization().clone());
        if !parts.headers.contains_key(osb::REQUEST_IDENTITY) {
            if let Ok(v) = HeaderValue::from_str(&ex.request_id) {
                parts.headers.insert(osb::REQUEST_IDENTITY, v);
            }
        }
        routing.upstream_url = upstream_url;
        routing.redact_parameters = route.redact_parameters;
        if ex.capturing() {
            routing.request_headers = Headers::capture(&parts.headers);
        }
        ex.set_routing(routing);
        parts.uri = target;
        parts.version = Version::HTTP_11;
        let idle = route.timeouts.idle;
        let body: ForwardBody = CaptureBody::new(TimedBody::new(body, idle), ex.tap(Side::Request));
        let upstream_req = Request::from_parts(parts, body.boxed_unsync());

        let sent = tokio::time::timeout(route.timeouts.response, route.client.send(upstream_req));
        let (failure, after, cause) = match sent.await {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                forward::strip_hop_by_hop(&mut parts.headers);
                ex.set_response(parts.status, &parts.headers, true);
                let body = CaptureBody::new(TimedBody::new(body, idle), ex.tap(Side::Response));
                return Ok(Response::from_parts(parts, ResponseBody::stream(body)));
            }
            Ok(Err(e)) => {
                let (failure, cause) = e.failure();
                (failure, route.timeouts.connect, cause)
            }
            Err(_) => (
                Failure::ResponseTimeout,
                route.timeouts.response,
                "no response headers".into(),
            ),
        };
        Err(ProxyError::Upstream {
            broker: route.broker.to_string(),
            failure,
            after,
            cause,
        })
    }
}

/// Whether a deactivated broker's request is answered by the gateway: the
/// catalog (no services) and new provisions (refused). Everything else on
/// existing instances and bindings is forwarded as usual.
fn answers_deactivated(op: osb::Operation) -> bool {
    matches!(
        op,
        osb::Operation::FetchCatalog | osb::Operation::ProvisionInstance
    )
}

/// A deactivated broker's catalog, answered by the gateway; a provision is
/// refused.
fn deactivated_catalog(route: &Route, ex: &Exchange) -> Result<Response<ResponseBody>, ProxyError> {
    if ex.operation != osb::Operation::FetchCatalog {
        return Err(ProxyError::Deactivated {
            broker: route.broker.to_string(),
        });
    }
    let body = Bytes::from_static(b"{\"services\":[]}");
    let mut resp = Response::new(ResponseBody::full(body.clone()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(id) = HeaderValue::from_str(&ex.request_id) {
        resp.headers_mut().insert(osb::REQUEST_IDENTITY, id);
    }
    ex.set_response(StatusCode::OK, resp.headers(), false);
    ex.set_synthetic_body(&body);
    Ok(resp)
}

/// Builds the OSB error response for `err` and records it in the exchange:
/// the one place an error answer is made.
fn error_response(err: &ProxyError, ex: &Exchange) -> Response<ResponseBody> {
    let status = err.status();
    let description = err.to_string();
    let body = OsbError {
        error: err.code(),
        description: &description,
    }
    .to_bytes();
    let mut resp = Response::new(ResponseBody::full(body.clone()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"osb-gateway\", charset=\"UTF-8\""),
        );
    }
    if let Some(after) = err.retry_after() {
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        );
    }
    if let Ok(id) = HeaderValue::from_str(&ex.request_id) {
        h.insert(osb::REQUEST_IDENTITY, id);
    }
    if let Some(kind) = err.failure() {
        ex.set_failure(kind);
    }
    ex.fail(err.outcome(), description);
    ex.set_response(status, resp.headers(), false);
    ex.set_synthetic_body(&body);
    resp
}

impl crate::server::Handler for Proxy {
    type Body = ResponseBody;

    async fn call(
        &self,
        req: Request<Incoming>,
        client: std::net::IpAddr,
    ) -> Response<ResponseBody> {
        match self.handle(req, client).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_location_broker_and_rest() {
        let t = Target::parse("/eu/pg/v2/catalog").unwrap();
        let pq = "/eu/pg/v2/catalog?x=1";
        assert_eq!(
            (t.location.as_str(), t.broker.as_str(), &pq[t.offset..]),
            ("eu", "pg", "/v2/catalog?x=1")
        );
        let path = "/private/p%67/v2/service_instances/a%2Fb";
        let t = Target::parse(path).unwrap();
        assert_eq!(t.broker, "pg");
        assert_eq!(
            &path[t.offset..],
            "/v2/service_instances/a%2Fb",
            "ids after /v2 pass through encoded"
        );
        assert!(Target::parse("/eu/pg/v3/catalog").is_err());
        assert!(Target::parse("/eu/pg").is_err());
        assert!(Target::parse("/eu/pg/v2x").is_err());
    }
}

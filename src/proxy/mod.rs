//! The hot path: authenticate, route, rewrite, forward, stream back.
//!
//! Per request: one `ArcSwap` load of the route table (the request keeps that
//! snapshot to its end), a cached credential check, one pooled upstream
//! request. Bodies are never buffered: the platform's body is handed to the
//! upstream client as it arrives and the broker's body goes back the same way.
//! Arrows: `proxy` uses `registry`, `upstream`, `osb`, `body`.

pub mod accept;
pub mod auth;
pub mod body;
pub mod error;
pub mod forward;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;

use self::auth::Authenticator;
use self::body::ResponseBody;
use self::error::ProxyError;
use crate::body::TimedBody;
use crate::capture::body::CaptureBody;
use crate::capture::{CaptureTx, Exchange, Side};
use crate::metrics::{RequestMetrics, RouteStats};
use crate::osb::{self, OsbError};
use crate::registry::Route;
use crate::registry::Routes;
use crate::upstream::{describe_send_error, FailureKind, SendError};

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

/// `/{location}/{broker}` and the rest from `/v2` on (with the query).
struct Target<'a> {
    location: String,
    broker: String,
    /// From `/v2` on, query included, exactly as sent.
    rest: &'a str,
    /// From `/v2` on, without the query.
    osb_path: &'a str,
}

fn split_target<'a>(path: &'a str, path_and_query: &'a str) -> Option<Target<'a>> {
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
        rest: &path_and_query[offset..],
        osb_path,
    })
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
        let pq = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        if let Some(t) = split_target(uri.path(), pq) {
            ex.osb_path = t.osb_path.to_string();
            ex.operation = osb::classify(req.method(), t.osb_path).0;
        }
        match self.route(&req, &mut ex).await {
            Ok(route)
                if route.deactivated
                    && matches!(
                        ex.operation,
                        osb::Operation::FetchCatalog | osb::Operation::ProvisionInstance
                    ) =>
            {
                ex.stats = Some(route.stats.clone());
                Ok(deactivated_response(&route, &req, ex))
            }
            Ok(route) => Ok(self.forward(req, ex, route).await),
            Err(err) => {
                ex.stats = Some(self.inner.unrouted.clone());
                // NB: a refused request is recorded with the headers it came
                // with; a forwarded one with the headers the broker got.
                if ex.capturing() {
                    ex.request_headers = req.headers().clone();
                }
                Ok(error_response(&err, &ex))
            }
        }
    }

    /// Authenticates the platform and finds its route.
    async fn route(
        &self,
        req: &Request<Incoming>,
        ex: &mut Exchange,
    ) -> Result<Arc<Route>, ProxyError> {
        // NB: `load_full` clones the Arc out of the ArcSwap guard, so no guard
        // is held across an await, and this request keeps its snapshot.
        let table = self.inner.routes.load_full();
        let platform = self
            .inner
            .auth
            .authenticate(&table, req.headers().get(header::AUTHORIZATION))
            .await?;
        ex.platform = Some(platform.id.clone());
        let pq = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let target = split_target(req.uri().path(), pq).ok_or(ProxyError::NotOsbPath)?;
        ex.location = target.location;
        ex.broker = target.broker;
        Ok(table.lookup(&platform, &ex.location, &ex.broker)?)
    }

    /// Rewrites the request for the broker, sends it, and streams the answer back.
    async fn forward(
        &self,
        req: Request<Incoming>,
        mut ex: Exchange,
        route: Arc<Route>,
    ) -> Response<ResponseBody> {
        let pq = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let rest = split_target(req.uri().path(), pq)
            .map(|t| t.rest)
            .unwrap_or_default();
        let target = match route.endpoint.target(rest) {
            Ok(u) => u,
            Err(e) => {
                return error_response(
                    &ProxyError::Internal(format!("cannot build upstream URL: {e}")),
                    &ex,
                )
            }
        };
        let mut upstream_url = String::with_capacity(route.endpoint.url().len() + rest.len());
        upstream_url.push_str(route.endpoint.url());
        upstream_url.push_str(rest);
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
        ex.upstream_url = upstream_url;
        ex.redact_parameters = route.redact_parameters;
        ex.stats = Some(route.stats.clone());
        if ex.capturing() {
            ex.request_headers = parts.headers.clone();
        }
        parts.uri = target;
        parts.version = Version::HTTP_11;
        let ex = Arc::new(ex);
        let idle = route.timeouts.idle;
        let body = CaptureBody::new(TimedBody::new(body, idle), ex.tap(Side::Request));
        let upstream_req = Request::from_parts(parts, body);

        let broker = || route.broker.to_string();
        let err =
            match tokio::time::timeout(route.timeouts.response, route.client.send(upstream_req))
                .await
            {
                Ok(Ok(resp)) => {
                    let (mut parts, body) = resp.into_parts();
                    forward::strip_hop_by_hop(&mut parts.headers);
                    ex.set_response(parts.status, &parts.headers, true);
                    let body = CaptureBody::new(TimedBody::new(body, idle), ex.tap(Side::Response));
                    return Response::from_parts(parts, ResponseBody::upstream(body));
                }
                Ok(Err(e)) => {
                    let (kind, cause) = describe_send_error(&e);
                    ex.set_error_kind(match kind {
                        FailureKind::Timeout => "connect_timeout",
                        _ if is_tls_failure(&e) => "tls",
                        _ if e.is_connect() => "connect",
                        _ => "protocol",
                    });
                    match kind {
                        FailureKind::Timeout => ProxyError::UpstreamTimeout {
                            broker: broker(),
                            after: route.timeouts.connect,
                            cause,
                        },
                        FailureKind::Unavailable => ProxyError::UpstreamUnavailable {
                            broker: broker(),
                            cause,
                        },
                    }
                }
                Err(_) => {
                    ex.set_error_kind("response_timeout");
                    ProxyError::UpstreamTimeout {
                        broker: broker(),
                        after: route.timeouts.response,
                        cause: "no response headers".into(),
                    }
                }
            };
        error_response(&err, &ex)
    }
}

/// Whether a client error came from TLS (handshake, certificate).
fn is_tls_failure(err: &SendError) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = src {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        src = e.source();
    }
    false
}

/// A deactivated broker: the gateway answers the catalog itself with no
/// services and refuses new provisions (everything else on existing
/// instances and bindings is forwarded as usual by the caller).
fn deactivated_response(
    route: &Route,
    req: &Request<Incoming>,
    mut ex: Exchange,
) -> Response<ResponseBody> {
    if ex.capturing() {
        ex.request_headers = req.headers().clone();
    }
    match ex.operation {
        osb::Operation::FetchCatalog => {
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
            resp
        }
        _ => error_response(
            &ProxyError::Deactivated {
                broker: route.broker.to_string(),
            },
            &ex,
        ),
    }
}

/// Builds the OSB error response for `err` and records it in the exchange.
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
    if let Ok(id) = HeaderValue::from_str(&ex.request_id) {
        h.insert(osb::REQUEST_IDENTITY, id);
    }
    ex.fail(err.outcome(), description);
    ex.set_response(status, resp.headers(), false);
    ex.set_synthetic_body(&body);
    resp
}

/// An OSB error response outside the proxy path (no exchange record).
pub fn osb_error(status: StatusCode, code: &str, description: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(
        OsbError {
            error: code,
            description,
        }
        .to_bytes(),
    ));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_location_broker_and_rest() {
        let t = split_target("/eu/pg/v2/catalog", "/eu/pg/v2/catalog?x=1").unwrap();
        assert_eq!(
            (t.location.as_str(), t.broker.as_str(), t.rest, t.osb_path),
            ("eu", "pg", "/v2/catalog?x=1", "/v2/catalog")
        );
        let t = split_target(
            "/private/p%67/v2/service_instances/a%2Fb",
            "/private/p%67/v2/service_instances/a%2Fb",
        )
        .unwrap();
        assert_eq!(t.broker, "pg");
        assert_eq!(
            t.rest, "/v2/service_instances/a%2Fb",
            "ids after /v2 pass through encoded"
        );
        assert!(split_target("/eu/pg/v3/catalog", "/eu/pg/v3/catalog").is_none());
        assert!(split_target("/eu/pg", "/eu/pg").is_none());
        assert!(split_target("/eu/pg/v2x", "/eu/pg/v2x").is_none());
    }
}

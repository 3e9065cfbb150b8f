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

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use tokio::time::Instant;

use self::auth::Authenticator;
use self::body::{ExchangeLog, ResponseBody};
use self::error::ProxyError;
use crate::body::TimedBody;
use crate::osb::{self, OsbError};
use crate::registry::Routes;
use crate::upstream::{describe_error, FailureKind};

/// The request handler shared by every connection.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Shared>,
}

struct Shared {
    routes: Routes,
    auth: Authenticator,
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
    /// A handler over `routes`.
    pub fn new(routes: Routes) -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Proxy {
            inner: Arc::new(Shared {
                routes,
                auth: Authenticator::new(cpus),
            }),
        }
    }

    /// Handles one platform request. Never fails: every error becomes an
    /// OSB error response.
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
        let pq = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let target_path = req.uri().path();
        let operation = split_target(target_path, pq)
            .map(|t| osb::classify(req.method(), t.osb_path).0)
            .unwrap_or(osb::Operation::Other);
        let mut log = ExchangeLog {
            start: Instant::now(),
            request_id,
            method: req.method().clone(),
            path: target_path.to_string(),
            operation,
            platform: None,
            location: None,
            broker: None,
            status: None,
            outcome: None,
            error: None,
        };
        match self.forward(req, &mut log).await {
            Ok((mut parts, body, idle)) => {
                forward::strip_hop_by_hop(&mut parts.headers);
                log.status = Some(parts.status);
                let body = ResponseBody::upstream(TimedBody::new(body, idle), log);
                Ok(Response::from_parts(parts, body))
            }
            Err(err) => Ok(error_response(&err, log)),
        }
    }

    /// Authenticates, routes and sends the request upstream; returns the
    /// broker's response head, body and the route's idle timeout.
    async fn forward(
        &self,
        req: Request<Incoming>,
        log: &mut ExchangeLog,
    ) -> Result<(http::response::Parts, Incoming, Duration), ProxyError> {
        // NB: `load_full` clones the Arc out of the ArcSwap guard, so no guard
        // is held across an await, and this request keeps its snapshot.
        let table = self.inner.routes.load_full();
        let platform = self
            .inner
            .auth
            .authenticate(&table, req.headers().get(header::AUTHORIZATION))
            .await?;
        log.platform = Some(platform.id.clone());
        let pq = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let target = split_target(req.uri().path(), pq).ok_or(ProxyError::NotOsbPath)?;
        log.location = Some(target.location.clone());
        log.broker = Some(target.broker.clone());
        let route = table.lookup(&platform, &target.location, &target.broker)?;
        drop(table);
        let uri = route
            .endpoint
            .join(target.rest)
            .map_err(|e| ProxyError::Internal(format!("cannot build upstream URL: {e}")))?;

        let (mut parts, body) = req.into_parts();
        forward::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        parts
            .headers
            .insert(header::AUTHORIZATION, route.authorization().clone());
        if !parts.headers.contains_key(osb::REQUEST_IDENTITY) {
            if let Ok(v) = HeaderValue::from_str(&log.request_id) {
                parts.headers.insert(osb::REQUEST_IDENTITY, v);
            }
        }
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, TimedBody::new(body, route.timeouts.idle));

        let broker = || route.broker.to_string();
        match tokio::time::timeout(route.timeouts.response, route.client.request(upstream_req))
            .await
        {
            Ok(Ok(resp)) => {
                let (parts, body) = resp.into_parts();
                Ok((parts, body, route.timeouts.idle))
            }
            Ok(Err(e)) => {
                let (kind, cause) = describe_error(&e);
                Err(match kind {
                    FailureKind::Timeout => ProxyError::UpstreamTimeout {
                        broker: broker(),
                        after: route.timeouts.connect,
                        cause,
                    },
                    FailureKind::Unavailable => ProxyError::UpstreamUnavailable {
                        broker: broker(),
                        cause,
                    },
                })
            }
            Err(_) => Err(ProxyError::UpstreamTimeout {
                broker: broker(),
                after: route.timeouts.response,
                cause: "no response headers".into(),
            }),
        }
    }
}

/// Builds the OSB error response for `err` and finishes its log entry.
fn error_response(err: &ProxyError, mut log: ExchangeLog) -> Response<ResponseBody> {
    let status = err.status();
    let description = err.to_string();
    let body = OsbError {
        error: err.code(),
        description: &description,
    }
    .to_bytes();
    log.status = Some(status);
    log.outcome = Some(err.outcome());
    log.error = Some(description);
    let request_id = HeaderValue::from_str(&log.request_id).ok();
    let mut resp = Response::new(ResponseBody::synthetic(body, log));
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
    if let Some(id) = request_id {
        h.insert(osb::REQUEST_IDENTITY, id);
    }
    resp
}

/// An OSB error response with no exchange log (used outside the proxy path).
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

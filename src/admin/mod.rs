//! The admin listener, separate from the platform listener (loopback by
//! default, TLS outside development mode).
//!
//! * `GET /healthz` -- 200 while the process runs.
//! * `GET /readyz` -- 200 once routes are loaded and the platform listener is up.
//! * `GET /metrics` -- Prometheus text: capture counters, reloads, routes;
//!   the families labelled by broker only with a bearer token (an
//!   operator's: every broker; an owner's: its customer's brokers).
//! * `GET /admin/v1/routes` -- every route with its settings, secrets masked
//!   (an owner token sees only its customer's brokers).
//! * `GET /console/` -- the web console (assets compiled in; it calls the
//!   same admin API with the token the user signs in with).
//! * `GET /admin/v1/whoami` -- the token's name, role and customer.
//! * `GET /admin/v1/usage` -- aggregates over a time range (see `usage`).
//! * `POST /admin/v1/reload` -- rebuild the route table from the registry
//!   file; 200 with what changed, 400 with why it was refused (operator only).
//!
//! `/admin/v1/*` needs `Authorization: Bearer TOKEN`. Answers are JSON; errors
//! are `{"error": ..., "description": ...}`.
//! Broker lifecycle endpoints: see [`brokers`].
//! Arrows: `admin` uses `registry`, `catalog`, `capture`, `metrics` and the
//! listener from `proxy`.

mod brokers;
mod console;
mod logs;
mod runtime;
mod usage;

pub use logs::Subscribe;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::body::ResponseBody;
use crate::capture::CaptureMetrics;
use crate::catalog::{Catalogs, RouteCatalog};
use crate::config::duration;
use crate::config::{AdminToken, TokenScope};
use crate::metrics::RequestMetrics;
use crate::registry::{Reloader, Routes};
use crate::server::Handler;

/// Everything the admin plane reads or acts on.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<AdminInner>,
}

/// The parts of a running gateway the admin plane works on.
pub struct AdminParts {
    /// The live route table.
    pub routes: Routes,
    /// Reloads and registry changes.
    pub reloader: Arc<Reloader>,
    /// Capture counters.
    pub capture: Arc<CaptureMetrics>,
    /// Catalog cache and refresher.
    pub catalogs: Arc<Catalogs>,
    /// Request counters.
    pub requests: Arc<RequestMetrics>,
    /// The communication logs (search, show, failed instances).
    pub logs: Arc<crate::store::LogStore>,
    /// Subscribes to the live capture feed (tail).
    pub subscribe: Subscribe,
    /// Accepted bearer tokens.
    pub tokens: Vec<AdminToken>,
    /// Set once the platform listener is up.
    pub ready: Arc<AtomicBool>,
    /// Both listeners' certificates (expiry in metrics and the status view).
    pub certificates: crate::server::Certificates,
    /// Connection counters by listener (`platform`, `admin`).
    pub listeners: Vec<(&'static str, Arc<crate::server::ListenerStats>)>,
}

type AdminInner = AdminParts;

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, code: &str, description: &str) -> Response<ResponseBody> {
    json_response(status, json!({"error": code, "description": description}))
}

fn method_not_allowed(method: &Method, path: &str) -> Response<ResponseBody> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!("{method} is not allowed on {path}"),
    )
}

impl Admin {
    /// The admin plane over the running gateway's parts.
    pub fn new(parts: AdminParts) -> Self {
        Admin {
            inner: Arc::new(parts),
        }
    }

    fn token(&self, req: &Request<Incoming>) -> Option<&AdminToken> {
        let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = v.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // NB: compare against every token, in constant time each.
        let mut found = None;
        for t in &self.inner.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
    }

    async fn route(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
            (&Method::GET, "/readyz") => {
                if self.inner.ready.load(Relaxed) {
                    text(StatusCode::OK, "ready\n".into())
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
                }
            }
            (&Method::GET | &Method::HEAD, "/" | "/console") => console::redirect(),
            (&Method::GET | &Method::HEAD, p) if p.starts_with("/console/") => console::asset(p),
            (_, p) if p.starts_with("/console/") => method_not_allowed(req.method(), p),
            (&Method::GET, "/metrics") => {
                let scope = self.token(&req).map(|t| t.scope.clone());
                let full = self.metrics();
                let table = self.inner.routes.load_full();
                let visible = |line: &str| {
                    let Some(broker) = broker_label(line) else {
                        return true;
                    };
                    match &scope {
                        Some(TokenScope::Operator) => true,
                        Some(TokenScope::Owner(c)) => table.owner_of(broker) == Some(c.as_str()),
                        None => false,
                    }
                };
                let shown: String = full
                    .lines()
                    .filter(|l| visible(l))
                    .flat_map(|l| [l, "\n"])
                    .collect();
                let mut r = text(StatusCode::OK, shown);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            (_, p) if p.starts_with("/admin/v1/") => {
                let Some(token) = self.token(&req) else {
                    let mut r = error(
                        StatusCode::UNAUTHORIZED,
                        "Unauthorized",
                        "missing or unknown bearer token",
                    );
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"osb-gateway admin\""),
                    );
                    return r;
                };
                let token = token.clone();
                let method = req.method().clone();
                match (&method, p) {
                    (&Method::GET, "/admin/v1/routes") => self.list_routes(&token),
                    (&Method::POST, "/admin/v1/reload") => self.reload(&token).await,
                    (_, "/admin/v1/routes" | "/admin/v1/reload") => method_not_allowed(&method, p),
                    (_, p) if p == "/admin/v1/brokers" || p.starts_with("/admin/v1/brokers/") => {
                        self.brokers(&token, req).await
                    }
                    (&Method::GET, "/admin/v1/logs") => self.search_logs(&token, &req).await,
                    (&Method::GET, "/admin/v1/usage") => self.usage(&token, &req).await,
                    (&Method::GET, "/admin/v1/whoami") => self.whoami(&token),
                    (_, "/admin/v1/config" | "/admin/v1/status" | "/admin/v1/log-level") => {
                        self.runtime(&token, req).await
                    }
                    (&Method::GET, "/admin/v1/logs/tail") => self.tail_logs(&token, &req),
                    (&Method::GET, "/admin/v1/failed-instances") => {
                        self.failed_instances(&token, &req).await
                    }
                    (&Method::GET, p) if p.starts_with("/admin/v1/logs/") => {
                        let id = percent_encoding::percent_decode_str(
                            p.trim_start_matches("/admin/v1/logs/"),
                        )
                        .decode_utf8_lossy()
                        .into_owned();
                        self.show_log(&token, &id).await
                    }
                    (_, p)
                        if p.starts_with("/admin/v1/logs")
                            || p == "/admin/v1/failed-instances"
                            || p == "/admin/v1/usage"
                            || p == "/admin/v1/whoami" =>
                    {
                        method_not_allowed(&method, p)
                    }
                    _ => error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("no admin endpoint {p}"),
                    ),
                }
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no endpoint {path}"),
            ),
        }
    }

    /// `GET /admin/v1/whoami`: what the token is, and the declared
    /// locations (the console shows them and hides what the token cannot
    /// do; the API still decides every call).
    fn whoami(&self, token: &AdminToken) -> Response<ResponseBody> {
        let (role, customer) = match &token.scope {
            TokenScope::Operator => ("operator", None),
            TokenScope::Owner(c) => ("owner", Some(c.as_str())),
        };
        let locations = self.inner.reloader.registry().locations.clone();
        json_response(
            StatusCode::OK,
            json!({"name": token.name, "role": role, "customer": customer, "locations": locations}),
        )
    }

    fn list_routes(&self, token: &AdminToken) -> Response<ResponseBody> {
        let table = self.inner.routes.load_full();
        let capture_cap = self.inner.reloader.config().capture.max_body_bytes;
        let routes: Vec<_> = table
            .routes()
            .into_iter()
            .filter(|(r, _)| match &token.scope {
                TokenScope::Operator => true,
                TokenScope::Owner(c) => *r.owner == **c,
            })
            .map(|(r, approved)| {
                json!({
                    "broker": &*r.broker,
                    "location": &*r.location,
                    "owner": &*r.owner,
                    "endpoint": r.endpoint.url(),
                    "approved": approved,
                    "development_mode": r.development_mode,
                    "username": r.username,
                    "password": r.password_source,
                    "ca_bundle": r.ca_bundle.as_ref().map(|b| b.describe()),
                    "timeouts": {
                        "connect": duration::format(r.timeouts.connect),
                        "response": duration::format(r.timeouts.response),
                        "idle": duration::format(r.timeouts.idle),
                    },
                    "redact_parameters": r.redact_parameters,
                    "capture_max_body_bytes": capture_cap,
                    "deactivated": r.deactivated,
                    "staged_password": r.staged_password_source,
                    "catalog": catalog_summary(self.inner.catalogs.get(&r.key())),
                })
            })
            .collect();
        json_response(
            StatusCode::OK,
            json!({"generation": table.generation(), "routes": routes}),
        )
    }

    async fn reload(&self, token: &AdminToken) -> Response<ResponseBody> {
        if token.scope != TokenScope::Operator {
            return error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "reloading the registry needs an operator token",
            );
        }
        match self
            .inner
            .reloader
            .reload(&format!("admin API ({})", token.name))
            .await
        {
            Ok(report) => json_response(
                StatusCode::OK,
                serde_json::to_value(report).unwrap_or_default(),
            ),
            Err(e) => error(
                StatusCode::BAD_REQUEST,
                "InvalidRegistry",
                &format!("{e}; the current routes keep serving"),
            ),
        }
    }

    fn metrics(&self) -> String {
        let mut out = self.inner.capture.render_prometheus();
        self.inner.requests.render(&mut out);
        self.inner.catalogs.render(&mut out);
        self.runtime_metrics(&mut out);
        let r = &self.inner.reloader.metrics;
        let routes = self.inner.routes.load().routes().len();
        let lines = [
            (
                "osb_gateway_reloads_total",
                "counter",
                "Registry reloads swapped in.",
                r.reloads.load(Relaxed) as f64,
            ),
            (
                "osb_gateway_reload_failures_total",
                "counter",
                "Registry reloads refused (old routes kept).",
                r.failures.load(Relaxed) as f64,
            ),
            (
                "osb_gateway_reload_last_seconds",
                "gauge",
                "Duration of the last successful reload.",
                r.last_duration_us.load(Relaxed) as f64 / 1e6,
            ),
            (
                "osb_gateway_routes",
                "gauge",
                "Routes in the serving table.",
                routes as f64,
            ),
            (
                "osb_gateway_route_table_generation",
                "gauge",
                "Generation of the serving route table.",
                self.inner.reloader.generation() as f64,
            ),
        ];
        for (name, kind, help, v) in lines {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        out
    }
}

/// The refresh state of a route's catalog, as the admin views show it.
fn catalog_summary(c: Option<RouteCatalog>) -> serde_json::Value {
    match c {
        None => json!({"state": "not fetched yet"}),
        Some(c) => json!({
            "services": c.services.len(),
            "plans": c.services.iter().map(|s| s.plans.len()).sum::<usize>(),
            "last_attempt": c.last_attempt.map(crate::timefmt::rfc3339),
            "last_success": c.last_success.map(crate::timefmt::rfc3339),
            "last_error": c.last_error,
            "refreshes": c.refreshes,
            "not_modified": c.not_modified,
            "failures": c.failures,
            "staged_password": c.staged_password,
        }),
    }
}

fn text(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The `broker` label of a Prometheus sample line, if it has one.
fn broker_label(line: &str) -> Option<&str> {
    if line.starts_with('#') {
        return None;
    }
    let at = line.find("broker=\"")? + "broker=\"".len();
    line[at..].split('"').next()
}

impl Handler for Admin {
    type Body = ResponseBody;

    async fn call(
        &self,
        req: Request<Incoming>,
        _client: std::net::IpAddr,
    ) -> Response<ResponseBody> {
        self.route(req).await
    }
}

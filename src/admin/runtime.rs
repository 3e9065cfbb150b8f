//! Introspection of the running process, as Envoy's admin has it: the
//! effective configuration (secrets masked), the log level (read and
//! changed at run time), certificates and their expiry, connections by
//! listener and the upstream pools; and the matching `/metrics` lines
//! (`process_*`, `osb_gateway_build_info`, certificate expiry, connection
//! and pool gauges). Everything here but the metrics needs an operator
//! token.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{error, json_response, Admin, ResponseBody};
use crate::config::{AdminToken, TokenScope};
use crate::metrics::escape_label;
use crate::metrics::process;

/// `PUT /admin/v1/log-level`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelBody {
    level: String,
}

impl Admin {
    /// `GET /admin/v1/config`, `GET /admin/v1/status`, `GET|PUT
    /// /admin/v1/log-level`.
    pub(super) async fn runtime(
        &self,
        token: &AdminToken,
        req: Request<Incoming>,
    ) -> http::Response<ResponseBody> {
        if token.scope != TokenScope::Operator {
            return error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the gateway's configuration and state need an operator token",
            );
        }
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/admin/v1/config") => {
                json_response(StatusCode::OK, self.inner.reloader.config().effective())
            }
            (Method::GET, "/admin/v1/status") => json_response(StatusCode::OK, self.status()),
            (Method::GET, "/admin/v1/log-level") => match crate::telemetry::control() {
                Some(c) => json_response(StatusCode::OK, json!({"level": c.level()})),
                None => not_owned(),
            },
            (Method::PUT, "/admin/v1/log-level") => {
                let Some(control) = crate::telemetry::control() else {
                    return not_owned();
                };
                let body: LevelBody = match super::brokers::read_json(req).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let before = control.level();
                match control.set_level(body.level.trim()) {
                    Ok(()) => {
                        tracing::warn!(by = %token.name, from = %before, to = %control.level(), "log level changed through the admin API");
                        json_response(
                            StatusCode::OK,
                            json!({"level": control.level(), "previous": before}),
                        )
                    }
                    Err(e) => error(StatusCode::BAD_REQUEST, "BadRequest", &e),
                }
            }
            (m, p) => super::method_not_allowed(&m, p),
        }
    }

    /// What the process is and holds now.
    fn status(&self) -> Value {
        let cfg = self.inner.reloader.config();
        let now = crate::timefmt::now_us() / 1_000_000;
        let certificates: Vec<Value> = self
            .inner
            .certificates
            .all()
            .iter()
            .map(|c| {
                json!({
                    "listener": c.name(),
                    "cert_file": c.cert_file().display().to_string(),
                    "not_after": crate::timefmt::rfc3339(c.not_after().max(0) as u64),
                    "expires_in_seconds": c.not_after() - now,
                })
            })
            .collect();
        let listeners: Vec<Value> = self
            .inner
            .listeners
            .iter()
            .map(|(name, s)| {
                json!({
                    "listener": name,
                    "open": s.open.load(Relaxed),
                    "accepted": s.accepted.load(Relaxed),
                    "refused": s.refused.load(Relaxed),
                    "tls_handshake_failures": s.handshake_failures.load(Relaxed),
                    "plain_http_to_tls": s.plain_http.load(Relaxed),
                })
            })
            .collect();
        let table = self.inner.routes.load_full();
        let pools: Vec<Value> = table
            .routes()
            .iter()
            .map(|(r, _)| {
                json!({
                    "broker": &*r.broker,
                    "location": &*r.location,
                    "upstream": r.endpoint.url().to_string(),
                    "idle_connections": r.client.idle(),
                })
            })
            .collect();
        let started = process::start_time();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "instance": cfg.instance,
            "mode": if cfg.mode.is_development() { "development" } else { "production" },
            "started": crate::timefmt::rfc3339(started as u64),
            "uptime_seconds": (now as f64 - started).max(0.0) as u64,
            "log_level": crate::telemetry::control().map(|c| c.level()),
            "log_lines_dropped": crate::telemetry::control().map(|c| c.dropped_lines()),
            "route_table_generation": self.inner.reloader.generation(),
            "certificates": certificates,
            "listeners": listeners,
            "upstream_pools": pools,
        })
    }

    /// The `/metrics` lines of this module.
    pub(super) fn runtime_metrics(&self, out: &mut String) {
        process::render(out);
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            out,
            "osb_gateway_tls_certificate_not_after_seconds",
            "gauge",
            "When the serving certificate of a listener expires, Unix seconds.",
        );
        for c in self.inner.certificates.all() {
            let _ = writeln!(
                out,
                "osb_gateway_tls_certificate_not_after_seconds{{listener=\"{}\"}} {}",
                c.name(),
                c.not_after()
            );
        }
        type Pick = fn(&crate::server::ListenerStats) -> u64;
        let families: [(&str, &str, &str, Pick); 5] = [
            (
                "osb_gateway_connections_open",
                "gauge",
                "Connections open now, by listener.",
                |s| s.open.load(Relaxed) as u64,
            ),
            (
                "osb_gateway_connections_accepted_total",
                "counter",
                "Connections accepted, by listener.",
                |s| s.accepted.load(Relaxed),
            ),
            (
                "osb_gateway_connections_refused_total",
                "counter",
                "Connections refused by the connection caps, by listener.",
                |s| s.refused.load(Relaxed),
            ),
            (
                "osb_gateway_tls_handshake_failures_total",
                "counter",
                "TLS handshakes that failed or timed out, by listener.",
                |s| s.handshake_failures.load(Relaxed),
            ),
            (
                "osb_gateway_plain_http_to_tls_total",
                "counter",
                "Plain HTTP requests sent to a TLS port (answered 400), by listener.",
                |s| s.plain_http.load(Relaxed),
            ),
        ];
        for (name, kind, help, pick) in families {
            family(out, name, kind, help);
            for (listener, s) in &self.inner.listeners {
                let _ = writeln!(out, "{name}{{listener=\"{listener}\"}} {}", pick(s));
            }
        }
        family(
            out,
            "osb_gateway_upstream_idle_connections",
            "gauge",
            "Idle keep-alive connections pooled toward a route's broker.",
        );
        let table = self.inner.routes.load_full();
        for (r, _) in table.routes() {
            let _ = writeln!(
                out,
                "osb_gateway_upstream_idle_connections{{broker=\"{}\",location=\"{}\"}} {}",
                escape_label(&r.broker),
                escape_label(&r.location),
                r.client.idle()
            );
        }
        family(
            out,
            "osb_gateway_log_lines_dropped_total",
            "counter",
            "Log lines dropped because the log writer could not keep up (the proxy never waits for it).",
        );
        let dropped = crate::telemetry::control().map_or(0, |c| c.dropped_lines());
        let _ = writeln!(out, "osb_gateway_log_lines_dropped_total {dropped}");
    }
}

fn not_owned() -> http::Response<ResponseBody> {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "NotAvailable",
        "this gateway runs embedded in another program, which owns its logging",
    )
}

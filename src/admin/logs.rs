//! The communication logs through the admin API.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/admin/v1/logs?...` | search, a page at a time (`cursor`) |
//! | GET | `/admin/v1/logs/tail?...` | live records: NDJSON, or SSE for `Accept: text/event-stream` |
//! | GET | `/admin/v1/logs/{id}` | one whole exchange |
//! | GET | `/admin/v1/failed-instances` | failed and stuck service instances |
//!
//! Criteria (all optional, combined with AND): `before`, `after` (RFC 3339),
//! `broker`, `location`, `platform`, `operation`, `status` (`403`, `>399`,
//! `>=500`, `<300`, `400-499`, `4xx`), `plan` and `service` (id, or the
//! name the catalog gave at capture), `instance_id`,
//! `request_id`, `outcome`; plus `limit` (default 50, at most 1000),
//! `order` (`newest`, the default, or `oldest`) and `cursor`. An owner
//! token sees only its customer's records (`CaptureRecord::customer`, fixed
//! at capture), in searches, show, tail and failed instances alike.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{error, json_response, Admin};
use crate::body::ResponseBody;
use crate::config::{AdminToken, TokenScope};
use crate::store::query::{Cursor, Filter, Order, Search, StatusExpr, Summary};
use crate::store::CaptureRecord;
use crate::timefmt::parse_rfc3339_us;

/// Longest page.
const MAX_LIMIT: usize = 1000;

/// Decoded `key=value` pairs of a query string.
pub(super) fn params(query: Option<&str>) -> Vec<(String, String)> {
    let dec = |s: &str| {
        let s = s.replace('+', " ");
        percent_decode_str(&s).decode_utf8_lossy().into_owned()
    };
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

pub(super) fn bad(msg: String) -> Response<ResponseBody> {
    error(StatusCode::BAD_REQUEST, "BadRequest", &msg)
}

/// The criteria of a query string, scoped to what `token` may see.
pub(super) fn filter(token: &AdminToken, ps: &[(String, String)]) -> Result<Filter, String> {
    let mut f = Filter::default();
    for (k, v) in ps {
        let v = v.clone();
        match k.as_str() {
            "before" => f.before_us = Some(parse_rfc3339_us(&v).map_err(|e| format!("before = {e}"))?),
            "after" => f.after_us = Some(parse_rfc3339_us(&v).map_err(|e| format!("after = {e}"))?),
            "broker" => f.broker = Some(v),
            "location" => f.location = Some(v),
            "platform" => f.platform = Some(v),
            "operation" => f.operation = Some(v.to_ascii_uppercase()),
            "status" => f.status = Some(StatusExpr::parse(&v)?),
            "plan_id" | "plan" => f.plan = Some(v),
            "service_id" | "service" => f.service = Some(v),
            "instance_id" | "instance" => f.instance_id = Some(v),
            "request_id" => f.request_id = Some(v),
            "outcome" => f.outcome = Some(v),
            "limit" | "cursor" | "order" | "stuck_after" | "bucket" => {}
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; known: before, after, broker, location, platform, operation, status, plan (id or name), service (id or name), instance_id, request_id, outcome, limit, order, cursor"
                ))
            }
        }
    }
    f.customer = scope(token);
    Ok(f)
}

/// The customer whose records an owner token sees (`None` for operators:
/// all). Records carry their customer from capture on, so the broker ids
/// a customer has now do not matter.
fn scope(token: &AdminToken) -> Option<String> {
    match &token.scope {
        TokenScope::Operator => None,
        TokenScope::Owner(c) => Some(c.clone()),
    }
}

fn summary_json(s: &Summary) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    v["received_at"] = json!(crate::timefmt::rfc3339_us(s.received_at_us));
    v
}

fn record_json(r: &CaptureRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["received_at"] = json!(crate::timefmt::rfc3339_us(r.received_at_us));
    v
}

impl Admin {
    /// `GET /admin/v1/logs`.
    pub(super) async fn search_logs(
        &self,
        token: &AdminToken,
        req: &Request<Incoming>,
    ) -> Response<ResponseBody> {
        let ps = params(req.uri().query());
        let f = match filter(token, &ps) {
            Ok(f) => f,
            Err(e) => return bad(e),
        };
        let get = |k: &str| ps.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let limit = match get("limit").map(str::parse::<usize>) {
            None => 50,
            Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                return bad(format!(
                    "limit = {:?}: expected 1 to {MAX_LIMIT}",
                    get("limit").unwrap_or("")
                ))
            }
        };
        let order = match get("order") {
            None | Some("newest") => Order::NewestFirst,
            Some("oldest") => Order::OldestFirst,
            Some(o) => return bad(format!("order = {o:?}: expected \"newest\" or \"oldest\"")),
        };
        let cursor = match get("cursor").filter(|c| !c.is_empty()).map(Cursor::decode) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => return bad(e),
        };
        let search = Search {
            filter: f,
            order,
            limit,
            cursor,
        };
        match self.inner.logs.search(&search).await {
            Ok(page) => json_response(
                StatusCode::OK,
                json!({
                    "records": page.records.iter().map(summary_json).collect::<Vec<_>>(),
                    "next": page.next,
                }),
            ),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "StoreUnavailable", &e),
        }
    }

    /// `GET /admin/v1/logs/{id}`.
    pub(super) async fn show_log(&self, token: &AdminToken, id: &str) -> Response<ResponseBody> {
        let not_found = || {
            error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no record {id:?}"),
            )
        };
        let Ok(uuid) = uuid::Uuid::parse_str(id) else {
            return not_found();
        };
        match self.inner.logs.get(uuid, scope(token)).await {
            Ok(Some(r)) => json_response(StatusCode::OK, record_json(&r)),
            Ok(None) => not_found(),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "StoreUnavailable", &e),
        }
    }

    /// `GET /admin/v1/failed-instances`.
    pub(super) async fn failed_instances(
        &self,
        token: &AdminToken,
        req: &Request<Incoming>,
    ) -> Response<ResponseBody> {
        let ps = params(req.uri().query());
        let mut broker = None;
        let mut stuck_after = Duration::from_secs(24 * 3600);
        for (k, v) in &ps {
            match k.as_str() {
                "broker" => broker = Some(v.clone()),
                "stuck_after" => match crate::config::duration::parse(v) {
                    Ok(d) => stuck_after = d,
                    Err(e) => return bad(format!("stuck_after = {v:?}: {e}")),
                },
                other => {
                    return bad(format!(
                        "unknown parameter {other:?}; known: broker, stuck_after"
                    ))
                }
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        match self
            .inner
            .logs
            .instance_problems(broker, scope(token), now, stuck_after.as_micros() as i64)
            .await
        {
            Ok(list) => {
                let items: Vec<serde_json::Value> = list
                    .iter()
                    .map(|p| {
                        let mut v = serde_json::to_value(p).unwrap_or_default();
                        v["started_at"] = json!(crate::timefmt::rfc3339_us(p.started_at_us));
                        v["last_seen_at"] = json!(crate::timefmt::rfc3339_us(p.last_seen_at_us));
                        v
                    })
                    .collect();
                json_response(
                    StatusCode::OK,
                    json!({"instances": items, "stuck_after": crate::config::duration::format(stuck_after)}),
                )
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "StoreUnavailable", &e),
        }
    }

    /// `GET /admin/v1/logs/tail`: one line (or SSE event) per record as it
    /// is captured; `{"lagged": n}` (SSE `event: lagged`) when this reader
    /// fell behind and lost `n`. A reader that goes away ends the task.
    pub(super) fn tail_logs(
        &self,
        token: &AdminToken,
        req: &Request<Incoming>,
    ) -> Response<ResponseBody> {
        let ps = params(req.uri().query());
        let f = match filter(token, &ps) {
            Ok(f) => f,
            Err(e) => return bad(e),
        };
        let sse = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"));
        let mut feed = (self.inner.subscribe)();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            let line = |kind: &str, v: serde_json::Value| {
                if sse {
                    Bytes::from(format!("event: {kind}\ndata: {v}\n\n"))
                } else {
                    Bytes::from(format!("{v}\n"))
                }
            };
            // NB: a comment first, so proxies and clients see the stream open.
            let hello = if sse {
                Bytes::from_static(b": osb-gateway tail\n\n")
            } else {
                Bytes::new()
            };
            if !hello.is_empty() && tx.send(hello).await.is_err() {
                return;
            }
            loop {
                let next = tokio::select! {
                    r = feed.recv() => r,
                    _ = tx.closed() => return,
                };
                let out = match next {
                    Ok(r) if f.matches(&r) => line("record", record_json(&r)),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => line("lagged", json!({ "lagged": n })),
                    Err(RecvError::Closed) => return,
                };
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        });
        let mut r = Response::new(ResponseBody::channel(rx));
        let ct = if sse {
            "text/event-stream"
        } else {
            "application/x-ndjson"
        };
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}

/// The live feed, as the admin plane subscribes to it.
pub type Subscribe =
    Arc<dyn Fn() -> tokio::sync::broadcast::Receiver<Arc<CaptureRecord>> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        let p = params(Some("status=%3E399&instance_id=a%27b+c&x"));
        assert_eq!(
            p,
            vec![
                ("status".into(), ">399".into()),
                ("instance_id".into(), "a'b c".into()),
                ("x".into(), String::new())
            ]
        );
    }
}

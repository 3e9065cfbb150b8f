//! Catalog refresh: every route's `/v2/catalog`, fetched on a timer (per
//! broker, default every hour) and on demand, with `If-None-Match` /
//! `If-Modified-Since` when the broker sent `ETag` / `Last-Modified`.
//!
//! The cache keeps, per route, the service and plan names (they enrich
//! capture records and the admin views) and the refresh state (last
//! success, last error, counts). The same fetch confirms a staged broker
//! password: a catalog answered with the staged credentials promotes them.
//! Arrows: `catalog` uses `registry` and `upstream`; `admin` and the
//! gateway's wiring use `catalog`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::registry::lifecycle;
use crate::registry::{Reloader, Route};
use crate::store::record::CaptureRecord;

/// Largest catalog accepted (bytes).
pub const MAX_CATALOG_BYTES: usize = 16 << 20;

/// Catalog fetches running at once (timer and on demand together).
const CONCURRENCY: usize = 8;

/// A plan as the catalog names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanName {
    /// Plan id.
    pub id: String,
    /// Plan name.
    pub name: String,
}

/// A service as the catalog names it, with its plans.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceName {
    /// Service id.
    pub id: String,
    /// Service name.
    pub name: String,
    /// Its plans.
    #[serde(default)]
    pub plans: Vec<PlanName>,
}

#[derive(Deserialize)]
struct CatalogBody {
    services: Vec<ServiceName>,
}

/// The cached catalog and refresh state of one route.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteCatalog {
    /// Services and plans (ids and names) of the last successful fetch.
    pub services: Vec<ServiceName>,
    /// `ETag` of that answer.
    pub etag: Option<String>,
    /// `Last-Modified` of that answer.
    pub last_modified: Option<String>,
    /// Last attempt, Unix seconds (shown as RFC 3339).
    #[serde(serialize_with = "as_rfc3339")]
    pub last_attempt: Option<u64>,
    /// Last success (a 200 or a 304), Unix seconds (shown as RFC 3339).
    #[serde(serialize_with = "as_rfc3339")]
    pub last_success: Option<u64>,
    /// Why the last attempt failed (cleared by a success).
    pub last_error: Option<String>,
    /// Status of the last answer.
    pub last_status: Option<u16>,
    /// Successful fetches.
    pub refreshes: u64,
    /// Of which answered `304 Not Modified`.
    pub not_modified: u64,
    /// Failed fetches.
    pub failures: u64,
    /// State of a staged password: `confirmed`, or why it is not yet.
    pub staged_password: Option<String>,
}

fn as_rfc3339<S: serde::Serializer>(t: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&crate::timefmt::rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// A per-route gauge: name, help, value.
type Gauge = (&'static str, &'static str, fn(&RouteCatalog) -> u64);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct CatalogMetrics {
    /// Successful refreshes (200 or 304).
    pub refreshes: AtomicU64,
    /// Of which 304.
    pub not_modified: AtomicU64,
    /// Failed refreshes.
    pub failures: AtomicU64,
    /// Staged passwords confirmed and promoted.
    pub rotations: AtomicU64,
}

/// What a refresh did.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshResult {
    /// `broker/location`.
    pub route: String,
    /// `updated`, `not_modified` or `failed`.
    pub result: &'static str,
    /// Services in the cached catalog afterwards.
    pub services: usize,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What happened to a staged password, if one was staged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staged_password: Option<String>,
}

/// The catalog cache and its refresher.
pub struct Catalogs {
    state: RwLock<HashMap<String, RouteCatalog>>,
    limit: Semaphore,
    /// Counters.
    pub metrics: CatalogMetrics,
}

impl Default for Catalogs {
    fn default() -> Self {
        Catalogs {
            state: RwLock::default(),
            limit: Semaphore::new(CONCURRENCY),
            metrics: CatalogMetrics::default(),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

enum Fetched {
    Catalog {
        services: Vec<ServiceName>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    NotModified,
}

fn header_text(h: &http::HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// One `GET /v2/catalog` with `authorization`, through the route's own
/// pool (same connections and trust rules as the proxy).
async fn fetch(
    route: &Route,
    authorization: &HeaderValue,
    conditional: Option<(&Option<String>, &Option<String>)>,
) -> Result<(StatusCode, Fetched), String> {
    let uri = route
        .endpoint
        .target("/v2/catalog")
        .map_err(|e| format!("cannot build the catalog URL: {e}"))?;
    let mut req = Request::get(uri);
    let h = req.headers_mut().expect("a fresh builder has headers");
    h.insert(header::AUTHORIZATION, authorization.clone());
    h.insert(
        crate::osb::API_VERSION,
        HeaderValue::from_static(crate::osb::DEFAULT_API_VERSION),
    );
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert(crate::osb::REQUEST_IDENTITY, v);
    }
    if let Some((etag, modified)) = conditional {
        if let Some(v) = etag.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(header::IF_NONE_MATCH, v);
        }
        if let Some(v) = modified
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            h.insert(header::IF_MODIFIED_SINCE, v);
        }
    }
    let req = req
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let limit = route.timeouts.response.min(Duration::from_secs(60));
    let work = async {
        let pool = route.client.clone();
        let resp = pool.send(req).await.map_err(|e| e.failure().1)?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok((status, Fetched::NotModified));
        }
        let (etag, last_modified) = (
            header_text(resp.headers(), header::ETAG),
            header_text(resp.headers(), header::LAST_MODIFIED),
        );
        // NB: boxed first: collecting the pool's generic body directly
        // trips rustc's higher-ranked `Send` check.
        let body = Limited::new(resp.into_body().boxed_unsync(), MAX_CATALOG_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the catalog: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "the broker answered {status}{}",
                error_detail(&body)
            ));
        }
        let parsed: CatalogBody = serde_json::from_slice(&body)
            .map_err(|e| format!("the catalog is not valid OSB JSON: {e}"))?;
        Ok((
            status,
            Fetched::Catalog {
                services: parsed.services,
                etag,
                last_modified,
            },
        ))
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

impl Catalogs {
    /// The cached state of a route (`broker/location`).
    pub fn get(&self, key: &str) -> Option<RouteCatalog> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Service and plan names for a record, from its route's cached catalog
    /// (the `global` one when a location has none of its own).
    pub fn enrich(&self, r: &mut CaptureRecord) {
        if r.service_id.is_empty() && r.plan_id.is_empty() {
            return;
        }
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let own = state.get(&format!("{}/{}", r.broker, r.location));
        let global = state.get(&format!("{}/global", r.broker));
        for c in [own, global].into_iter().flatten() {
            for s in &c.services {
                let plan = s.plans.iter().find(|p| p.id == r.plan_id);
                if s.id == r.service_id || (r.service_id.is_empty() && plan.is_some()) {
                    if r.service_name.is_empty() {
                        r.service_name = s.name.clone();
                    }
                    if let Some(p) = plan {
                        r.plan_name = p.name.clone();
                    }
                    return;
                }
            }
        }
    }

    /// Drops the state of routes that no longer exist.
    fn prune(&self, keep: &std::collections::HashSet<String>) {
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| keep.contains(k));
    }

    fn update(&self, key: &str, f: impl FnOnce(&mut RouteCatalog)) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(state.entry(key.to_string()).or_default());
    }

    /// Fetches one route's catalog now (conditionally when it can) and, if
    /// a password is staged for the route, tries it and promotes it when the
    /// broker accepts it.
    pub async fn refresh(&self, reloader: &Reloader, route: &Arc<Route>) -> RefreshResult {
        let _permit = self.limit.acquire().await;
        let key = route.key();
        let cached = self.get(&key).unwrap_or_default();
        let conditional = (!cached.services.is_empty() || cached.etag.is_some())
            .then_some((&cached.etag, &cached.last_modified));
        let fetched = fetch(route, route.authorization(), conditional).await;
        let now = unix_now();
        let result = match fetched {
            Ok((status, f)) => {
                self.metrics.refreshes.fetch_add(1, Relaxed);
                let not_modified = matches!(f, Fetched::NotModified);
                if not_modified {
                    self.metrics.not_modified.fetch_add(1, Relaxed);
                }
                let mut count = 0;
                self.update(&key, |c| {
                    if let Fetched::Catalog {
                        services,
                        etag,
                        last_modified,
                    } = f
                    {
                        c.services = services;
                        c.etag = etag;
                        c.last_modified = last_modified;
                    } else {
                        c.not_modified += 1;
                    }
                    c.last_attempt = Some(now);
                    c.last_success = Some(now);
                    c.last_error = None;
                    c.last_status = Some(status.as_u16());
                    c.refreshes += 1;
                    count = c.services.len();
                });
                tracing::debug!(route = %key, not_modified, services = count, "catalog refreshed");
                RefreshResult {
                    route: key.clone(),
                    result: if not_modified {
                        "not_modified"
                    } else {
                        "updated"
                    },
                    services: count,
                    error: None,
                    staged_password: None,
                }
            }
            Err(e) => {
                self.metrics.failures.fetch_add(1, Relaxed);
                tracing::warn!(route = %key, error = %e, "catalog refresh failed");
                let mut count = 0;
                self.update(&key, |c| {
                    c.last_attempt = Some(now);
                    c.last_error = Some(e.clone());
                    c.failures += 1;
                    count = c.services.len();
                });
                RefreshResult {
                    route: key.clone(),
                    result: "failed",
                    services: count,
                    error: Some(e),
                    staged_password: None,
                }
            }
        };
        let staged = self.confirm_staged(reloader, route).await;
        RefreshResult {
            staged_password: staged,
            ..result
        }
    }

    /// Tries a staged password with a catalog fetch; on success promotes it
    /// in the registry (written back, table swapped). Returns what happened.
    async fn confirm_staged(&self, reloader: &Reloader, route: &Arc<Route>) -> Option<String> {
        let staged_auth = route.staged_authorization()?;
        let key = route.key();
        // The staged value as written, so a newer staging is not promoted by mistake.
        let expected = {
            let reg = reloader.registry();
            let b = reg.brokers.iter().find(|b| *b.id == *route.broker)?;
            let e = if &*route.location == crate::registry::PRIVATE {
                b.private.as_ref()?
            } else {
                &b.publications
                    .iter()
                    .find(|p| *p.location == *route.location)?
                    .endpoint
            };
            e.staged_password.clone()?
        };
        let outcome = match fetch(route, staged_auth, None).await {
            Ok(_) => {
                let (broker, location) = (route.broker.to_string(), route.location.to_string());
                match reloader
                    .change("credential rotation confirmed", |reg| {
                        lifecycle::promote_staged(reg, &broker, &location, &expected)
                    })
                    .await
                {
                    Ok((true, _)) => {
                        self.metrics.rotations.fetch_add(1, Relaxed);
                        tracing::info!(route = %key, "staged broker password confirmed and now in use");
                        "confirmed".to_string()
                    }
                    Ok((false, _)) => "superseded by a newer staged password".to_string(),
                    Err(e) => format!("confirmed by the broker but not saved: {e}"),
                }
            }
            Err(e) => {
                tracing::warn!(route = %key, error = %e, "staged broker password not confirmed; the current one stays in use");
                format!("not confirmed (the current password stays in use): {e}")
            }
        };
        self.update(&key, |c| c.staged_password = Some(outcome.clone()));
        Some(outcome)
    }

    /// Refreshes every route whose interval has passed, every `tick`, until
    /// the task is dropped. Routes removed by a reload leave the cache.
    pub async fn run_timer(self: Arc<Self>, reloader: Arc<Reloader>, tick: Duration) {
        let mut t = tokio::time::interval(tick);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut due_at: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            t.tick().await;
            let now = tokio::time::Instant::now();
            let table = reloader.routes().load_full();
            let routes = table.routes();
            let keys: std::collections::HashSet<String> =
                routes.iter().map(|(r, _)| r.key()).collect();
            self.prune(&keys);
            due_at.retain(|k, _| keys.contains(k));
            running.retain(|_, h| !h.is_finished());
            for (route, _) in routes {
                if route.catalog_refresh.is_zero() && route.staged_authorization().is_none() {
                    continue;
                }
                let key = route.key();
                if running.contains_key(&key) {
                    continue;
                }
                // First refresh right after start (or after the route appeared).
                let due = *due_at.entry(key.clone()).or_insert(now);
                if due > now {
                    continue;
                }
                let every = if route.catalog_refresh.is_zero() {
                    // Only a staged password to confirm: retry each minute.
                    Duration::from_secs(60)
                } else {
                    route.catalog_refresh
                };
                due_at.insert(key.clone(), now + every);
                let (me, rl) = (self.clone(), reloader.clone());
                running.insert(
                    key,
                    tokio::spawn(async move {
                        me.refresh(&rl, &route).await;
                    }),
                );
            }
        }
    }

    /// Prometheus text for the refresh counters and per-route state.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let m = &self.metrics;
        for (name, help, v) in [
            (
                "osb_gateway_catalog_refreshes_total",
                "Successful catalog refreshes (200 or 304).",
                m.refreshes.load(Relaxed),
            ),
            (
                "osb_gateway_catalog_not_modified_total",
                "Catalog refreshes answered 304 Not Modified.",
                m.not_modified.load(Relaxed),
            ),
            (
                "osb_gateway_catalog_refresh_failures_total",
                "Failed catalog refreshes.",
                m.failures.load(Relaxed),
            ),
            (
                "osb_gateway_credential_rotations_total",
                "Staged broker passwords confirmed and promoted.",
                m.rotations.load(Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<&String> = state.keys().collect();
        keys.sort();
        let gauges: [Gauge; 2] = [
            (
                "osb_gateway_catalog_last_success_timestamp_seconds",
                "Last successful catalog refresh per route.",
                |c| c.last_success.unwrap_or(0),
            ),
            (
                "osb_gateway_catalog_refresh_failing",
                "Whether the last catalog refresh of a route failed (1) or not (0).",
                |c| u64::from(c.last_error.is_some()),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for k in &keys {
                let (b, l) = k.split_once('/').unwrap_or((k, ""));
                let _ = writeln!(
                    out,
                    "{name}{{broker=\"{}\",location=\"{}\"}} {}",
                    crate::metrics::escape_label(b),
                    crate::metrics::escape_label(l),
                    value(&state[*k])
                );
            }
        }
    }
}

/// What of a failed catalog answer is shown (in `last_error`, to the
/// broker's owner): an OSB error's `description`, cut to 200 characters,
/// without control characters; never the raw body, which may come from
/// whatever the endpoint names.
fn error_detail(body: &[u8]) -> String {
    let described = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("description")?.as_str().map(str::to_string));
    match described {
        Some(d) => {
            let clean: String = d.chars().filter(|c| !c.is_control()).take(200).collect();
            format!(": {clean}")
        }
        None => format!(" ({} bytes, not an OSB error body)", body.len()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn failed_catalogs_show_an_osb_description_never_the_raw_body() {
        assert_eq!(
            error_detail(br#"{"description":"db \u001b[31mdown","error":"X"}"#),
            ": db [31mdown"
        );
        assert_eq!(
            error_detail(b"ami-id: secret-metadata"),
            " (23 bytes, not an OSB error body)"
        );
    }
    use super::*;

    #[test]
    fn enriches_from_own_location_then_global() {
        let c = Catalogs::default();
        c.update("pg/global", |s| {
            s.services = vec![ServiceName {
                id: "svc".into(),
                name: "postgres".into(),
                plans: vec![PlanName {
                    id: "small".into(),
                    name: "Small".into(),
                }],
            }]
        });
        let mut r: CaptureRecord = serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::nil(), "received_at_us": 0, "duration_us": 0, "ttfb_us": 0,
            "gateway": "", "platform": "", "location": "eu", "broker": "pg", "upstream_url": "",
            "method": "PUT", "path": "", "query": "", "operation": "", "service_id": "svc",
            "plan_id": "small", "service_name": "", "plan_name": "", "instance_id": "",
            "binding_id": "", "accepts_incomplete": false, "broker_operation": "", "state": "",
            "description": "", "api_version": "", "originating_platform": "",
            "originating_user": "", "request_id": "", "status": 0, "outcome": "", "error": "",
            "request_headers": [], "response_headers": [], "request_body": "",
            "request_body_size": 0, "request_body_truncated": false, "response_body": "",
            "response_body_size": 0, "response_body_truncated": false
        }))
        .unwrap();
        c.enrich(&mut r);
        assert_eq!(
            (r.service_name.as_str(), r.plan_name.as_str()),
            ("postgres", "Small")
        );
    }
}

//! Broker lifecycle endpoints under `/admin/v1/brokers`.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/brokers` | brokers the token sees |
//! | POST | `/brokers` | register (with the private registration) |
//! | GET | `/brokers/{id}` | one broker, secrets masked |
//! | PATCH | `/brokers/{id}` | edit (all but the id) |
//! | DELETE | `/brokers/{id}` | delete (409 while an approved publication exists) |
//! | POST | `/brokers/{id}/deactivate` | deactivate, permanently |
//! | PUT | `/brokers/{id}/password` | replace or stage a route's password |
//! | PUT | `/brokers/{id}/publications/{location}` | publish, or edit a publication |
//! | DELETE | `/brokers/{id}/publications/{location}` | revoke an unapproved publication |
//! | POST | `/brokers/{id}/publications/{location}/approve` | approve (operator) |
//! | GET | `/brokers/{id}/catalog` | cached catalog and refresh state per route |
//! | POST | `/brokers/{id}/catalog/refresh` | refresh now |
//!
//! Another customer's broker answers 404, exactly like a missing one.
//! Every answer has the registry's version as `ETag`; a change with an
//! `If-Match` naming another version is refused with 412 (replicas sharing
//! a registry: `registry::shared`).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::{catalog_summary, error, json_response, method_not_allowed, Admin};
use crate::body::ResponseBody;
use crate::config::secret::SecretSource;
use crate::config::{AdminToken, TokenScope};
use crate::registry::file::{BrokerFile, EndpointFile};
use crate::registry::lifecycle::{self, Actor};
use crate::registry::{ChangeError, ReloadReport, PRIVATE};

/// Largest admin request body.
const MAX_BODY: usize = 64 << 10;

fn actor(token: &AdminToken) -> Actor<'_> {
    match &token.scope {
        TokenScope::Operator => Actor::Operator,
        TokenScope::Owner(c) => Actor::Owner(c),
    }
}

fn change_error(e: &ChangeError) -> Response<ResponseBody> {
    let (status, code) = match e {
        ChangeError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
        ChangeError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
        ChangeError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
        ChangeError::BadInput(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
        ChangeError::Invalid(_) => (StatusCode::BAD_REQUEST, "InvalidRegistry"),
        ChangeError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "StorageError"),
        ChangeError::Stale(_) => (StatusCode::PRECONDITION_FAILED, "PreconditionFailed"),
    };
    let mut d = e.to_string();
    if matches!(e, ChangeError::Invalid(_)) {
        d.push_str("\nNothing was changed; the current routes keep serving.");
    }
    error(status, code, &d)
}

pub(super) async fn read_json<T: DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<ResponseBody>> {
    let body: Bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("cannot read the request body (at most {MAX_BODY} bytes): {e}"),
            ))
        }
    };
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("invalid JSON body: {e}"),
        )
    })
}

/// `ETag: "VERSION"` (a registry version is hex: always a valid value).
fn set_etag(resp: &mut Response<ResponseBody>, version: &str) {
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
}

fn masked(secret: &str) -> String {
    SecretSource::parse(secret).masked()
}

fn endpoint_view(e: &EndpointFile) -> Value {
    json!({
        "endpoint": e.endpoint,
        "username": e.username,
        "password": masked(&e.password),
        "staged_password": e.staged_password.as_deref().map(masked),
        "development_mode": e.development_mode,
        "ca_bundle": e.ca_bundle,
        "connect_timeout": e.connect_timeout,
        "response_timeout": e.response_timeout,
        "idle_timeout": e.idle_timeout,
    })
}

/// `private`, `pending_approval`, `published` or `deactivated`.
pub fn state(b: &BrokerFile) -> &'static str {
    if b.deactivated {
        "deactivated"
    } else if b.publications.iter().any(|p| p.approved) {
        "published"
    } else if !b.publications.is_empty() {
        "pending_approval"
    } else {
        "private"
    }
}

impl Admin {
    fn broker_view(&self, b: &BrokerFile) -> Value {
        let catalog =
            |loc: &str| catalog_summary(self.inner.catalogs.get(&format!("{}/{loc}", b.id)));
        let private = b.private.as_ref().map(|e| {
            let mut v = endpoint_view(e);
            v["catalog"] = catalog(PRIVATE);
            v
        });
        let publications: Vec<Value> = b
            .publications
            .iter()
            .map(|p| {
                let mut v = endpoint_view(&p.endpoint);
                v["location"] = json!(p.location);
                v["approved"] = json!(p.approved);
                v["catalog"] = catalog(&p.location);
                v
            })
            .collect();
        json!({
            "id": b.id,
            "name": b.name,
            "owner": b.owner,
            "state": state(b),
            "deactivated_at": b.deactivated_at,
            "redact_parameters": b.redact_parameters,
            "catalog_refresh": b.catalog_refresh.as_deref().unwrap_or("1h"),
            "private": private,
            "publications": publications,
        })
    }

    fn changed(
        &self,
        status: StatusCode,
        id: &str,
        report: &ReloadReport,
        extra: Value,
    ) -> Response<ResponseBody> {
        let reg = self.inner.reloader.registry();
        let broker = reg
            .brokers
            .iter()
            .find(|b| b.id == id)
            .map(|b| self.broker_view(b));
        let mut body = json!({
            "broker": broker,
            "reload": report,
            "persisted": self.inner.reloader.persists(),
        });
        if !self.inner.reloader.persists() {
            body["warning"] = json!("the registry is the embedded development one: changes last until the gateway stops");
        }
        if let (Value::Object(b), Value::Object(x)) = (&mut body, extra) {
            b.extend(x);
        }
        let mut resp = json_response(status, body);
        set_etag(&mut resp, &report.version);
        resp
    }

    /// Dispatches `/admin/v1/brokers[/...]`; every answer carries the
    /// registry's version as its `ETag` (for `If-Match` on a change: see
    /// `registry::shared`).
    pub(super) async fn brokers(
        &self,
        token: &AdminToken,
        req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        // NB: taken before the answer is made: if a reload comes in
        // between, the tag is the older one and a change sent with it is
        // refused, never applied over what the client did not see. A
        // change's own answer carries the version it made (`changed`).
        let before = self.inner.reloader.version();
        let mut resp = self.brokers_inner(token, req).await;
        if !resp.headers().contains_key(http::header::ETAG) {
            set_etag(&mut resp, &before);
        }
        resp
    }

    async fn brokers_inner(
        &self,
        token: &AdminToken,
        req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let path = req.uri().path().to_string();
        let rest = path
            .strip_prefix("/admin/v1/brokers")
            .unwrap_or("")
            .trim_matches('/');
        let segs: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let method = req.method().clone();
        // NB: a change made to what a client read: see registry::shared.
        let if_match = req
            .headers()
            .get(http::header::IF_MATCH)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let if_match = if_match.as_deref();
        let who = actor(token);
        let trigger = format!("admin API ({})", token.name);
        let key = self.inner.reloader.config().secret_key.clone();
        let key = key.as_ref();
        let r = &self.inner.reloader;
        match (&method, segs.as_slice()) {
            (&Method::GET, []) => {
                let reg = r.registry();
                let list: Vec<Value> = reg
                    .brokers
                    .iter()
                    .filter(|b| who.sees(&b.owner))
                    .map(|b| self.broker_view(b))
                    .collect();
                json_response(StatusCode::OK, json!({ "brokers": list }))
            }
            (&Method::POST, []) => {
                let input: lifecycle::BrokerInput = match read_json(req).await {
                    Ok(i) => i,
                    Err(r) => return r,
                };
                match r
                    .change_if(&trigger, if_match, |reg| {
                        lifecycle::register(reg, who, &input, key)
                    })
                    .await
                {
                    Ok((id, rep)) => self.changed(StatusCode::CREATED, &id, &rep, json!({})),
                    Err(e) => change_error(&e),
                }
            }
            (_, []) => method_not_allowed(&method, &path),
            (&Method::GET, [id]) => match lifecycle::find(&r.registry(), who, id) {
                Ok(b) => json_response(StatusCode::OK, self.broker_view(b)),
                Err(e) => change_error(&e),
            },
            (&Method::PATCH, [id]) => {
                // NB: visibility before the body, so a 404 reveals nothing.
                if let Err(e) = lifecycle::find(&r.registry(), who, id) {
                    return change_error(&e);
                }
                let input: lifecycle::BrokerInput = match read_json(req).await {
                    Ok(i) => i,
                    Err(r) => return r,
                };
                match r
                    .change_if(&trigger, if_match, |reg| {
                        lifecycle::edit(reg, who, id, &input, key)
                    })
                    .await
                {
                    Ok(((), rep)) => self.changed(StatusCode::OK, id, &rep, json!({})),
                    Err(e) => change_error(&e),
                }
            }
            (&Method::DELETE, [id]) => {
                match r
                    .change_if(&trigger, if_match, |reg| lifecycle::delete(reg, who, id))
                    .await
                {
                    Ok(((), rep)) => json_response(
                        StatusCode::OK,
                        json!({"deleted": id, "reload": rep, "persisted": r.persists()}),
                    ),
                    Err(e) => change_error(&e),
                }
            }
            (_, [_]) => method_not_allowed(&method, &path),
            (&Method::POST, [id, "deactivate"]) => {
                let now = crate::timefmt::now_rfc3339();
                match r
                    .change_if(&trigger, if_match, |reg| {
                        lifecycle::deactivate(reg, who, id, now)
                    })
                    .await
                {
                    Ok(((), rep)) => self.changed(StatusCode::OK, id, &rep, json!({})),
                    Err(e) => change_error(&e),
                }
            }
            (&Method::PUT, [id, "password"]) => {
                if let Err(e) = lifecycle::find(&r.registry(), who, id) {
                    return change_error(&e);
                }
                let input: lifecycle::PasswordInput = match read_json(req).await {
                    Ok(i) => i,
                    Err(r) => return r,
                };
                let res = r
                    .change_if(&trigger, if_match, |reg| {
                        lifecycle::set_password(reg, who, id, &input, key)
                    })
                    .await;
                let (location, rep) = match res {
                    Ok(x) => x,
                    Err(e) => return change_error(&e),
                };
                let staged = input.stage.unwrap_or(true);
                let confirmation = if staged {
                    let route = r
                        .routes()
                        .load_full()
                        .routes()
                        .into_iter()
                        .map(|(route, _)| route)
                        .find(|x| *x.broker == **id && *x.location == *location);
                    match route {
                        Some(route) => self.inner.catalogs.refresh(r, &route).await.staged_password,
                        None => None,
                    }
                } else {
                    None
                };
                self.changed(
                    StatusCode::OK,
                    id,
                    &rep,
                    json!({"location": location, "staged": staged, "confirmation": confirmation}),
                )
            }
            (&Method::GET, [id, "catalog"]) => match lifecycle::find(&r.registry(), who, id) {
                Ok(b) => {
                    let mut out = serde_json::Map::new();
                    let locs = b
                        .private
                        .iter()
                        .map(|_| PRIVATE.to_string())
                        .chain(b.publications.iter().map(|p| p.location.clone()));
                    for loc in locs {
                        let c = self.inner.catalogs.get(&format!("{id}/{loc}"));
                        out.insert(loc, serde_json::to_value(c).unwrap_or(Value::Null));
                    }
                    json_response(StatusCode::OK, json!({"broker": id, "routes": out}))
                }
                Err(e) => change_error(&e),
            },
            (_, [_, "deactivate" | "password" | "catalog"]) => method_not_allowed(&method, &path),
            (&Method::POST, [id, "catalog", "refresh"]) => {
                if let Err(e) = lifecycle::find(&r.registry(), who, id) {
                    return change_error(&e);
                }
                let routes: Vec<_> = r
                    .routes()
                    .load_full()
                    .routes()
                    .into_iter()
                    .map(|(route, _)| route)
                    .filter(|x| *x.broker == **id)
                    .collect();
                // One task per route: they run together (bounded by the
                // catalog semaphore) and the answer lists them in order.
                let tasks: Vec<_> = routes
                    .into_iter()
                    .map(|route| {
                        let (c, rl) = (self.inner.catalogs.clone(), r.clone());
                        tokio::spawn(async move { c.refresh(&rl, &route).await })
                    })
                    .collect();
                let mut results = Vec::new();
                for t in tasks {
                    if let Ok(res) = t.await {
                        results.push(res);
                    }
                }
                json_response(StatusCode::OK, json!({"broker": id, "results": results}))
            }
            (&Method::PUT, [id, "publications", location]) => {
                if let Err(e) = lifecycle::find(&r.registry(), who, id) {
                    return change_error(&e);
                }
                let input: lifecycle::PublicationInput = match read_json(req).await {
                    Ok(i) => i,
                    Err(r) => return r,
                };
                match r
                    .change_if(&trigger, if_match, |reg| {
                        lifecycle::publish(reg, who, id, location, &input, key)
                    })
                    .await
                {
                    Ok((created, rep)) => self.changed(
                        if created {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        },
                        id,
                        &rep,
                        json!({}),
                    ),
                    Err(e) => change_error(&e),
                }
            }
            (&Method::DELETE, [id, "publications", location]) => {
                match r
                    .change_if(&trigger, if_match, |reg| {
                        lifecycle::revoke(reg, who, id, location)
                    })
                    .await
                {
                    Ok(((), rep)) => self.changed(StatusCode::OK, id, &rep, json!({})),
                    Err(e) => change_error(&e),
                }
            }
            (_, [_, "publications", _]) => method_not_allowed(&method, &path),
            (&Method::POST, [id, "publications", location, "approve"]) => {
                match r
                    .change_if(&trigger, if_match, |reg| {
                        lifecycle::approve(reg, who, id, location)
                    })
                    .await
                {
                    Ok((_, rep)) => self.changed(StatusCode::OK, id, &rep, json!({})),
                    Err(e) => change_error(&e),
                }
            }
            (_, [_, "publications", _, "approve"] | [_, "catalog", "refresh"]) => {
                method_not_allowed(&method, &path)
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no admin endpoint {path}"),
            ),
        }
    }
}

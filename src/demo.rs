//! A small in-memory OSB broker for trying the gateway on loopback: what
//! `osb-gateway serve` without `--config` routes its demo platform to (in
//! the same process), and `osb-gateway sample-broker` runs alone.
//!
//! Basic auth `broker:broker-secret`. It answers the catalog, provisions
//! and deprovisions instances (plan `fail-plan` always fails, for trying
//! the logs), binds and unbinds, and logs one line per request with the
//! user it saw (never a password) and the request identity.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};

/// The sample broker's user name.
pub const USER: &str = "broker";
/// The sample broker's password (development only, as the embedded registry says).
pub const PASSWORD: &str = "broker-secret";

#[derive(Default)]
struct State {
    instances: HashMap<String, Value>,
    bindings: HashMap<String, Value>,
}

/// Serves the sample broker on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) {
    let state = Arc::new(Mutex::new(State::default()));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, state.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

fn authorized(req: &Request<Incoming>) -> Option<String> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    let token = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    (u == USER && p == PASSWORD).then(|| u.to_string())
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let user = authorized(&req);
    let rid = req
        .headers()
        .get("x-broker-api-request-identity")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    tracing::info!(
        target: "osb_gateway::sample_broker",
        %method,
        %path,
        user = user.as_deref().unwrap_or("(refused)"),
        request_identity = %rid,
        "sample broker request"
    );
    if user.is_none() {
        return Ok(reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "Unauthorized", "description": "bad broker credentials"}),
        ));
    }
    let body: Value = match req.into_body().collect().await {
        Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // NB: a demo's in-memory state; the lock is held for a map lookup only.
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let resp = match (&method, segs.as_slice()) {
        (&Method::GET, ["v2", "catalog"]) => reply(StatusCode::OK, catalog()),
        (&Method::PUT, ["v2", "service_instances", id]) => {
            if body.get("plan_id").and_then(Value::as_str) == Some("fail-plan") {
                reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"error": "PlanUnavailable", "description": "plan fail-plan always fails (sample broker)"}),
                )
            } else if st.instances.contains_key(*id) {
                reply(StatusCode::OK, json!({}))
            } else {
                st.instances.insert(id.to_string(), body);
                reply(
                    StatusCode::CREATED,
                    json!({"dashboard_url": format!("https://dashboard.example/{id}")}),
                )
            }
        }
        (&Method::GET, ["v2", "service_instances", id]) => match st.instances.get(*id) {
            Some(i) => reply(
                StatusCode::OK,
                json!({"service_id": i["service_id"], "plan_id": i["plan_id"], "parameters": i["parameters"]}),
            ),
            None => reply(StatusCode::NOT_FOUND, json!({})),
        },
        (&Method::DELETE, ["v2", "service_instances", id]) => match st.instances.remove(*id) {
            Some(_) => reply(StatusCode::OK, json!({})),
            None => reply(StatusCode::GONE, json!({})),
        },
        (&Method::PUT, ["v2", "service_instances", _, "service_bindings", b]) => {
            st.bindings.insert(b.to_string(), body);
            reply(
                StatusCode::CREATED,
                json!({"credentials": {"uri": format!("postgres://user-{b}:generated-password@db.example/{b}"), "username": format!("user-{b}"), "password": "generated-password"}}),
            )
        }
        (&Method::DELETE, ["v2", "service_instances", _, "service_bindings", b]) => {
            match st.bindings.remove(*b) {
                Some(_) => reply(StatusCode::OK, json!({})),
                None => reply(StatusCode::GONE, json!({})),
            }
        }
        (&Method::GET, ["v2", "service_instances", _, "last_operation"]) => {
            reply(StatusCode::OK, json!({"state": "succeeded"}))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"error": "NotFound", "description": format!("{method} {path} is not an endpoint of the sample broker")}),
        ),
    };
    Ok(resp)
}

fn catalog() -> Value {
    json!({"services": [{
        "id": "sample-db", "name": "sample-db", "description": "A pretend database", "bindable": true,
        "plans": [
            {"id": "small", "name": "small", "description": "A small pretend database"},
            {"id": "fail-plan", "name": "fail", "description": "Provisioning always fails (for trying the logs)"}
        ]
    }]})
}

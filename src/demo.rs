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
    serve_state(listener, Arc::new(Mutex::new(State::default()))).await
}

async fn serve_state(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>) {
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

/// The largest request body the sample broker reads.
const MAX_BODY: usize = 64 * 1024;
/// Instances (and bindings) the sample broker keeps, at most.
const MAX_KEPT: usize = 10_000;

/// The answer when `what` are at [`MAX_KEPT`].
fn full(what: &str) -> Response<Full<Bytes>> {
    reply(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"error": "LimitReached", "description": format!("the sample broker keeps at most {MAX_KEPT} {what}; deprovision some")}),
    )
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
    // NB: a demo's memory is bounded too: bodies up to MAX_BODY are read,
    // and at most MAX_KEPT instances and bindings are kept (1,500 uploads of
    // 1 MB held 3 GB before).
    let body: Value = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or(Value::Null),
        Err(_) => {
            return Ok(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "BodyTooLarge", "description": format!("the sample broker reads bodies up to {MAX_BODY} bytes")}),
            ));
        }
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
            } else if st.instances.len() >= MAX_KEPT {
                full("instances")
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
            if st.bindings.len() >= MAX_KEPT && !st.bindings.contains_key(*b) {
                return Ok(full("bindings"));
            }
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn status_of(addr: std::net::SocketAddr, body_len: usize) -> String {
        let path = format!("/v2/service_instances/i-{body_len}");
        request(addr, "PUT", &path, body_len).await
    }

    /// The status line of `method path` with a provision body whose
    /// parameter holds `body_len` bytes.
    async fn request(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        body_len: usize,
    ) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = format!(
            "{{\"service_id\":\"sample-db\",\"plan_id\":\"small\",\"parameters\":{{\"x\":\"{}\"}}}}",
            "x".repeat(body_len)
        );
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Basic YnJva2VyOmJyb2tlci1zZWNyZXQ=\r\n\
             x-broker-api-version: 2.17\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        // NB: the broker may answer before reading a body it refuses.
        let _ = s.write_all(body.as_bytes()).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }

    #[tokio::test]
    async fn the_sample_broker_reads_bodies_up_to_its_limit_only() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(super::serve(l));
        assert!(status_of(addr, 1000).await.contains("201"));
        let refused = status_of(addr, super::MAX_BODY + 1).await;
        assert!(refused.contains("413"), "{refused}");
    }

    #[tokio::test]
    async fn the_sample_broker_keeps_at_most_its_limit_of_instances_and_bindings() {
        // NB: started full, rather than after 20,000 requests.
        let mut full = super::State::default();
        for i in 0..super::MAX_KEPT {
            full.instances
                .insert(format!("i{i}"), serde_json::Value::Null);
            full.bindings
                .insert(format!("b{i}"), serde_json::Value::Null);
        }
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let state = std::sync::Arc::new(std::sync::Mutex::new(full));
        tokio::spawn(super::serve_state(l, state.clone()));
        let put = |path: &'static str| request(addr, "PUT", path, 10);
        let new = put("/v2/service_instances/new").await;
        assert!(new.contains("422"), "{new}");
        assert!(put("/v2/service_instances/i7").await.contains("200"));
        let bind = put("/v2/service_instances/i7/service_bindings/new").await;
        assert!(bind.contains("422"), "{bind}");
        let again = put("/v2/service_instances/i7/service_bindings/b7").await;
        assert!(again.contains("201"), "{again}");
        // A deprovision makes room again.
        let gone = request(addr, "DELETE", "/v2/service_instances/i7", 0).await;
        assert!(gone.contains("200"), "{gone}");
        assert!(put("/v2/service_instances/new").await.contains("201"));
        let st = state.lock().unwrap();
        assert_eq!(
            (st.instances.len(), st.bindings.len()),
            (super::MAX_KEPT, super::MAX_KEPT)
        );
    }
}

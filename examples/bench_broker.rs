//! The upstream of the load benchmark (`benches/load.py`): as fast as a
//! broker can be, so the proxy in front of it is what gets measured.
//!
//! `bench_broker ADDR`. Checks `Authorization: Basic broker:broker-secret`
//! (401 otherwise), answers `GET .../v2/catalog` with a fixed 4 KB catalog,
//! reads any request body to its end and answers `201 {}`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// `Basic base64(broker:broker-secret)`.
const AUTH: &str = "Basic YnJva2VyOmJyb2tlci1zZWNyZXQ=";

fn catalog() -> Bytes {
    let mut plans = String::new();
    for i in 0..24 {
        if i > 0 {
            plans.push(',');
        }
        plans.push_str(&format!(
            r#"{{"id":"plan-{i:02}-5d0c7a4e-8f7b-4b8e-9a43","name":"plan-{i:02}","description":"A plan of the benchmark broker, number {i:02}, with a description of some length","free":true}}"#
        ));
    }
    let body = format!(
        r#"{{"services":[{{"id":"svc-bench-0001","name":"bench-db","description":"Benchmark service","bindable":true,"plan_updateable":true,"tags":["bench","db"],"plans":[{plans}]}}]}}"#
    );
    Bytes::from(body)
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9191".into());
    // One thread: the benchmark pins the broker to the load generator's core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        let catalog = catalog();
        eprintln!(
            "bench broker on http://{addr}, catalog {} bytes",
            catalog.len()
        );
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let catalog = catalog.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let catalog = catalog.clone();
                    async move {
                        let ok = req
                            .headers()
                            .get("authorization")
                            .is_some_and(|v| v.as_bytes() == AUTH.as_bytes());
                        let get = req.method() == Method::GET;
                        // Read the body to its end, whatever its size.
                        let _ = req.into_body().collect().await;
                        let (status, body) = match (ok, get) {
                            (false, _) => (StatusCode::UNAUTHORIZED, Bytes::from_static(b"{}")),
                            (true, true) => (StatusCode::OK, catalog),
                            (true, false) => (StatusCode::CREATED, Bytes::from_static(b"{}")),
                        };
                        let mut r = Response::new(Full::new(body));
                        *r.status_mut() = status;
                        r.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

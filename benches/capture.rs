//! Capture micro benchmarks, each against what it adds to:
//!
//! * `capture_body/{size}`: a response body polled to its end, bare and
//!   through the capture tap (0 B, 1 KB, 100 KB, 10 MB in 16 KiB frames, as
//!   hyper hands them; 1 MiB cap, the default).
//! * `record_build`: a finished exchange into its stored record (ids from
//!   path, query and body; redaction) for a catalog, a provision and a bind.
//! * `record_encoding`: a 1,000-record batch as ClickHouse RowBinary, sent
//!   by the gateway's writer to an HTTP sink on 127.0.0.1 that discards it;
//!   and as the JSON the spool and the local store write.
//! * `spool`: append 1,000 records to a segment and seal it (fsync), and
//!   read a sealed segment back into records (replay).
//!
//! `cargo bench --bench capture`

// NB: criterion's macros generate undocumented public items.
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Method};
use http_body::{Body, Frame};
use osb_gateway::body::BoxError;
use osb_gateway::capture::body::{CaptureBody, Tap};
use osb_gateway::capture::record::BodyData;
use osb_gateway::capture::redact::Redactor;
use osb_gateway::capture::{
    CaptureRecord, CaptureTx, Exchange, Headers, Outcome, RawExchange, Side,
};
use osb_gateway::config::ClickHouseConfig;
use osb_gateway::osb::Operation;
use osb_gateway::store::clickhouse::ClickHouseWriter;
use osb_gateway::store::segments::{self, Segments};

/// A body that yields its frames at once, as a socket with data ready does.
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn frames(data: &Bytes) -> Frames {
    let mut f = VecDeque::new();
    let mut at = 0;
    while at < data.len() {
        let end = (at + 16 * 1024).min(data.len());
        f.push_back(data.slice(at..end));
        at = end;
    }
    Frames(f)
}

fn drain<B: Body<Data = Bytes> + Unpin>(mut body: B) -> usize {
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut n = 0;
    while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
        n += frame.data_ref().map_or(0, Bytes::len);
    }
    n
}

/// `data` through a capturing body: a catalog's response (kept only), or
/// with `scan` a provision's request (kept and scanned for long strings).
fn tap_through(tx: &CaptureTx, data: &Bytes, scan: bool) -> usize {
    let (method, path, side) = match scan {
        false => (Method::GET, "/v2/catalog", Side::Response),
        true => (Method::PUT, "/v2/service_instances/i", Side::Request),
    };
    let ex = Arc::new(Exchange::new(tx, method, path, "", "id".into()));
    let tap = Tap::new(ex, side, 1 << 20, scan);
    drain(CaptureBody::new(frames(data), tap))
}

fn capture_body(c: &mut Criterion) {
    let tx = CaptureTx::disabled("bench");
    let mut g = c.benchmark_group("capture_body");
    for (name, size) in [
        ("0B", 0usize),
        ("1KB", 1024),
        ("100KB", 100 * 1024),
        ("10MB", 10 << 20),
    ] {
        let data = Bytes::from(vec![b'x'; size]);
        g.throughput(Throughput::Bytes(size.max(1) as u64));
        g.bench_with_input(BenchmarkId::new("bare", name), &data, |b, data| {
            b.iter(|| black_box(drain(frames(data))))
        });
        g.bench_with_input(BenchmarkId::new("tapped", name), &data, |b, data| {
            b.iter(|| black_box(tap_through(&tx, data, false)))
        });
        // A JSON body of the same size whose fields are read (a provision
        // with one long parameter): the tap also scans it for long strings.
        let pad = size.saturating_sub(40);
        let json = Bytes::from(format!(
            r#"{{"service_id":"s","note":"{}"}}"#,
            "x".repeat(pad)
        ));
        g.bench_with_input(
            BenchmarkId::new("tapped_scanned", name),
            &json,
            |b, data| b.iter(|| black_box(tap_through(&tx, data, true))),
        );
        // The scan's worst case: nothing but quotes, a string every two
        // bytes (what a hostile platform would send).
        let quotes = Bytes::from(vec![b'"'; size]);
        g.bench_with_input(
            BenchmarkId::new("tapped_scanned_quotes", name),
            &quotes,
            |b, data| b.iter(|| black_box(tap_through(&tx, data, true))),
        );
    }
    g.finish();
}

fn headers(extra: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "broker.example:8443"),
        ("user-agent", "cf-cloud-controller/3.150"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("x-broker-api-version", "2.17"),
        (
            "x-broker-api-request-identity",
            "9d2c7c8e-1b7e-4f0a-8d57-7c6a1f1e4e2b",
        ),
        (
            "x-broker-api-originating-identity",
            "cloudfoundry eyJ1c2VyX2lkIjoiNjgzZWEzMjctYTNmNC00ZDU4LWE3NTMtODAyZmI5NmY2OGM4In0=",
        ),
        ("authorization", "Basic YnJva2VyOmJyb2tlci1zZWNyZXQ="),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        h.append(k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn body(text: &str) -> BodyData {
    BodyData {
        bytes: text.as_bytes().to_vec(),
        size: text.len() as u64,
        truncated: false,
        scanned: None,
    }
}

fn catalog_json() -> String {
    let plans: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"id":"plan-{i:02}-5d0c7a4e-8f7b-4b8e-9a43","name":"plan-{i}","description":"A plan with {i} units of everything the service offers.","free":false}}"#))
        .collect();
    format!(
        r#"{{"services":[{{"id":"svc-bench-0001","name":"bench-db","description":"Benchmark service","bindable":true,"plans":[{}]}}]}}"#,
        plans.join(",")
    )
}

/// About 1 MB of catalog, under the 1 MiB body cap: 3,800 plans with non-ASCII escapes in their text.
fn big_catalog_json() -> String {
    let plans: Vec<String> = (0..3800)
        .map(|i| format!(r#"{{"id":"plan-{i:04}-5d0c7a4e-8f7b-4b8e-9a43","name":"plan-{i}","description":"A plan with {i} units of everything the service offers, caf\u00e9 \u2603 included.","metadata":{{"bullets":["one","two","three"],"costs":[{{"amount":{{"eur":{i}.5}},"unit":"MONTHLY"}}]}},"free":false}}"#))
        .collect();
    format!(
        r#"{{"services":[{{"id":"svc-bench-0001","name":"bench-db","description":"Benchmark service","bindable":true,"plans":[{}]}}]}}"#,
        plans.join(",")
    )
}

/// A finished exchange of `op`, as the proxy hands it to the pipeline.
fn raw(op: Operation) -> RawExchange {
    let inst = "6f1c2b7e-6d4b-4b0a-9b1e-0c2a7b9d3e11";
    let (method, osb_path, query, req, resp, status) = match op {
        Operation::FetchCatalog => (Method::GET, "/v2/catalog".to_string(), "", String::new(), catalog_json(), 200),
        // NB: a large catalog (stands for any large answer the redaction
        // has to scan for a credentials key), under the 1 MiB body cap.
        Operation::Other => (Method::GET, "/v2/catalog".to_string(), "", String::new(), big_catalog_json(), 200),
        Operation::Bind => (
            Method::PUT,
            format!("/v2/service_instances/{inst}/service_bindings/b1"),
            "",
            r#"{"service_id":"svc-bench-0001","plan_id":"plan-01","bind_resource":{"app_guid":"app-1"}}"#.to_string(),
            r#"{"credentials":{"uri":"postgres://u:hunter2@db:5432/x","username":"u","password":"hunter2"}}"#.to_string(),
            201,
        ),
        // NB: a 1 MB provision (benches/load.py's 1mb workload).
        Operation::UpdateInstance => (
            Method::PUT,
            format!("/v2/service_instances/{inst}"),
            "accepts_incomplete=true",
            format!(
                r#"{{"service_id":"svc-bench-0001","plan_id":"plan-01","organization_guid":"org","space_guid":"space","parameters":{{"note":"{}"}}}}"#,
                "x".repeat(1 << 20)
            ),
            r#"{"operation":"task-1","dashboard_url":"https://dash.example/1"}"#.to_string(),
            202,
        ),
        _ => (
            Method::PUT,
            format!("/v2/service_instances/{inst}"),
            "accepts_incomplete=true",
            format!(
                r#"{{"service_id":"svc-bench-0001","plan_id":"plan-01","organization_guid":"org","space_guid":"space","parameters":{{"note":"{}"}}}}"#,
                "x".repeat(1900)
            ),
            r#"{"operation":"task-1","dashboard_url":"https://dash.example/1"}"#.to_string(),
            202,
        ),
    };
    RawExchange {
        id: uuid::Uuid::new_v4(),
        received_at: SystemTime::now(),
        duration_us: 1234,
        ttfb_us: 1000,
        gateway: "gw-1".into(),
        platform: "cf".into(),
        location: "eu-de".into(),
        broker: "postgres".into(),
        customer: Some("acme".into()),
        upstream_url: format!("https://broker.example:8443{osb_path}"),
        path: format!("/eu-de/postgres{osb_path}"),
        query: query.into(),
        osb_path,
        method,
        operation: op,
        request_id: "9d2c7c8e-1b7e-4f0a-8d57-7c6a1f1e4e2b".into(),
        request_headers: Headers::capture(&headers(&[])),
        response_headers: Headers::capture(&headers(&[("content-length", "4096")])),
        status,
        outcome: Outcome::Ok,
        error: String::new(),
        request_body: body(&req),
        response_body: body(&resp),
        redact_parameters: false,
    }
}

fn record_build(c: &mut Criterion) {
    let redactor = Redactor::default();
    let mut g = c.benchmark_group("record_build");
    for (name, op) in [
        ("catalog_4KB", Operation::FetchCatalog),
        ("provision_2KB", Operation::ProvisionInstance),
        ("bind_redacted", Operation::Bind),
        ("catalog_1MB", Operation::Other),
        ("provision_1MB", Operation::UpdateInstance),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || raw(op),
                |r| black_box(r.into_record(&redactor)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn batch(n: usize) -> Vec<Arc<CaptureRecord>> {
    let redactor = Redactor::default();
    let ops = [
        Operation::FetchCatalog,
        Operation::ProvisionInstance,
        Operation::Bind,
    ];
    (0..n)
        .map(|i| Arc::new(raw(ops[i % 3]).into_record(&redactor)))
        .collect()
}

/// An HTTP server on 127.0.0.1 that reads and discards every request body and
/// answers as ClickHouse would to what the writer sends (`SELECT version()`
/// gets a RowBinary string).
async fn sink() -> std::net::SocketAddr {
    use http_body_util::{BodyExt as _, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let query = req.uri().query().unwrap_or("").to_string();
                        let sent = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let asks_version = |b: &[u8]| b.windows(9).any(|w| w == b"version()");
                        let body = if asks_version(query.as_bytes()) || asks_version(&sent) {
                            Bytes::from_static(b"\x0518.16")
                        } else {
                            Bytes::new()
                        };
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(body)))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn record_encoding(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(sink());
    let mut writer = ClickHouseWriter::new(&ClickHouseConfig {
        database: "bench".into(),
        ..ClickHouseConfig::single(&format!("http://{addr}"))
    });
    let rows = batch(1000);
    let bytes: usize = rows
        .iter()
        .map(|r| serde_json::to_vec(&**r).unwrap().len())
        .sum();
    let mut g = c.benchmark_group("record_encoding");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("clickhouse_rowbinary_insert_1000", |b| {
        b.iter(|| rt.block_on(writer.insert(&rows)).unwrap())
    });
    g.bench_function("json_1000", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(bytes + 1000);
            for r in &rows {
                serde_json::to_writer(&mut out, &**r).unwrap();
                out.push(b'\n');
            }
            black_box(out)
        })
    });
    g.finish();
}

fn spool(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let payloads: Vec<Vec<u8>> = batch(1000)
        .iter()
        .map(|r| serde_json::to_vec(&**r).unwrap())
        .collect();
    let mut g = c.benchmark_group("spool");
    g.throughput(Throughput::Elements(payloads.len() as u64));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("append_1000_and_seal", |b| {
        let mut segs = Segments::open(dir.path()).unwrap();
        b.iter(|| {
            segs.append(payloads.iter().map(Vec::as_slice)).unwrap();
            segs.seal().unwrap();
        });
        for s in segs.sealed().unwrap() {
            let _ = std::fs::remove_file(s.path);
        }
    });
    let mut segs = Segments::open(dir.path()).unwrap();
    segs.append(payloads.iter().map(Vec::as_slice)).unwrap();
    segs.seal().unwrap();
    let path = segs.sealed().unwrap()[0].path.clone();
    g.bench_function("replay_1000", |b| {
        b.iter(|| {
            let read = segments::read(&path).unwrap();
            let records: Vec<CaptureRecord> = read
                .records
                .iter()
                .map(|p| serde_json::from_slice(p).unwrap())
                .collect();
            black_box(records)
        })
    });
    g.finish();
}

criterion_group!(benches, capture_body, record_build, record_encoding, spool);
criterion_main!(benches);

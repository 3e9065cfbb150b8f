//! The floor of the load benchmark (`benches/load.py --targets ...,hyper-floor`):
//! the least a proxy built on hyper can do per request, to tell the cost of
//! the HTTP stack from the cost of the gateway.
//!
//! `bench_floor LISTEN UPSTREAM [--spin-before NS | --spin-after NS]`. One
//! worker thread; per request it strips the `/private/bench` prefix, sets
//! the broker's `Authorization`, and sends on a keep-alive HTTP/1.1
//! connection from a plain idle list, streaming both bodies. No routing,
//! authentication, capture, timeouts or error handling: not a proxy anyone
//! should run.
//!
//! `--spin-before` / `--spin-after` add a busy loop of NS nanoseconds per
//! request, before it goes upstream or between the broker's answer and the
//! floor's own (`benches/ladder.py`'s spin rungs: what the same work costs
//! in each place).

use std::sync::{Arc, Mutex};

use http::header::{HeaderValue, AUTHORIZATION};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `Basic base64(broker:broker-secret)`, as `bench_broker` expects.
const AUTH: &str = "Basic YnJva2VyOmJyb2tlci1zZWNyZXQ=";

type Idle = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

async fn checkout(idle: &Idle, upstream: &str) -> std::io::Result<SendRequest<Incoming>> {
    loop {
        let pooled = idle.lock().expect("idle list").pop();
        match pooled {
            Some(mut s) => {
                if s.ready().await.is_ok() {
                    return Ok(s);
                }
            }
            None => {
                let tcp = TcpStream::connect(upstream).await?;
                tcp.set_nodelay(true)?;
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::spawn(conn);
                return Ok(s);
            }
        }
    }
}

/// Busy work per request: nanoseconds before going upstream, and after the
/// broker's answer.
#[derive(Clone, Copy, Default)]
struct Spin {
    before: u64,
    after: u64,
}

// NB: the clock is read once per 32 pauses: perf cannot unwind out of the
// vDSO's clock, so a loop of clock reads was mostly not counted as the loop.
#[inline(never)]
fn busy_loop(ns: u64) {
    if ns == 0 {
        return;
    }
    let t = std::time::Instant::now();
    while (t.elapsed().as_nanos() as u64) < ns {
        for _ in 0..32 {
            std::hint::spin_loop();
        }
    }
}

async fn forward(
    req: http::Request<Incoming>,
    idle: Idle,
    upstream: Arc<str>,
    work: Spin,
) -> Result<http::Response<Incoming>, std::io::Error> {
    busy_loop(work.before);
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let rest = pq.strip_prefix("/private/bench").unwrap_or(pq);
    parts.uri = rest.parse().map_err(std::io::Error::other)?;
    parts
        .headers
        .insert(AUTHORIZATION, HeaderValue::from_static(AUTH));
    let mut s = checkout(&idle, &upstream).await?;
    let resp = s.send_request(http::Request::from_parts(parts, body));
    // NB: back to the list at once; the next checkout waits until the
    // connection is ready again.
    idle.lock().expect("idle list").push(s);
    let resp = resp.await.map_err(std::io::Error::other);
    busy_loop(work.after);
    resp
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || -> ! {
        eprintln!(
            "usage: bench_floor LISTEN_ADDR UPSTREAM_ADDR [--spin-before NS | --spin-after NS]"
        );
        std::process::exit(2);
    };
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        usage()
    };
    let mut work = Spin::default();
    while let Some(flag) = args.next() {
        let ns = args
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage());
        match flag.as_str() {
            "--spin-before" => work.before = ns,
            "--spin-after" => work.after = ns,
            _ => usage(),
        }
    }
    let upstream: Arc<str> = upstream.into();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let l = TcpListener::bind(&listen).await?;
        let idle: Idle = Arc::default();
        loop {
            let (s, _) = l.accept().await?;
            s.set_nodelay(true)?;
            let (idle, upstream) = (idle.clone(), upstream.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| forward(req, idle.clone(), upstream.clone(), work));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    })
}

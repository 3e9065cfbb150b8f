//! Hot-path micro benchmarks: route lookup through the ArcSwap at 10, 1,000
//! and 10,000 routes, OSB classification, and the canonical-path check that
//! runs before it on every request.
//!
//! `cargo bench --bench routing`

// NB: criterion's macros generate undocumented public items.
#![allow(missing_docs)]

static NO_POLICY: std::sync::LazyLock<osb_gateway::config::AddressPolicy> =
    std::sync::LazyLock::new(Default::default);

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;
use osb_gateway::config::{Mode, PoolSettings, Timeouts};
use osb_gateway::osb::classify;
use osb_gateway::registry::file::{BrokerFile, EndpointFile, PlatformFile, PublicationFile};
use osb_gateway::registry::{BuildContext, RegistryFile, RouteTable, Routes, Snapshot};

const HASH: &str = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$0ZqsBi+Cd26cYOH0DVDcHg";

fn registry(routes: usize) -> RegistryFile {
    let locations: Vec<String> = (0..10).map(|i| format!("loc{i}")).collect();
    let brokers = (0..routes / 2)
        .map(|i| BrokerFile {
            id: format!("broker-{i}"),
            name: String::new(),
            owner: "acme".into(),
            private: None,
            publications: ["global".to_string(), locations[i % 10].clone()]
                .into_iter()
                .map(|l| PublicationFile {
                    location: l,
                    approved: true,
                    endpoint: EndpointFile {
                        endpoint: format!("https://b{i}.example/osb"),
                        username: "u".into(),
                        password: "env:PW".into(),
                        ..Default::default()
                    },
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    RegistryFile {
        confirm_empty: false,
        platforms: vec![PlatformFile {
            id: "cf".into(),
            customer: "acme".into(),
            username: "cf".into(),
            password_hash: HASH.into(),
            locations: locations.clone(),
        }],
        locations,
        brokers,
        retired_broker_ids: Vec::new(),
    }
}

fn table(routes: usize) -> RouteTable {
    build(&registry(routes), None)
}

fn build(reg: &RegistryFile, previous: Option<&RouteTable>) -> RouteTable {
    let cx = BuildContext {
        mode: Mode::Production,
        secret_key: None,
        base_dir: Path::new("."),
        env: &|_| Some("pw".into()),
        timeouts: Timeouts::default(),
        pool: PoolSettings::default(),
        policy: &NO_POLICY,
        previous,
        metrics: None,
    };
    RouteTable::build(reg, &cx).expect("valid")
}

/// What a reload of a 10,000-route registry costs (validation, secrets,
/// clients), from scratch and with the serving table's clients reused.
fn reload_build(c: &mut Criterion) {
    let reg = registry(10_000);
    let serving = build(&reg, None);
    let mut g = c.benchmark_group("reload_build_10000_routes");
    g.sample_size(10);
    g.bench_function("fresh", |b| b.iter(|| black_box(build(&reg, None))));
    g.bench_function("reusing_clients", |b| {
        b.iter(|| black_box(build(&reg, Some(&serving))))
    });
    g.finish();
}

fn route_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [10usize, 1_000, 10_000] {
        let routes = Routes::new(Snapshot::new(table(n), RegistryFile::default(), 1));
        let platform = routes.load().platform("cf").unwrap().clone();
        let broker = format!("broker-{}", n / 4);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                // What a request does: one load, one lookup, Arc cloned out.
                let t = routes.load_full();
                black_box(
                    t.lookup(&platform, black_box("loc3"), black_box(&broker))
                        .unwrap(),
                )
            })
        });
    }
    g.finish();
}

fn classification(c: &mut Criterion) {
    let paths = [
        (Method::GET, "/v2/catalog"),
        (
            Method::PUT,
            "/v2/service_instances/6f1c2b7e-6d4b-4b0a-9b1e-0c2a7b9d3e11",
        ),
        (
            Method::GET,
            "/v2/service_instances/6f1c2b7e/service_bindings/a1b2c3/last_operation",
        ),
    ];
    c.bench_function("osb_classify", |b| {
        b.iter(|| {
            for (m, p) in &paths {
                black_box(classify(m, black_box(p)));
            }
        })
    });
    c.bench_function("osb_path_check", |b| {
        b.iter(|| {
            for (_, p) in &paths {
                black_box(osb_gateway::osb::path::check(black_box(p))).unwrap();
            }
        })
    });
}

criterion_group!(benches, route_lookup, classification, reload_build);
criterion_main!(benches);

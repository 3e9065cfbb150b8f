//! The records `tests/compat.rs` writes to both engines: every field set,
//! every search criterion spread, bodies long and short.

use osb_gateway::capture::CaptureRecord;
use uuid::Uuid;

/// 2026-10-31 23:50:00 UTC: the records span a month boundary, so two
/// partitions.
pub const BASE_US: i64 = 1_793_490_600_000_000;

/// A body long enough for the bodies table, the same in many records.
pub const CATALOG: &str = "{\"services\":[{\"id\":\"svc-1\",\"name\":\"PostgreSQL \\\"größer\\\"\",\n\"plans\":[{\"id\":\"small\"},{\"id\":\"large\"}]}]}";

/// Records with every field set and every search criterion spread: three
/// brokers, three locations, two platforms, each operation, statuses from
/// 200 to 504, states of polls, text with tabs, newlines, quotes and
/// non-ASCII, and pairs that share their microsecond (cursor ties).
pub fn records() -> Vec<CaptureRecord> {
    let ops = [
        "FETCH_CATALOG",
        "PROVISION_INSTANCE",
        "POLL_INSTANCE_LAST_OPERATION",
        "UPDATE_INSTANCE",
        "BIND",
        "UNBIND",
        "DEPROVISION_INSTANCE",
        "FETCH_INSTANCE",
        "OTHER",
    ];
    let statuses = [200, 201, 202, 400, 403, 404, 410, 422, 500, 502, 504];
    let states = ["", "in progress", "failed", "succeeded"];
    (0..160u32)
        .map(|i| {
            let op = ops[i as usize % ops.len()];
            let status = statuses[i as usize % statuses.len()];
            let mut r = CaptureRecord {
                id: Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0000 + (i as u128) * 7919),
                // NB: i and i+1 share a microsecond for even i.
                received_at_us: BASE_US + (i as i64 / 2) * 7_000_003,
                duration_us: 1000 + i as u64,
                ttfb_us: 500 + i as u64,
                gateway: "gw-1".into(),
                platform: ["cf-eu", "k8s-us"][i as usize % 2].into(),
                location: ["eu", "us", "global"][i as usize % 3].into(),
                broker: ["pg", "redis", "mq"][i as usize % 3].into(),
                // NB: mq is globex's, the others acme's; every tenth record
                // is a refusal only the operator sees.
                customer: match (i % 10, i % 3) {
                    (0, _) => "",
                    (_, 2) => "globex",
                    _ => "acme",
                }
                .into(),
                upstream_url: format!("https://broker.example/v2/x/{i}"),
                method: "PUT".into(),
                path: format!("/v2/service_instances/i-{}", i % 17),
                query: if i % 4 == 0 {
                    "accepts_incomplete=true".into()
                } else {
                    String::new()
                },
                operation: op.into(),
                service_id: "svc-1".into(),
                plan_id: ["small", "large", "größer"][i as usize % 3].into(),
                service_name: "PostgreSQL".into(),
                plan_name: ["Small", "Large", "Größer \"XL\""][i as usize % 3].into(),
                instance_id: if op == "FETCH_CATALOG" {
                    String::new()
                } else {
                    format!("i-{}", i % 17)
                },
                binding_id: if op == "BIND" || op == "UNBIND" {
                    format!("b-{i}")
                } else {
                    String::new()
                },
                accepts_incomplete: i % 4 == 0,
                broker_operation: if status == 202 {
                    format!("op-{i}")
                } else {
                    String::new()
                },
                state: states[i as usize % states.len()].into(),
                description: format!("line one\n\tline two 'quoted' \u{2603} {i}"),
                api_version: "2.17".into(),
                originating_platform: "cloudfoundry".into(),
                originating_user: format!("{{\"user_id\":\"u-{i}\"}}"),
                request_id: format!("req-{i}"),
                status,
                outcome: match status {
                    502 | 504 => "gateway_error",
                    // NB: refused by the gateway: never an instance's fate.
                    403 => "rejected",
                    s if s >= 400 => "broker_error",
                    _ => "ok",
                }
                .into(),
                error: if status >= 502 {
                    "upstream timed out".into()
                } else {
                    String::new()
                },
                request_headers: vec![
                    ("x-broker-api-version".into(), "2.17".into()),
                    ("authorization".into(), "[redacted]".into()),
                ],
                response_headers: if i % 5 == 0 {
                    Vec::new()
                } else {
                    vec![(
                        "content-type".into(),
                        "application/json; charset=ütf-8".into(),
                    )]
                },
                // NB: long bodies go to the bodies table, short ones stay
                // in the row: both kinds, repeated and unique.
                request_body: if i % 4 == 1 {
                    format!(
                        "{{\"plan_id\":\"p\",\"n\":{i},\"parameters\":{{\"pad\":\"{}\"}}}}",
                        "é\t".repeat(40)
                    )
                } else {
                    format!("{{\"plan_id\":\"p\",\"n\":{i}}}")
                },
                request_body_size: 20,
                request_body_truncated: i % 9 == 0,
                response_body: match i % 3 {
                    0 => String::new(),
                    1 => "{\"credentials\":\"[redacted]\"}".into(),
                    _ => CATALOG.into(),
                },
                response_body_size: 28,
                response_body_truncated: false,
            };
            if r.broker == "mq" && i > 100 {
                r.location = "ap".into();
            }
            r
        })
        .collect()
}

//! `osb-gateway logs tail|search|show`: the communication logs from the
//! command line, through the admin API. Times are shown and read in local
//! time (or `--tz`).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use http::Method;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use super::zone::{show_time, to_api_time, zone, Zone};
use super::{run, s, table, AdminArgs, EX_USAGE};

/// The criteria shared by `search` and `tail`.
#[derive(Args, Debug, Default)]
pub struct Criteria {
    /// Broker id.
    #[arg(long)]
    broker: Option<String>,
    /// Location (`private`, `global` or a location name).
    #[arg(long)]
    location: Option<String>,
    /// Platform id.
    #[arg(long)]
    platform: Option<String>,
    /// Operation type: FETCH_CATALOG, PROVISION_INSTANCE, BIND, ...
    #[arg(long)]
    operation: Option<String>,
    /// Response code: 403, >399, >=500, <300, 400-499, 4xx.
    #[arg(long, value_parser = status_expression)]
    status: Option<String>,
    /// Service plan: its id or its name (as the catalog named it).
    #[arg(long)]
    plan: Option<String>,
    /// Service offering: its id or its name.
    #[arg(long)]
    service: Option<String>,
    /// Service instance id.
    #[arg(long)]
    instance: Option<String>,
    /// X-Broker-API-Request-Identity.
    #[arg(long)]
    request_id: Option<String>,
    /// ok, broker_error, rejected, upstream_error, timeout, aborted, shutdown.
    #[arg(long)]
    outcome: Option<String>,
}

/// `--status` checked here, so a bad one is a usage error (64) like a bad
/// `--before`, not an API refusal.
fn status_expression(text: &str) -> Result<String, String> {
    osb_gateway::store::query::StatusExpr::parse(text).map(|_| text.to_string())
}

impl Criteria {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("broker", &self.broker),
            ("location", &self.location),
            ("platform", &self.platform),
            ("operation", &self.operation),
            ("status", &self.status),
            ("plan", &self.plan),
            ("service", &self.service),
            ("instance_id", &self.instance),
            ("request_id", &self.request_id),
            ("outcome", &self.outcome),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// `logs` subcommands.
#[derive(Subcommand, Debug)]
pub enum LogsCommand {
    /// Follow exchanges as they happen, one line each.
    Tail {
        #[command(flatten)]
        criteria: Criteria,
    },
    /// Search the logs, newest first (the exchange closest to --before first).
    Search {
        #[command(flatten)]
        criteria: Criteria,
        /// Request date upper bound, "yyyy-MM-dd HH:mm:ss" in local time (or --tz).
        #[arg(long)]
        before: Option<String>,
        /// Request date lower bound, same form.
        #[arg(long)]
        after: Option<String>,
        /// Zone of --before/--after and of the times shown: UTC or +HH:MM.
        #[arg(long)]
        tz: Option<String>,
        /// Records per page (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue where the previous page ended.
        #[arg(long)]
        cursor: Option<String>,
        /// Oldest first (e.g. the history of one instance: --instance ID --oldest-first).
        #[arg(long)]
        oldest_first: bool,
    },
    /// Show one whole exchange: headers, bodies, sizes, timings, outcome.
    Show {
        /// Record id (from search or tail).
        id: String,
        /// Print a curl command that replays the request against the broker.
        #[arg(long)]
        curl: bool,
        /// Zone of the times shown: UTC or +HH:MM (default local).
        #[arg(long)]
        tz: Option<String>,
    },
}

pub(crate) fn query_string(pairs: &[(&str, String)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn duration_cell(r: &Value) -> String {
    let us = r["duration_us"].as_u64().unwrap_or(0);
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else {
        format!("{:.1}ms", us as f64 / 1e3)
    }
}

pub(crate) fn plan_cell(r: &Value) -> String {
    match r["plan_name"].as_str().filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => s(&r["plan_id"]),
    }
}

fn summary_row(r: &Value, z: Zone) -> Vec<String> {
    vec![
        show_time(r["received_at_us"].as_i64().unwrap_or(0), z),
        s(&r["platform"]),
        s(&r["location"]),
        s(&r["broker"]),
        s(&r["operation"]),
        s(&r["status"]),
        duration_cell(r),
        s(&r["instance_id"]),
        plan_cell(r),
        s(&r["id"]),
    ]
}

const SUMMARY_HEAD: [&str; 10] = [
    "TIME",
    "PLATFORM",
    "LOCATION",
    "BROKER",
    "OPERATION",
    "STATUS",
    "DURATION",
    "INSTANCE",
    "PLAN",
    "ID",
];

/// Colour for 4xx (yellow) and 5xx (red) statuses on a terminal.
fn paint(status: u64, text: &str, tty: bool) -> String {
    match (tty, status) {
        (true, 400..=499) => format!("\x1b[33m{text}\x1b[0m"),
        (true, 500..=599) | (true, 0) => format!("\x1b[31m{text}\x1b[0m"),
        _ => text.to_string(),
    }
}

/// Pretty JSON when the text is JSON, else the text.
fn pretty(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if !body.trim().is_empty() => serde_json::to_string_pretty(&v).unwrap_or_default(),
        _ => body.to_string(),
    }
}

fn headers_text(h: &Value) -> String {
    h.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some(format!("  {}: {}\n", p[0].as_str()?, p[1].as_str()?)))
        .collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A curl command replaying the request against the broker, with the
/// broker's credentials left as a placeholder.
fn curl(r: &Value) -> String {
    let mut out = format!(
        "curl -X {} {} \\\n  -u 'BROKER_USER:BROKER_PASSWORD'",
        s(&r["method"]),
        shell_quote(r["upstream_url"].as_str().unwrap_or(""))
    );
    for p in r["request_headers"].as_array().into_iter().flatten() {
        let (Some(k), Some(v)) = (p[0].as_str(), p[1].as_str()) else {
            continue;
        };
        if matches!(
            k.to_ascii_lowercase().as_str(),
            "authorization" | "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            continue;
        }
        out.push_str(&format!(" \\\n  -H {}", shell_quote(&format!("{k}: {v}"))));
    }
    let body = r["request_body"].as_str().unwrap_or("");
    if !body.is_empty() {
        out.push_str(&format!(" \\\n  --data-binary {}", shell_quote(body)));
    }
    if r["request_body_truncated"] == true {
        out.push_str(
            "\n# NB: the captured request body was truncated; the replay sends only its start.",
        );
    }
    out.push('\n');
    out
}

fn show_text(r: &Value, z: Zone) -> String {
    let size = |side: &str| {
        let n = r[format!("{side}_body_size")].as_u64().unwrap_or(0);
        if r[format!("{side}_body_truncated")] == true {
            format!("{n} bytes, truncated in the capture")
        } else {
            format!("{n} bytes")
        }
    };
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| {
        if v != "-" {
            out.push_str(&format!("{k:<16}{v}\n"));
        }
    };
    line(&mut out, "id", s(&r["id"]));
    line(
        &mut out,
        "time",
        show_time(r["received_at_us"].as_i64().unwrap_or(0), z),
    );
    line(&mut out, "platform", s(&r["platform"]));
    line(
        &mut out,
        "route",
        format!(
            "{}/{} -> {}",
            s(&r["location"]),
            s(&r["broker"]),
            s(&r["upstream_url"])
        ),
    );
    line(&mut out, "operation", s(&r["operation"]));
    line(
        &mut out,
        "request",
        format!(
            "{} {}{}",
            s(&r["method"]),
            s(&r["path"]),
            r["query"]
                .as_str()
                .filter(|q| !q.is_empty())
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        ),
    );
    line(
        &mut out,
        "status",
        format!("{} ({})", s(&r["status"]), s(&r["outcome"])),
    );
    line(&mut out, "error", s(&r["error"]));
    line(
        &mut out,
        "timings",
        format!(
            "total {}, broker headers after {:.1}ms",
            duration_cell(r),
            r["ttfb_us"].as_u64().unwrap_or(0) as f64 / 1e3
        ),
    );
    line(
        &mut out,
        "service",
        format!(
            "{} {}",
            s(&r["service_id"]),
            r["service_name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(|n| format!("({n})"))
                .unwrap_or_default()
        ),
    );
    line(
        &mut out,
        "plan",
        format!(
            "{} {}",
            s(&r["plan_id"]),
            r["plan_name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(|n| format!("({n})"))
                .unwrap_or_default()
        ),
    );
    line(&mut out, "instance", s(&r["instance_id"]));
    line(&mut out, "binding", s(&r["binding_id"]));
    line(&mut out, "state", s(&r["state"]));
    line(&mut out, "description", s(&r["description"]));
    line(&mut out, "request id", s(&r["request_id"]));
    out.push_str(&format!(
        "\nrequest headers\n{}",
        headers_text(&r["request_headers"])
    ));
    out.push_str(&format!(
        "request body ({})\n{}\n",
        size("request"),
        pretty(r["request_body"].as_str().unwrap_or(""))
    ));
    out.push_str(&format!(
        "\nresponse headers\n{}",
        headers_text(&r["response_headers"])
    ));
    out.push_str(&format!(
        "response body ({})\n{}\n",
        size("response"),
        pretty(r["response_body"].as_str().unwrap_or(""))
    ));
    out
}

/// Runs a `logs` subcommand.
pub fn logs(args: &AdminArgs, cmd: LogsCommand) -> ExitCode {
    match cmd {
        LogsCommand::Tail { criteria } => tail(args, &criteria),
        LogsCommand::Search {
            criteria,
            before,
            after,
            tz,
            limit,
            cursor,
            oldest_first,
        } => {
            let z = match zone(tz.as_deref()) {
                Ok(z) => z,
                Err(e) => return usage(&e),
            };
            let mut pairs = criteria.pairs();
            for (flag, key, v) in [
                ("--before", "before", &before),
                ("--after", "after", &after),
            ] {
                if let Some(v) = v {
                    match to_api_time(v, z, flag) {
                        Ok(t) => pairs.push((key, t)),
                        Err(e) => return usage(&e),
                    }
                }
            }
            pairs.push(("limit", limit.to_string()));
            if let Some(c) = cursor {
                pairs.push(("cursor", c));
            }
            if oldest_first {
                pairs.push(("order", "oldest".into()));
            }
            let path = format!("/admin/v1/logs{}", query_string(&pairs));
            run(args, move |c| {
                Box::pin(async move {
                    let v = c.call(Method::GET, &path, None).await?;
                    let rows: Vec<Vec<String>> = v["records"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| summary_row(r, z))
                        .collect();
                    let mut text = if rows.is_empty() {
                        "no matching exchanges\n".to_string()
                    } else {
                        table(&SUMMARY_HEAD, &rows)
                    };
                    if let Some(next) = v["next"].as_str() {
                        text.push_str(&format!("more: add --cursor {next}\n"));
                    }
                    Ok((v, text))
                })
            })
        }
        LogsCommand::Show {
            id,
            curl: as_curl,
            tz,
        } => {
            let z = match zone(tz.as_deref()) {
                Ok(z) => z,
                Err(e) => return usage(&e),
            };
            let path = format!(
                "/admin/v1/logs/{}",
                utf8_percent_encode(&id, NON_ALPHANUMERIC)
            );
            run(args, move |c| {
                Box::pin(async move {
                    let v = c.call(Method::GET, &path, None).await?;
                    let text = if as_curl { curl(&v) } else { show_text(&v, z) };
                    Ok((v, text))
                })
            })
        }
    }
}

pub(crate) fn usage(msg: &str) -> ExitCode {
    eprintln!("osb-gateway: {msg}");
    ExitCode::from(EX_USAGE)
}

fn tail(args: &AdminArgs, criteria: &Criteria) -> ExitCode {
    let path = format!("/admin/v1/logs/tail{}", query_string(&criteria.pairs()));
    let json = args.json;
    let tty = std::io::stdout().is_terminal();
    run(args, move |c| {
        Box::pin(async move {
            if !json {
                println!("{}", tail_line(&SUMMARY_HEAD.map(String::from), 0, false));
            }
            c.lines(&path, |line| {
                if line.trim().is_empty() {
                    return true;
                }
                let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                if json {
                    println!("{line}");
                } else if let Some(n) = v["lagged"].as_u64() {
                    eprintln!("-- fell behind: {n} exchanges not shown --");
                } else {
                    let row = summary_row(&v, Zone::Local);
                    let status = v["status"].as_u64().unwrap_or(0);
                    let cells: [String; 10] = row.try_into().unwrap_or_default();
                    println!("{}", tail_line(&cells, status, tty));
                }
                true
            })
            .await?;
            // NB: printed as it streamed; nothing left for `run` to print.
            Ok((Value::Null, String::new()))
        })
    })
}

/// Fixed-width columns, so lines align as they stream in.
fn tail_line(c: &[String; 10], status: u64, tty: bool) -> String {
    let time = c[0].get(11..).unwrap_or(&c[0]);
    format!(
        "{time:<12}  {:<12} {:<10} {:<16} {:<28} {} {:>9}  {:<36}  {:<16}  {}",
        c[1],
        c[2],
        c[3],
        c[4],
        paint(status, &format!("{:<6}", c[5]), tty),
        c[6],
        c[7],
        c[8],
        c[9]
    )
    .trim_end()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_end_with_the_record_id_for_logs_show() {
        let cells = [
            "2026-12-04 10:00:00.123",
            "cf",
            "eu",
            "pg",
            "BIND",
            "201",
            "2 ms",
            "i-1",
            "small",
            "6f1c0b1e-0000-4000-8000-000000000001",
        ]
        .map(String::from);
        let line = tail_line(&cells, 201, false);
        assert!(
            line.ends_with("  6f1c0b1e-0000-4000-8000-000000000001"),
            "{line}"
        );
        assert!(line.contains("small"), "{line}");
    }

    #[test]
    fn curl_leaves_credentials_as_a_placeholder() {
        let r = serde_json::json!({
            "method": "PUT", "upstream_url": "https://b.example/v2/service_instances/i",
            "request_headers": [["authorization", "[redacted]"], ["x-broker-api-version", "2.17"]],
            "request_body": "{\"plan_id\":\"it's\"}", "request_body_truncated": false
        });
        let c = curl(&r);
        assert!(c.contains("-u 'BROKER_USER:BROKER_PASSWORD'"), "{c}");
        assert!(!c.to_lowercase().contains("authorization"), "{c}");
        assert!(c.contains("'{\"plan_id\":\"it'\\''s\"}'"), "{c}");
    }
}

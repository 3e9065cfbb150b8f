//! Staged faults against a gateway running as its own process (the real
//! binary) and a real ClickHouse: what a crash loses, counted id by id.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use http::Request;
use http_body_util::BodyExt;
use support::broker::{answer, Broker};
use support::clickhouse::ClickHouse;
use support::client::{self, platform};
use support::eventually;
use support::gateway::platform_hash;

/// A gateway process over `dir` (gateway.toml and registry.toml in it).
struct GatewayProcess {
    child: Child,
    port: u16,
}

impl GatewayProcess {
    async fn start(dir: &std::path::Path) -> GatewayProcess {
        // NB: the gateway binds port 0 and its log says which port it got:
        // a port picked here and released could be taken meanwhile.
        let cfg = std::fs::read_to_string(dir.join("gateway.template.toml"))
            .unwrap()
            .replace("{PORT}", "0");
        std::fs::write(dir.join("gateway.toml"), cfg).unwrap();
        let log_path = dir.join("gateway.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let seen = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0) as usize;
        let child = Command::new(env!("CARGO_BIN_EXE_osb-gateway"))
            .args(["serve", "--config"])
            .arg(dir.join("gateway.toml"))
            .env("BROKER_PW", "pw")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let port = std::cell::Cell::new(0u16);
        eventually(30, "the gateway listens", || {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let found = text.get(seen..).and_then(|new| {
                let at = new.find("osb-gateway listening addr=127.0.0.1:")? + 37;
                new[at..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            });
            if let Some(p) = found {
                port.set(p);
            }
            async move { found.is_some() }
        })
        .await;
        GatewayProcess {
            child,
            port: port.get(),
        }
    }

    fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// The test's own exchanges (not the readiness probes' 401s).
const OURS: &str = "(startsWith(request_id, 'before-') OR startsWith(request_id, 'hung-'))";

/// Sends `n` catalog requests, 8 at a time, each with its own request
/// identity; returns the identities answered 200.
async fn traffic(gw: &GatewayProcess, prefix: &str, n: usize) -> Vec<String> {
    let url = gw.url("/private/pg/v2/catalog");
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (url, rid) = (url.clone(), format!("{prefix}-{i}"));
        tasks.push(tokio::spawn(async move {
            let req = Request::get(url)
                .header("authorization", platform("cf-eu"))
                .header("x-broker-api-request-identity", &rid)
                .body(client::empty())
                .unwrap();
            let resp = client::plain().request(req).await.unwrap();
            let ok = resp.status() == 200;
            let _ = resp.into_body().collect().await;
            drop(permit);
            ok.then_some(rid)
        }));
    }
    let mut answered = Vec::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    answered
}

#[tokio::test]
async fn a_kill_9_while_clickhouse_hangs_loses_nothing_older_than_a_flush_interval() {
    let ch = ClickHouse::start().await;
    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("registry.toml"),
        format!(
            "locations = [\"eu\"]\n[[platforms]]\nid = \"cf-eu\"\ncustomer = \"acme\"\nusername = \"cf-eu\"\npassword_hash = \"{}\"\nlocations = [\"eu\"]\n\
             [[brokers]]\nid = \"pg\"\nowner = \"acme\"\ncatalog_refresh = \"0s\"\n[brokers.private]\nendpoint = \"{}\"\nusername = \"u\"\npassword = \"env:BROKER_PW\"\ndevelopment_mode = true\n",
            platform_hash(),
            b.url("")
        ),
    )
    .unwrap();
    // NB: the insert timeout (30 s) is far longer than the test: only the
    // flush-interval bound can put the records on disk in time.
    std::fs::write(
        dir.path().join("gateway.template.toml"),
        format!(
            "development_mode = true\ndata_dir = \"data\"\n[listen]\naddress = \"127.0.0.1:{{PORT}}\"\n[admin]\nenabled = false\n\
             [registry]\nwatch = false\n[catalog]\nrefresh = false\n[log]\nlevel = \"info\"\n\
             [capture]\nflush_interval = \"200ms\"\ninsert_timeout = \"30s\"\nretry_initial_backoff = \"200ms\"\nretry_max_backoff = \"1s\"\n\
             [capture.clickhouse]\nurl = \"{}\"\ndatabase = \"osb_faults\"\ntable = \"exchanges\"\n",
            ch.url()
        ),
    )
    .unwrap();
    let gw = GatewayProcess::start(dir.path()).await;
    // A first batch so that the table exists, then ClickHouse hangs.
    let mut answered = traffic(&gw, "before", 20).await;
    let ch_ref = &ch;
    eventually(30, "the first records stored", || async move {
        ch_ref
            .try_number(&format!(
                "SELECT count() FROM osb_faults.exchanges WHERE {OURS}"
            ))
            .await
            == Some(20)
    })
    .await;
    ch.signal("STOP");
    // The first of these go into an insert that hangs (a server that
    // resumes later may still commit it); the rest queue behind it.
    answered.extend(traffic(&gw, "hung", 100).await);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    answered.extend(traffic(&gw, "hung-queued", 200).await);
    // Longer than a flush interval (200 ms) after the last exchange, far
    // shorter than the insert timeout (30 s): everything must be on disk.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    gw.kill9();
    ch.signal("CONT");
    let gw = GatewayProcess::start(dir.path()).await;
    let log = dir.path().join("gateway.log");
    eventually(60, "every answered exchange stored", || {
        let n = answered.len() as u64;
        async move {
            ch_ref
                .try_number(&format!(
                    "SELECT uniqExact(request_id) FROM osb_faults.exchanges WHERE {OURS}"
                ))
                .await
                == Some(n)
        }
    })
    .await;
    let stored = ch
        .query("SELECT DISTINCT request_id FROM osb_faults.exchanges FORMAT TabSeparated")
        .await;
    let stored: std::collections::HashSet<&str> = stored.lines().collect();
    let lost: Vec<&String> = answered
        .iter()
        .filter(|r| !stored.contains(r.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} answered exchanges have no record: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(
        ch.number("SELECT count() FROM (SELECT id FROM osb_faults.exchanges FINAL)")
            .await,
        ch.number("SELECT uniqExact(id) FROM osb_faults.exchanges")
            .await,
        "no duplicate visible through FINAL"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("left by the previous process"),
        "the restart says what it replays"
    );
    gw.kill9();
}

//! Running the gateway as an operator does: the one-command demo, flags
//! over the file, typed JSON logs, the runtime log level, introspection,
//! `config check` and `config dump`, and the CLI's exit codes, TLS
//! defaults, completions and man page.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use support::client::{self, basic, get};
use support::gateway::{Options, TestGateway, ACME_TOKEN, OPERATOR_TOKEN};
use support::tls::TestCa;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_osb-gateway"))
}

/// A `serve` child, killed when the test ends; its stderr lines arrive
/// on `lines`.
struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn start(mut cmd: Command) -> Served {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Served {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Lines that arrived by now.
    fn drain(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        self.seen.clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `addr=` and `admin=` of the "osb-gateway listening" line (plain or JSON).
fn addresses(line: &str) -> (String, String) {
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        return (
            v["addr"].as_str().unwrap().to_string(),
            v["admin"].as_str().unwrap().to_string(),
        );
    }
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    (field("addr="), field("admin="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_config_is_a_working_demo_on_the_ports_given() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = gateway();
    cmd.current_dir(dir.path())
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .env("OSB_GATEWAY_ADMIN_LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG");
    let mut served = Served::start(cmd);
    let line = served.wait_for("osb-gateway listening");
    let (addr, admin) = addresses(&line);
    assert!(
        !addr.ends_with(":8080") && !admin.ends_with(":8081"),
        "{line}"
    );
    // The first command gives working traffic: the sample broker runs in
    // the same process.
    let r = get(
        &format!("http://{addr}/private/sample/v2/catalog"),
        Some(basic("demo", "demo")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["services"][0]["id"], "sample-db");
    let r = client::send(
        "PUT",
        &format!("http://{addr}/private/sample/v2/service_instances/i-1?accepts_incomplete=true"),
        Some(basic("demo", "demo")),
        r#"{"service_id":"sample-db","plan_id":"small","organization_guid":"o","space_guid":"s"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    served.wait_for("user=\"broker\"");
    // The console's token works on the demo's admin listener.
    let r = get(
        &format!("http://{admin}/admin/v1/whoami"),
        Some(http::HeaderValue::from_static("Bearer demo-admin-token")),
    )
    .await;
    assert_eq!(r.json()["role"], "operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_typed_and_the_level_changes_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let b = support::broker::Broker::http(support::broker::answer(200, r#"{"services":[]}"#)).await;
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!(
            "development_mode = true\ninstance = \"gw-7\"\n[listen]\naddress = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n[admin]\naddress = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"operator\"\n",
            osb_gateway::config::credentials::token_sha256_hex(OPERATOR_TOKEN)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("registry.toml"),
        format!(
            "locations = [\"eu\"]\n[[platforms]]\nid = \"cf\"\ncustomer = \"acme\"\nusername = \"cf\"\npassword_hash = \"{}\"\nlocations = [\"eu\"]\n[[brokers]]\nid = \"pg\"\nowner = \"acme\"\n[brokers.private]\nendpoint = \"{}\"\nusername = \"u\"\npassword = \"p\"\ndevelopment_mode = true\n",
            support::gateway::platform_hash(),
            b.url("")
        ),
    )
    .unwrap();
    let mut cmd = gateway();
    cmd.args(["serve", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .env_remove("RUST_LOG");
    let mut served = Served::start(cmd);
    let (addr, admin) = addresses(&served.wait_for("osb-gateway listening"));
    let pw = basic("cf", support::gateway::PLATFORM_PW);
    let ok = get(&format!("http://{addr}/private/pg/v2/catalog"), Some(pw)).await;
    assert_eq!(ok.status, 200);
    let refused = get(&format!("http://{addr}/private/pg/v2/catalog"), None).await;
    assert_eq!(refused.status, 401);
    let auth = http::HeaderValue::from_str(&format!("Bearer {OPERATOR_TOKEN}")).unwrap();
    let reload = client::admin(
        "POST",
        &format!("http://{admin}/admin/v1/reload"),
        Some(OPERATOR_TOKEN),
        None,
    )
    .await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    served.wait_for("\"status\":401");
    served.wait_for("routes reloaded");

    let lines = served.drain();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for v in &parsed {
        assert_eq!(v["instance"], "gw-7", "{v}");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
        for (k, field) in v.as_object().unwrap() {
            let text = field.to_string();
            assert!(
                !text.contains("Some(") && field != "-" && field != "",
                "{k} = {text} in {v}"
            );
        }
    }
    let exchanges: Vec<&Value> = parsed
        .iter()
        .filter(|v| v["message"] == "exchange")
        .collect();
    let good = exchanges.iter().find(|v| v["status"] == 200).unwrap();
    assert!(good["duration_ms"].is_f64(), "{good}");
    assert_eq!(good["platform"], "cf");
    assert!(good.get("error").is_none(), "no error: absent, {good}");
    let bad = exchanges.iter().find(|v| v["status"] == 401).unwrap();
    assert!(bad.get("platform").is_none(), "no platform: absent, {bad}");
    assert!(bad["error"].is_string());
    let reloaded = parsed
        .iter()
        .find(|v| v["message"] == "routes reloaded")
        .unwrap();
    assert!(
        reloaded["added"].is_array() && reloaded["generation"].is_u64(),
        "{reloaded}"
    );

    // The level, read and changed at run time: at warn the exchange line is gone.
    let url = format!("http://{admin}/admin/v1/log-level");
    let r = get(&url, Some(auth.clone())).await;
    assert_eq!(r.json()["level"], "info");
    let r = client::admin(
        "PUT",
        &url,
        Some(OPERATOR_TOKEN),
        Some(&json!({"level": "lots"})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("\\\"lots\\\" is not a level"),
        "{}",
        r.text()
    );
    let r = client::admin(
        "PUT",
        &url,
        Some(OPERATOR_TOKEN),
        Some(&json!({"level": "warn"})),
    )
    .await;
    assert_eq!(r.json()["previous"], "info");
    served.wait_for("log level changed");
    get(&format!("http://{addr}/private/pg/v2/catalog"), None).await;
    let after = served.drain();
    let fresh = &after[lines.len()..];
    assert!(
        !fresh.iter().any(|l| l.contains("\"message\":\"exchange\"")),
        "{fresh:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_shows_config_certificates_connections_and_process() {
    let mut gw = TestGateway::start(
        "locations = [\"eu\"]\n",
        Options {
            tls: true,
            tables:
                "[capture.clickhouse]\nurl = \"http://127.0.0.1:1\"\npassword = \"env:BROKER_PW\"\n"
                    .into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ca = gw.ca.as_ref().unwrap().pem();
    let call = |path: &str, token: &str| {
        let req = http::Request::get(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(client::empty())
            .unwrap();
        let admin = gw.handle.as_ref().unwrap().admin_addr.unwrap();
        let ca = ca.clone();
        async move { client::send_tls(admin, &ca, false, req).await.0 }
    };
    let config = call("/admin/v1/config", OPERATOR_TOKEN).await.json();
    assert_eq!(config["capture"]["clickhouse"]["password"], "***");
    assert!(!config.to_string().contains(support::gateway::BROKER_PW));
    assert_eq!(config["admin"]["tokens"][0]["sha256"], "***");
    let status = call("/admin/v1/status", OPERATOR_TOKEN).await.json();
    let cert = &status["certificates"][0];
    assert_eq!(cert["listener"], "listen");
    assert!(cert["expires_in_seconds"].as_i64().unwrap() > 0, "{status}");
    assert!(
        status["listeners"][1]["open"].as_u64().unwrap() >= 1,
        "{status}"
    );
    // Owners see none of it.
    assert_eq!(call("/admin/v1/status", ACME_TOKEN).await.status, 403);
    assert_eq!(call("/admin/v1/config", ACME_TOKEN).await.status, 403);
    let metrics = call("/metrics", OPERATOR_TOKEN).await.text();
    for family in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "osb_gateway_build_info{version=",
        "osb_gateway_tls_certificate_not_after_seconds{listener=\"listen\"} ",
        "osb_gateway_connections_open{listener=\"admin\"} ",
    ] {
        assert!(metrics.contains(family), "{family} missing");
    }
    gw.shutdown().await;
}

/// A TLS gateway whose certificate is self-signed and marked as a CA (what
/// `openssl req -x509` makes).
fn self_signed_ca_marked(dir: &std::path::Path) -> std::path::PathBuf {
    let mut p =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    std::fs::write(dir.join("gateway.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("gateway.key"), key.serialize_pem()).unwrap();
    dir.join("gateway.crt")
}

fn output(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = tokio::task::block_in_place(|| cmd.output().unwrap());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_a_tls_gateway_from_its_config_and_pins_a_self_signed_certificate() {
    let mut gw = TestGateway::start(
        "locations = [\"eu\"]\n",
        Options {
            tls: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The gateway's own file, with the port it got instead of port 0.
    let admin_port = gw.handle.as_ref().unwrap().admin_addr.unwrap().port();
    let text = std::fs::read_to_string(gw.path("gateway.toml")).unwrap();
    let (head, tail) = text
        .split_once("[admin]\naddress = \"127.0.0.1:0\"")
        .unwrap();
    let config = gw.path("cli-gateway.toml");
    std::fs::write(
        &config,
        format!("{head}[admin]\naddress = \"127.0.0.1:{admin_port}\"{tail}"),
    )
    .unwrap();
    // --config: https:// and the gateway's certificate, no flags needed.
    let (code, out, err) = output(
        gateway()
            .args(["logs", "search", "--config"])
            .arg(&config)
            .env_remove("OSB_GATEWAY_ADMIN_URL")
            .env("OSB_GATEWAY_ADMIN_TOKEN", OPERATOR_TOKEN),
    );
    assert_eq!(code, Some(0), "{out}{err}");

    // A self-signed certificate marked as a CA, given as --ca-file.
    let cert = self_signed_ca_marked(gw.dir.path());
    gw.handle
        .as_ref()
        .unwrap()
        .certificates
        .listen
        .as_ref()
        .unwrap()
        .reload(true)
        .unwrap();
    let (code, out, err) = output(
        gateway()
            .args(["logs", "search", "--ca-file"])
            .arg(&cert)
            .args(["--admin-url", &gw.admin_url("")])
            .env("OSB_GATEWAY_ADMIN_TOKEN", OPERATOR_TOKEN),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    // Another CA is still refused: pinning is that certificate only.
    let other = TestCa::new("other").write(gw.dir.path(), "other.pem");
    let (code, _, err) = output(
        gateway()
            .args(["logs", "search", "--ca-file"])
            .arg(&other)
            .args(["--admin-url", &gw.admin_url("")])
            .env("OSB_GATEWAY_ADMIN_TOKEN", OPERATOR_TOKEN),
    );
    assert_eq!(code, Some(69), "{err}");
    // Plain HTTP to the TLS admin port: refused, and the CLI says what to do.
    let plain = gw.admin_url("").replace("https://", "http://");
    let (code, _, err) = output(
        gateway()
            .args(["logs", "search", "--admin-url", &plain])
            .env("OSB_GATEWAY_ADMIN_TOKEN", OPERATOR_TOKEN),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("speaks HTTPS"), "{err}");
    gw.shutdown().await;
}

#[test]
fn exit_codes_completions_and_man_page() {
    let code = |args: &[&str]| {
        let out = gateway()
            .args(args)
            .env("OSB_GATEWAY_ADMIN_TOKEN", "t")
            .env("OSB_GATEWAY_ADMIN_URL", "http://127.0.0.1:1")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code(&["no-such-command"]).0, Some(64));
    assert_eq!(code(&["logs", "search", "--no-such-flag"]).0, Some(64));
    let (c, err) = code(&["logs", "search", "--status", "lots"]);
    assert_eq!(c, Some(64), "{err}");
    assert!(err.contains("status = \"lots\""), "{err}");
    assert_eq!(
        code(&["logs", "search", "--before", "yesterday-ish"]).0,
        Some(64)
    );
    assert_eq!(
        code(&["logs", "search"]).0,
        Some(69),
        "nothing listens on port 1"
    );
    assert_eq!(code(&["--version"]).0, Some(0));

    let out = gateway().args(["completions", "bash"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("osb-gateway") && text.contains("refresh-catalog"),
        "{text}"
    );
    let out = gateway().args(["man"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(".TH osb-gateway 1") && text.contains("serve"),
        "{text}"
    );
}

#[test]
fn config_check_explains_the_production_example_in_one_run_with_lines() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.example.toml");
    let out = gateway()
        .args(["config", "check"])
        .arg(&example)
        .env_remove("CLICKHOUSE_PASSWORD")
        .env_remove("PG_STAGING_BROKER_PASSWORD")
        .env_remove("PG_GLOBAL_BROKER_PASSWORD")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    // Everything it needs, at once, each with file:line:column.
    let text = std::fs::read_to_string(&example).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("password = \"env:CLICKHOUSE_PASSWORD\""))
        .unwrap();
    let at = format!("gateway.example.toml:{line}:1: capture.clickhouse.password");
    for needed in [
        at.as_str(),
        "CLICKHOUSE_PASSWORD is not set",
        "registry.example.toml:59:3: broker \"postgres\"",
        "PG_STAGING_BROKER_PASSWORD",
        "PG_GLOBAL_BROKER_PASSWORD",
        "secrets/pg-eu-de.password",
        "listen.tls_cert",
    ] {
        assert!(err.contains(needed), "{needed} missing from:\n{err}");
    }
    // A syntax error says where.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("gateway.toml");
    std::fs::write(
        &bad,
        "development_mode = true\n[listen]\naddress = \"127.0.0.1:8080\nx = 1\n",
    )
    .unwrap();
    let out = gateway()
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.toml:3:"), "{err}");
    // A bad value in a valid file: the key's line and column.
    std::fs::write(
        &bad,
        "development_mode = true\n\n[log]\n  level = \"lots\"\n",
    )
    .unwrap();
    let out = gateway()
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gateway.toml:4:3: log.level = \"lots\""),
        "{err}"
    );
}

#[test]
fn config_dump_prints_the_effective_settings_with_secrets_masked() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.example.toml");
    let out = gateway()
        .args(["config", "dump"])
        .arg(&example)
        .env("CLICKHOUSE_PASSWORD", "ch-pass-77")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["capture"]["clickhouse"]["password"].as_str(), Some("***"));
    assert_eq!(
        v["upstream"]["connect_timeout"].as_str(),
        Some("10s"),
        "{text}"
    );
    assert!(!text.contains("ch-pass-77"));
    // Without a file: the demo's settings, as JSON.
    let out = gateway()
        .args(["config", "dump", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["listen"]["address"], "127.0.0.1:8080");
    assert_eq!(v["development_mode"], true);
}

/// Nobody reads the gateway's stderr (a stuck log shipper): once the pipe
/// is full, a synchronous log write would block the worker that answers;
/// the lines are written by a background thread instead, so every request
/// is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_pipe_does_not_stall_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = gateway()
        .current_dir(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr only up to the line with the address, then never again.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("osb-gateway listening") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "gateway exited");
    }
    let (addr, _) = addresses(line.trim());
    // A pipe holds 64 KiB; each request logs two lines of ~250 bytes.
    let url = format!("http://{addr}/private/sample/v2/catalog");
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        let mut n = 0;
        for _ in 0..1500 {
            let r = get(&url, Some(basic("demo", "demo"))).await;
            assert_eq!(r.status, 200);
            n += 1;
        }
        n
    })
    .await
    .expect("requests stalled behind a full log pipe");
    assert_eq!(answered, 1500);
    let _ = child.kill();
    let _ = child.wait();
    drop(err);
}

//! The command line as a user runs it.

mod support;

use std::process::Command;

use support::tls::TestCa;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_osb-gateway"))
}

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `cmd`, asserts success, returns stdout.
fn succeeds(cmd: &mut Command) -> String {
    ok(cmd.output().unwrap())
}

/// Asserts that a finished command succeeded; returns its stdout.
fn ok(out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn config_check_accepts_the_development_example() {
    let stdout = succeeds(
        gateway()
            .args(["config", "check"])
            .arg(repo("config/gateway.dev.toml")),
    );
    assert!(
        stdout.contains("sample  private   http://127.0.0.1:9090"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("broker-secret"),
        "the plain-text password is masked: {stdout}"
    );
}

#[test]
fn config_check_accepts_the_production_example_and_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["gateway.example.toml", "registry.example.toml"] {
        std::fs::copy(repo(&format!("config/{f}")), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    TestCa::new("example")
        .issue()
        .write(&dir.path().join("tls"), "gateway");
    std::fs::write(
        dir.path().join("secrets/pg-eu-de.password"),
        "file-secret-1\n",
    )
    .unwrap();
    let stdout = succeeds(
        gateway()
            .args(["config", "check"])
            .arg(dir.path().join("gateway.example.toml"))
            .env("PG_STAGING_BROKER_PASSWORD", "env-secret-2")
            .env("PG_GLOBAL_BROKER_PASSWORD", "env-secret-3")
            .env("CLICKHOUSE_PASSWORD", "env-secret-4"),
    );
    assert!(
        stdout.contains("mode: production   listen: 0.0.0.0:8443 (TLS)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("env:PG_GLOBAL_BROKER_PASSWORD")
            && stdout.contains("file:secrets/pg-eu-de.password"),
        "{stdout}"
    );
    assert!(
        stdout.contains("5m"),
        "the per-route response timeout override shows: {stdout}"
    );
    assert!(
        stdout.contains("capture: ClickHouse http://127.0.0.1:8123 osb_gateway.exchanges"),
        "{stdout}"
    );
    for secret in [
        "file-secret-1",
        "env-secret-2",
        "env-secret-3",
        "env-secret-4",
    ] {
        assert!(!stdout.contains(secret), "{secret} printed");
    }
}

#[test]
fn config_check_refuses_an_invalid_registry_with_exit_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.toml"), "development_mode = true\n").unwrap();
    std::fs::write(
        dir.path().join("registry.toml"),
        "[[brokers]]\nid = \"pg\"\nowner = \"acme\"\n[[brokers.publications]]\nlocation = \"global\"\napproved = true\nendpoint = \"http://pg.example\"\nusername = \"u\"\npassword = \"hunter2\"\ndevelopment_mode = true\n",
    )
    .unwrap();
    let out = gateway()
        .args(["config", "check"])
        .arg(dir.path().join("gateway.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("broker \"pg\": brokers[0].publications[0].endpoint = \"http://pg.example\": publication endpoints must use https://"), "{stderr}");
    assert!(
        stderr.contains("brokers[0].publications[0].development_mode"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"));
}

#[test]
fn serve_refuses_a_plain_text_listener_in_production_mode() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[listen]\naddress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = gateway()
        .args(["serve", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("listen.tls_cert") && stderr.contains("TLS only"),
        "{stderr}"
    );
}

#[test]
fn secrets_round_trip_through_the_cli() {
    use std::io::Write as _;
    let key = gateway().args(["secret", "keygen"]).output().unwrap();
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();
    assert_eq!(key.len(), 44);
    let mut child = gateway()
        .args(["secret", "encrypt"])
        .env("OSB_GATEWAY_SECRET_KEY", &key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"broker-pw\n")
        .unwrap();
    let enc = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let k = osb_gateway::config::SecretKey::from_base64(&key).unwrap();
    assert_eq!(k.decrypt(enc.trim()).unwrap().expose(), "broker-pw");

    let out = gateway()
        .args(["secret", "encrypt"])
        .env_remove("OSB_GATEWAY_SECRET_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret keygen"));
}

#[test]
fn help_explains_each_command() {
    let out = gateway().arg("--help").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "config", "secret"] {
        assert!(s.contains(cmd), "{s}");
    }
    let out = gateway().args(["serve", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("embedded development"));
}

/// `serve` reloads on SIGHUP: an invalid registry is refused (old routes keep
/// serving), a valid one applies; SIGTERM then stops it cleanly.
#[tokio::test]
async fn sighup_reloads_and_an_invalid_registry_keeps_the_old_routes() {
    use support::broker::{answer, Broker};
    use support::client::{platform, try_get};
    use support::eventually;

    let a = Broker::http(answer(200, r#"{"from":"a"}"#)).await;
    let b = Broker::http(answer(200, r#"{"from":"b"}"#)).await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!("development_mode = true\n[listen]\naddress = \"127.0.0.1:{port}\"\n[registry]\nwatch = false\n[log]\nformat = \"json\"\n[admin]\naddress = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let registry = |url: &str, dev: bool| {
        format!(
            "locations = [\"eu\"]\n[[platforms]]\nid = \"cf\"\ncustomer = \"acme\"\nusername = \"cf-eu\"\npassword_hash = \"{}\"\nlocations = [\"eu\"]\n[[brokers]]\nid = \"pg\"\nowner = \"acme\"\n[brokers.private]\nendpoint = \"{url}\"\nusername = \"u\"\npassword = \"pw\"\ndevelopment_mode = {dev}\n",
            support::gateway::platform_hash()
        )
    };
    std::fs::write(dir.path().join("registry.toml"), registry(&a.url(""), true)).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = KillOnDrop(
        gateway()
            .args(["serve", "--config"])
            .arg(dir.path().join("gateway.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/private/pg/v2/catalog");
    let from = |url: String| async move {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            try_get(&url, Some(platform("cf-eu"))),
        )
        .await;
        match r {
            Ok(Some(r)) if r.status == 200 => r.json()["from"].as_str().unwrap_or("").to_string(),
            _ => String::new(),
        }
    };
    let u = url.clone();
    eventually(30, "the gateway serves", || {
        let u = u.clone();
        async move { from(u).await == "a" }
    })
    .await;
    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };

    std::fs::write(
        dir.path().join("registry.toml"),
        registry(&a.url(""), false),
    )
    .unwrap();
    hup(child.0.id());
    let l = log.clone();
    eventually(10, "the refusal is logged", || {
        let l = l.clone();
        async move {
            std::fs::read_to_string(&l)
                .unwrap_or_default()
                .contains("reload refused")
        }
    })
    .await;
    assert_eq!(from(url.clone()).await, "a", "the old routes keep serving");

    std::fs::write(dir.path().join("registry.toml"), registry(&b.url(""), true)).unwrap();
    hup(child.0.id());
    let u = url.clone();
    eventually(10, "the new routes apply", || {
        let u = u.clone();
        async move { from(u).await == "b" }
    })
    .await;

    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("\"message\":\"routes reloaded\"") && text.contains("\"trigger\":\"SIGHUP\""),
        "{text}"
    );
    assert!(
        !text.contains("\"pw\"") && !text.contains(support::gateway::PLATFORM_PW),
        "no secret in the log"
    );
}

/// Kills the child process when the test ends, passing or failing.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `brokers ...` and `reload` against a running gateway, as an operator
/// and as an owner would type them: tables by default, JSON with --json,
/// passwords only from stdin or the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_commands_drive_the_admin_api() {
    use std::io::Write as _;
    use support::broker::{answer, Broker};
    use support::gateway::{Options, TestGateway, ACME_TOKEN, OPERATOR_TOKEN};

    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    let registry = "locations = [\"eu\"]\n";
    let gw = TestGateway::start(
        registry,
        Options {
            tables: "[secrets]\nkey_file = \"secret.key\"\n".into(),
            files: vec![(
                "secret.key".into(),
                osb_gateway::config::SecretKey::generate().to_base64(),
            )],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let url = gw.admin_url("");
    let cli = move |token: &str, args: &[&str]| {
        let mut c = gateway();
        c.args(args)
            .env("OSB_GATEWAY_ADMIN_URL", &url)
            .env("OSB_GATEWAY_ADMIN_TOKEN", token)
            .env("BROKER_SECRET", "cli-pw-41");
        c
    };
    let run = |mut c: Command, stdin: Option<&str>| {
        tokio::task::block_in_place(|| {
            c.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = c.spawn().unwrap();
            if let Some(s) = stdin {
                child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
            }
            drop(child.stdin.take());
            child.wait_with_output().unwrap()
        })
    };
    let out = ok(run(
        cli(
            ACME_TOKEN,
            &[
                "brokers",
                "register",
                "--id",
                "mq",
                "--endpoint",
                &b.url(""),
                "--username",
                "u",
                "--password-stdin",
                "--development-mode",
            ],
        ),
        Some("cli-pw-40\n"),
    ));
    assert!(
        out.contains("registered mq") && out.contains("added mq/private"),
        "{out}"
    );
    let out = ok(run(
        cli(
            ACME_TOKEN,
            &[
                "brokers",
                "publish",
                "mq",
                "eu",
                "--endpoint",
                "https://mq.example",
                "--username",
                "u",
                "--password-env",
                "BROKER_SECRET",
            ],
        ),
        None,
    ));
    assert!(out.contains("published mq in eu"), "{out}");
    // A name with a terminal escape sequence in it (an owner's input)
    // reaches the operator's terminal escaped, not as an escape sequence.
    let named = support::client::admin(
        "PATCH",
        &gw.admin_url("/admin/v1/brokers/mq"),
        Some(ACME_TOKEN),
        Some(&serde_json::json!({"name": "evil\u{1b}]0;pwned\u{7}\u{1b}[2J"})),
    )
    .await;
    assert_eq!(named.status, 200, "{:?}", named.body);
    let list = ok(run(cli(OPERATOR_TOKEN, &["brokers", "list"]), None));
    assert!(
        !list.contains('\u{1b}') && !list.contains('\u{7}'),
        "{list:?}"
    );
    assert!(list.contains("evil\\u{1b}]0;pwned"), "{list}");
    // Rows are sorted by broker id, whatever the registry's order (mq was
    // registered first).
    let out = ok(run(
        cli(
            ACME_TOKEN,
            &[
                "brokers",
                "register",
                "--id",
                "db",
                "--endpoint",
                &b.url(""),
                "--username",
                "u",
                "--password-env",
                "BROKER_SECRET",
                "--development-mode",
            ],
        ),
        None,
    ));
    assert!(out.contains("registered db"), "{out}");
    let list = ok(run(cli(OPERATOR_TOKEN, &["brokers", "list"]), None));
    let ids: Vec<&str> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["db", "mq"], "{list}");
    let list = ok(run(cli(ACME_TOKEN, &["brokers", "list"]), None));
    assert!(list.starts_with("ID"), "{list}");
    assert!(
        list.contains("mq") && list.contains("pending_approval") && list.contains("private,eu?"),
        "{list}"
    );

    // Owners cannot approve; the error names the status and the reason.
    let denied = run(cli(ACME_TOKEN, &["brokers", "approve", "mq", "eu"]), None);
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("403"));
    ok(run(
        cli(OPERATOR_TOKEN, &["brokers", "approve", "mq", "eu"]),
        None,
    ));

    let show = ok(run(
        cli(OPERATOR_TOKEN, &["brokers", "show", "mq", "--json"]),
        None,
    ));
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["state"], "published");
    assert_eq!(v["publications"][0]["password"], "enc:v1:***");
    // The eu publication's host does not resolve: a partial failure, exit 3,
    // with the table of what worked and what did not.
    let partial = run(cli(ACME_TOKEN, &["brokers", "refresh-catalog", "mq"]), None);
    let refreshed = String::from_utf8_lossy(&partial.stdout);
    assert_eq!(partial.status.code(), Some(3), "{refreshed}");
    assert!(
        refreshed.contains("mq/private") && refreshed.contains("updated"),
        "{refreshed}"
    );
    assert!(
        String::from_utf8_lossy(&partial.stderr).contains("failed on 1 route(s)"),
        "{partial:?}"
    );

    // Delete is refused while a publication is approved; deactivate needs --yes.
    let refused = run(cli(ACME_TOKEN, &["brokers", "delete", "mq"]), None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("deactivate"));
    let unconfirmed = run(cli(ACME_TOKEN, &["brokers", "deactivate", "mq"]), None);
    assert_eq!(unconfirmed.status.code(), Some(64));
    let out = ok(run(
        cli(ACME_TOKEN, &["brokers", "deactivate", "mq", "--yes"]),
        None,
    ));
    assert!(out.contains("deactivated mq"), "{out}");

    let out = ok(run(cli(OPERATOR_TOKEN, &["reload"]), None));
    assert!(out.starts_with("reloaded: routes:"), "{out}");
    let no_token = run(
        {
            let mut c = cli("", &["brokers", "list"]);
            c.env_remove("OSB_GATEWAY_ADMIN_TOKEN");
            c
        },
        None,
    );
    assert_eq!(no_token.status.code(), Some(64));
    let unreachable = run(
        cli(
            OPERATOR_TOKEN,
            &["brokers", "list", "--admin-url", "http://127.0.0.1:1"],
        ),
        None,
    );
    assert_eq!(unreachable.status.code(), Some(69));
    let text = std::fs::read_to_string(gw.path("registry.toml")).unwrap();
    assert!(!text.contains("cli-pw-40") && !text.contains("cli-pw-41"));
}

/// `logs search|show|tail` and `instances failed`, as in the README's
/// "Debug a failing broker".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_commands_find_a_failing_provision() {
    use std::io::BufRead as _;
    use support::broker::{answer, Broker};
    use support::client::{platform, send};
    use support::gateway::{Options, TestGateway, OPERATOR_TOKEN};

    let b = Broker::http(answer(
        500,
        r#"{"error":"Boom","description":"backend quota exhausted"}"#,
    ))
    .await;
    let registry = format!(
        "locations = []\n[[platforms]]\nid = \"cf\"\ncustomer = \"acme\"\nusername = \"cf-eu\"\npassword_hash = \"{{HASH}}\"\n[[brokers]]\nid = \"pg\"\nowner = \"acme\"\n[brokers.private]\nendpoint = \"{}\"\nusername = \"u\"\npassword = \"env:BROKER_PW\"\ndevelopment_mode = true\n",
        b.url("")
    );
    let gw = TestGateway::start(
        &registry,
        Options {
            tables: "[capture]\nflush_interval = \"100ms\"\n".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let url = gw.admin_url("");
    let cli = move |args: &[&str]| {
        let mut c = gateway();
        c.args(args)
            .env("OSB_GATEWAY_ADMIN_URL", &url)
            .env("OSB_GATEWAY_ADMIN_TOKEN", OPERATOR_TOKEN);
        c
    };
    // Follow the traffic while it happens.
    let mut tail = cli(&["logs", "tail", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tail_out = tail.stdout.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(tail_out)
            .lines()
            .map_while(Result::ok)
        {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let r = send(
        "PUT",
        &gw.url("/private/pg/v2/service_instances/inst-42?accepts_incomplete=true"),
        Some(platform("cf-eu")),
        r#"{"service_id":"svc","plan_id":"small"}"#,
    )
    .await;
    assert_eq!(r.status, 500);
    let line =
        tokio::task::block_in_place(|| line_rx.recv_timeout(std::time::Duration::from_secs(10)))
            .expect("tail printed the exchange");
    let _ = tail.kill();
    let _ = tail.wait();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["instance_id"], "inst-42");

    let mut found = String::new();
    for _ in 0..50 {
        found = tokio::task::block_in_place(|| {
            succeeds(&mut cli(&["logs", "search", "--status", ">399"]))
        });
        if found.contains("inst-42") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        found.starts_with("TIME") && found.contains("PROVISION_INSTANCE") && found.contains("500"),
        "{found}"
    );
    let id = found
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_string();
    let shown = tokio::task::block_in_place(|| succeeds(&mut cli(&["logs", "show", &id])));
    assert!(
        shown.contains("\"description\": \"backend quota exhausted\""),
        "pretty JSON body: {shown}"
    );
    assert!(shown.contains("500 (broker_error)"), "{shown}");
    let curl = tokio::task::block_in_place(|| succeeds(&mut cli(&["logs", "show", &id, "--curl"])));
    assert!(
        curl.starts_with("curl -X PUT") && curl.contains("BROKER_PASSWORD"),
        "{curl}"
    );
    let failed = tokio::task::block_in_place(|| succeeds(&mut cli(&["instances", "failed"])));
    assert!(
        failed.contains("inst-42") && failed.contains("backend quota exhausted"),
        "{failed}"
    );
    let none = tokio::task::block_in_place(|| {
        succeeds(&mut cli(&[
            "logs",
            "search",
            "--before",
            "2000-01-01 00:00:00",
            "--tz",
            "UTC",
        ]))
    });
    assert_eq!(none, "no matching exchanges\n");
    let bad = tokio::task::block_in_place(|| {
        cli(&["logs", "search", "--before", "yesterday"])
            .output()
            .unwrap()
    });
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("yyyy-MM-dd HH:mm:ss"));
}

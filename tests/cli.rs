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
    let out = cmd.output().unwrap();
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

//! What `deploy/` ships is checked, offline: the Kubernetes manifests
//! against the Kubernetes schemas (kubernetes-validate, strict), the
//! gateway files inside their ConfigMaps by the gateway's own validation,
//! the alert rules by `promtool check rules` and `promtool test rules`,
//! the dashboard's queries by promtool's PromQL parser, and every metric
//! the rules and the dashboard name against a running gateway's /metrics.
//! `scripts/test` installs promtool (Debian's prometheus) and
//! kubernetes-validate (PyPI, target/k8s-venv).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::gateway::{Options, TestGateway, OPERATOR_TOKEN};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn k8s_tool(name: &str) -> PathBuf {
    let p = repo("target/k8s-venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/test, which installs kubernetes-validate into target/k8s-venv",
        p.display()
    );
    p
}

fn promtool() -> Command {
    assert!(
        Command::new("promtool").arg("--version").output().is_ok(),
        "promtool is missing: run ./scripts/test, which installs Debian's prometheus package"
    );
    Command::new("promtool")
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn manifests() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(repo("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    all.sort();
    assert!(all.len() >= 2, "{all:?}");
    all
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    for version in ["1.29.0", "1.33.0"] {
        let (ok, out) = run(Command::new(k8s_tool("kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", version])
            .args(manifests()));
        assert!(ok, "Kubernetes {version}: {out}");
    }
    // The validator is awake: a misspelt field is refused.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("deploy/kubernetes/standalone.yaml")).unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        text.replacen("periodSeconds: 5", "periodSecond: 5", 1),
    )
    .unwrap();
    let (ok, out) = run(Command::new(k8s_tool("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", "1.33.0"])
        .arg(&typo));
    assert!(!ok && out.contains("periodSecond"), "{out}");
}

/// Every document of a YAML file, as JSON (PyYAML from the same venv).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let (ok, out) = run(Command::new(k8s_tool("python"))
        .arg("-c")
        .arg("import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))")
        .arg(path));
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn the_gateway_files_in_the_config_maps_are_valid_and_match_the_pods() {
    for path in manifests() {
        let docs = yaml_documents(&path);
        let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
        let gateway = config_map["data"]["gateway.toml"].as_str().unwrap();
        // Secrets come from the pod's environment (the Secret); any value will do here.
        let env = |k: &str| match k {
            osb_gateway::config::SECRET_KEY_ENV => {
                Some(osb_gateway::config::SecretKey::generate().to_base64())
            }
            _ => Some("from-the-secret".into()),
        };
        let cfg = osb_gateway::config::GatewayConfig::from_toml(
            gateway,
            Path::new("/etc/osb-gateway"),
            &env,
        )
        .unwrap_or_else(|e| panic!("{}: gateway.toml: {e}", path.display()));
        let registry = config_map["data"]["registry.toml"].as_str().unwrap();
        toml::from_str::<toml::Value>(registry).unwrap();
        // The pod matches the file: probes on the admin port, which listens
        // beyond loopback; the registry on the writable volume.
        assert!(
            !cfg.admin.listen.ip().is_loopback(),
            "{}: kubelet cannot probe loopback",
            path.display()
        );
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        let gw = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["args"] == serde_json::json!(["serve"]))
            .unwrap();
        let admin_port = gw["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "admin")
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap();
        assert_eq!(admin_port, u64::from(cfg.admin.listen.port()));
        assert_eq!(gw["readinessProbe"]["httpGet"]["port"], "admin");
        assert_eq!(gw["readinessProbe"]["httpGet"]["path"], "/readyz");
        let state_mount = gw["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == "/var/lib/osb-gateway")
            .unwrap();
        assert!(state_mount.get("readOnly").is_none(), "{state_mount}");
        match &cfg.registry {
            osb_gateway::config::RegistrySource::File(f) => {
                assert!(f.starts_with("/var/lib/osb-gateway"), "{}", f.display())
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            gw["securityContext"]["runAsUser"]
                .as_u64()
                .or(pod["securityContext"]["runAsUser"].as_u64()),
            Some(10001)
        );
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let (ok, out) = run(promtool()
        .args(["check", "rules"])
        .arg(repo("deploy/prometheus/osb-gateway-alerts.yaml")));
    assert!(ok, "{out}");
    let (ok, out) = run(promtool().current_dir(repo("deploy/prometheus")).args([
        "test",
        "rules",
        "osb-gateway-alerts.test.yaml",
    ]));
    assert!(ok, "{out}");
}

/// The dashboard's queries, with Grafana's variables given values.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(repo("deploy/grafana/osb-gateway-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(
                t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "5m")
                    .replace("$__range", "1h")
                    .replace("$instance", ".*")
                    .replace("$broker", ".*"),
            );
        }
    }
    assert!(out.len() >= 20, "{out:?}");
    out
}

#[test]
fn dashboard_queries_parse() {
    // promtool parses PromQL when it checks rules: each query becomes a
    // recording rule.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(q).unwrap()
        ));
    }
    let file = dir.path().join("dashboard.rules.yaml");
    std::fs::write(&file, rules).unwrap();
    let (ok, out) = run(promtool().args(["check", "rules"]).arg(&file));
    assert!(ok, "{out}");
}

/// Metric names (ours and process_*) in a PromQL text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["osb_gateway_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            names.insert(
                name.trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count")
                    .to_string(),
            );
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboard_use_is_exported() {
    use support::broker::{answer, Broker};
    let b = Broker::http(answer(200, r#"{"services":[]}"#)).await;
    let registry = format!(
        "locations = [\"eu\"]\n[[platforms]]\nid = \"cf\"\ncustomer = \"acme\"\nusername = \"cf\"\npassword_hash = \"{{HASH}}\"\nlocations = [\"eu\"]\n[[brokers]]\nid = \"pg\"\nowner = \"acme\"\n[brokers.private]\nendpoint = \"{}\"\nusername = \"u\"\npassword = \"env:BROKER_PW\"\ndevelopment_mode = true\n",
        b.url("")
    );
    let mut gw = TestGateway::start(
        &registry,
        Options {
            tls: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ca = gw.ca.as_ref().unwrap().pem();
    let req = http::Request::get("/private/pg/v2/catalog")
        .header("host", "localhost")
        .header("x-broker-api-version", "2.17")
        .header("authorization", support::client::platform("cf"))
        .body(support::client::empty())
        .unwrap();
    let (r, _) = support::client::send_tls(gw.addr, &ca, false, req).await;
    assert_eq!(r.status, 200);
    let req = http::Request::get("/metrics")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {OPERATOR_TOKEN}"))
        .body(support::client::empty())
        .unwrap();
    let admin = gw.handle.as_ref().unwrap().admin_addr.unwrap();
    let (r, _) = support::client::send_tls(admin, &ca, false, req).await;
    let exported: BTreeSet<String> = r
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let mut used = metric_names(
        &std::fs::read_to_string(repo("deploy/prometheus/osb-gateway-alerts.yaml")).unwrap(),
    );
    for q in dashboard_queries() {
        used.extend(metric_names(&q));
    }
    assert!(used.len() > 20, "{used:?}");
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "used but not exported: {missing:?}");
    gw.shutdown().await;
}

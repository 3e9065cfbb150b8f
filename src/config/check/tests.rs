//! Tests of `config::check`: every key's validation, errors naming the
//! field and value.
use super::*;

fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
    parse_all(text).map_err(|mut e| e.0.remove(0))
}

fn parse_all(text: &str) -> Result<GatewayConfig, ConfigErrors> {
    GatewayConfig::from_toml(text, Path::new("/etc/gw"), &|_| None)
}

#[test]
fn plain_text_listener_refused_outside_development_mode() {
    let e = parse("").unwrap_err();
    assert_eq!(e.field, "listen.tls_cert");
    assert!(e.reason.contains("TLS only"), "{e}");
    let c = parse("development_mode = true").unwrap();
    assert!(c.tls.is_none());
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn paths_are_relative_to_the_file() {
    let c = parse("[listen]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
    assert_eq!(c.tls.unwrap().cert, Path::new("/etc/gw/c.pem"));
    assert_eq!(
        c.registry,
        RegistrySource::File("/etc/gw/registry.toml".into())
    );
}

#[test]
fn bad_values_name_field_and_value() {
    let e = parse("development_mode = true\n[upstream]\nconnect_timeout = \"soon\"").unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("upstream.connect_timeout", "soon")
    );
    let e = parse("development_mode = true\n[listen]\naddress = \"nowhere\"").unwrap_err();
    assert_eq!(e.field, "listen.address");
    let e = parse("development_mode = true\n[log]\nformat = \"xml\"").unwrap_err();
    assert_eq!((e.field.as_str(), e.value.as_str()), ("log.format", "xml"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = parse_all(
        "[listen]\naddress = \"nowhere\"\n[upstream]\nconnect_timeout = \"soon\"\n\
         [log]\nformat = \"xml\"\n[capture]\nbatch_max_rows = 0\n\
         [[admin.tokens]]\nname = \"ops\"\nsha256 = \"abc\"\nrole = \"operator\"\n",
    )
    .unwrap_err();
    let fields: Vec<&str> = e.0.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "listen.address",
            "listen.tls_cert",
            "upstream.connect_timeout",
            "log.format",
            "capture.batch_max_rows",
            "admin.tokens[0].sha256"
        ]
    );
    let text = e.to_string();
    assert!(
        text.starts_with("6 problems:\n  - listen.address = \"nowhere\""),
        "{text}"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let e = parse("development_mode = true\nlisten_port = 1").unwrap_err();
    assert!(e.reason.contains("listen_port"), "{e}");
}

#[test]
fn embedded_defaults_are_valid() {
    let c = GatewayConfig::embedded(&|_| None);
    assert!(c.mode.is_development());
    assert!(matches!(c.registry, RegistrySource::Embedded(_)));
}

#[test]
fn batches_default_smaller_to_the_local_store() {
    let c = parse("development_mode = true").unwrap();
    assert_eq!(
        c.capture.batch_max_bytes,
        crate::config::LOCAL_BATCH_MAX_BYTES
    );
    let c = parse("development_mode = true\n[capture.clickhouse]\nurl = \"http://127.0.0.1:8123\"")
        .unwrap();
    assert_eq!(c.capture.batch_max_bytes, 10_000_000);
    let c = parse("development_mode = true\n[capture]\nbatch_max_bytes = 5").unwrap();
    assert_eq!(c.capture.batch_max_bytes, 5, "a set value holds either way");
}

use super::*;
use crate::capture::redact::REDACTED;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

fn raw(method: &str, osb_path: &str, query: &str, req: &str, resp: &str) -> RawExchange {
    let body = |s: &str| BodyData {
        bytes: s.as_bytes().to_vec(),
        size: s.len() as u64,
        truncated: false,
        scanned: None,
    };
    RawExchange {
        id: Uuid::new_v4(),
        received_at: SystemTime::now(),
        duration_us: 1,
        ttfb_us: 1,
        gateway: "gw".into(),
        platform: "cf".into(),
        location: "eu".into(),
        broker: "pg".into(),
        customer: Some("acme".into()),
        upstream_url: "https://b.example".into(),
        method: method.parse().unwrap(),
        path: format!("/eu/pg{osb_path}"),
        query: query.into(),
        osb_path: osb_path.into(),
        operation: Operation::Other,
        request_id: "rid".into(),
        request_headers: Headers::default(),
        response_headers: Headers::default(),
        status: 200,
        outcome: Outcome::Ok,
        error: String::new(),
        request_body: body(req),
        response_body: body(resp),
        redact_parameters: false,
    }
}

fn rec(r: RawExchange) -> CaptureRecord {
    r.into_record(&Redactor::default())
}

#[test]
fn provision_ids_come_from_path_body_and_query() {
    let mut r = raw(
        "PUT",
        "/v2/service_instances/inst%2F1",
        "accepts_incomplete=true",
        r#"{"service_id":"svc","plan_id":"small","parameters":{"a":1}}"#,
        r#"{"operation":"op-42"}"#,
    );
    r.status = 202;
    let r = rec(r);
    assert_eq!(r.operation, "PROVISION_INSTANCE");
    assert_eq!(
        (
            r.instance_id.as_str(),
            r.service_id.as_str(),
            r.plan_id.as_str()
        ),
        ("inst/1", "svc", "small")
    );
    assert!(r.accepts_incomplete);
    assert_eq!(r.broker_operation, "op-42");
    assert!(
        r.request_body.contains("\"a\":1"),
        "parameters kept unless the route redacts them"
    );
}

#[test]
fn update_falls_back_to_previous_plan() {
    let r = rec(raw(
        "PATCH",
        "/v2/service_instances/i",
        "",
        r#"{"service_id":"svc","previous_values":{"plan_id":"old"}}"#,
        "{}",
    ));
    assert_eq!(
        (r.operation.as_str(), r.plan_id.as_str()),
        ("UPDATE_INSTANCE", "old")
    );
}

#[test]
fn deprovision_and_unbind_ids_come_from_the_query() {
    let r = rec(raw(
        "DELETE",
        "/v2/service_instances/i",
        "service_id=svc&plan_id=p%20x&accepts_incomplete=true",
        "",
        "{}",
    ));
    assert_eq!(
        (
            r.operation.as_str(),
            r.service_id.as_str(),
            r.plan_id.as_str()
        ),
        ("DEPROVISION_INSTANCE", "svc", "p x")
    );
    let r = rec(raw(
        "DELETE",
        "/v2/service_instances/i/service_bindings/b",
        "service_id=svc&plan_id=p",
        "",
        "{}",
    ));
    assert_eq!(
        (
            r.operation.as_str(),
            r.instance_id.as_str(),
            r.binding_id.as_str()
        ),
        ("UNBIND", "i", "b")
    );
    assert!(!r.accepts_incomplete);
}

#[test]
fn polls_record_operation_state_and_description() {
    let r = rec(raw(
        "GET",
        "/v2/service_instances/i/last_operation",
        "operation=op%2042&plan_id=p",
        "",
        r#"{"state":"failed","description":"disk full"}"#,
    ));
    assert_eq!(r.operation, "POLL_INSTANCE_LAST_OPERATION");
    assert_eq!(
        (
            r.broker_operation.as_str(),
            r.state.as_str(),
            r.description.as_str()
        ),
        ("op 42", "failed", "disk full")
    );
    let r = rec(raw(
        "GET",
        "/v2/service_instances/i/service_bindings/b/last_operation",
        "",
        "",
        r#"{"state":"in progress"}"#,
    ));
    assert_eq!(
        (
            r.operation.as_str(),
            r.state.as_str(),
            r.binding_id.as_str()
        ),
        ("POLL_BINDING_LAST_OPERATION", "in progress", "b")
    );
}

#[test]
fn every_operation_is_classified() {
    let cases = [
        ("GET", "/v2/catalog", "FETCH_CATALOG"),
        ("GET", "/v2/service_instances/i", "FETCH_INSTANCE"),
        ("PUT", "/v2/service_instances/i/service_bindings/b", "BIND"),
        (
            "GET",
            "/v2/service_instances/i/service_bindings/b",
            "FETCH_BINDING",
        ),
        ("POST", "/v2/whatever", "OTHER"),
    ];
    for (m, p, want) in cases {
        assert_eq!(rec(raw(m, p, "", "", "{}")).operation, want, "{m} {p}");
    }
}

#[test]
fn originating_identity_is_decoded() {
    let mut r = raw("GET", "/v2/catalog", "", "", "{}");
    let mut h = HeaderMap::new();
    h.insert(
        "x-broker-api-originating-identity",
        HeaderValue::from_static("cloudfoundry eyJ1c2VyX2lkIjoiNjgzZWE3NDgifQ=="),
    );
    // NB: looked up in any case, as HeaderMap::get did.
    h.insert("X-Broker-API-Version", HeaderValue::from_static("2.17"));
    r.request_headers = Headers::capture(&h);
    let r = rec(r);
    assert_eq!(
        (r.originating_platform.as_str(), r.originating_user.as_str()),
        ("cloudfoundry", r#"{"user_id":"683ea748"}"#)
    );
    assert_eq!(r.api_version, "2.17");
}

#[test]
fn bind_credentials_keep_keys_but_not_values() {
    let r = rec(raw(
        "PUT",
        "/v2/service_instances/i/service_bindings/b",
        "",
        r#"{"service_id":"s","plan_id":"p"}"#,
        r#"{"credentials":{"uri":"postgres://u:hunter2@db/x","password":"hunter2"},"endpoints":[]}"#,
    ));
    assert!(!r.response_body.contains("hunter2"), "{}", r.response_body);
    let v: serde_json::Value = serde_json::from_str(&r.response_body).unwrap();
    assert_eq!(v["credentials"]["uri"], REDACTED);
    assert_eq!(v["credentials"]["password"], REDACTED);
    assert_eq!(v["endpoints"], serde_json::json!([]));
}

#[test]
fn credentials_are_masked_whatever_the_operation_says() {
    // An extension, an unknown path, a catalog: classified OTHER or not a
    // binding, yet the broker answered with credentials.
    for (method, path, resp) in [
        (
            "POST",
            "/v2/service_instances/i/service_bindings/b/adapt_credentials",
            r#"{"credentials":{"password":"hunter2"}}"#,
        ),
        ("GET", "/v2/whatever", r#"{"credentials":"hunter2"}"#),
        (
            "PUT",
            "/v2/service_instances/i",
            r#"{"cr\u0065dentials":{"p":"hunter2"}}"#,
        ),
        // Fail closed: names credentials, cannot be parsed.
        (
            "GET",
            "/v2/catalog",
            r#"{"credentials":{"password":"hunter2"#,
        ),
    ] {
        let r = rec(raw(method, path, "", "", resp));
        assert!(
            !r.response_body.contains("hunter2"),
            "{path}: {}",
            r.response_body
        );
    }
    // A body with nothing to mask is stored as sent, byte for byte.
    let catalog = r#"{"services": [{"name": "caf\u00e9", "description": "credentials are issued per binding"}]}"#;
    let r = rec(raw("GET", "/v2/catalog", "", "", catalog));
    assert_eq!(r.response_body, catalog);
    // A catalog cut at the cap with non-ASCII escapes cannot spell the key:
    // kept, not dropped as unparseable.
    let cut = r#"{"services": [{"name": "caf\u00e9 \u2603", "descr"#;
    let mut r = raw("GET", "/v2/catalog", "", "", cut);
    r.response_body.truncated = true;
    assert_eq!(rec(r).response_body, cut);
}

#[test]
fn unparseable_or_truncated_bind_responses_are_not_stored() {
    let mut r = raw(
        "GET",
        "/v2/service_instances/i/service_bindings/b",
        "",
        "",
        r#"{"credentials":{"password":"hunter2"#,
    );
    r.response_body.truncated = true;
    r.response_body.size = 10_000;
    let r = rec(r);
    assert!(!r.response_body.contains("hunter2"));
    assert!(
        r.response_body.starts_with(REDACTED) && r.response_body.contains("10000 bytes"),
        "{}",
        r.response_body
    );
}

#[test]
fn parameters_are_redacted_when_the_route_asks() {
    let mut r = raw(
        "PUT",
        "/v2/service_instances/i",
        "",
        r#"{"service_id":"s","plan_id":"p","parameters":{"admin_password":"hunter2"}}"#,
        "{}",
    );
    r.redact_parameters = true;
    let r = rec(r);
    assert!(!r.request_body.contains("hunter2"));
    assert_eq!(r.plan_id, "p", "ids are read before redaction");
    let mut f = raw(
        "GET",
        "/v2/service_instances/i",
        "",
        "",
        r#"{"parameters":{"k":"hunter2"}}"#,
    );
    f.redact_parameters = true;
    assert!(!rec(f).response_body.contains("hunter2"));
}

#[test]
fn secret_headers_are_masked() {
    let mut r = raw("GET", "/v2/catalog", "", "", "{}");
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("authorization", "Basic c2VjcmV0"),
        ("Proxy-Authorization", "Basic cHJveHk="),
        ("cookie", "s=1"),
        ("X-API-Key", "k-123"),
        ("x-fine", "ok"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h.insert("x-latin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
    r.request_headers = Headers::capture(&h);
    let mut h = HeaderMap::new();
    h.insert("set-cookie", HeaderValue::from_static("s=2"));
    r.response_headers = Headers::capture(&h);
    let rec = r.into_record(&Redactor::new(vec![HeaderName::from_static("x-api-key")]));
    let all = format!("{:?}{:?}", rec.request_headers, rec.response_headers);
    for secret in ["c2VjcmV0", "cHJveHk=", "s=1", "k-123", "s=2"] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
    assert!(rec
        .request_headers
        .contains(&("x-fine".into(), "ok".into())));
    assert!(rec
        .request_headers
        .contains(&("authorization".into(), REDACTED.into())));
    assert!(rec
        .request_headers
        .contains(&("x-api-key".into(), REDACTED.into())));
    // NB: a value that is not UTF-8 is kept, lossily.
    assert!(rec
        .request_headers
        .contains(&("x-latin".into(), "caf\u{fffd}".into())));
}

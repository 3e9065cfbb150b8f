//! OSB knowledge: operation classification, header names and the error body.
//!
//! Nothing here does I/O; `proxy` and (later) `capture` use it. The tables in
//! `shared/design/OSB.md` §3.1 are the source of the operation names.

pub mod path;

use bytes::Bytes;
use http::Method;

/// `X-Broker-API-Version`: `MAJOR.MINOR`, required by the spec, passed through unchanged.
pub const API_VERSION: &str = "x-broker-api-version";
/// The API version the gateway sends on its own calls (catalog refresh).
pub const DEFAULT_API_VERSION: &str = "2.14";
/// `X-Broker-API-Originating-Identity`: `<platform> <base64 JSON>`, passed through unchanged.
pub const ORIGINATING_IDENTITY: &str = "x-broker-api-originating-identity";
/// `X-Broker-API-Request-Identity`: added by the gateway when the platform sent none.
pub const REQUEST_IDENTITY: &str = "x-broker-api-request-identity";

/// The OSB operation an exchange performs, classified from method and path suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `GET /v2/catalog`
    FetchCatalog,
    /// `PUT /v2/service_instances/:instance_id`
    ProvisionInstance,
    /// `GET /v2/service_instances/:instance_id`
    FetchInstance,
    /// `PATCH /v2/service_instances/:instance_id`
    UpdateInstance,
    /// `DELETE /v2/service_instances/:instance_id`
    DeprovisionInstance,
    /// `GET /v2/service_instances/:instance_id/last_operation`
    PollInstanceLastOperation,
    /// `PUT /v2/service_instances/:instance_id/service_bindings/:binding_id`
    Bind,
    /// `GET /v2/service_instances/:instance_id/service_bindings/:binding_id`
    FetchBinding,
    /// `DELETE /v2/service_instances/:instance_id/service_bindings/:binding_id`
    Unbind,
    /// `GET .../service_bindings/:binding_id/last_operation`
    PollBindingLastOperation,
    /// Anything else (extensions, probes, unknown paths).
    Other,
}

impl Operation {
    /// Every operation, in declaration order (`op as usize` indexes it).
    pub const ALL: [Operation; 11] = [
        Operation::FetchCatalog,
        Operation::ProvisionInstance,
        Operation::FetchInstance,
        Operation::UpdateInstance,
        Operation::DeprovisionInstance,
        Operation::PollInstanceLastOperation,
        Operation::Bind,
        Operation::FetchBinding,
        Operation::Unbind,
        Operation::PollBindingLastOperation,
        Operation::Other,
    ];

    /// The upper-case name used in logs and captures (`FETCH_CATALOG`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::FetchCatalog => "FETCH_CATALOG",
            Operation::ProvisionInstance => "PROVISION_INSTANCE",
            Operation::FetchInstance => "FETCH_INSTANCE",
            Operation::UpdateInstance => "UPDATE_INSTANCE",
            Operation::DeprovisionInstance => "DEPROVISION_INSTANCE",
            Operation::PollInstanceLastOperation => "POLL_INSTANCE_LAST_OPERATION",
            Operation::Bind => "BIND",
            Operation::FetchBinding => "FETCH_BINDING",
            Operation::Unbind => "UNBIND",
            Operation::PollBindingLastOperation => "POLL_BINDING_LAST_OPERATION",
            Operation::Other => "OTHER",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ids found in the path of an OSB request (still percent-encoded, as sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathIds<'a> {
    /// `:instance_id`
    pub instance_id: Option<&'a str>,
    /// `:binding_id`
    pub binding_id: Option<&'a str>,
}

/// Classifies an OSB request from its method and its path from `/v2` on
/// (the part after the broker's base path; no query string).
///
/// ```
/// use osb_gateway::osb::{classify, Operation};
/// use http::Method;
/// let (op, ids) = classify(&Method::PUT, "/v2/service_instances/i-1/service_bindings/b-1");
/// assert_eq!(op, Operation::Bind);
/// assert_eq!(ids.binding_id, Some("b-1"));
/// ```
pub fn classify<'a>(method: &Method, osb_path: &'a str) -> (Operation, PathIds<'a>) {
    let none = (Operation::Other, PathIds::default());
    let Some(rest) = osb_path.strip_prefix("/v2/") else {
        return none;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut segs = rest.split('/');
    let first = segs.next().unwrap_or("");
    if first == "catalog" {
        return match (segs.next(), method) {
            (None, &Method::GET) => (Operation::FetchCatalog, PathIds::default()),
            _ => none,
        };
    }
    if first != "service_instances" {
        return none;
    }
    let Some(instance) = segs.next().filter(|s| !s.is_empty()) else {
        return none;
    };
    let ids = PathIds {
        instance_id: Some(instance),
        binding_id: None,
    };
    let op = match (segs.next(), segs.next(), segs.next(), segs.next()) {
        (None, ..) => match *method {
            Method::PUT => Operation::ProvisionInstance,
            Method::GET => Operation::FetchInstance,
            Method::PATCH => Operation::UpdateInstance,
            Method::DELETE => Operation::DeprovisionInstance,
            _ => return none,
        },
        (Some("last_operation"), None, ..) if method == Method::GET => {
            Operation::PollInstanceLastOperation
        }
        (Some("service_bindings"), Some(binding), tail, None) if !binding.is_empty() => {
            let ids = PathIds {
                binding_id: Some(binding),
                ..ids
            };
            let op = match (tail, method) {
                (None, &Method::PUT) => Operation::Bind,
                (None, &Method::GET) => Operation::FetchBinding,
                (None, &Method::DELETE) => Operation::Unbind,
                (Some("last_operation"), &Method::GET) => Operation::PollBindingLastOperation,
                _ => return (Operation::Other, ids),
            };
            return (op, ids);
        }
        _ => return (Operation::Other, ids),
    };
    (op, ids)
}

/// An OSB error body, `{"error": "...", "description": "..."}` (spec §Service Broker Errors).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OsbError<'a> {
    /// A single CamelCase word.
    pub error: &'a str,
    /// Human-readable text for the platform's user. Never holds a secret.
    pub description: &'a str,
}

impl OsbError<'_> {
    /// The JSON body.
    pub fn to_bytes(&self) -> Bytes {
        // NB: serializing two &str fields cannot fail.
        Bytes::from(serde_json::to_vec(self).expect("OSB error serializes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_spec_endpoint() {
        let cases = [
            ("GET", "/v2/catalog", Operation::FetchCatalog, None, None),
            (
                "PUT",
                "/v2/service_instances/i",
                Operation::ProvisionInstance,
                Some("i"),
                None,
            ),
            (
                "GET",
                "/v2/service_instances/i",
                Operation::FetchInstance,
                Some("i"),
                None,
            ),
            (
                "PATCH",
                "/v2/service_instances/i",
                Operation::UpdateInstance,
                Some("i"),
                None,
            ),
            (
                "DELETE",
                "/v2/service_instances/i",
                Operation::DeprovisionInstance,
                Some("i"),
                None,
            ),
            (
                "GET",
                "/v2/service_instances/i/last_operation",
                Operation::PollInstanceLastOperation,
                Some("i"),
                None,
            ),
            (
                "PUT",
                "/v2/service_instances/i/service_bindings/b",
                Operation::Bind,
                Some("i"),
                Some("b"),
            ),
            (
                "GET",
                "/v2/service_instances/i/service_bindings/b",
                Operation::FetchBinding,
                Some("i"),
                Some("b"),
            ),
            (
                "DELETE",
                "/v2/service_instances/i/service_bindings/b",
                Operation::Unbind,
                Some("i"),
                Some("b"),
            ),
            (
                "GET",
                "/v2/service_instances/i/service_bindings/b/last_operation",
                Operation::PollBindingLastOperation,
                Some("i"),
                Some("b"),
            ),
            (
                "POST",
                "/v2/service_instances/i/service_bindings/b/adapt_credentials",
                Operation::Other,
                Some("i"),
                Some("b"),
            ),
            ("POST", "/v2/catalog", Operation::Other, None, None),
            ("GET", "/v2/info", Operation::Other, None, None),
            ("GET", "/v3/catalog", Operation::Other, None, None),
            (
                "GET",
                "/v2/service_instances/",
                Operation::Other,
                None,
                None,
            ),
        ];
        for (m, p, op, i, b) in cases {
            let (got, ids) = classify(&m.parse().unwrap(), p);
            assert_eq!(got, op, "{m} {p}");
            assert_eq!(ids.instance_id, i, "{m} {p}");
            assert_eq!(ids.binding_id, b, "{m} {p}");
        }
    }

    #[test]
    fn percent_encoded_ids_are_returned_as_sent() {
        let (op, ids) = classify(&Method::PUT, "/v2/service_instances/a%2Fb");
        assert_eq!(op, Operation::ProvisionInstance);
        assert_eq!(ids.instance_id, Some("a%2Fb"));
    }

    #[test]
    fn error_body_is_osb_json() {
        let b = OsbError {
            error: "NotFound",
            description: "say \"hi\"",
        }
        .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"], "NotFound");
        assert_eq!(v["description"], "say \"hi\"");
    }
}

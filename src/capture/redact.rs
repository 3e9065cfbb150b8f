//! Redaction, applied before a record is stored, tailed or shown.
//!
//! * Headers: `Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`
//!   and any header configured as secret keep their name; the value becomes
//!   [`REDACTED`].
//! * BIND and FETCH_BINDING responses, and any other response that names
//!   `credentials`: the `credentials` object keeps its keys, every value
//!   becomes [`REDACTED`]. A response that cannot be parsed (not JSON, or
//!   cut at the cap) could hold credentials anywhere, so its body is
//!   replaced whole.
//! * `parameters` in request and response bodies, when the route asks for it.

use http::header::{self, HeaderName};
use serde_json::Value;

use super::headers::Headers;
use super::record::BodyData;
use crate::osb::Operation;

/// The marker that replaces a secret value.
pub const REDACTED: &str = "[REDACTED]";

/// Redaction settings.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secret_headers: Vec<HeaderName>,
}

/// `name` as captured: lower case, as hyper keeps it.
fn always_secret(name: &str) -> bool {
    name == header::AUTHORIZATION
        || name == header::PROXY_AUTHORIZATION
        || name == header::COOKIE
        || name == header::SET_COOKIE
}

fn mask_values(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for val in m.values_mut() {
                *val = Value::String(REDACTED.into());
            }
        }
        other => *other = Value::String(REDACTED.into()),
    }
}

impl Redactor {
    /// Redacts the always-secret headers plus `secret_headers`.
    pub fn new(secret_headers: Vec<HeaderName>) -> Self {
        Redactor { secret_headers }
    }

    /// Headers as (name, value) pairs with secrets masked.
    pub fn headers(&self, h: &Headers) -> Vec<(String, String)> {
        h.iter()
            .map(|(k, v)| {
                let secret = always_secret(k) || self.secret_headers.iter().any(|s| s == k);
                let value = if secret {
                    REDACTED.to_string()
                } else {
                    String::from_utf8_lossy(v).into_owned()
                };
                (k.to_string(), value)
            })
            .collect()
    }

    /// The request body to store.
    pub fn request_body(&self, op: Operation, redact_parameters: bool, body: BodyData) -> String {
        let touches_parameters = matches!(
            op,
            Operation::ProvisionInstance | Operation::UpdateInstance | Operation::Bind
        );
        if redact_parameters && touches_parameters {
            let json = match body.truncated {
                true => None,
                false => serde_json::from_slice::<Value>(&body.bytes).ok(),
            };
            return match json {
                Some(mut v) => {
                    if let Some(p) = v.get_mut("parameters") {
                        mask_values(p);
                    }
                    v.to_string()
                }
                None if body.bytes.is_empty() => String::new(),
                None => unparseable(&body),
            };
        }
        text(body.bytes)
    }

    /// The response body to store.
    pub fn response_body(&self, op: Operation, redact_parameters: bool, body: BodyData) -> String {
        // NB: whatever the operation (a broker may answer a path the
        // gateway classified OTHER with credentials), a body that may hold
        // a `credentials` key is parsed and its credentials masked; one
        // that cannot be parsed then is not stored (fail closed).
        let binding = matches!(op, Operation::Bind | Operation::FetchBinding);
        let has_parameters =
            redact_parameters && matches!(op, Operation::FetchInstance | Operation::FetchBinding);
        if !binding && !has_parameters && !may_name_credentials(&body.bytes) {
            return text(body.bytes);
        }
        let json = match body.truncated {
            true => None,
            false => serde_json::from_slice::<Value>(&body.bytes).ok(),
        };
        let Some(mut v) = json else {
            return match body.bytes.is_empty() {
                true => String::new(),
                false => unparseable(&body),
            };
        };
        let mut masked = false;
        for (key, wanted) in [("credentials", true), ("parameters", has_parameters)] {
            if let Some(x) = v.get_mut(key).filter(|_| wanted) {
                mask_values(x);
                masked = true;
            }
        }
        // NB: nothing masked, stored as sent (a catalog that mentions
        // credentials in a description is not re-serialised).
        match masked {
            true => v.to_string(),
            false => text(body.bytes),
        }
    }
}

/// Whether a body may have a `credentials` key: it names it, or it
/// escapes one of the key's letters (`cr\u0065dentials`). Escapes of other
/// characters (`caf\u00e9` in a catalog) do not count, so such bodies are
/// not parsed, nor dropped when cut at the cap. A memchr-speed scan.
fn may_name_credentials(bytes: &[u8]) -> bool {
    if memchr::memmem::find(bytes, b"credentials").is_some() {
        return true;
    }
    // NB: the two scans cost the capture thread (never the proxy) about
    // 80 µs per MB and 0.05 µs per 4 KB catalog (benches/capture.rs
    // record_build: catalog_1MB 91-105 -> 176-181 µs, catalog_4KB 1.54-1.56
    // -> 1.60 µs). Escapes are found by their backslash, not by `\u00`,
    // which every `\u00e9` would match.
    memchr::memchr_iter(b'\\', bytes).any(|at| {
        let esc = bytes.get(at + 1..at + 6).filter(|e| e.starts_with(b"u00"));
        esc.and_then(|e| std::str::from_utf8(&e[3..]).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .is_some_and(|c| b"credntials".contains(&c))
    })
}

/// The body as text: taken over without a copy when it is UTF-8 (OSB
/// bodies are JSON), else with invalid sequences replaced.
fn text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn unparseable(body: &BodyData) -> String {
    format!(
        "{REDACTED} body not stored: it may hold secrets and could not be parsed as JSON{} ({} bytes)",
        if body.truncated { " (cut at the capture cap)" } else { "" },
        body.size
    )
}

//! [`CaptureRecord`]: one exchange, redacted: what is stored, tailed and searched.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One exchange, redacted: what is stored, tailed and searched.
///
/// NB: `#[serde(default)]`: records written by an older gateway (in the
/// spool, the dead-letter directory or the local store) lack the fields
/// added since, and must still be read; every field has a default. A
/// fixture of today's format (`tests/fixtures/records-v1`) is read back by
/// the suite.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureRecord {
    /// Unique id.
    pub id: Uuid,
    /// Arrival time, microseconds since the Unix epoch.
    pub received_at_us: i64,
    /// Total duration, microseconds.
    pub duration_us: u64,
    /// Time to the broker's response headers, microseconds (0: none).
    pub ttfb_us: u64,
    /// Gateway instance.
    pub gateway: String,
    /// Platform id (empty when unauthenticated).
    pub platform: String,
    /// Location from the URL.
    pub location: String,
    /// Broker id from the URL.
    pub broker: String,
    /// The customer that owns the broker, fixed when the exchange is
    /// captured (empty for refusals that are the operator's business
    /// only, and in records of gateways before 2026-12): owners see the
    /// records of their own customer, whatever the broker id.
    pub customer: String,
    /// Upstream URL called (empty when none).
    pub upstream_url: String,
    /// HTTP method.
    pub method: String,
    /// Path as received.
    pub path: String,
    /// Query string.
    pub query: String,
    /// `FETCH_CATALOG`, `PROVISION_INSTANCE`, ...
    pub operation: String,
    /// Service id (body or query).
    pub service_id: String,
    /// Plan id (body or query).
    pub plan_id: String,
    /// Service name from the catalog (filled by the catalog cache; empty until then).
    pub service_name: String,
    /// Plan name from the catalog (idem).
    pub plan_name: String,
    /// Instance id (path, percent-decoded).
    pub instance_id: String,
    /// Binding id (path, percent-decoded).
    pub binding_id: String,
    /// `accepts_incomplete=true` in the query.
    pub accepts_incomplete: bool,
    /// Broker-provided `operation` (202 body, or the poll's query).
    pub broker_operation: String,
    /// Polled `state` (`in progress`, `succeeded`, `failed`).
    pub state: String,
    /// Broker's `description` in a poll answer or error body.
    pub description: String,
    /// `X-Broker-API-Version`.
    pub api_version: String,
    /// Platform named in `X-Broker-API-Originating-Identity`.
    pub originating_platform: String,
    /// Its decoded value (JSON text).
    pub originating_user: String,
    /// `X-Broker-API-Request-Identity`.
    pub request_id: String,
    /// Status sent to the platform (0: none).
    pub status: u16,
    /// `ok`, `broker_error`, `rejected`, `upstream_error`, `timeout`, `aborted`, `shutdown`.
    pub outcome: String,
    /// Error cause, when any.
    pub error: String,
    /// Request headers, redacted.
    pub request_headers: Vec<(String, String)>,
    /// Response headers, redacted.
    pub response_headers: Vec<(String, String)>,
    /// Request body (up to the cap), redacted.
    #[serde(serialize_with = "body::serialize")]
    pub request_body: String,
    /// Full request body size.
    pub request_body_size: u64,
    /// Request body cut at the cap.
    pub request_body_truncated: bool,
    /// Response body (up to the cap), redacted.
    #[serde(serialize_with = "body::serialize")]
    pub response_body: String,
    /// Full response body size.
    pub response_body_size: u64,
    /// Response body cut at the cap.
    pub response_body_truncated: bool,
}

/// Serializing a record without its bodies, for stores that keep bodies
/// apart (the local store keeps each distinct body once per segment).
///
/// NB: a flag on the thread rather than a second, field-by-field copy of
/// the record's serializer: one list of fields, and no clone of the record
/// (35 strings) per write.
pub(crate) mod body {
    use std::cell::Cell;

    thread_local! {
        static OMIT: Cell<bool> = const { Cell::new(false) };
    }

    /// Runs `f` with bodies serialized as `""`.
    pub(crate) fn omitted<R>(f: impl FnOnce() -> R) -> R {
        struct Reset(bool);
        impl Drop for Reset {
            fn drop(&mut self) {
                OMIT.with(|o| o.set(self.0));
            }
        }
        let _reset = Reset(OMIT.with(|o| o.replace(true)));
        f()
    }

    pub(super) fn serialize<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        if OMIT.with(Cell::get) {
            s.serialize_str("")
        } else {
            s.serialize_str(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_an_older_format_reads_with_defaults() {
        let r: CaptureRecord = serde_json::from_str(
            r#"{"id":"6120c8ea-f9a7-477d-a621-0000077196a3","broker":"pg","status":201}"#,
        )
        .unwrap();
        assert_eq!((r.broker.as_str(), r.status, r.duration_us), ("pg", 201, 0));
        assert!(r.request_headers.is_empty());
    }
}

//! [`CaptureRecord`]: one exchange as stored and shown, and how it is made
//! from a [`RawExchange`] off the data path: ids read from path, query and
//! JSON bodies (as `shared/design/OSB.md` §3.2 tables them), then redaction.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::Method;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

pub use crate::store::record::CaptureRecord;
use uuid::Uuid;

use super::headers::Headers;
use super::redact::Redactor;
use crate::osb::{self, Operation};

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The broker answered 1xx–3xx and the body went through.
    Ok,
    /// The broker answered 4xx or 5xx.
    BrokerError,
    /// The gateway refused the request (401, 403, 404).
    Rejected,
    /// The broker could not be reached or failed mid-answer (502).
    UpstreamError,
    /// Connect, response or idle timeout (504, or a cut body).
    Timeout,
    /// The platform went away before the exchange finished.
    Aborted,
    /// The gateway stopped it: still running when the shutdown grace
    /// period ended.
    Shutdown,
}

impl Outcome {
    /// The stored name (`ok`, `broker_error`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BrokerError => "broker_error",
            Outcome::Rejected => "rejected",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Timeout => "timeout",
            Outcome::Aborted => "aborted",
            Outcome::Shutdown => "shutdown",
        }
    }
}

/// A captured body: the kept prefix, the full size, and whether it was cut.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyData {
    /// Up to the cap.
    pub bytes: Vec<u8>,
    /// Bytes that passed through in all.
    pub size: u64,
    /// `true` when `bytes` is shorter than `size`.
    pub truncated: bool,
    /// Its long strings, when the capture tap found them as the body
    /// passed (a body whose fields are read, of [`scan::LONG_STRING`]
    /// bytes or more); else record building finds them.
    pub scanned: Option<scan::Scanned>,
}

/// Whether record building reads fields (`service_id`, `plan_id`) from
/// the request body of `op`.
pub(crate) fn reads_request_fields(op: Operation) -> bool {
    matches!(
        op,
        Operation::ProvisionInstance | Operation::UpdateInstance | Operation::Bind
    )
}

/// Whether record building reads fields (`operation`, `state`,
/// `description`) from the response body of `op` answered with `status`.
pub(crate) fn reads_response_fields(op: Operation, status: u16, redact_parameters: bool) -> bool {
    status == 202
        || status >= 400
        || matches!(
            op,
            Operation::PollInstanceLastOperation
                | Operation::PollBindingLastOperation
                | Operation::Bind
                | Operation::FetchBinding
        )
        || (redact_parameters && op == Operation::FetchInstance)
}

/// What the proxy hands to the pipeline when an exchange ends. Nothing in it
/// is redacted yet: it never leaves the process in this form.
#[derive(Debug)]
pub struct RawExchange {
    /// Unique id of the record (also the dedup key in ClickHouse).
    pub id: Uuid,
    /// When the request arrived.
    pub received_at: SystemTime,
    /// Until the exchange ended, in microseconds.
    pub duration_us: u64,
    /// Until the broker's response headers arrived (0: none).
    pub ttfb_us: u64,
    /// This gateway's instance name.
    pub gateway: String,
    /// Authenticated platform id.
    pub platform: String,
    /// Location from the URL.
    pub location: String,
    /// Broker id from the URL.
    pub broker: String,
    /// Whose logs the exchange belongs to (see `CaptureRecord::customer`);
    /// `None`: the operator's only. Shared, so the proxy copies no text.
    pub customer: Option<std::sync::Arc<str>>,
    /// Upstream URL (no credentials: endpoints cannot carry them).
    pub upstream_url: String,
    /// Request method.
    pub method: Method,
    /// Path as received.
    pub path: String,
    /// Query string as received (no `?`).
    pub query: String,
    /// The path from `/v2` on, when the URL had that shape.
    pub osb_path: String,
    /// Classified operation.
    pub operation: Operation,
    /// `X-Broker-API-Request-Identity`, sent or added.
    pub request_id: String,
    /// Request headers (as forwarded, or as received when refused).
    pub request_headers: Headers,
    /// Response headers (the broker's, or the gateway's own answer).
    pub response_headers: Headers,
    /// Status sent to the platform (0: none).
    pub status: u16,
    /// How it ended.
    pub outcome: Outcome,
    /// The error cause, when any.
    pub error: String,
    /// Request body.
    pub request_body: BodyData,
    /// Response body.
    pub response_body: BodyData,
    /// The route asks for `parameters` to be redacted.
    pub redact_parameters: bool,
}

impl RawExchange {
    /// Approximate memory held, for the queue's byte bound.
    pub fn weight(&self) -> usize {
        1024 + self.request_body.bytes.len()
            + self.response_body.bytes.len()
            + self.request_headers.held()
            + self.response_headers.held()
            + self.path.len()
            + self.query.len()
            + self.error.len()
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (decode(k) == name).then(|| decode(&v.replace('+', " ")))
    })
}

fn header(h: &Headers, name: &str) -> String {
    h.get_str(name).unwrap_or("").to_string()
}

/// `<platform> <base64 JSON>` → (platform, decoded JSON text).
fn originating_identity(value: &str) -> (String, String) {
    let Some((platform, encoded)) = value.trim().split_once(' ') else {
        return (value.trim().to_string(), String::new());
    };
    let user = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    (platform.to_string(), user)
}

impl RawExchange {
    /// Builds the stored record: ids, then redaction.
    pub fn into_record(self, redactor: &Redactor) -> CaptureRecord {
        let (op, path_ids) = osb::classify(&self.method, &self.osb_path);
        let mut service_id = query_param(&self.query, "service_id").unwrap_or_default();
        let mut plan_id = query_param(&self.query, "plan_id").unwrap_or_default();
        let mut broker_operation = query_param(&self.query, "operation").unwrap_or_default();
        // NB: parse bodies only where a field is read from them or redaction
        // needs the structure; a catalog or a plain 200 is stored as sent.
        if reads_request_fields(op) && !self.request_body.truncated {
            let body = &self.request_body;
            let f: fields::RequestFields = fields::pick(&body.bytes, body.scanned.as_ref());
            if let Some(s) = f.service_id {
                service_id = s;
            }
            if let Some(p) = f.plan_id.or(f.previous_plan_id) {
                plan_id = p;
            }
        }
        let response_fields = reads_response_fields(op, self.status, self.redact_parameters);
        let mut state = String::new();
        let mut description = String::new();
        if response_fields && !self.response_body.truncated {
            let body = &self.response_body;
            let f: fields::ResponseFields = fields::pick(&body.bytes, body.scanned.as_ref());
            if let Some(o) = f.operation {
                broker_operation = o;
            }
            if matches!(
                op,
                Operation::PollInstanceLastOperation | Operation::PollBindingLastOperation
            ) {
                state = f.state.unwrap_or_default();
            }
            description = f.description.unwrap_or_default();
        }
        let (originating_platform, originating_user) =
            originating_identity(&header(&self.request_headers, osb::ORIGINATING_IDENTITY));
        let received_at_us = self
            .received_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let (request_body_size, request_body_truncated) =
            (self.request_body.size, self.request_body.truncated);
        let request_body = redactor.request_body(op, self.redact_parameters, self.request_body);
        let (response_body_size, response_body_truncated) =
            (self.response_body.size, self.response_body.truncated);
        let response_body = redactor.response_body(op, self.redact_parameters, self.response_body);
        CaptureRecord {
            id: self.id,
            received_at_us,
            duration_us: self.duration_us,
            ttfb_us: self.ttfb_us,
            gateway: self.gateway,
            platform: self.platform,
            location: self.location,
            broker: self.broker,
            customer: self.customer.as_deref().unwrap_or_default().to_string(),
            upstream_url: self.upstream_url,
            method: self.method.to_string(),
            path: self.path,
            accepts_incomplete: query_param(&self.query, "accepts_incomplete").as_deref()
                == Some("true"),
            query: self.query,
            operation: op.as_str().to_string(),
            service_id,
            plan_id,
            service_name: String::new(),
            plan_name: String::new(),
            instance_id: path_ids.instance_id.map(decode).unwrap_or_default(),
            binding_id: path_ids.binding_id.map(decode).unwrap_or_default(),
            broker_operation,
            state,
            description,
            api_version: header(&self.request_headers, osb::API_VERSION),
            originating_platform,
            originating_user,
            request_id: self.request_id,
            status: self.status,
            outcome: self.outcome.as_str().to_string(),
            error: self.error,
            request_headers: redactor.headers(&self.request_headers),
            response_headers: redactor.headers(&self.response_headers),
            request_body,
            request_body_size,
            request_body_truncated,
            response_body,
            response_body_size,
            response_body_truncated,
        }
    }
}

mod fields;
pub mod scan;

#[cfg(test)]
mod tests;

//! The serde shape of the registry file (`registry.toml`). See
//! `config/registry.example.toml` for a commented example of every key.

use serde::{Deserialize, Serialize};

// NB: defaults are skipped when serialising, so writing a registry back (see
// `registry::edit`) adds no keys the author did not write.
fn is_false(b: &bool) -> bool {
    !*b
}

/// The whole registry file.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Confirms a registry with no brokers and no platforms: without it, a
    /// reload that would take every route and platform away is refused
    /// (an empty or cut file from a tool that writes in place looks so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm_empty: bool,
    /// Location names platforms and publications may use (`private` and
    /// `global` are reserved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
    /// Callers of the gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformFile>,
    /// Registered brokers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerFile>,
    /// Ids of deleted brokers: never registered again, so a new
    /// registration (another customer's, say) never shares an old one's
    /// id, and a deactivation cannot be undone by deleting and
    /// registering again. Written by the admin API on delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_broker_ids: Vec<String>,
}

/// `[[platforms]]`
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformFile {
    /// Unique id, shown in logs.
    pub id: String,
    /// The customer the platform belongs to (may call its private brokers).
    pub customer: String,
    /// Basic-auth user name the platform sends.
    pub username: String,
    /// Argon2 PHC hash of the platform's password (`osb-gateway secret hash`).
    pub password_hash: String,
    /// Locations this platform may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
}

/// `[[brokers]]`
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerFile {
    /// Immutable id used in URLs, logs and captures.
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Customer that registered the broker.
    pub owner: String,
    /// Permanently deactivated: the gateway answers the catalog with no
    /// services and refuses new provisions; existing instances still work.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deactivated: bool,
    /// When it was deactivated (RFC 3339, informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<String>,
    /// How often the gateway refreshes each route's catalog (default `1h`;
    /// `0s` turns the timer off; on-demand refreshes still work).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_refresh: Option<String>,
    /// Redact `parameters` in captured provision, update and bind bodies.
    #[serde(default, skip_serializing_if = "is_false")]
    pub redact_parameters: bool,
    /// The private registration (owner's platforms only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<EndpointFile>,
    /// Publications per location (or `global`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<PublicationFile>,
}

/// An endpoint with its credentials and per-route settings.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointFile {
    /// Absolute base URL of the broker (`https://host/base`).
    pub endpoint: String,
    /// Basic-auth user name the gateway sends to the broker.
    pub username: String,
    /// The broker password: `env:NAME`, `file:PATH`, `enc:v1:...`, or plain
    /// text in the gateway's development mode.
    pub password: String,
    /// A new password waiting to be confirmed (same forms as `password`).
    /// The gateway keeps sending `password` until a catalog fetch with the
    /// staged one succeeds, then promotes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_password: Option<String>,
    /// Plain `http://` or unverified TLS (private registrations only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub development_mode: bool,
    /// Extra CA certificates (PEM) trusted for this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Overrides `upstream.connect_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// Overrides `upstream.response_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout: Option<String>,
    /// Overrides `upstream.idle_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

/// `[[brokers.publications]]`
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublicationFile {
    /// A declared location, or `global`.
    pub location: String,
    /// Routable only once an admin approved it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub approved: bool,
    /// Endpoint, credentials and settings.
    #[serde(flatten)]
    pub endpoint: EndpointFile,
}

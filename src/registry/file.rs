//! The serde shape of the registry file (`registry.toml`). See
//! `config/registry.example.toml` for a commented example of every key.

use serde::{Deserialize, Serialize};

/// The whole registry file.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Location names platforms and publications may use (`private` and
    /// `global` are reserved).
    #[serde(default)]
    pub locations: Vec<String>,
    /// Callers of the gateway.
    #[serde(default)]
    pub platforms: Vec<PlatformFile>,
    /// Registered brokers.
    #[serde(default)]
    pub brokers: Vec<BrokerFile>,
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
    #[serde(default)]
    pub locations: Vec<String>,
}

/// `[[brokers]]`
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerFile {
    /// Immutable id used in URLs, logs and captures.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Customer that registered the broker.
    pub owner: String,
    /// Redact `parameters` in captured provision, update and bind bodies.
    #[serde(default)]
    pub redact_parameters: bool,
    /// The private registration (owner's platforms only).
    pub private: Option<EndpointFile>,
    /// Publications per location (or `global`).
    #[serde(default)]
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
    /// Plain `http://` or unverified TLS (private registrations only).
    #[serde(default)]
    pub development_mode: bool,
    /// Extra CA certificates (PEM) trusted for this endpoint.
    pub ca_bundle: Option<String>,
    /// Overrides `upstream.connect_timeout`.
    pub connect_timeout: Option<String>,
    /// Overrides `upstream.response_timeout`.
    pub response_timeout: Option<String>,
    /// Overrides `upstream.idle_timeout`.
    pub idle_timeout: Option<String>,
}

/// `[[brokers.publications]]`
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublicationFile {
    /// A declared location, or `global`.
    pub location: String,
    /// Routable only once an admin approved it.
    #[serde(default)]
    pub approved: bool,
    /// Endpoint, credentials and settings.
    #[serde(flatten)]
    pub endpoint: EndpointFile,
}

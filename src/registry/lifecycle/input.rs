//! What the admin API sends for the lifecycle's changes, and the checks
//! that need only the input and who sends it.

use serde::Deserialize;

use super::{bad, Actor};
use crate::registry::ChangeError;

/// Fields of a broker registration or edit (`POST /admin/v1/brokers`,
/// `PATCH /admin/v1/brokers/{id}`). Endpoint fields are those of the
/// private registration. Absent fields are left as they are.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerInput {
    /// Immutable id (registration only).
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// The owning customer (operators only; owners register for themselves).
    pub owner: Option<String>,
    /// Private registration endpoint.
    pub endpoint: Option<String>,
    /// Broker user name.
    pub username: Option<String>,
    /// Broker password, plain text; stored encrypted, never returned.
    pub password: Option<String>,
    /// Plain http / unverified TLS for the private registration.
    pub development_mode: Option<bool>,
    /// Extra CA bundle (PEM path, relative to the registry file).
    pub ca_bundle: Option<String>,
    /// Per-route timeout overrides.
    pub connect_timeout: Option<String>,
    /// See `connect_timeout`.
    pub response_timeout: Option<String>,
    /// See `connect_timeout`.
    pub idle_timeout: Option<String>,
    /// Redact `parameters` in captures.
    pub redact_parameters: Option<bool>,
    /// Catalog refresh interval (`1h`, `0s` for none).
    pub catalog_refresh: Option<String>,
}

/// Fields of a publication (`PUT` / `PATCH .../publications/{location}`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicationInput {
    /// `https://` endpoint.
    pub endpoint: Option<String>,
    /// Broker user name.
    pub username: Option<String>,
    /// Broker password, plain text; stored encrypted, never returned.
    pub password: Option<String>,
    /// Always refused when `true`: publications never run in development mode.
    pub development_mode: Option<bool>,
    /// Extra CA bundle.
    pub ca_bundle: Option<String>,
    /// Per-route timeout overrides.
    pub connect_timeout: Option<String>,
    /// See `connect_timeout`.
    pub response_timeout: Option<String>,
    /// See `connect_timeout`.
    pub idle_timeout: Option<String>,
}

/// A password change (`PUT /admin/v1/brokers/{id}/password`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordInput {
    /// `private` (default) or a publication's location.
    #[serde(default)]
    pub location: Option<String>,
    /// The new password, plain text.
    pub password: String,
    /// Stage it: keep sending the old password until a catalog fetch with
    /// the new one succeeds (default `true`); `false` replaces it at once.
    #[serde(default)]
    pub stage: Option<bool>,
}

/// Owners give CA certificates as PEM text (bounded); only operators name
/// files on the gateway's host, so an owner can neither make the gateway
/// open a device or FIFO nor learn which paths exist.
pub(super) fn ca_bundle_allowed(actor: Actor<'_>, value: &str) -> Result<(), ChangeError> {
    use crate::upstream::ca::{is_pem, MAX_INLINE_BYTES};
    // NB: PEM text is never echoed back whole.
    let shown = if is_pem(value) { "(PEM text)" } else { value };
    if value.len() > MAX_INLINE_BYTES {
        return Err(bad(
            "ca_bundle",
            "(too long)",
            &format!("{} bytes; at most {MAX_INLINE_BYTES}", value.len()),
        ));
    }
    match actor {
        Actor::Owner(_) if !value.is_empty() && !is_pem(value) => Err(bad(
            "ca_bundle",
            shown,
            "give the CA certificates as PEM text (\"-----BEGIN CERTIFICATE-----...\"); file paths on the gateway's host are for operators",
        )),
        _ => Ok(()),
    }
}

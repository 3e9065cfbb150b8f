//! The broker lifecycle as rules on the registry: register, edit, publish,
//! revoke, approve, delete, deactivate, replace or stage a password.
//!
//! Each function takes the registry as it is now and the caller's
//! [`Actor`], checks one rule and changes the registry; the caller
//! ([`super::Reloader::change`]) validates the whole result, writes it back
//! and swaps the table in. Visibility comes first: an owner asking about
//! another customer's broker gets [`ChangeError::NotFound`], exactly as for
//! a broker that does not exist, so ids do not leak.
//! Passwords arrive in plain text and are stored only as `enc:v1:` values.

mod input;

use input::ca_bundle_allowed;
pub use input::{BrokerInput, PasswordInput, PublicationInput};

use super::file::{BrokerFile, EndpointFile, PublicationFile};
use super::table::{GLOBAL, PRIVATE};
use super::{ChangeError, RegistryFile};
use crate::config::SecretKey;

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// An operator token: everything.
    Operator,
    /// An owner token of this customer: its own brokers only, no approvals.
    Owner(&'a str),
}

impl Actor<'_> {
    /// Whether this actor may see a broker owned by `owner`.
    pub fn sees(&self, owner: &str) -> bool {
        match self {
            Actor::Operator => true,
            Actor::Owner(c) => *c == owner,
        }
    }
}

pub(super) fn bad(field: &str, value: &str, reason: &str) -> ChangeError {
    let value = crate::config::mask_userinfo(value);
    ChangeError::BadInput(format!("{field} = {value:?}: {reason}"))
}

fn not_found(id: &str) -> ChangeError {
    ChangeError::NotFound(format!("no broker {id:?}"))
}

/// The broker `id` as `actor` may see it.
fn visible<'r>(
    reg: &'r mut RegistryFile,
    actor: Actor<'_>,
    id: &str,
) -> Result<&'r mut BrokerFile, ChangeError> {
    reg.brokers
        .iter_mut()
        .find(|b| b.id == id && actor.sees(&b.owner))
        .ok_or_else(|| not_found(id))
}

/// Read access with the same visibility rule.
pub fn find<'r>(
    reg: &'r RegistryFile,
    actor: Actor<'_>,
    id: &str,
) -> Result<&'r BrokerFile, ChangeError> {
    reg.brokers
        .iter()
        .find(|b| b.id == id && actor.sees(&b.owner))
        .ok_or_else(|| not_found(id))
}

fn encrypt(key: Option<&SecretKey>, field: &str, password: &str) -> Result<String, ChangeError> {
    if password.is_empty() {
        return Err(bad(field, "", "must not be empty"));
    }
    let key = key.ok_or_else(|| {
        ChangeError::Conflict(
            "no secret key is configured, so passwords cannot be stored encrypted: set \
             OSB_GATEWAY_SECRET_KEY or secrets.key_file (`osb-gateway secret keygen`)"
                .into(),
        )
    })?;
    Ok(key.encrypt(password))
}

fn refuse_if_deactivated(b: &BrokerFile, what: &str) -> Result<(), ChangeError> {
    if b.deactivated {
        return Err(ChangeError::Conflict(format!(
            "broker {:?} is deactivated (permanently): it cannot be {what}",
            b.id
        )));
    }
    Ok(())
}

fn apply_endpoint(
    actor: Actor<'_>,
    e: &mut EndpointFile,
    endpoint: &Option<String>,
    username: &Option<String>,
    ca_bundle: &Option<String>,
    timeouts: [&Option<String>; 3],
) -> Result<(), ChangeError> {
    if let Some(v) = ca_bundle {
        ca_bundle_allowed(actor, v)?;
    }
    if let Some(v) = endpoint {
        e.endpoint = v.clone();
    }
    if let Some(v) = username {
        e.username = v.clone();
    }
    // NB: an empty string clears an optional setting.
    let set = |slot: &mut Option<String>, v: &Option<String>| {
        if let Some(v) = v {
            *slot = (!v.is_empty()).then(|| v.clone());
        }
    };
    set(&mut e.ca_bundle, ca_bundle);
    set(&mut e.connect_timeout, timeouts[0]);
    set(&mut e.response_timeout, timeouts[1]);
    set(&mut e.idle_timeout, timeouts[2]);
    Ok(())
}

/// Registers a broker with its private registration.
///
/// # Errors
/// Missing fields, a taken id, an owner token registering for someone else.
pub fn register(
    reg: &mut RegistryFile,
    actor: Actor<'_>,
    input: &BrokerInput,
    key: Option<&SecretKey>,
) -> Result<String, ChangeError> {
    let id = input
        .id
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("id", "", "missing: every broker needs an id"))?;
    let owner = match (actor, &input.owner) {
        (Actor::Operator, Some(o)) if !o.is_empty() => o.clone(),
        (Actor::Operator, _) => {
            return Err(bad(
                "owner",
                "",
                "missing: an operator registers a broker for a customer",
            ))
        }
        (Actor::Owner(c), Some(o)) if o != c => {
            return Err(ChangeError::Forbidden(format!(
                "an owner token of {c:?} registers brokers for {c:?} only, not {o:?}"
            )))
        }
        (Actor::Owner(c), _) => c.to_string(),
    };
    if reg.brokers.iter().any(|b| b.id == id) {
        return Err(ChangeError::Conflict(format!(
            "a broker with id {id:?} already exists; ids are unique and never reused"
        )));
    }
    if reg.retired_broker_ids.contains(&id) {
        return Err(ChangeError::Conflict(format!(
            "the broker id {id:?} belonged to a deleted broker; ids are never reused, so no registration sees another's logs or undoes a deactivation"
        )));
    }
    for (field, v) in [
        ("endpoint", &input.endpoint),
        ("username", &input.username),
        ("password", &input.password),
    ] {
        if v.as_deref().unwrap_or("").is_empty() {
            return Err(bad(field, "", "missing: required to register a broker"));
        }
    }
    let mut private = EndpointFile {
        password: encrypt(key, "password", input.password.as_deref().unwrap_or(""))?,
        development_mode: input.development_mode.unwrap_or(false),
        ..Default::default()
    };
    apply_endpoint(
        actor,
        &mut private,
        &input.endpoint,
        &input.username,
        &input.ca_bundle,
        [
            &input.connect_timeout,
            &input.response_timeout,
            &input.idle_timeout,
        ],
    )?;
    reg.brokers.push(BrokerFile {
        id: id.clone(),
        name: input.name.clone().unwrap_or_default(),
        owner,
        redact_parameters: input.redact_parameters.unwrap_or(false),
        catalog_refresh: input.catalog_refresh.clone().filter(|s| !s.is_empty()),
        private: Some(private),
        ..Default::default()
    });
    Ok(id)
}

/// Edits a broker: name, settings and its private registration (all but
/// the id; the owner only by an operator).
///
/// # Errors
/// Not visible, an id change, an owner change by an owner token.
pub fn edit(
    reg: &mut RegistryFile,
    actor: Actor<'_>,
    id: &str,
    input: &BrokerInput,
    key: Option<&SecretKey>,
) -> Result<(), ChangeError> {
    let b = visible(reg, actor, id)?;
    if let Some(new) = input.id.as_deref().filter(|n| *n != id) {
        return Err(bad(
            "id",
            new,
            "a broker's id is immutable; register a new broker instead",
        ));
    }
    if let Some(o) = input.owner.as_deref().filter(|o| *o != b.owner) {
        if actor != Actor::Operator {
            return Err(ChangeError::Forbidden(format!(
                "only an operator can move a broker to another owner (asked: {o:?})"
            )));
        }
        b.owner = o.to_string();
    }
    if let Some(n) = &input.name {
        b.name = n.clone();
    }
    if let Some(r) = input.redact_parameters {
        b.redact_parameters = r;
    }
    if let Some(c) = &input.catalog_refresh {
        b.catalog_refresh = (!c.is_empty()).then(|| c.clone());
    }
    let touches_private = input.endpoint.is_some()
        || input.username.is_some()
        || input.password.is_some()
        || input.development_mode.is_some()
        || input.ca_bundle.is_some()
        || input.connect_timeout.is_some()
        || input.response_timeout.is_some()
        || input.idle_timeout.is_some();
    if touches_private {
        let password = match &input.password {
            Some(p) => Some(encrypt(key, "password", p)?),
            None => None,
        };
        let e = match &mut b.private {
            Some(e) => e,
            None => {
                if input.endpoint.is_none() || input.username.is_none() || password.is_none() {
                    return Err(bad(
                        "endpoint",
                        "",
                        "the broker has no private registration yet: give endpoint, username and password",
                    ));
                }
                b.private.insert(EndpointFile::default())
            }
        };
        apply_endpoint(
            actor,
            e,
            &input.endpoint,
            &input.username,
            &input.ca_bundle,
            [
                &input.connect_timeout,
                &input.response_timeout,
                &input.idle_timeout,
            ],
        )?;
        if let Some(d) = input.development_mode {
            e.development_mode = d;
        }
        if let Some(p) = password {
            e.password = p;
            e.staged_password = None;
        }
    }
    Ok(())
}

/// Publishes the broker to a location (or `global`), or edits an existing
/// publication. A new publication waits for approval. Changing where an
/// approved publication points (endpoint, user, CA) needs an operator.
///
/// # Errors
/// Not visible, deactivated, `private` as location, development mode, missing fields.
pub fn publish(
    reg: &mut RegistryFile,
    actor: Actor<'_>,
    id: &str,
    location: &str,
    input: &PublicationInput,
    key: Option<&SecretKey>,
) -> Result<bool, ChangeError> {
    let b = visible(reg, actor, id)?;
    refuse_if_deactivated(b, "published")?;
    if location == PRIVATE {
        return Err(bad(
            "location",
            location,
            "\"private\" is the private registration; publish to a location or \"global\"",
        ));
    }
    if input.development_mode == Some(true) {
        return Err(bad(
            "development_mode",
            "true",
            "publications never run in development mode (only the private registration may)",
        ));
    }
    let password = match &input.password {
        Some(p) => Some(encrypt(key, "password", p)?),
        None => None,
    };
    let timeouts = [
        &input.connect_timeout,
        &input.response_timeout,
        &input.idle_timeout,
    ];
    if let Some(p) = b.publications.iter_mut().find(|p| p.location == location) {
        let moves =
            input.endpoint.is_some() || input.username.is_some() || input.ca_bundle.is_some();
        if p.approved && moves && actor != Actor::Operator {
            return Err(ChangeError::Conflict(format!(
                "the publication of {id:?} in {location:?} is approved; changing its endpoint, user name or CA needs an operator (a password can be replaced or staged at any time)"
            )));
        }
        apply_endpoint(
            actor,
            &mut p.endpoint,
            &input.endpoint,
            &input.username,
            &input.ca_bundle,
            timeouts,
        )?;
        if let Some(pw) = password {
            p.endpoint.password = pw;
            p.endpoint.staged_password = None;
        }
        return Ok(false);
    }
    for (field, v) in [("endpoint", &input.endpoint), ("username", &input.username)] {
        if v.as_deref().unwrap_or("").is_empty() {
            return Err(bad(field, "", "missing: required to publish"));
        }
    }
    let password = password.ok_or_else(|| bad("password", "", "missing: required to publish"))?;
    let mut e = EndpointFile {
        password,
        ..Default::default()
    };
    apply_endpoint(
        actor,
        &mut e,
        &input.endpoint,
        &input.username,
        &input.ca_bundle,
        timeouts,
    )?;
    b.publications.push(PublicationFile {
        location: location.to_string(),
        approved: false,
        endpoint: e,
    });
    Ok(true)
}

fn publication<'b>(
    b: &'b mut BrokerFile,
    location: &str,
) -> Result<&'b mut PublicationFile, ChangeError> {
    let id = b.id.clone();
    b.publications
        .iter_mut()
        .find(|p| p.location == location)
        .ok_or_else(|| {
            ChangeError::NotFound(format!("broker {id:?} has no publication in {location:?}"))
        })
}

/// Approves a publication (operators only).
///
/// # Errors
/// Not visible, not an operator, no such publication, deactivated.
pub fn approve(
    reg: &mut RegistryFile,
    actor: Actor<'_>,
    id: &str,
    location: &str,
) -> Result<bool, ChangeError> {
    let b = visible(reg, actor, id)?;
    if actor != Actor::Operator {
        return Err(ChangeError::Forbidden(
            "approving a publication needs an operator token".into(),
        ));
    }
    refuse_if_deactivated(b, "approved")?;
    let p = publication(b, location)?;
    let changed = !p.approved;
    p.approved = true;
    Ok(changed)
}

/// Withdraws a publication that has not been approved yet.
///
/// # Errors
/// Not visible, no such publication, already approved.
pub fn revoke(
    reg: &mut RegistryFile,
    actor: Actor<'_>,
    id: &str,
    location: &str,
) -> Result<(), ChangeError> {
    let b = visible(reg, actor, id)?;
    if publication(b, location)?.approved {
        return Err(ChangeError::Conflict(format!(
            "the publication of {id:?} in {location:?} is approved and platforms may hold instances through it: it cannot be revoked; deactivate the broker instead"
        )));
    }
    b.publications.retain(|p| p.location != location);
    Ok(())
}

/// Deletes a broker that has no approved publication. The broker is not
/// called: nothing is deprovisioned.
///
/// # Errors
/// Not visible, or an approved publication exists (deactivate instead).
pub fn delete(reg: &mut RegistryFile, actor: Actor<'_>, id: &str) -> Result<(), ChangeError> {
    let b = visible(reg, actor, id)?;
    let approved: Vec<&str> = b
        .publications
        .iter()
        .filter(|p| p.approved)
        .map(|p| p.location.as_str())
        .collect();
    if !approved.is_empty() {
        return Err(ChangeError::Conflict(format!(
            "broker {id:?} has approved publications ({}), so platforms may hold instances of it: it cannot be deleted; deactivate it instead (POST /admin/v1/brokers/{id}/deactivate)",
            approved.join(", ")
        )));
    }
    reg.brokers.retain(|b| b.id != id);
    if !reg.retired_broker_ids.iter().any(|r| r == id) {
        reg.retired_broker_ids.push(id.to_string());
    }
    Ok(())
}

/// Deactivates a broker, permanently.
///
/// # Errors
/// Not visible, or already deactivated.
pub fn deactivate(
    reg: &mut RegistryFile,
    actor: Actor<'_>,
    id: &str,
    now_rfc3339: String,
) -> Result<(), ChangeError> {
    let b = visible(reg, actor, id)?;
    refuse_if_deactivated(b, "deactivated again")?;
    b.deactivated = true;
    b.deactivated_at = Some(now_rfc3339);
    Ok(())
}

/// The endpoint of `location` (`private` or a publication).
fn endpoint_mut<'b>(
    b: &'b mut BrokerFile,
    location: &str,
) -> Result<&'b mut EndpointFile, ChangeError> {
    if location == PRIVATE {
        let id = b.id.clone();
        return b.private.as_mut().ok_or_else(|| {
            ChangeError::NotFound(format!("broker {id:?} has no private registration"))
        });
    }
    Ok(&mut publication(b, location)?.endpoint)
}

/// Replaces or stages a route's password. Returns the route's location.
///
/// # Errors
/// Not visible, no such route, no secret key.
pub fn set_password(
    reg: &mut RegistryFile,
    actor: Actor<'_>,
    id: &str,
    input: &PasswordInput,
    key: Option<&SecretKey>,
) -> Result<String, ChangeError> {
    let b = visible(reg, actor, id)?;
    let location = input.location.clone().unwrap_or_else(|| PRIVATE.into());
    let value = encrypt(key, "password", &input.password)?;
    let e = endpoint_mut(b, &location)?;
    if input.stage.unwrap_or(true) {
        e.staged_password = Some(value);
    } else {
        e.password = value;
        e.staged_password = None;
    }
    Ok(location)
}

/// Promotes a route's staged password after it was confirmed. A no-op
/// when the staged value changed meanwhile (`expected` is what was tried).
///
/// # Errors
/// The broker or route is gone.
pub fn promote_staged(
    reg: &mut RegistryFile,
    id: &str,
    location: &str,
    expected: &str,
) -> Result<bool, ChangeError> {
    let b = visible(reg, Actor::Operator, id)?;
    let e = endpoint_mut(b, location)?;
    if e.staged_password.as_deref() != Some(expected) {
        return Ok(false);
    }
    e.password = e.staged_password.take().unwrap_or_default();
    Ok(true)
}

/// Whether `location` names a route kind the API accepts in a URL.
pub fn is_reserved(location: &str) -> bool {
    location == PRIVATE || location == GLOBAL
}

#[cfg(test)]
mod tests;

//! [`RouteTable`]: the validated, immutable registry the proxy routes by.
//! Its one constructor, [`RouteTable::build`], is in `build.rs`; the
//! endpoint URL type in `endpoint.rs`.

mod build;
mod endpoint;

pub use endpoint::Endpoint;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::config::{Mode, PoolSettings, SecretKey, Timeouts};
use crate::metrics::{RequestMetrics, RouteStats};
use crate::upstream::{Clients, Pool};

/// The location name of private registrations in URLs.
pub const PRIVATE: &str = "private";
/// The publication that serves every location without one of its own.
pub const GLOBAL: &str = "global";

/// What building a table needs besides the registry itself.
pub struct BuildContext<'a> {
    /// Gateway mode (plain-text passwords only in development mode).
    pub mode: Mode,
    /// Key for `enc:v1:` secrets.
    pub secret_key: Option<&'a SecretKey>,
    /// Directory relative paths (`file:`, `ca_bundle`) resolve against.
    pub base_dir: &'a Path,
    /// Environment lookup for `env:` secrets.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Default timeouts.
    pub timeouts: Timeouts,
    /// Upstream pool settings.
    pub pool: PoolSettings,
    /// Which addresses upstream connections may reach.
    pub policy: &'a crate::config::AddressPolicy,
    /// Clients of the table serving now, reused for unchanged upstreams.
    pub previous: Option<&'a RouteTable>,
    /// Where routes take their request counters from (kept across reloads);
    /// `None` gives every route fresh counters.
    pub metrics: Option<&'a RequestMetrics>,
}

/// Default interval of the catalog refresh timer.
pub const DEFAULT_CATALOG_REFRESH: Duration = Duration::from_secs(3600);

/// One routable upstream: a private registration or a publication.
#[derive(Debug)]
pub struct Route {
    /// Broker id.
    pub broker: Arc<str>,
    /// `private`, a location, or `global`.
    pub location: Arc<str>,
    /// Where requests go.
    pub endpoint: Endpoint,
    /// Basic-auth user name sent to the broker.
    pub username: String,
    /// Where the password came from, masked (`env:NAME`, `enc:v1:***`).
    pub password_source: String,
    /// `Authorization: Basic ...` for the broker, marked sensitive.
    authorization: HeaderValue,
    /// Plain HTTP / unverified TLS allowed.
    pub development_mode: bool,
    /// Extra CA certificates.
    pub ca_bundle: Option<crate::upstream::CaBundle>,
    /// Effective timeouts.
    pub timeouts: Timeouts,
    /// Connection pool toward this route's upstream (the proxy's requests
    /// and the gateway's own catalog refreshes).
    pub client: Pool,
    /// Captures redact `parameters` for this broker.
    pub redact_parameters: bool,
    /// The customer that owns the broker.
    pub owner: Arc<str>,
    /// The broker is deactivated: the gateway answers the catalog itself
    /// (no services) and refuses new provisions.
    pub deactivated: bool,
    /// Catalog refresh interval (zero: no timer).
    pub catalog_refresh: Duration,
    /// `Authorization` with the staged password, while one waits for confirmation.
    staged_authorization: Option<HeaderValue>,
    /// Where the staged password came from, masked.
    pub staged_password_source: Option<String>,
    /// Request counters of this route (the same across reloads).
    pub stats: Arc<RouteStats>,
}

impl Route {
    /// The `Authorization` header value to send upstream.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    /// The `Authorization` value with the staged password, if one is staged.
    pub fn staged_authorization(&self) -> Option<&HeaderValue> {
        self.staged_authorization.as_ref()
    }

    /// `broker/location`, the key of this route in reports and caches.
    pub fn key(&self) -> String {
        format!("{}/{}", self.broker, self.location)
    }
}

struct Publication {
    approved: bool,
    route: Arc<Route>,
}

struct BrokerEntry {
    owner: String,
    deactivated: bool,
    private: Option<Arc<Route>>,
    publications: HashMap<String, Publication>,
    /// Request counters by the location a platform asked for: each of
    /// the broker's routes, and with a `global` publication every declared
    /// location, so a request `global` serves is counted under the
    /// location it named, as its record is (a refusal on such a path too).
    /// Built with the table, so the request path takes no lock.
    stats: HashMap<String, Arc<RouteStats>>,
}

/// A caller of the gateway.
#[derive(Debug)]
pub struct Platform {
    /// Platform id (logs, captures).
    pub id: Arc<str>,
    /// Customer it belongs to.
    pub customer: String,
    /// Basic-auth user name.
    pub username: String,
    /// Argon2 PHC hash of the password.
    pub password_hash: String,
    /// Locations it may call.
    pub locations: HashSet<String>,
    /// Digest of the last password that verified against `password_hash`
    /// (see `proxy::auth`): lets the hot path skip argon2.
    pub verified: ArcSwapOption<[u8; 32]>,
}

/// Why a (location, broker) pair does not route for a platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The location is not declared.
    #[error("unknown location {location:?}")]
    UnknownLocation {
        /// As requested.
        location: String,
    },
    /// The platform may not call this location.
    #[error("platform {platform:?} is not allowed to call location {location:?}")]
    LocationNotAllowed {
        /// As requested.
        location: String,
        /// Caller.
        platform: String,
    },
    /// No broker with this id.
    #[error("unknown broker {broker:?}")]
    UnknownBroker {
        /// As requested.
        broker: String,
    },
    /// A private registration called by another customer's platform.
    #[error("broker {broker:?} is private to its owner")]
    NotOwner {
        /// As requested.
        broker: String,
    },
    /// The broker has no private registration.
    #[error("broker {broker:?} has no private registration")]
    NoPrivateRegistration {
        /// As requested.
        broker: String,
    },
    /// Neither the location nor `global` has a publication.
    #[error("broker {broker:?} is not published in location {location:?}")]
    NotPublished {
        /// Broker id.
        broker: String,
        /// As requested.
        location: String,
    },
    /// A publication exists but no admin has approved it.
    #[error("broker {broker:?} is not approved in location {location:?}")]
    NotApproved {
        /// Broker id.
        broker: String,
        /// As requested.
        location: String,
    },
}

/// The validated registry, immutable once built.
pub struct RouteTable {
    locations: HashSet<String>,
    brokers: HashMap<String, BrokerEntry>,
    platforms: HashMap<String, Arc<Platform>>,
    cache_salt: [u8; 16],
    clients: Clients,
}

impl RouteTable {
    /// The platform with this basic-auth user name.
    pub fn platform(&self, username: &str) -> Option<&Arc<Platform>> {
        self.platforms.get(username)
    }

    /// Salt for the verified-password cache digests (new per table).
    pub fn cache_salt(&self) -> &[u8; 16] {
        &self.cache_salt
    }

    /// The request counters of broker `broker` as called in `location`
    /// (`None`: no such broker, or no route of it serves that location).
    pub fn stats(&self, broker: &str, location: &str) -> Option<&Arc<RouteStats>> {
        self.brokers.get(broker)?.stats.get(location)
    }

    /// The customer that owns broker `id`, if it exists.
    pub fn owner_of(&self, id: &str) -> Option<&str> {
        self.brokers.get(id).map(|b| b.owner.as_str())
    }

    /// The route for `platform` calling `/{location}/{broker}/v2/...`.
    ///
    /// # Errors
    /// Why it does not route: unknown (404) or forbidden (403) cases.
    pub fn lookup(
        &self,
        platform: &Platform,
        location: &str,
        broker: &str,
    ) -> Result<Arc<Route>, LookupError> {
        let entry = || {
            self.brokers
                .get(broker)
                .ok_or_else(|| LookupError::UnknownBroker {
                    broker: broker.into(),
                })
        };
        if location == PRIVATE {
            let b = entry()?;
            if b.owner != platform.customer {
                return Err(LookupError::NotOwner {
                    broker: broker.into(),
                });
            }
            return b
                .private
                .clone()
                .ok_or_else(|| LookupError::NoPrivateRegistration {
                    broker: broker.into(),
                });
        }
        if !self.locations.contains(location) {
            return Err(LookupError::UnknownLocation {
                location: location.into(),
            });
        }
        if !platform.locations.contains(location) {
            return Err(LookupError::LocationNotAllowed {
                location: location.into(),
                platform: platform.id.to_string(),
            });
        }
        let b = entry()?;
        let own = b.publications.get(location);
        let global = b.publications.get(GLOBAL);
        for p in [own, global].into_iter().flatten() {
            if p.approved {
                return Ok(p.route.clone());
            }
        }
        if own.is_some() || global.is_some() {
            Err(LookupError::NotApproved {
                broker: broker.into(),
                location: location.into(),
            })
        } else {
            Err(LookupError::NotPublished {
                broker: broker.into(),
                location: location.into(),
            })
        }
    }

    /// Every route with its approval state, sorted by broker then location
    /// (for `config check` and the admin views).
    pub fn routes(&self) -> Vec<(Arc<Route>, bool)> {
        let mut out: Vec<(Arc<Route>, bool)> = Vec::new();
        for b in self.brokers.values() {
            if let Some(r) = &b.private {
                out.push((r.clone(), true));
            }
            for p in b.publications.values() {
                out.push((p.route.clone(), p.approved));
            }
        }
        out.sort_by(|a, b| (&a.0.broker, &a.0.location).cmp(&(&b.0.broker, &b.0.location)));
        out
    }

    /// A fingerprint per route (`broker/location`) and platform
    /// (`platform id`), for telling what a reload changed. Credentials enter
    /// only as a digest.
    pub fn fingerprints(&self) -> std::collections::BTreeMap<String, String> {
        let digest = crate::digest::short_sha256;
        let mut out = std::collections::BTreeMap::new();
        for (r, approved) in self.routes() {
            let fp = format!(
                "{}|{}|{}|{}|{:?}|{:?}|{}|{}|{}|{:?}|{}",
                r.endpoint.url(),
                r.username,
                digest(r.authorization().as_bytes()),
                r.development_mode,
                r.ca_bundle,
                r.timeouts,
                approved,
                r.redact_parameters,
                r.deactivated,
                r.catalog_refresh,
                r.staged_authorization()
                    .map(|a| digest(a.as_bytes()))
                    .unwrap_or_default(),
            );
            out.insert(format!("{}/{}", r.broker, r.location), fp);
        }
        for p in self.platforms.values() {
            let mut locs: Vec<_> = p.locations.iter().cloned().collect();
            locs.sort();
            let fp = format!(
                "{}|{}|{}|{}",
                p.customer,
                p.username,
                digest(p.password_hash.as_bytes()),
                locs.join(",")
            );
            out.insert(format!("platform {}", p.id), fp);
        }
        out
    }

    /// Whether the broker exists and is deactivated.
    pub fn is_deactivated(&self, broker: &str) -> bool {
        self.brokers.get(broker).is_some_and(|b| b.deactivated)
    }

    /// The owner of a broker, if it exists.
    pub fn owner(&self, broker: &str) -> Option<&str> {
        self.brokers.get(broker).map(|b| b.owner.as_str())
    }

    /// Platforms, sorted by id.
    pub fn platforms(&self) -> Vec<Arc<Platform>> {
        let mut v: Vec<_> = self.platforms.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

#[cfg(test)]
mod tests;

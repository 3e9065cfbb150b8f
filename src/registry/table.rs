//! [`RouteTable`]: the validated, immutable registry the proxy routes by.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};

use super::file::{BrokerFile, EndpointFile, RegistryFile};
use super::{RegistryError, RegistryErrors};
use crate::config::duration::opt_duration;
use crate::config::secret::{SecretContext, SecretSource};
use crate::config::{Mode, PoolSettings, SecretKey, Timeouts};
use crate::metrics::{RequestMetrics, RouteStats};
use crate::upstream::{ClientFactory, Clients, Pool, Trust};

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
    /// Clients of the table serving now, reused for unchanged upstreams.
    pub previous: Option<&'a RouteTable>,
    /// Where routes take their request counters from (kept across reloads);
    /// `None` gives every route fresh counters.
    pub metrics: Option<&'a RequestMetrics>,
}

/// Default interval of the catalog refresh timer.
pub const DEFAULT_CATALOG_REFRESH: Duration = Duration::from_secs(3600);

/// A broker's absolute base URL, split for joining request paths onto it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    scheme: Scheme,
    authority: Authority,
    /// Base path without trailing slash (`""` for the root).
    base_path: String,
    url: String,
}

impl Endpoint {
    /// Parses an absolute `http(s)://host[:port][/base]` URL without
    /// credentials, query or fragment.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("not an absolute URL: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err("not an absolute URL (expected https://host[:port][/path])".into());
        };
        if scheme != &Scheme::HTTP && scheme != &Scheme::HTTPS {
            return Err(format!("unsupported scheme {scheme:?}: expected https://"));
        }
        if authority.as_str().contains('@') {
            return Err("must not carry credentials; set username and password instead".into());
        }
        if authority.host().is_empty() {
            return Err("has no host".into());
        }
        if uri.query().is_some() || text.contains('#') {
            return Err("must not have a query or fragment".into());
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(Endpoint {
            scheme: scheme.clone(),
            authority: authority.clone(),
            url: format!("{scheme}://{authority}{base_path}"),
            base_path,
        })
    }

    /// `host:port` as written.
    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }

    /// `scheme://host[:port]`: the URL without its base path.
    pub fn origin(&self) -> &str {
        &self.url[..self.url.len() - self.base_path.len()]
    }

    /// `true` for `https://`.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The URL as normalised (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The upstream URI for `rest`, the request's path from `/v2` on plus its
    /// query (`/v2/catalog?x=1`), appended to the base path unchanged.
    ///
    /// # Errors
    /// When the result is not a valid URI (cannot happen for paths hyper accepted).
    pub fn join(&self, rest: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(self.path_and_query(rest)?)
            .build()
    }

    /// The origin-form request target (`/base/v2/...?query`) for `rest`,
    /// as [`Endpoint::join`] but without scheme and host.
    ///
    /// # Errors
    /// When the result is not a valid request target.
    pub fn target(&self, rest: &str) -> Result<Uri, http::Error> {
        Ok(Uri::from(self.path_and_query(rest)?))
    }

    fn path_and_query(&self, rest: &str) -> Result<PathAndQuery, http::Error> {
        let mut pq = String::with_capacity(self.base_path.len() + rest.len());
        pq.push_str(&self.base_path);
        pq.push_str(rest);
        Ok(PathAndQuery::try_from(pq)?)
    }
}

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
    /// Extra CA bundle.
    pub ca_bundle: Option<PathBuf>,
    /// Effective timeouts.
    pub timeouts: Timeouts,
    /// Connection pool toward this route's upstream (the proxy's requests
    /// and the gateway's own catalog refreshes).
    pub client: Pool,
    /// Captures redact `parameters` for this broker.
    pub redact_parameters: bool,
    /// The customer that owns the broker.
    pub owner: String,
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

/// Allowed in ids and location names: RFC 3986 unreserved characters.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Every problem found so far while building a table (validation goes on
/// past the first).
struct Problems(Vec<RegistryError>);

impl Problems {
    fn push(&mut self, object: &str, field: String, value: &str, reason: impl Into<String>) {
        self.0.push(RegistryError {
            object: object.to_string(),
            field,
            value: value.to_string(),
            reason: reason.into(),
        });
    }
}

impl RouteTable {
    /// Validates a registry and builds the table (and its upstream clients).
    ///
    /// # Errors
    /// Every problem found, each naming the broker or platform, field and value.
    pub fn build(reg: &RegistryFile, cx: &BuildContext<'_>) -> Result<Self, RegistryErrors> {
        let mut errs = Problems(Vec::new());
        let mut factory = ClientFactory::new(
            cx.pool,
            cx.previous.map(|t| t.clients.clone()).unwrap_or_default(),
        );

        let mut locations = HashSet::new();
        for (i, l) in reg.locations.iter().enumerate() {
            let field = format!("locations[{i}]");
            if l == PRIVATE || l == GLOBAL {
                errs.push(
                    "registry",
                    field,
                    l,
                    format!("{l:?} is a reserved name and cannot be declared as a location"),
                );
            } else if !valid_name(l) {
                errs.push(
                    "registry",
                    field,
                    l,
                    "location names use only letters, digits, '-', '.', '_' and '~'",
                );
            } else if !locations.insert(l.clone()) {
                errs.push("registry", field, l, "duplicate location");
            }
        }

        let mut platforms: HashMap<String, Arc<Platform>> = HashMap::new();
        let mut platform_ids = HashSet::new();
        for (i, p) in reg.platforms.iter().enumerate() {
            let obj = format!("platform {:?}", p.id);
            let f = |name: &str| format!("platforms[{i}].{name}");
            if !valid_name(&p.id) {
                errs.push(
                    &obj,
                    f("id"),
                    &p.id,
                    "platform ids use only letters, digits, '-', '.', '_' and '~'",
                );
            } else if !platform_ids.insert(p.id.clone()) {
                errs.push(&obj, f("id"), &p.id, "duplicate platform id");
            }
            if p.customer.is_empty() {
                errs.push(
                    &obj,
                    f("customer"),
                    "",
                    "missing: every platform belongs to a customer",
                );
            }
            if p.username.is_empty() || p.username.contains(':') {
                errs.push(
                    &obj,
                    f("username"),
                    &p.username,
                    "must be non-empty and contain no ':'",
                );
            }
            if let Err(e) = argon2::PasswordHash::new(&p.password_hash) {
                let shown = if p.password_hash.is_empty() {
                    ""
                } else {
                    "(hash)"
                };
                errs.push(
                    &obj,
                    f("password_hash"),
                    shown,
                    format!(
                        "not an argon2 PHC hash ({e}); make one with `osb-gateway secret hash`"
                    ),
                );
            }
            for (j, l) in p.locations.iter().enumerate() {
                if !locations.contains(l) {
                    errs.push(
                        &obj,
                        format!("platforms[{i}].locations[{j}]"),
                        l,
                        "unknown location (declare it in `locations`)",
                    );
                }
            }
            // NB: an unchanged platform keeps its verified-password cache
            // across reloads (the table salt is kept too), so a reload does
            // not send every platform request through argon2 again.
            let verified = cx
                .previous
                .and_then(|t| t.platforms.get(&p.username))
                .filter(|old| old.password_hash == p.password_hash)
                .and_then(|old| old.verified.load_full());
            let platform = Arc::new(Platform {
                id: p.id.as_str().into(),
                customer: p.customer.clone(),
                username: p.username.clone(),
                password_hash: p.password_hash.clone(),
                locations: p.locations.iter().cloned().collect(),
                verified: ArcSwapOption::new(verified),
            });
            if platforms.insert(p.username.clone(), platform).is_some() {
                errs.push(
                    &obj,
                    f("username"),
                    &p.username,
                    "duplicate platform user name",
                );
            }
        }

        let mut brokers: HashMap<String, BrokerEntry> = HashMap::new();
        for (i, b) in reg.brokers.iter().enumerate() {
            let obj = format!("broker {:?}", b.id);
            if !valid_name(&b.id) {
                errs.push(
                    &obj,
                    format!("brokers[{i}].id"),
                    &b.id,
                    "broker ids use only letters, digits, '-', '.', '_' and '~'",
                );
            } else if brokers.contains_key(&b.id) {
                errs.push(
                    &obj,
                    format!("brokers[{i}].id"),
                    &b.id,
                    "duplicate broker id",
                );
            }
            if b.owner.is_empty() {
                errs.push(
                    &obj,
                    format!("brokers[{i}].owner"),
                    "",
                    "missing: the customer that registered the broker",
                );
            }
            // NB: "0s" (or "off") turns the timer off; the duration parser
            // refuses zero everywhere else.
            let off = matches!(
                b.catalog_refresh.as_deref().map(str::trim),
                Some("0" | "0s" | "off")
            );
            let catalog_refresh = if off {
                Duration::ZERO
            } else {
                match opt_duration(
                    &format!("brokers[{i}].catalog_refresh"),
                    &b.catalog_refresh,
                    DEFAULT_CATALOG_REFRESH,
                ) {
                    Ok(d) => d,
                    Err(ce) => {
                        errs.push(&obj, ce.field, &ce.value, ce.reason);
                        DEFAULT_CATALOG_REFRESH
                    }
                }
            };
            let private = b.private.as_ref().and_then(|e| {
                build_route(
                    b,
                    catalog_refresh,
                    PRIVATE,
                    e,
                    true,
                    &format!("brokers[{i}].private"),
                    &obj,
                    cx,
                    &mut factory,
                    &mut errs,
                )
            });
            let mut publications = HashMap::new();
            for (j, p) in b.publications.iter().enumerate() {
                let field = format!("brokers[{i}].publications[{j}]");
                let loc = p.location.as_str();
                if loc == PRIVATE {
                    errs.push(&obj, format!("{field}.location"), loc, "\"private\" is reserved for the private registration; publish to a location or \"global\"");
                    continue;
                }
                if loc != GLOBAL && !locations.contains(loc) {
                    errs.push(
                        &obj,
                        format!("{field}.location"),
                        loc,
                        "unknown location (declare it in `locations`, or use \"global\")",
                    );
                    continue;
                }
                if publications.contains_key(loc) {
                    errs.push(
                        &obj,
                        format!("{field}.location"),
                        loc,
                        "the broker is already published in this location",
                    );
                    continue;
                }
                if let Some(route) = build_route(
                    b,
                    catalog_refresh,
                    loc,
                    &p.endpoint,
                    false,
                    &field,
                    &obj,
                    cx,
                    &mut factory,
                    &mut errs,
                ) {
                    publications.insert(
                        loc.to_string(),
                        Publication {
                            approved: p.approved,
                            route,
                        },
                    );
                }
            }
            if !b.deactivated
                && cx
                    .previous
                    .is_some_and(|t| t.brokers.get(&b.id).is_some_and(|e| e.deactivated))
            {
                errs.push(
                    &obj,
                    format!("brokers[{i}].deactivated"),
                    "false",
                    "deactivation is permanent: a deactivated broker cannot be reactivated",
                );
            }
            brokers.entry(b.id.clone()).or_insert(BrokerEntry {
                owner: b.owner.clone(),
                deactivated: b.deactivated,
                private,
                publications,
            });
        }

        if !errs.0.is_empty() {
            return Err(RegistryErrors(errs.0));
        }
        let cache_salt = match cx.previous {
            Some(t) => t.cache_salt,
            None => {
                let mut salt = [0u8; 16];
                rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut salt);
                salt
            }
        };
        Ok(RouteTable {
            locations,
            brokers,
            platforms,
            cache_salt,
            clients: factory.into_clients(),
        })
    }

    /// The platform with this basic-auth user name.
    pub fn platform(&self, username: &str) -> Option<&Arc<Platform>> {
        self.platforms.get(username)
    }

    /// Salt for the verified-password cache digests (new per table).
    pub fn cache_salt(&self) -> &[u8; 16] {
        &self.cache_salt
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
        use sha2::{Digest, Sha256};
        let digest = |b: &[u8]| {
            let d = Sha256::digest(b);
            d[..8]
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<String>()
        };
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

#[allow(clippy::too_many_arguments)]
fn build_route(
    broker: &BrokerFile,
    catalog_refresh: Duration,
    location: &str,
    e: &EndpointFile,
    is_private: bool,
    field: &str,
    obj: &str,
    cx: &BuildContext<'_>,
    factory: &mut ClientFactory,
    errs: &mut Problems,
) -> Option<Arc<Route>> {
    let before = errs.0.len();
    let f = |name: &str| format!("{field}.{name}");
    let endpoint = match Endpoint::parse(&e.endpoint) {
        Ok(ep) => Some(ep),
        Err(r) => {
            errs.push(obj, f("endpoint"), &e.endpoint, r);
            None
        }
    };
    if !is_private && e.development_mode {
        errs.push(
            obj,
            f("development_mode"),
            "true",
            "publications never run in development mode (only the private registration may)",
        );
    }
    if let Some(ep) = &endpoint {
        if !ep.is_https() {
            if !is_private {
                errs.push(
                    obj,
                    f("endpoint"),
                    &e.endpoint,
                    "publication endpoints must use https://",
                );
            } else if !e.development_mode {
                errs.push(
                    obj,
                    f("endpoint"),
                    &e.endpoint,
                    "plain http:// is allowed only with development_mode = true",
                );
            }
        }
    }
    if e.username.is_empty() || e.username.contains(':') {
        errs.push(
            obj,
            f("username"),
            &e.username,
            "missing or invalid broker user name (non-empty, no ':')",
        );
    }
    let source = SecretSource::parse(&e.password);
    let password = if e.password.is_empty() {
        errs.push(obj, f("password"), "", "missing broker password");
        None
    } else {
        let sc = SecretContext {
            key: cx.secret_key,
            development_mode: cx.mode.is_development(),
            base_dir: cx.base_dir,
            env: cx.env,
        };
        match sc.resolve(&e.password) {
            Ok(p) => Some(p),
            Err(r) => {
                errs.push(obj, f("password"), &source.masked(), r);
                None
            }
        }
    };
    let staged = e.staged_password.as_ref().and_then(|text| {
        let sc = SecretContext {
            key: cx.secret_key,
            development_mode: cx.mode.is_development(),
            base_dir: cx.base_dir,
            env: cx.env,
        };
        match sc.resolve(text) {
            Ok(p) => Some((p, SecretSource::parse(text).masked())),
            Err(r) => {
                errs.push(
                    obj,
                    f("staged_password"),
                    &SecretSource::parse(text).masked(),
                    r,
                );
                None
            }
        }
    });
    let mut timeout =
        |name: &str, v: &Option<String>, d: Duration| match opt_duration(&f(name), v, d) {
            Ok(d) => d,
            Err(ce) => {
                errs.push(obj, ce.field, &ce.value, ce.reason);
                d
            }
        };
    let timeouts = Timeouts {
        connect: timeout("connect_timeout", &e.connect_timeout, cx.timeouts.connect),
        response: timeout(
            "response_timeout",
            &e.response_timeout,
            cx.timeouts.response,
        ),
        idle: timeout("idle_timeout", &e.idle_timeout, cx.timeouts.idle),
    };
    let ca_bundle = e.ca_bundle.as_ref().map(|p| cx.base_dir.join(p));
    let trust = if is_private && e.development_mode {
        Trust::Development
    } else {
        Trust::Verified {
            ca_bundle: ca_bundle.clone(),
        }
    };
    // NB: a pool needs an origin; a bad endpoint was reported above.
    let client = match endpoint
        .as_ref()
        .map(|ep| factory.client(&trust, timeouts.connect, ep.origin()))
    {
        Some(Ok(c)) => Some(c),
        Some(Err(r)) => {
            errs.push(obj, f("ca_bundle"), e.ca_bundle.as_deref().unwrap_or(""), r);
            None
        }
        None => None,
    };
    if errs.0.len() > before {
        return None;
    }
    let (endpoint, password, client) = (endpoint?, password?, client?);
    let basic = |password: &str| {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", e.username));
        let mut v = HeaderValue::try_from(format!("Basic {token}")).ok()?;
        v.set_sensitive(true);
        Some(v)
    };
    let authorization = basic(password.expose())?;
    let (staged_authorization, staged_password_source) = match staged {
        Some((p, masked)) => (basic(p.expose()), Some(masked)),
        None => (None, None),
    };
    let stats = match cx.metrics {
        Some(m) => m.route(&broker.id, location),
        None => Arc::new(RouteStats::new(&broker.id, location)),
    };
    Some(Arc::new(Route {
        broker: broker.id.as_str().into(),
        location: location.into(),
        redact_parameters: broker.redact_parameters,
        owner: broker.owner.clone(),
        endpoint,
        username: e.username.clone(),
        password_source: source.masked(),
        authorization,
        development_mode: e.development_mode,
        ca_bundle,
        timeouts,
        client,
        deactivated: broker.deactivated,
        catalog_refresh,
        staged_authorization,
        staged_password_source,
        stats,
    }))
}

#[cfg(test)]
mod tests;

//! [`RouteTable::build`]: validation of a registry into a table, every
//! problem named by broker, field and value ([`Problems`] collects them).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use http::HeaderValue;

use super::{
    BrokerEntry, BuildContext, Endpoint, Platform, Publication, Route, RouteTable,
    DEFAULT_CATALOG_REFRESH, GLOBAL, PRIVATE,
};
use crate::config::duration::opt_duration;
use crate::config::secret::{SecretContext, SecretSource};
use crate::config::Timeouts;
use crate::metrics::RouteStats;
use crate::registry::file::{BrokerFile, EndpointFile, RegistryFile};
use crate::registry::{RegistryError, RegistryErrors};
use crate::upstream::{ClientFactory, Trust};

/// Allowed in ids and location names: RFC 3986 unreserved characters,
/// starting with a letter or digit (so never `.` or `..`, which a path
/// would resolve, nor an option-like `-x`), at most 128.
fn valid_name(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
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
            value: crate::config::mask_userinfo(value),
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
            cx.policy.clone(),
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
                    "location names start with a letter or digit and use only letters, digits, '-', '.', '_' and '~' (at most 128)",
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
                    "platform ids start with a letter or digit and use only letters, digits, '-', '.', '_' and '~' (at most 128)",
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
                    "broker ids start with a letter or digit and use only letters, digits, '-', '.', '_' and '~' (at most 128)",
                );
            } else if brokers.contains_key(&b.id) {
                errs.push(
                    &obj,
                    format!("brokers[{i}].id"),
                    &b.id,
                    "duplicate broker id",
                );
            } else if reg.retired_broker_ids.contains(&b.id) {
                errs.push(
                    &obj,
                    format!("brokers[{i}].id"),
                    &b.id,
                    "this id belonged to a deleted broker (retired_broker_ids) and is never reused",
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
            // NB: counters for the locations the broker has a route in, and,
            // with a `global` publication, every declared location (fallback
            // traffic). Not brokers × locations for every broker: that grows
            // with both and is kept for the life of the process.
            let mut stats: HashMap<String, Arc<RouteStats>> = publications
                .iter()
                .map(|(loc, p)| (loc.clone(), p.route.stats.clone()))
                .chain(
                    private
                        .iter()
                        .map(|r| (PRIVATE.to_string(), r.stats.clone())),
                )
                .collect();
            if publications.contains_key(GLOBAL) {
                for loc in &locations {
                    stats
                        .entry(loc.clone())
                        .or_insert_with(|| route_stats(cx, &b.id, loc));
                }
            }
            brokers.entry(b.id.clone()).or_insert(BrokerEntry {
                owner: b.owner.clone(),
                deactivated: b.deactivated,
                private,
                publications,
                stats,
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
        // NB: an IP literal is refused here, with the field named; a name
        // is checked on what it resolves to when connecting
        // (upstream::address).
        let literal = ep.origin().parse::<http::Uri>().ok().and_then(|u| {
            let ip = u
                .host()?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()?;
            let port = u.port_u16().unwrap_or(if ep.is_https() { 443 } else { 80 });
            Some(std::net::SocketAddr::new(ip, port))
        });
        if let Some(why) = literal.and_then(|a| cx.policy.refusal(a, is_private)) {
            errs.push(obj, f("endpoint"), &e.endpoint, why);
        }
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
    let ca_bundle = e
        .ca_bundle
        .as_ref()
        .map(|s| crate::upstream::CaBundle::from_setting(s, cx.base_dir));
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
        .map(|ep| factory.client(&trust, timeouts.connect, ep.origin(), is_private))
    {
        Some(Ok(c)) => Some(c),
        Some(Err(r)) => {
            // NB: PEM text is not echoed whole into the message.
            let shown = match e.ca_bundle.as_deref().unwrap_or("") {
                s if crate::upstream::ca::is_pem(s) => "(PEM text)",
                s => s,
            };
            errs.push(obj, f("ca_bundle"), shown, r);
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
    let stats = route_stats(cx, &broker.id, location);
    Some(Arc::new(Route {
        broker: broker.id.as_str().into(),
        location: location.into(),
        redact_parameters: broker.redact_parameters,
        owner: broker.owner.as_str().into(),
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

/// The counters of `broker` called in `location`: the same ones across
/// reloads when the gateway keeps metrics.
fn route_stats(cx: &BuildContext<'_>, broker: &str, location: &str) -> Arc<RouteStats> {
    match cx.metrics {
        Some(m) => m.route(broker, location),
        None => Arc::new(RouteStats::new(broker, location)),
    }
}

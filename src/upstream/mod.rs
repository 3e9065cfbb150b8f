//! Connection pools toward brokers, one per upstream origin and trust
//! configuration.
//!
//! The proxy sends through a [`Pool`] of HTTP/1.1 keep-alive connections
//! made by a hyper-rustls connector. Verified connectors refuse `http://`
//! as well as registry validation does; only a development-mode private
//! registration gets [`Trust::Development`].

pub mod address;
pub mod ca;
pub mod pool;
pub mod tls;

use std::collections::HashMap;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::config::PoolSettings;
pub use ca::CaBundle;
pub use pool::{Pool, PooledBody, RequestBody, SendError};

/// How a route's upstream is trusted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Trust {
    /// `https://` only, certificate verified against the system roots plus
    /// the optional CA bundle.
    Verified {
        /// Extra CA certificates.
        ca_bundle: Option<CaBundle>,
    },
    /// Development mode: `http://` allowed and certificates not verified.
    Development,
}

/// What distinguishes one client (and so one pool) from another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    trust: Trust,
    connect_timeout: Duration,
    /// `scheme://host:port` of the upstream: one pool per upstream, so a
    /// reload can keep the pools of unchanged upstreams and drop the others.
    origin: String,
    /// A private registration (see `address`).
    private: bool,
}

/// The TLS-enforcing connector behind a client.
pub type Connector = HttpsConnector<address::Guarded>;

/// Clients by key, as a built route table holds them.
pub type Clients = HashMap<ClientKey, Pool>;

/// Builds clients for one route table. Seeded with the clients of the table
/// serving now, it hands back the same client (and so the same warm pool)
/// for an upstream that did not change.
pub struct ClientFactory {
    pool: PoolSettings,
    policy: crate::config::AddressPolicy,
    previous: Clients,
    clients: Clients,
    tls: HashMap<Trust, rustls::ClientConfig>,
}

impl ClientFactory {
    /// A factory with the given pool settings and address policy, reusing
    /// `previous` clients.
    pub fn new(
        pool: PoolSettings,
        policy: crate::config::AddressPolicy,
        previous: Clients,
    ) -> Self {
        ClientFactory {
            pool,
            policy,
            previous,
            clients: HashMap::new(),
            tls: HashMap::new(),
        }
    }

    /// The clients handed out so far.
    pub fn into_clients(self) -> Clients {
        self.clients
    }

    fn tls_config(&mut self, trust: &Trust) -> Result<rustls::ClientConfig, String> {
        if let Some(c) = self.tls.get(trust) {
            return Ok(c.clone());
        }
        let cfg = match trust {
            Trust::Verified { ca_bundle } => {
                let extra = match ca_bundle {
                    Some(b) => b.certificates()?,
                    None => Vec::new(),
                };
                tls::verified(&extra)?
            }
            Trust::Development => tls::development_unverified(),
        };
        self.tls.insert(trust.clone(), cfg.clone());
        Ok(cfg)
    }

    /// A connector with `trust`'s TLS rules and `connect_timeout`, behind
    /// the address policy (for a private registration when `private`).
    ///
    /// # Errors
    /// When the CA bundle cannot be read or used.
    pub fn connector(
        &mut self,
        trust: &Trust,
        connect_timeout: Duration,
        private: bool,
    ) -> Result<Connector, String> {
        let tls_config = self.tls_config(trust)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let http = address::Guarded::new(http, self.policy.clone(), private);
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config);
        Ok(match trust {
            Trust::Verified { .. } => builder.https_only().enable_http1().wrap_connector(http),
            Trust::Development => builder.https_or_http().enable_http1().wrap_connector(http),
        })
    }

    /// The pool for an upstream origin (`scheme://host[:port]`).
    ///
    /// # Errors
    /// When the CA bundle cannot be read or used.
    pub fn client(
        &mut self,
        trust: &Trust,
        connect_timeout: Duration,
        origin: &str,
        private: bool,
    ) -> Result<Pool, String> {
        let key = ClientKey {
            trust: trust.clone(),
            connect_timeout,
            origin: origin.to_string(),
            private,
        };
        if let Some(c) = self.clients.get(&key) {
            return Ok(c.clone());
        }
        // NB: a CA bundle is re-read on every reload (it may have been
        // rotated), so a verified client with a bundle is never reused.
        let reusable = !matches!(trust, Trust::Verified { ca_bundle: Some(_) });
        if let Some(c) = self.previous.get(&key).filter(|_| reusable) {
            self.clients.insert(key, c.clone());
            return Ok(c.clone());
        }
        let connector = self.connector(trust, connect_timeout, private)?;
        let pool = Pool::new(
            connector,
            origin,
            self.pool.max_idle_per_host,
            self.pool.idle_timeout,
            connect_timeout,
        )?;
        self.clients.insert(key, pool.clone());
        Ok(pool)
    }
}

/// Why an upstream exchange failed: one kind per metric label, capture
/// outcome and OSB status (504 for the timeouts, 502 for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refused, unreachable, reset before the request was written.
    Connect,
    /// The TLS handshake or the broker's certificate failed.
    Tls,
    /// Connecting took longer than the route's `connect_timeout`.
    ConnectTimeout,
    /// No response headers within the route's `response_timeout`.
    ResponseTimeout,
    /// A body paused longer than the route's `idle_timeout`.
    IdleTimeout,
    /// The connection failed after the request was written, or the broker
    /// answered something that is not HTTP.
    Protocol,
}

impl Failure {
    /// Every kind, in the order of [`Failure::index`].
    pub const ALL: [Failure; 6] = [
        Failure::Connect,
        Failure::Tls,
        Failure::ConnectTimeout,
        Failure::ResponseTimeout,
        Failure::IdleTimeout,
        Failure::Protocol,
    ];

    /// The metric label (`kind="..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Tls => "tls",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::ResponseTimeout => "response_timeout",
            Failure::IdleTimeout => "idle_timeout",
            Failure::Protocol => "protocol",
        }
    }

    /// Position in [`Failure::ALL`] (for counter arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// A timeout (504) rather than a failure to reach or read the broker (502).
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            Failure::ConnectTimeout | Failure::ResponseTimeout | Failure::IdleTimeout
        )
    }
}

/// Whether `e` is, or wraps, a rustls error.
///
/// NB: an `io::Error`'s `source()` skips the error it wraps, and the TLS
/// handshake's rustls::Error arrives inside two of them (tokio-rustls's,
/// then hyper-rustls's): look inside with `get_ref`.
fn wraps_rustls(mut e: &(dyn std::error::Error + 'static)) -> bool {
    loop {
        if e.is::<rustls::Error>() {
            return true;
        }
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => e = inner,
            None => return false,
        }
    }
}

impl SendError {
    /// Sorts the error into a [`Failure`] and describes its cause in one
    /// line (no secrets: hyper's errors never carry headers or credentials).
    pub fn failure(&self) -> (Failure, String) {
        let mut timed_out = false;
        let mut tls = false;
        let mut parts: Vec<String> = Vec::new();
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = src {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            }
            tls |= wraps_rustls(e);
            let s = e.to_string();
            if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
                parts.push(s);
            }
            src = e.source();
        }
        let kind = match () {
            _ if timed_out => Failure::ConnectTimeout,
            _ if tls => Failure::Tls,
            _ if self.is_connect() => Failure::Connect,
            _ => Failure::Protocol,
        };
        let detail = parts.into_iter().skip(1).collect::<Vec<_>>().join(": ");
        let prefix = self.to_string();
        let cause = if detail.is_empty() {
            prefix
        } else {
            format!("{prefix}: {detail}")
        };
        (kind, cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_kind_has_its_own_counter_slot_and_label() {
        for (i, f) in Failure::ALL.iter().enumerate() {
            assert_eq!(f.index(), i, "{f:?}");
        }
        let labels: std::collections::HashSet<_> =
            Failure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(labels.len(), Failure::ALL.len());
        let timeouts: Vec<_> = Failure::ALL.iter().filter(|f| f.is_timeout()).collect();
        assert_eq!(timeouts.len(), 3);
    }
}

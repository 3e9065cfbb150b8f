//! Connection pools toward brokers, one per upstream origin and trust
//! configuration.
//!
//! The proxy sends through a [`Pool`] of HTTP/1.1 keep-alive connections
//! made by a hyper-rustls connector. Verified connectors refuse `http://`
//! as well as registry validation does; only a development-mode private
//! registration gets [`Trust::Development`].

pub mod pool;
pub mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::config::PoolSettings;
pub use pool::{Pool, PooledBody, SendError};

/// How a route's upstream is trusted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Trust {
    /// `https://` only, certificate verified against the system roots plus
    /// the optional CA bundle.
    Verified {
        /// Extra CA bundle (PEM file).
        ca_bundle: Option<PathBuf>,
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
}

/// The TLS-enforcing connector behind a client.
pub type Connector = HttpsConnector<HttpConnector>;

/// A connection pool and its connector (the gateway's own calls, such as
/// catalog refreshes, build short-lived clients on the same connector, so
/// they obey the same trust rules).
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The pool the proxy forwards through.
    pub client: Pool,
    /// Its connector.
    pub connector: Connector,
}

/// Clients by key, as a built route table holds them.
pub type Clients = HashMap<ClientKey, Upstream>;

/// Builds clients for one route table. Seeded with the clients of the table
/// serving now, it hands back the same client (and so the same warm pool)
/// for an upstream that did not change.
pub struct ClientFactory {
    pool: PoolSettings,
    previous: Clients,
    clients: Clients,
    tls: HashMap<Trust, rustls::ClientConfig>,
}

impl ClientFactory {
    /// A factory with the given pool settings, reusing `previous` clients.
    pub fn new(pool: PoolSettings, previous: Clients) -> Self {
        ClientFactory {
            pool,
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
                    Some(p) => tls::read_ca_bundle(p)?,
                    None => Vec::new(),
                };
                tls::verified(&extra)?
            }
            Trust::Development => tls::development_unverified(),
        };
        self.tls.insert(trust.clone(), cfg.clone());
        Ok(cfg)
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
    ) -> Result<Upstream, String> {
        let key = ClientKey {
            trust: trust.clone(),
            connect_timeout,
            origin: origin.to_string(),
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
        let tls_config = self.tls_config(trust)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config);
        let connector = match trust {
            Trust::Verified { .. } => builder.https_only().enable_http1().wrap_connector(http),
            Trust::Development => builder.https_or_http().enable_http1().wrap_connector(http),
        };
        let client = Pool::new(
            connector.clone(),
            origin,
            self.pool.max_idle_per_host,
            self.pool.idle_timeout,
        )?;
        let upstream = Upstream { client, connector };
        self.clients.insert(key, upstream.clone());
        Ok(upstream)
    }
}

/// Why an upstream exchange failed, sorted for the status it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// Connect or response-header timeout: 504.
    Timeout,
    /// Refused, unreachable, TLS failure, reset, malformed answer: 502.
    Unavailable,
}

/// Sorts a client error and describes its cause in one line (no secrets:
/// hyper's errors never carry headers or credentials).
pub fn describe_error(err: &hyper_util::client::legacy::Error) -> (FailureKind, String) {
    describe(err, err.is_connect())
}

/// [`describe_error`] for the proxy's pools.
pub fn describe_send_error(err: &SendError) -> (FailureKind, String) {
    describe(err, err.is_connect())
}

fn describe(err: &(dyn std::error::Error + 'static), is_connect: bool) -> (FailureKind, String) {
    let mut kind = FailureKind::Unavailable;
    let mut parts: Vec<String> = Vec::new();
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                kind = FailureKind::Timeout;
            }
        }
        let s = e.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        src = e.source();
    }
    let prefix = if is_connect {
        "cannot connect"
    } else {
        "request failed"
    };
    let detail = parts.into_iter().skip(1).collect::<Vec<_>>().join(": ");
    let msg = if detail.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}: {detail}")
    };
    (kind, msg)
}

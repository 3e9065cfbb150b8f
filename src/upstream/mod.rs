//! Pooled HTTP clients toward brokers, one per trust configuration.
//!
//! A client is hyper-util's legacy `Client` (pool keyed by scheme and
//! authority, keep-alive) over hyper-rustls. Verified clients refuse
//! `http://` at the connector as well as in registry validation; only a
//! development-mode private registration gets [`Trust::Development`].

pub mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ForwardBody;
use crate::config::PoolSettings;

/// The client type every route uses.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, ForwardBody>;

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
    /// `host:port` of the upstream: one pool per upstream, so a reload can
    /// keep the pools of unchanged upstreams and drop the others.
    authority: String,
}

/// The TLS-enforcing connector behind a client.
pub type Connector = HttpsConnector<HttpConnector>;

/// A pooled client and its connector (the gateway's own calls, such as
/// catalog refreshes, build short-lived clients of other body types on the
/// same connector, so they obey the same trust rules).
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The pooled client the proxy forwards through.
    pub client: UpstreamClient,
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

    /// The client for an upstream.
    ///
    /// # Errors
    /// When the CA bundle cannot be read or used.
    pub fn client(
        &mut self,
        trust: &Trust,
        connect_timeout: Duration,
        authority: &str,
    ) -> Result<Upstream, String> {
        let key = ClientKey {
            trust: trust.clone(),
            connect_timeout,
            authority: authority.to_string(),
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
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            // NB: bounded per connection, as on the platform side.
            .http1_max_buf_size(64 * 1024)
            .pool_idle_timeout(self.pool.idle_timeout)
            .pool_max_idle_per_host(self.pool.max_idle_per_host)
            .build(connector.clone());
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
    let prefix = if err.is_connect() {
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

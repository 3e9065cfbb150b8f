//! The serde shape of `gateway.toml` (validated into a `GatewayConfig` by
//! `config::check`). See `config/gateway.example.toml` for every key.

use serde::Deserialize;

/// `gateway.toml` as written. See `config/gateway.example.toml` for every key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// Plain-text listener and plain-text passwords allowed.
    #[serde(default)]
    pub development_mode: bool,
    /// This gateway's name in logs and captures (default: the host name).
    pub instance: Option<String>,
    /// Local state directory (default `data`, relative to the file).
    pub data_dir: Option<String>,
    /// `[listen]`
    #[serde(default)]
    pub listen: ListenFile,
    /// `[registry]`
    #[serde(default)]
    pub registry: RegistryFileRef,
    /// `[secrets]`
    #[serde(default)]
    pub secrets: SecretsFile,
    /// `[upstream]`
    #[serde(default)]
    pub upstream: UpstreamFile,
    /// `[shutdown]`
    #[serde(default)]
    pub shutdown: ShutdownFile,
    /// `[log]`
    #[serde(default)]
    pub log: LogFile,
    /// `[capture]`
    #[serde(default)]
    pub capture: CaptureFile,
    /// `[admin]`
    #[serde(default)]
    pub admin: AdminFile,
    /// `[catalog]`
    #[serde(default)]
    pub catalog: CatalogFile,
}

/// `[catalog]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Refresh catalogs on a timer (default true; each broker's interval is
    /// its `catalog_refresh`, default 1h). On-demand refreshes work either way.
    pub refresh: Option<bool>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Serve the admin listener (default true).
    pub enabled: Option<bool>,
    /// `host:port` (default `127.0.0.1:9443`, or `127.0.0.1:8081` in development mode).
    pub address: Option<String>,
    /// PEM chain (default: `listen.tls_cert`).
    pub tls_cert: Option<String>,
    /// PEM key (default: `listen.tls_key`).
    pub tls_key: Option<String>,
    /// `[[admin.tokens]]`
    #[serde(default)]
    pub tokens: Vec<TokenFile>,
}

/// `[[admin.tokens]]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// Name shown in logs.
    pub name: String,
    /// Hex SHA-256 of the token (`osb-gateway secret token` prints both).
    pub sha256: String,
    /// `operator` or `owner`.
    pub role: String,
    /// The customer an `owner` token belongs to.
    pub customer: Option<String>,
}

/// `[capture]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureFile {
    /// Capture exchanges (default true).
    pub enabled: Option<bool>,
    /// Body bytes kept per body (default 1 MiB).
    pub max_body_bytes: Option<usize>,
    /// Body bytes kept by all exchanges in flight together (default 64 MiB).
    pub inflight_max_bytes: Option<usize>,
    /// In-memory queue bound in bytes (default 64 MiB).
    pub queue_max_bytes: Option<usize>,
    /// Extra headers to redact.
    #[serde(default)]
    pub secret_headers: Vec<String>,
    /// Live-feed buffer per subscriber (default 4096 records).
    pub feed_capacity: Option<usize>,
    /// Batch flush: rows (default 10000).
    pub batch_max_rows: Option<usize>,
    /// Batch flush: bytes (default 10 MB to ClickHouse, 1 MB to the local store).
    pub batch_max_bytes: Option<usize>,
    /// Batch flush: time (default 1s).
    pub flush_interval: Option<String>,
    /// Retry backoff start (default 1s).
    pub retry_initial_backoff: Option<String>,
    /// Retry backoff cap (default 30s).
    pub retry_max_backoff: Option<String>,
    /// One insert's time limit (default 30s).
    pub insert_timeout: Option<String>,
    /// `[capture.clickhouse]`
    pub clickhouse: Option<ClickHouseFile>,
    /// `[capture.local]`
    #[serde(default)]
    pub local: LocalFile,
}

/// `[capture.clickhouse]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseFile {
    /// HTTP URL of one server (default `http://127.0.0.1:8123`).
    pub url: Option<String>,
    /// HTTP URLs of a cluster's nodes, tried in order (instead of `url`).
    pub urls: Option<Vec<String>>,
    /// The cluster the tables live on (`ON CLUSTER`, replicated and
    /// `Distributed` tables); needed with several `urls`.
    pub cluster: Option<String>,
    /// A node silent this long is left for the next (default 5s).
    pub failover_after: Option<String>,
    /// Database (default `osb_gateway`).
    pub database: Option<String>,
    /// Table (default `exchanges`).
    pub table: Option<String>,
    /// User (default `default`).
    pub user: Option<String>,
    /// Password: `env:NAME`, `file:PATH`, `enc:v1:...` (plain text in development mode).
    pub password: Option<String>,
    /// Retention in days (TTL, ClickHouse 19.6+).
    pub retention_days: Option<u32>,
}

/// `[capture.local]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFile {
    /// Segment size limit in bytes (default 16 MiB).
    pub segment_bytes: Option<u64>,
    /// Segment age limit (default 1h).
    pub segment_age: Option<String>,
    /// Store size budget in bytes (default 1 GiB).
    pub max_bytes: Option<u64>,
}

/// `[listen]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    /// `host:port` (default `0.0.0.0:8443`, or `127.0.0.1:8080` in development mode).
    pub address: Option<String>,
    /// PEM certificate chain.
    pub tls_cert: Option<String>,
    /// PEM private key.
    pub tls_key: Option<String>,
    /// How often both listeners' certificate and key files are checked for
    /// a change (default 5s); SIGHUP reloads them at once.
    pub tls_watch_interval: Option<String>,
    /// Limit from accept to a connection's first request headers (TLS
    /// handshake, protocol detection, HTTP/2 preface included), and from
    /// each later HTTP/1 request's first byte to its last header.
    pub header_read_timeout: Option<String>,
    /// A connection with no request in flight is closed after this long.
    pub keepalive_timeout: Option<String>,
    /// Connections open at once, all clients together.
    pub max_connections: Option<usize>,
    /// Connections open at once from one client address.
    pub max_connections_per_client: Option<usize>,
}

/// `[registry]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFileRef {
    /// Path of the registry TOML (default `registry.toml`).
    pub file: Option<String>,
    /// Reload when the file changes (default true).
    pub watch: Option<bool>,
    /// How often to look (default 2s).
    pub watch_interval: Option<String>,
}

/// `[secrets]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFile {
    /// File holding the base64 key for `enc:v1:` values (else `OSB_GATEWAY_SECRET_KEY`).
    pub key_file: Option<String>,
}

/// `[upstream]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// Default connect + TLS handshake timeout.
    pub connect_timeout: Option<String>,
    /// Default wait for response headers.
    pub response_timeout: Option<String>,
    /// Default longest pause between body frames.
    pub idle_timeout: Option<String>,
    /// How long idle keep-alive connections are kept.
    pub pool_idle_timeout: Option<String>,
    /// Most idle connections per upstream host.
    pub pool_max_idle_per_host: Option<usize>,
    /// Networks (CIDR) private registrations may not reach (default in
    /// production mode: loopback and the private ranges; none in
    /// development mode).
    pub private_deny_networks: Option<Vec<String>>,
    /// Networks (CIDR) private registrations may reach although denied.
    pub private_allow_networks: Option<Vec<String>>,
}

/// `[shutdown]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    /// How long in-flight requests get after SIGTERM (default 30s).
    pub grace_period: Option<String>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `plain` (default) or `json`.
    pub format: Option<String>,
    /// Filter such as `info` or `osb_gateway=debug` (`RUST_LOG` wins).
    pub level: Option<String>,
}

//! The gateway's own configuration file (`gateway.toml`): listener, TLS, mode,
//! where the registry lives, upstream defaults, logging.
//!
//! Parsing is two steps, as everywhere in this crate: a serde DTO
//! ([`file::GatewayFile`], unknown keys refused) and then validation into a
//! [`GatewayConfig`], which only holds valid values. Every error names the
//! field and the value.

pub mod addresses;
mod check;
pub mod clickhouse;
pub mod credentials;
pub mod duration;
mod effective;
pub mod file;
pub mod log_level;
pub mod position;
pub mod secret;

pub use addresses::AddressPolicy;
pub use clickhouse::ClickHouseConfig;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use secret::{Secret, SecretKey};

/// Name of the environment variable holding the base64 key for `enc:v1:` secrets.
pub const SECRET_KEY_ENV: &str = "OSB_GATEWAY_SECRET_KEY";

/// The gateway configuration used when `serve` is given no `--config`:
/// development mode on 127.0.0.1:8080, with the sample registry.
pub const EMBEDDED_GATEWAY: &str = include_str!("../../config/gateway.dev.toml");
/// The registry used by the embedded defaults: one sample broker on
/// `http://127.0.0.1:9090`, which `serve` without `--config` replaces with
/// the address of the sample broker it starts in the same process.
pub const EMBEDDED_REGISTRY: &str = include_str!("../../config/registry.dev.toml");

/// A configuration error: the field, the value and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is (`listen.address`, `registry.file`, ...); may carry a file name.
    pub field: String,
    /// The offending value as written (never a secret).
    pub value: String,
    /// What is wrong and, where possible, what to do.
    pub reason: String,
}

impl ConfigError {
    /// Builds an error (a URL's user and password in `value` are masked).
    pub fn new(
        field: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError {
            field: field.into(),
            value: mask_userinfo(&value.to_string()),
            reason: reason.into(),
        }
    }
}

/// `text` with the user information of any URL in it (`https://user:pw@`)
/// replaced by `***`, for error messages and logs: an endpoint written
/// with a password in it is refused, and its refusal must not repeat it.
pub fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', '?', '#', ' ', '"']).unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(i) => {
                out.push_str("***");
                rest = &tail[i..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.field, self.reason)
        } else {
            write!(f, "{} = {:?}: {}", self.field, self.value, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a gateway file (validation does not stop at the
/// first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} problems:", all.len())?;
                for e in all {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Whether the gateway runs in development mode (plain-text listener and
/// plain-text passwords allowed) or production mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Production: TLS listener, secrets from env/file/enc:v1: only.
    Production,
    /// Development: plain HTTP listener and plain-text passwords allowed.
    Development,
}

impl Mode {
    /// `true` in development mode.
    pub fn is_development(self) -> bool {
        self == Mode::Development
    }
}

/// Certificate chain and private key files for the platform listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Where the registry (brokers, platforms, locations) is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrySource {
    /// A TOML file, re-read on reload.
    File(PathBuf),
    /// TOML text held in memory (the embedded defaults, with the address
    /// of the sample broker the demo started).
    Embedded(std::sync::Arc<str>),
}

/// Upstream timeouts; defaults for every route, which a route may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// From sending the request until the response headers arrive. Longer than
    /// a platform's own 60 s by default, so the platform gives up first and the
    /// gateway never turns a slow success into an error.
    pub response: Duration,
    /// Longest pause between two body frames, in either direction.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            response: Duration::from_secs(125),
            idle: Duration::from_secs(60),
        }
    }
}

/// Connection-pool settings toward brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// How long an unused keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// Most idle connections kept per upstream host.
    pub max_idle_per_host: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            idle_timeout: Duration::from_secs(90),
            max_idle_per_host: 64,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// `[capture]`: communication logs.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Capture exchanges at all (the exchange log line is written regardless).
    pub enabled: bool,
    /// Body bytes kept per request and per response; longer bodies are
    /// forwarded whole and recorded as truncated with their full size.
    pub max_body_bytes: usize,
    /// Body bytes all exchanges still streaming may keep together; past it
    /// bodies are forwarded whole and recorded as truncated (bounds memory
    /// whatever the number of connections).
    pub inflight_max_bytes: usize,
    /// Bound of finished records in memory, in bytes (the queue, at most half of it, and records on their way to the spool); past it records are kept without their bodies.
    pub queue_max_bytes: usize,
    /// Extra header names whose values are redacted.
    pub secret_headers: Vec<String>,
    /// Live-feed buffer (records) per subscriber before it starts losing lines.
    pub feed_capacity: usize,
    /// A batch is flushed at this many records ...
    pub batch_max_rows: usize,
    /// ... or this many bytes (default 10 MB to ClickHouse,
    /// [`LOCAL_BATCH_MAX_BYTES`] to the local store) ...
    pub batch_max_bytes: usize,
    /// ... or after this long, whichever comes first.
    pub flush_interval: Duration,
    /// First retry delay after a failed insert (doubles up to `retry_max_backoff`).
    pub retry_initial_backoff: Duration,
    /// Longest retry delay.
    pub retry_max_backoff: Duration,
    /// Longest wait for one insert.
    pub insert_timeout: Duration,
    /// ClickHouse; `None` keeps records in the embedded local store.
    pub clickhouse: Option<ClickHouseConfig>,
    /// The embedded local store.
    pub local: LocalStoreConfig,
}

/// `capture.batch_max_bytes` when the records go to the local store.
///
/// NB: ClickHouse wants few big inserts; the local store appends to a file
/// either way, so a big batch there only held memory: catalog at 256
/// connections peaked at 71 MB RSS with 10 MB batches, 63 MB with 1 MB.
pub const LOCAL_BATCH_MAX_BYTES: usize = 1_000_000;

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            enabled: true,
            max_body_bytes: 1024 * 1024,
            inflight_max_bytes: 64 * 1024 * 1024,
            queue_max_bytes: 64 * 1024 * 1024,
            secret_headers: Vec::new(),
            feed_capacity: 4096,
            batch_max_rows: 10_000,
            batch_max_bytes: 10_000_000,
            flush_interval: Duration::from_secs(1),
            retry_initial_backoff: Duration::from_secs(1),
            retry_max_backoff: Duration::from_secs(30),
            insert_timeout: Duration::from_secs(30),
            clickhouse: None,
            local: LocalStoreConfig::default(),
        }
    }
}

/// How many connections the listeners keep, and for how long idle ones
/// (`[listen]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A connection with no request in flight is closed after this long.
    pub keepalive_timeout: Duration,
    /// Connections open at once, all clients together.
    pub max: usize,
    /// Connections open at once from one client address.
    pub max_per_client: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            keepalive_timeout: Duration::from_secs(75),
            max: 10_000,
            max_per_client: 1_000,
        }
    }
}

/// `[capture.local]`: the embedded store used when no ClickHouse is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalStoreConfig {
    /// A segment is closed at this size ...
    pub segment_bytes: u64,
    /// ... or this age.
    pub segment_age: Duration,
    /// Oldest segments are deleted past this total.
    pub max_bytes: u64,
}

impl Default for LocalStoreConfig {
    fn default() -> Self {
        LocalStoreConfig {
            segment_bytes: 16 * 1024 * 1024,
            segment_age: Duration::from_secs(3600),
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// What an admin token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// Everything.
    Operator,
    /// Only the brokers of this customer (and their logs).
    Owner(String),
}

/// An admin bearer token, stored as the SHA-256 of the token.
///
/// NB: tokens are 256-bit random strings (`osb-gateway secret token`), so a
/// fast hash is as strong as a slow one here, unlike platform passwords,
/// which people choose and which get argon2.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// Name shown in logs.
    pub name: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// What it may do.
    pub scope: TokenScope,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// `[admin]`: the admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Serve the admin listener at all.
    pub enabled: bool,
    /// Address (loopback by default).
    pub listen: SocketAddr,
    /// TLS (required outside development mode; defaults to the platform listener's files).
    pub tls: Option<TlsFiles>,
    /// Bearer tokens.
    pub tokens: Vec<AdminToken>,
}

/// The validated gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Production or development mode.
    pub mode: Mode,
    /// Platform listener address.
    pub listen: SocketAddr,
    /// TLS for the platform listener; `None` only in development mode.
    pub tls: Option<TlsFiles>,
    /// How often the listeners' certificate files are checked for changes.
    pub tls_watch: Duration,
    /// Where the registry comes from.
    pub registry: RegistrySource,
    /// How often the registry file is checked for changes (`None`: never).
    pub registry_watch: Option<Duration>,
    /// Refresh broker catalogs on a timer (`[catalog] refresh`).
    pub catalog_refresh: bool,
    /// Key for `enc:v1:` secrets, if configured.
    pub secret_key: Option<SecretKey>,
    /// Default upstream timeouts.
    pub timeouts: Timeouts,
    /// Upstream connection pools.
    pub pool: PoolSettings,
    /// Which addresses upstream connections may reach.
    pub upstream_policy: AddressPolicy,
    /// How long in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Longest a platform may take for its TLS handshake and request headers.
    pub header_read_timeout: Duration,
    /// Connection limits of both listeners.
    pub connections: ConnectionLimits,
    /// Log format.
    pub log_format: LogFormat,
    /// Default log filter (`RUST_LOG` syntax), overridden by `RUST_LOG`.
    pub log_level: String,
    /// Directory for local state (captures in the embedded store).
    pub data_dir: PathBuf,
    /// This gateway's name in logs and captures.
    pub instance: String,
    /// Communication logs.
    pub capture: CaptureConfig,
    /// The admin listener.
    pub admin: AdminConfig,
}

impl GatewayConfig {
    /// Reads and validates a gateway file. Relative paths in it are relative
    /// to the file's directory. `env` reads environment variables.
    ///
    /// # Errors
    /// Every problem, each naming the file, field and value.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("--config", path.display(), format!("cannot read: {e}"))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base, env).map_err(|mut all| {
            for e in &mut all.0 {
                e.field = at_position(path, &text, &e.field);
            }
            all
        })
    }

    /// The embedded defaults (development mode, sample registry).
    pub fn embedded(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut c = Self::from_toml(EMBEDDED_GATEWAY, Path::new("."), env)
            .expect("embedded gateway config is valid");
        c.registry = RegistrySource::Embedded(EMBEDDED_REGISTRY.into());
        c.registry_watch = None;
        c
    }

    /// Parses and validates TOML text; relative paths resolve against `base`.
    ///
    /// # Errors
    /// Every problem, each naming the field and value.
    pub fn from_toml(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigErrors> {
        let f: file::GatewayFile = toml::from_str(text).map_err(|e| toml_error(&e, text))?;
        f.validate(base, env)
    }
}

/// Turns a TOML/serde error in `text` into a [`ConfigError`] that says
/// where: `line 12, column 3` (the file name is added by the caller).
pub(crate) fn toml_error(e: &toml::de::Error, text: &str) -> ConfigError {
    let msg = e.message().trim_end().to_string();
    let field = match e.span() {
        Some(span) => {
            let (line, col) = position::line_col(text, span.start);
            format!("line {line}, column {col}")
        }
        None => "file".into(),
    };
    ConfigError::new(field, "", msg)
}

/// `field` prefixed with the file and, when the field is written in it,
/// its line and column (`gateway.toml:12:1: listen.address`), the form
/// editors and terminals turn into a link.
pub(crate) fn at_position(path: &Path, text: &str, field: &str) -> String {
    if let Some(rest) = field.strip_prefix("line ") {
        // A parse error: "line L, column C" already.
        if let Some((line, col)) = rest.split_once(", column ") {
            return format!("{}:{line}:{col}", path.display());
        }
    }
    match position::locate(text, field) {
        Some((line, col)) => format!("{}:{line}:{col}: {field}", path.display()),
        None => format!("{}: {field}", path.display()),
    }
}

#[cfg(test)]
mod userinfo_tests {
    use super::mask_userinfo;

    #[test]
    fn urls_lose_their_user_and_password() {
        assert_eq!(
            mask_userinfo("https://u:hunter2@db.example/osb"),
            "https://***@db.example/osb"
        );
        assert_eq!(
            mask_userinfo("a = \"http://x:y@h\", b = http://h2/p@q"),
            "a = \"http://***@h\", b = http://h2/p@q"
        );
        assert_eq!(mask_userinfo("no url here"), "no url here");
        assert_eq!(mask_userinfo("https://user@host"), "https://***@host");
    }
}

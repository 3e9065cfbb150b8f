//! The serde shape of `gateway.toml`, and its validation into [`GatewayConfig`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{
    duration, AdminConfig, AdminToken, CaptureConfig, ClickHouseConfig, ConfigError, GatewayConfig,
    LocalStoreConfig, LogFormat, Mode, PoolSettings, RegistrySource, SecretKey, Timeouts, TlsFiles,
    TokenScope, SECRET_KEY_ENV,
};

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

impl AdminFile {
    fn validate(
        self,
        mode: Mode,
        base: &Path,
        listen_tls: &Option<TlsFiles>,
    ) -> Result<AdminConfig, ConfigError> {
        let default_addr = if mode.is_development() {
            "127.0.0.1:8081"
        } else {
            "127.0.0.1:9443"
        };
        let text = self.address.as_deref().unwrap_or(default_addr);
        let listen: SocketAddr = text.parse().map_err(|_| {
            ConfigError::new(
                "admin.address",
                text,
                "expected host:port, e.g. \"127.0.0.1:9443\"",
            )
        })?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert: base.join(c),
                key: base.join(k),
            }),
            (None, None) => listen_tls.clone(),
            _ => {
                return Err(ConfigError::new(
                    "admin.tls_cert",
                    "",
                    "set both admin.tls_cert and admin.tls_key, or neither",
                ))
            }
        };
        let mut tokens = Vec::new();
        for (i, t) in self.tokens.into_iter().enumerate() {
            let f = |n: &str| format!("admin.tokens[{i}].{n}");
            if t.name.is_empty() {
                return Err(ConfigError::new(f("name"), "", "missing"));
            }
            if tokens.iter().any(|x: &AdminToken| x.name == t.name) {
                return Err(ConfigError::new(f("name"), &t.name, "duplicate token name"));
            }
            let raw: Vec<u8> = (0..t.sha256.len() / 2)
                .filter_map(|j| {
                    t.sha256
                        .get(2 * j..2 * j + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect();
            let sha256: [u8; 32] = raw
                .try_into()
                .ok()
                .filter(|_| t.sha256.len() == 64)
                .ok_or_else(|| {
                    ConfigError::new(
                        f("sha256"),
                        "(hash)",
                        "expected 64 hex digits; make a token with `osb-gateway secret token`",
                    )
                })?;
            let scope = match (t.role.as_str(), t.customer) {
                ("operator", None) => TokenScope::Operator,
                ("operator", Some(c)) => {
                    return Err(ConfigError::new(
                        f("customer"),
                        c,
                        "operator tokens see every customer; remove customer",
                    ))
                }
                ("owner", Some(c)) if !c.is_empty() => TokenScope::Owner(c),
                ("owner", _) => {
                    return Err(ConfigError::new(
                        f("customer"),
                        "",
                        "missing: an owner token belongs to one customer",
                    ))
                }
                (other, _) => {
                    return Err(ConfigError::new(
                        f("role"),
                        other,
                        "expected \"operator\" or \"owner\"",
                    ))
                }
            };
            tokens.push(AdminToken {
                name: t.name,
                sha256,
                scope,
            });
        }
        Ok(AdminConfig {
            enabled: self.enabled.unwrap_or(true),
            listen,
            tls,
            tokens,
        })
    }
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
    /// Batch flush: bytes (default 10 MB).
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
    /// HTTP URL (default `http://127.0.0.1:8123`).
    pub url: Option<String>,
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

fn sql_name(field: &str, v: &str) -> Result<String, ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !v.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(v.to_string())
    } else {
        Err(ConfigError::new(
            field,
            v,
            "use letters, digits and '_' only, not starting with a digit",
        ))
    }
}

fn positive(field: &str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v {
        Some(0) => Err(ConfigError::new(field, 0, "must be greater than zero")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

impl CaptureFile {
    fn validate(
        self,
        mode: Mode,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CaptureConfig, ConfigError> {
        let d = CaptureConfig::default();
        let clickhouse = match self.clickhouse {
            None => None,
            Some(c) => {
                let url = c.url.unwrap_or_else(|| "http://127.0.0.1:8123".into());
                let parsed: http::Uri = url
                    .parse()
                    .map_err(|_| ConfigError::new("capture.clickhouse.url", &url, "not a URL"))?;
                if !matches!(parsed.scheme_str(), Some("http") | Some("https"))
                    || parsed.host().is_none()
                {
                    return Err(ConfigError::new(
                        "capture.clickhouse.url",
                        &url,
                        "expected http(s)://host:port",
                    ));
                }
                let password = match &c.password {
                    None => None,
                    Some(text) => {
                        let sc = super::secret::SecretContext {
                            key: None,
                            development_mode: mode.is_development(),
                            base_dir: base,
                            env,
                        };
                        Some(sc.resolve(text).map_err(|r| {
                            ConfigError::new(
                                "capture.clickhouse.password",
                                super::secret::SecretSource::parse(text).masked(),
                                r,
                            )
                        })?)
                    }
                };
                Some(ClickHouseConfig {
                    url,
                    database: sql_name(
                        "capture.clickhouse.database",
                        c.database.as_deref().unwrap_or("osb_gateway"),
                    )?,
                    table: sql_name(
                        "capture.clickhouse.table",
                        c.table.as_deref().unwrap_or("exchanges"),
                    )?,
                    user: c.user.unwrap_or_else(|| "default".into()),
                    password,
                    retention_days: c.retention_days,
                })
            }
        };
        for (i, h) in self.secret_headers.iter().enumerate() {
            if http::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ConfigError::new(
                    format!("capture.secret_headers[{i}]"),
                    h,
                    "not a valid header name",
                ));
            }
        }
        let dl = LocalStoreConfig::default();
        Ok(CaptureConfig {
            enabled: self.enabled.unwrap_or(true),
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            inflight_max_bytes: positive(
                "capture.inflight_max_bytes",
                self.inflight_max_bytes,
                d.inflight_max_bytes,
            )?,
            queue_max_bytes: positive(
                "capture.queue_max_bytes",
                self.queue_max_bytes,
                d.queue_max_bytes,
            )?,
            secret_headers: self
                .secret_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            feed_capacity: positive("capture.feed_capacity", self.feed_capacity, d.feed_capacity)?,
            batch_max_rows: positive(
                "capture.batch_max_rows",
                self.batch_max_rows,
                d.batch_max_rows,
            )?,
            batch_max_bytes: positive(
                "capture.batch_max_bytes",
                self.batch_max_bytes,
                d.batch_max_bytes,
            )?,
            flush_interval: opt_duration(
                "capture.flush_interval",
                &self.flush_interval,
                d.flush_interval,
            )?,
            retry_initial_backoff: opt_duration(
                "capture.retry_initial_backoff",
                &self.retry_initial_backoff,
                d.retry_initial_backoff,
            )?,
            retry_max_backoff: opt_duration(
                "capture.retry_max_backoff",
                &self.retry_max_backoff,
                d.retry_max_backoff,
            )?,
            insert_timeout: opt_duration(
                "capture.insert_timeout",
                &self.insert_timeout,
                d.insert_timeout,
            )?,
            clickhouse,
            local: LocalStoreConfig {
                segment_bytes: self.local.segment_bytes.unwrap_or(dl.segment_bytes).max(1),
                segment_age: opt_duration(
                    "capture.local.segment_age",
                    &self.local.segment_age,
                    dl.segment_age,
                )?,
                max_bytes: self.local.max_bytes.unwrap_or(dl.max_bytes),
            },
        })
    }
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
    /// Limit on a platform's TLS handshake plus request headers.
    pub header_read_timeout: Option<String>,
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

/// Parses an optional duration field, naming it in the error.
pub(crate) fn opt_duration(
    field: &str,
    v: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => duration::parse(s).map_err(|r| ConfigError::new(field, s, r)),
    }
}

impl GatewayFile {
    /// Validates into a [`GatewayConfig`].
    ///
    /// # Errors
    /// The first invalid field, with its value.
    pub fn validate(
        self,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GatewayConfig, ConfigError> {
        let mode = if self.development_mode {
            Mode::Development
        } else {
            Mode::Production
        };
        let default_addr = if mode.is_development() {
            "127.0.0.1:8080"
        } else {
            "0.0.0.0:8443"
        };
        let addr_text = self.listen.address.as_deref().unwrap_or(default_addr);
        let listen: SocketAddr = addr_text.parse().map_err(|_| {
            ConfigError::new(
                "listen.address",
                addr_text,
                "expected host:port, e.g. \"0.0.0.0:8443\"",
            )
        })?;
        let tls = match (&self.listen.tls_cert, &self.listen.tls_key) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert: base.join(c),
                key: base.join(k),
            }),
            (None, None) => None,
            (Some(c), None) => {
                return Err(ConfigError::new(
                    "listen.tls_key",
                    "",
                    format!("missing: tls_cert = {c:?} needs a tls_key"),
                ))
            }
            (None, Some(k)) => {
                return Err(ConfigError::new(
                    "listen.tls_cert",
                    "",
                    format!("missing: tls_key = {k:?} needs a tls_cert"),
                ))
            }
        };
        if tls.is_none() && !mode.is_development() {
            return Err(ConfigError::new(
                "listen.tls_cert",
                "",
                "missing: outside development mode the gateway serves platforms over TLS only; \
                 set listen.tls_cert and listen.tls_key (or development_mode = true for a plain-text listener)",
            ));
        }
        let header_read_timeout = opt_duration(
            "listen.header_read_timeout",
            &self.listen.header_read_timeout,
            Duration::from_secs(30),
        )?;
        let registry_watch = match self.registry.watch {
            Some(false) => None,
            _ => Some(opt_duration(
                "registry.watch_interval",
                &self.registry.watch_interval,
                Duration::from_secs(2),
            )?),
        };
        let registry = RegistrySource::File(
            base.join(self.registry.file.as_deref().unwrap_or("registry.toml")),
        );
        let secret_key = match &self.secrets.key_file {
            Some(p) => {
                let path = base.join(p);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::new(
                        "secrets.key_file",
                        path.display(),
                        format!("cannot read: {e}"),
                    )
                })?;
                Some(
                    SecretKey::from_base64(&text)
                        .map_err(|r| ConfigError::new("secrets.key_file", path.display(), r))?,
                )
            }
            None => match env(SECRET_KEY_ENV) {
                Some(text) => Some(
                    SecretKey::from_base64(&text)
                        .map_err(|r| ConfigError::new(SECRET_KEY_ENV, "***", r))?,
                ),
                None => None,
            },
        };
        let d = Timeouts::default();
        let u = &self.upstream;
        let timeouts = Timeouts {
            connect: opt_duration("upstream.connect_timeout", &u.connect_timeout, d.connect)?,
            response: opt_duration("upstream.response_timeout", &u.response_timeout, d.response)?,
            idle: opt_duration("upstream.idle_timeout", &u.idle_timeout, d.idle)?,
        };
        let p = PoolSettings::default();
        let pool = PoolSettings {
            idle_timeout: opt_duration(
                "upstream.pool_idle_timeout",
                &u.pool_idle_timeout,
                p.idle_timeout,
            )?,
            max_idle_per_host: u.pool_max_idle_per_host.unwrap_or(p.max_idle_per_host),
        };
        let shutdown_grace = opt_duration(
            "shutdown.grace_period",
            &self.shutdown.grace_period,
            Duration::from_secs(30),
        )?;
        let log_format = match self.log.format.as_deref() {
            None | Some("plain") => LogFormat::Plain,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "log.format",
                    other,
                    "expected \"plain\" or \"json\"",
                ))
            }
        };
        let instance = self
            .instance
            .or_else(|| env("HOSTNAME"))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "osb-gateway".into());
        let capture = self.capture.validate(mode, base, env)?;
        let admin = self.admin.validate(mode, base, &tls)?;
        Ok(GatewayConfig {
            catalog_refresh: self.catalog.refresh.unwrap_or(true),
            admin,
            registry_watch,
            capture,
            mode,
            listen,
            tls,
            registry,
            secret_key,
            timeouts,
            pool,
            shutdown_grace,
            header_read_timeout,
            log_format,
            log_level: self.log.level.unwrap_or_else(|| "info".into()),
            data_dir: base.join(self.data_dir.as_deref().unwrap_or("data")),
            instance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::from_toml(text, Path::new("/etc/gw"), &|_| None)
    }

    #[test]
    fn plain_text_listener_refused_outside_development_mode() {
        let e = parse("").unwrap_err();
        assert_eq!(e.field, "listen.tls_cert");
        assert!(e.reason.contains("TLS only"), "{e}");
        let c = parse("development_mode = true").unwrap();
        assert!(c.tls.is_none());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn paths_are_relative_to_the_file() {
        let c = parse("[listen]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
        assert_eq!(c.tls.unwrap().cert, Path::new("/etc/gw/c.pem"));
        assert_eq!(
            c.registry,
            RegistrySource::File("/etc/gw/registry.toml".into())
        );
    }

    #[test]
    fn bad_values_name_field_and_value() {
        let e =
            parse("development_mode = true\n[upstream]\nconnect_timeout = \"soon\"").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("upstream.connect_timeout", "soon")
        );
        let e = parse("development_mode = true\n[listen]\naddress = \"nowhere\"").unwrap_err();
        assert_eq!(e.field, "listen.address");
        let e = parse("development_mode = true\n[log]\nformat = \"xml\"").unwrap_err();
        assert_eq!((e.field.as_str(), e.value.as_str()), ("log.format", "xml"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("development_mode = true\nlisten_port = 1").unwrap_err();
        assert!(e.reason.contains("listen_port"), "{e}");
    }

    #[test]
    fn embedded_defaults_are_valid() {
        let c = GatewayConfig::embedded(&|_| None);
        assert!(c.mode.is_development());
        assert!(matches!(c.registry, RegistrySource::Embedded(_)));
    }
}

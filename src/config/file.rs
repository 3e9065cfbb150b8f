//! The serde shape of `gateway.toml`, and its validation into [`GatewayConfig`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{
    duration, ConfigError, GatewayConfig, LogFormat, Mode, PoolSettings, RegistrySource, SecretKey,
    Timeouts, TlsFiles, SECRET_KEY_ENV,
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
        Ok(GatewayConfig {
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

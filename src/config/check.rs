//! Validation of `gateway.toml` into [`GatewayConfig`]: every field is
//! checked, and every problem is reported at once ([`ConfigErrors`]), as
//! the registry's validation does. A field that fails is replaced by its
//! default so that the checks after it still run; the result is returned
//! only when nothing failed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::duration::opt_duration;
use super::file::{AdminFile, CaptureFile, GatewayFile};
use super::{
    AdminConfig, AdminToken, CaptureConfig, ConfigError, ConfigErrors, ConnectionLimits,
    GatewayConfig, LocalStoreConfig, LogFormat, Mode, PoolSettings, RegistrySource, SecretKey,
    Timeouts, TlsFiles, TokenScope, SECRET_KEY_ENV,
};

/// The problems found so far.
#[derive(Default)]
pub(crate) struct Checks(Vec<ConfigError>);

impl Checks {
    /// The value, or `None` after noting why it is refused.
    pub(super) fn ok<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    /// The value, or `fallback` after noting why it is refused.
    pub(super) fn or<T>(&mut self, r: Result<T, ConfigError>, fallback: T) -> T {
        self.ok(r).unwrap_or(fallback)
    }

    pub(super) fn push(&mut self, e: ConfigError) {
        self.0.push(e);
    }
}

impl AdminFile {
    fn validate(
        self,
        mode: Mode,
        base: &Path,
        listen_tls: &Option<TlsFiles>,
        c: &mut Checks,
    ) -> AdminConfig {
        let default_addr = if mode.is_development() {
            "127.0.0.1:8081"
        } else {
            "127.0.0.1:9443"
        };
        let text = self.address.as_deref().unwrap_or(default_addr);
        let listen = c.or(
            text.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "admin.address",
                    text,
                    "expected host:port, e.g. \"127.0.0.1:9443\"",
                )
            }),
            default_addr.parse().expect("a valid default"),
        );
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(k)) => Some(TlsFiles {
                cert: base.join(cert),
                key: base.join(k),
            }),
            (None, None) => listen_tls.clone(),
            _ => {
                c.push(ConfigError::new(
                    "admin.tls_cert",
                    "",
                    "set both admin.tls_cert and admin.tls_key, or neither",
                ));
                None
            }
        };
        let mut tokens: Vec<AdminToken> = Vec::new();
        for (i, t) in self.tokens.into_iter().enumerate() {
            if let Some(token) = c.ok(token(i, t, &tokens)) {
                tokens.push(token);
            }
        }
        AdminConfig {
            enabled: self.enabled.unwrap_or(true),
            listen,
            tls,
            tokens,
        }
    }
}

/// One `[[admin.tokens]]` entry (`i`), checked against those before it.
fn token(
    i: usize,
    t: super::file::TokenFile,
    before: &[AdminToken],
) -> Result<AdminToken, ConfigError> {
    let f = |n: &str| format!("admin.tokens[{i}].{n}");
    if t.name.is_empty() {
        return Err(ConfigError::new(f("name"), "", "missing"));
    }
    if before.iter().any(|x| x.name == t.name) {
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
        ("operator", Some(cust)) => {
            return Err(ConfigError::new(
                f("customer"),
                cust,
                "operator tokens see every customer; remove customer",
            ))
        }
        ("owner", Some(cust)) if !cust.is_empty() => TokenScope::Owner(cust),
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
    Ok(AdminToken {
        name: t.name,
        sha256,
        scope,
    })
}

pub(super) fn sql_name(field: &str, v: &str) -> Result<String, ConfigError> {
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
        c: &mut Checks,
    ) -> CaptureConfig {
        let d = CaptureConfig::default();
        let to_clickhouse = self.clickhouse.is_some();
        let clickhouse = self.clickhouse.map(|ch| ch.validate(mode, base, env, c));
        for (i, h) in self.secret_headers.iter().enumerate() {
            if http::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                c.push(ConfigError::new(
                    format!("capture.secret_headers[{i}]"),
                    h,
                    "not a valid header name",
                ));
            }
        }
        let dl = LocalStoreConfig::default();
        let mut count = |field: &str, v: Option<usize>, default: usize| {
            c.or(positive(field, v, default), default)
        };
        let inflight_max_bytes = count(
            "capture.inflight_max_bytes",
            self.inflight_max_bytes,
            d.inflight_max_bytes,
        );
        let queue_max_bytes = count(
            "capture.queue_max_bytes",
            self.queue_max_bytes,
            d.queue_max_bytes,
        );
        let feed_capacity = count("capture.feed_capacity", self.feed_capacity, d.feed_capacity);
        let batch_max_rows = count(
            "capture.batch_max_rows",
            self.batch_max_rows,
            d.batch_max_rows,
        );
        let batch_max_bytes = count(
            "capture.batch_max_bytes",
            self.batch_max_bytes,
            match to_clickhouse {
                true => d.batch_max_bytes,
                false => super::LOCAL_BATCH_MAX_BYTES,
            },
        );
        let mut dur = |field: &str, v: &Option<String>, default: Duration| {
            c.or(opt_duration(field, v, default), default)
        };
        CaptureConfig {
            enabled: self.enabled.unwrap_or(true),
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            inflight_max_bytes,
            queue_max_bytes,
            secret_headers: self
                .secret_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            feed_capacity,
            batch_max_rows,
            batch_max_bytes,
            flush_interval: dur(
                "capture.flush_interval",
                &self.flush_interval,
                d.flush_interval,
            ),
            retry_initial_backoff: dur(
                "capture.retry_initial_backoff",
                &self.retry_initial_backoff,
                d.retry_initial_backoff,
            ),
            retry_max_backoff: dur(
                "capture.retry_max_backoff",
                &self.retry_max_backoff,
                d.retry_max_backoff,
            ),
            insert_timeout: dur(
                "capture.insert_timeout",
                &self.insert_timeout,
                d.insert_timeout,
            ),
            clickhouse,
            local: LocalStoreConfig {
                segment_bytes: self.local.segment_bytes.unwrap_or(dl.segment_bytes).max(1),
                segment_age: dur(
                    "capture.local.segment_age",
                    &self.local.segment_age,
                    dl.segment_age,
                ),
                max_bytes: self.local.max_bytes.unwrap_or(dl.max_bytes),
            },
        }
    }
}

impl GatewayFile {
    /// Validates into a [`GatewayConfig`].
    ///
    /// # Errors
    /// Every invalid field, each with its value.
    pub fn validate(
        self,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GatewayConfig, ConfigErrors> {
        let mut c = Checks::default();
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
        let listen = c.or(
            addr_text.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "listen.address",
                    addr_text,
                    "expected host:port, e.g. \"0.0.0.0:8443\"",
                )
            }),
            default_addr.parse().expect("a valid default"),
        );
        let tls = match (&self.listen.tls_cert, &self.listen.tls_key) {
            (Some(cert), Some(k)) => Some(TlsFiles {
                cert: base.join(cert),
                key: base.join(k),
            }),
            (None, None) => {
                if !mode.is_development() {
                    c.push(ConfigError::new(
                        "listen.tls_cert",
                        "",
                        "missing: outside development mode the gateway serves platforms over TLS only; \
                         set listen.tls_cert and listen.tls_key (or development_mode = true for a plain-text listener)",
                    ));
                }
                None
            }
            (Some(cert), None) => {
                c.push(ConfigError::new(
                    "listen.tls_key",
                    "",
                    format!("missing: tls_cert = {cert:?} needs a tls_key"),
                ));
                None
            }
            (None, Some(k)) => {
                c.push(ConfigError::new(
                    "listen.tls_cert",
                    "",
                    format!("missing: tls_key = {k:?} needs a tls_cert"),
                ));
                None
            }
        };
        let dur = |c: &mut Checks, field: &str, v: &Option<String>, default: Duration| {
            c.or(opt_duration(field, v, default), default)
        };
        let header_read_timeout = dur(
            &mut c,
            "listen.header_read_timeout",
            &self.listen.header_read_timeout,
            Duration::from_secs(30),
        );
        let dl = ConnectionLimits::default();
        let connections = ConnectionLimits {
            keepalive_timeout: dur(
                &mut c,
                "listen.keepalive_timeout",
                &self.listen.keepalive_timeout,
                dl.keepalive_timeout,
            ),
            max: c.or(
                positive(
                    "listen.max_connections",
                    self.listen.max_connections,
                    dl.max,
                ),
                dl.max,
            ),
            max_per_client: c.or(
                positive(
                    "listen.max_connections_per_client",
                    self.listen.max_connections_per_client,
                    dl.max_per_client,
                ),
                dl.max_per_client,
            ),
        };
        let tls_watch = dur(
            &mut c,
            "listen.tls_watch_interval",
            &self.listen.tls_watch_interval,
            Duration::from_secs(5),
        );
        let registry_watch = match self.registry.watch {
            Some(false) => None,
            _ => Some(dur(
                &mut c,
                "registry.watch_interval",
                &self.registry.watch_interval,
                Duration::from_secs(2),
            )),
        };
        let registry = RegistrySource::File(
            base.join(self.registry.file.as_deref().unwrap_or("registry.toml")),
        );
        let secret_key = match &self.secrets.key_file {
            Some(p) => {
                let path = base.join(p);
                c.ok(std::fs::read_to_string(&path)
                    .map_err(|e| {
                        ConfigError::new(
                            "secrets.key_file",
                            path.display(),
                            format!("cannot read: {e}"),
                        )
                    })
                    .and_then(|text| {
                        SecretKey::from_base64(&text)
                            .map_err(|r| ConfigError::new("secrets.key_file", path.display(), r))
                    }))
            }
            None => env(SECRET_KEY_ENV).and_then(|text| {
                c.ok(SecretKey::from_base64(&text)
                    .map_err(|r| ConfigError::new(SECRET_KEY_ENV, "***", r)))
            }),
        };
        let d = Timeouts::default();
        let u = &self.upstream;
        let timeouts = Timeouts {
            connect: dur(
                &mut c,
                "upstream.connect_timeout",
                &u.connect_timeout,
                d.connect,
            ),
            response: dur(
                &mut c,
                "upstream.response_timeout",
                &u.response_timeout,
                d.response,
            ),
            idle: dur(&mut c, "upstream.idle_timeout", &u.idle_timeout, d.idle),
        };
        let p = PoolSettings::default();
        let pool = PoolSettings {
            idle_timeout: dur(
                &mut c,
                "upstream.pool_idle_timeout",
                &u.pool_idle_timeout,
                p.idle_timeout,
            ),
            max_idle_per_host: u.pool_max_idle_per_host.unwrap_or(p.max_idle_per_host),
        };
        let networks = |c: &mut Checks, field: &str, v: &Option<Vec<String>>, default: &[&str]| {
            let texts: Vec<String> = match v {
                Some(v) => v.clone(),
                None => default.iter().map(|s| s.to_string()).collect(),
            };
            texts
                .iter()
                .filter_map(|t| {
                    c.ok(t.trim().parse::<ipnet::IpNet>().map_err(|e| {
                        ConfigError::new(
                            field,
                            t,
                            format!("expected a network such as \"10.0.0.0/8\" ({e})"),
                        )
                    }))
                })
                .collect::<Vec<_>>()
        };
        let deny_default: &[&str] = match mode {
            Mode::Production => &super::addresses::PRODUCTION_PRIVATE_DENY,
            Mode::Development => &[],
        };
        let upstream_policy = super::AddressPolicy::new(
            networks(
                &mut c,
                "upstream.private_deny_networks",
                &u.private_deny_networks,
                deny_default,
            ),
            networks(
                &mut c,
                "upstream.private_allow_networks",
                &u.private_allow_networks,
                &[],
            ),
        );
        let shutdown_grace = dur(
            &mut c,
            "shutdown.grace_period",
            &self.shutdown.grace_period,
            Duration::from_secs(30),
        );
        let log_format = match self.log.format.as_deref() {
            None | Some("plain") => LogFormat::Plain,
            Some("json") => LogFormat::Json,
            Some(other) => {
                c.push(ConfigError::new(
                    "log.format",
                    other,
                    "expected \"plain\" or \"json\"",
                ));
                LogFormat::Plain
            }
        };
        let log_level = self.log.level.unwrap_or_else(|| "info".into());
        if let Err(why) = super::log_level::check(&log_level) {
            c.push(ConfigError::new("log.level", &log_level, &why));
        }
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
        let capture = self.capture.validate(mode, base, env, &mut c);
        let admin = self.admin.validate(mode, base, &tls, &mut c);
        if !c.0.is_empty() {
            return Err(ConfigErrors(c.0));
        }
        Ok(GatewayConfig {
            catalog_refresh: self.catalog.refresh.unwrap_or(true),
            admin,
            registry_watch,
            tls_watch,
            capture,
            mode,
            listen,
            tls,
            registry,
            secret_key,
            timeouts,
            pool,
            upstream_policy,
            shutdown_grace,
            header_read_timeout,
            connections,
            log_format,
            log_level,
            data_dir: base.join(self.data_dir.as_deref().unwrap_or("data")),
            instance,
        })
    }
}

#[cfg(test)]
mod tests;

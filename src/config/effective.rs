//! The effective configuration, every default filled in and every secret
//! masked: what `osb-gateway config dump` prints and what
//! `GET /admin/v1/config` answers, so an operator sees what the gateway
//! runs with, not what the file says.

use serde_json::{json, Map, Value};

use super::duration::format as dur;
use super::{GatewayConfig, RegistrySource, TlsFiles, TokenScope};

/// What a set secret is shown as.
pub const MASK: &str = "***";

impl GatewayConfig {
    /// The effective settings as JSON, with the keys of `gateway.toml`;
    /// passwords, keys and token hashes are masked.
    pub fn effective(&self) -> Value {
        let tls = |t: &Option<TlsFiles>| match t {
            Some(t) => {
                json!({"tls_cert": t.cert.display().to_string(), "tls_key": t.key.display().to_string()})
            }
            None => json!({}),
        };
        let mut listen = tls(&self.tls);
        extend(
            &mut listen,
            json!({
                "address": self.listen.to_string(),
                "tls_watch_interval": dur(self.tls_watch),
                "header_read_timeout": dur(self.header_read_timeout),
                "keepalive_timeout": dur(self.connections.keepalive_timeout),
                "max_connections": self.connections.max,
                "max_connections_per_client": self.connections.max_per_client,
            }),
        );
        let registry = match &self.registry {
            RegistrySource::File(p) => json!({
                "file": p.display().to_string(),
                "watch": self.registry_watch.is_some(),
                "watch_interval": self.registry_watch.map(dur).unwrap_or_default(),
            }),
            RegistrySource::Embedded(_) => {
                json!({"file": "(embedded sample registry)", "watch": false})
            }
        };
        let (deny, allow) = self.upstream_policy.networks();
        let c = &self.capture;
        let mut capture = json!({
            "enabled": c.enabled,
            "max_body_bytes": c.max_body_bytes,
            "inflight_max_bytes": c.inflight_max_bytes,
            "queue_max_bytes": c.queue_max_bytes,
            "secret_headers": c.secret_headers,
            "feed_capacity": c.feed_capacity,
            "batch_max_rows": c.batch_max_rows,
            "batch_max_bytes": c.batch_max_bytes,
            "flush_interval": dur(c.flush_interval),
            "retry_initial_backoff": dur(c.retry_initial_backoff),
            "retry_max_backoff": dur(c.retry_max_backoff),
            "insert_timeout": dur(c.insert_timeout),
            "store": if c.clickhouse.is_some() { "clickhouse" } else { "local" },
            "local": {
                "segment_bytes": c.local.segment_bytes,
                "segment_age": dur(c.local.segment_age),
                "max_bytes": c.local.max_bytes,
            },
        });
        if let Some(ch) = &c.clickhouse {
            let mut v = match (&ch.cluster, ch.urls.as_slice()) {
                (None, [url]) => json!({"url": super::mask_userinfo(url)}),
                (cluster, urls) => json!({
                    "urls": urls.iter().map(|u| super::mask_userinfo(u)).collect::<Vec<_>>(),
                    "cluster": cluster,
                    "failover_after": dur(ch.failover_after),
                }),
            };
            extend(
                &mut v,
                json!({
                    "database": ch.database,
                    "table": ch.table,
                    "user": ch.user,
                    "password": if ch.password.is_some() { MASK } else { "" },
                }),
            );
            if let Some(days) = ch.retention_days {
                extend(&mut v, json!({"retention_days": days}));
            }
            extend(&mut capture, json!({"clickhouse": v}));
        }
        let mut admin = tls(&self.admin.tls);
        extend(
            &mut admin,
            json!({
                "enabled": self.admin.enabled,
                "address": self.admin.listen.to_string(),
                "tokens": self.admin.tokens.iter().map(|t| {
                    let mut v = json!({"name": t.name, "sha256": MASK});
                    match &t.scope {
                        TokenScope::Operator => extend(&mut v, json!({"role": "operator"})),
                        TokenScope::Owner(c) => extend(&mut v, json!({"role": "owner", "customer": c})),
                    }
                    v
                }).collect::<Vec<_>>(),
            }),
        );
        json!({
            "development_mode": self.mode.is_development(),
            "instance": self.instance,
            "data_dir": self.data_dir.display().to_string(),
            "listen": listen,
            "registry": registry,
            "secrets": {"key": if self.secret_key.is_some() { MASK } else { "" }},
            "upstream": {
                "connect_timeout": dur(self.timeouts.connect),
                "response_timeout": dur(self.timeouts.response),
                "idle_timeout": dur(self.timeouts.idle),
                "pool_idle_timeout": dur(self.pool.idle_timeout),
                "pool_max_idle_per_host": self.pool.max_idle_per_host,
                "private_deny_networks": deny,
                "private_allow_networks": allow,
            },
            "shutdown": {"grace_period": dur(self.shutdown_grace)},
            "log": {
                "level": self.log_level,
                "format": match self.log_format {
                    super::LogFormat::Plain => "plain",
                    super::LogFormat::Json => "json",
                },
            },
            "catalog": {"refresh": self.catalog_refresh},
            "capture": capture,
            "admin": admin,
        })
    }
}

fn extend(into: &mut Value, more: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, more) {
        let b: Map<String, Value> = b;
        a.extend(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_defaults_filled_in() {
        let key = crate::config::SecretKey::generate().to_base64();
        let env = |k: &str| match k {
            "CH_PW" => Some("ch-secret-9".to_string()),
            crate::config::SECRET_KEY_ENV => Some(key.clone()),
            _ => None,
        };
        let cfg = GatewayConfig::from_toml(
            "development_mode = true\n[capture.clickhouse]\nurl = \"http://u:pw9@127.0.0.1:8123\"\npassword = \"env:CH_PW\"\n[[admin.tokens]]\nname = \"ops\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nrole = \"operator\"\n",
            std::path::Path::new("/etc/gw"),
            &env,
        )
        .unwrap();
        let v = cfg.effective();
        let text = v.to_string();
        for secret in ["ch-secret-9", "pw9", &key, "000000000000"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(v["capture"]["clickhouse"]["password"], MASK);
        assert_eq!(v["upstream"]["connect_timeout"], "10s");
        assert_eq!(v["listen"]["address"], "127.0.0.1:8080");
        assert_eq!(v["admin"]["tokens"][0]["role"], "operator");
        // It prints as TOML (no nulls anywhere).
        toml::to_string(&v).unwrap();
    }
}

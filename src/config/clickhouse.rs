//! `[capture.clickhouse]`: one server, or the nodes of a cluster
//! (`urls` and `cluster`), validated into [`ClickHouseConfig`].

use std::path::Path;
use std::time::Duration;

use super::check::{sql_name, Checks};
use super::duration::opt_duration;
use super::file::ClickHouseFile;
use super::{ConfigError, Mode, Secret};

/// The HTTP interface when none is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8123";

/// `[capture.clickhouse]`
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// HTTP interfaces of the nodes, in the order they are tried (`url`, or
    /// `urls` for a cluster). Never empty.
    pub urls: Vec<String>,
    /// The cluster (`remote_servers` in the servers' configuration) the
    /// tables live on: the DDL runs `ON CLUSTER`, the data goes to a
    /// replicated table behind a `Distributed` one. `None`: one server.
    pub cluster: Option<String>,
    /// A node that has not answered an insert within this long (a read:
    /// six times as long) is left for the next one (several nodes only).
    pub failover_after: Duration,
    /// Database (created when missing).
    pub database: String,
    /// Table (created when missing): the `Distributed` table on a cluster.
    pub table: String,
    /// User.
    pub user: String,
    /// Password, if any.
    pub password: Option<Secret>,
    /// Retention applied as a TTL on servers that support it (19.6+).
    pub retention_days: Option<u32>,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            urls: vec![DEFAULT_URL.into()],
            cluster: None,
            failover_after: Duration::from_secs(5),
            database: "osb_gateway".into(),
            table: "exchanges".into(),
            user: "default".into(),
            password: None,
            retention_days: None,
        }
    }
}

impl ClickHouseConfig {
    /// One server at `url` (tests, benchmarks).
    pub fn single(url: &str) -> Self {
        ClickHouseConfig {
            urls: vec![url.into()],
            ..ClickHouseConfig::default()
        }
    }
}

fn check_url(field: &str, url: &str, c: &mut Checks) {
    let Some(parsed) = c.ok(url
        .parse::<http::Uri>()
        .map_err(|_| ConfigError::new(field, url, "not a URL")))
    else {
        return;
    };
    if !matches!(parsed.scheme_str(), Some("http") | Some("https")) || parsed.host().is_none() {
        c.push(ConfigError::new(field, url, "expected http(s)://host:port"));
    }
}

impl ClickHouseFile {
    pub(super) fn validate(
        self,
        mode: Mode,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        c: &mut Checks,
    ) -> ClickHouseConfig {
        let d = ClickHouseConfig::default();
        let urls = match (self.url, self.urls) {
            (Some(url), None) => {
                check_url("capture.clickhouse.url", &url, c);
                vec![url]
            }
            (None, Some(urls)) => {
                if urls.is_empty() {
                    c.push(ConfigError::new(
                        "capture.clickhouse.urls",
                        "[]",
                        "name at least one node",
                    ));
                }
                for (i, u) in urls.iter().enumerate() {
                    check_url(&format!("capture.clickhouse.urls[{i}]"), u, c);
                }
                urls
            }
            (None, None) => d.urls.clone(),
            (Some(url), Some(_)) => {
                c.push(ConfigError::new(
                    "capture.clickhouse.url",
                    &url,
                    "set url (one server) or urls (the nodes of a cluster), not both",
                ));
                vec![url]
            }
        };
        let cluster = self
            .cluster
            .as_deref()
            .and_then(|v| c.ok(sql_name("capture.clickhouse.cluster", v)));
        if urls.len() > 1 && self.cluster.is_none() {
            c.push(ConfigError::new(
                "capture.clickhouse.urls",
                urls.join(", "),
                "several nodes need capture.clickhouse.cluster: the cluster (remote_servers) \
                 whose replicated tables they share; separate servers would each hold part \
                 of the records",
            ));
        }
        let password = self.password.as_ref().and_then(|text| {
            let sc = super::secret::SecretContext {
                key: None,
                development_mode: mode.is_development(),
                base_dir: base,
                env,
            };
            c.ok(sc.resolve(text).map_err(|r| {
                ConfigError::new(
                    "capture.clickhouse.password",
                    super::secret::SecretSource::parse(text).masked(),
                    r,
                )
            }))
        });
        let failover_after = c.or(
            opt_duration(
                "capture.clickhouse.failover_after",
                &self.failover_after,
                d.failover_after,
            ),
            d.failover_after,
        );
        if failover_after.is_zero() {
            c.push(ConfigError::new(
                "capture.clickhouse.failover_after",
                "0s",
                "must be greater than zero",
            ));
        }
        let database = self.database.unwrap_or(d.database);
        let table = self.table.unwrap_or(d.table);
        ClickHouseConfig {
            urls,
            cluster,
            failover_after,
            database: c.or(
                sql_name("capture.clickhouse.database", &database),
                String::new(),
            ),
            table: c.or(sql_name("capture.clickhouse.table", &table), String::new()),
            user: self.user.unwrap_or(d.user),
            password,
            retention_days: self.retention_days,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::GatewayConfig;

    fn load(clickhouse: &str) -> Result<GatewayConfig, String> {
        GatewayConfig::from_toml(
            &format!("development_mode = true\n[capture.clickhouse]\n{clickhouse}\n"),
            std::path::Path::new("/etc/gw"),
            &|_| None,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_cluster_names_its_nodes_and_its_name() {
        let c = load("urls = [\"http://ch-1:8123\", \"http://ch-2:8123\"]\ncluster = \"captures\"\nfailover_after = \"1.5s\"")
            .unwrap();
        let ch = c.capture.clickhouse.unwrap();
        assert_eq!(ch.urls, ["http://ch-1:8123", "http://ch-2:8123"]);
        assert_eq!(ch.cluster.as_deref(), Some("captures"));
        assert_eq!(ch.failover_after, std::time::Duration::from_millis(1500));
        let one = load("url = \"http://ch:8123\"")
            .unwrap()
            .capture
            .clickhouse
            .unwrap();
        assert_eq!((one.urls.len(), one.cluster), (1, None));
    }

    #[test]
    fn a_cluster_set_up_wrong_is_refused_naming_the_field_and_value() {
        for (toml, want) in [
            (
                "url = \"http://a:8123\"\nurls = [\"http://b:8123\"]",
                "capture.clickhouse.url = \"http://a:8123\": set url (one server) or urls",
            ),
            (
                "urls = [\"http://a:8123\", \"http://b:8123\"]",
                "several nodes need capture.clickhouse.cluster",
            ),
            ("urls = []", "capture.clickhouse.urls = \"[]\": name at least one node"),
            (
                "urls = [\"http://a:8123\", \"ftp://b\"]\ncluster = \"c\"",
                "capture.clickhouse.urls[1] = \"ftp://b\": expected http(s)://host:port",
            ),
            (
                "cluster = \"c; DROP TABLE x\"",
                "capture.clickhouse.cluster = \"c; DROP TABLE x\": use letters, digits and '_' only",
            ),
            ("failover_after = \"0s\"", "capture.clickhouse.failover_after = \"0s\""),
        ] {
            let err = load(toml).unwrap_err();
            assert!(err.contains(want), "{toml}: {err}");
        }
    }
}

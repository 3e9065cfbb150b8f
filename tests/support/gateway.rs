//! A real gateway started from config files in a temp directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use osb_gateway::config::GatewayConfig;
use osb_gateway::{Gateway, GatewayHandle, StartError};
use tempfile::TempDir;

use super::tls::TestCa;

/// The platform password every test platform uses.
pub const PLATFORM_PW: &str = "platform-pw";
/// Admin token with the operator role in every test gateway.
pub const OPERATOR_TOKEN: &str = "osbgw_test_operator_token";
/// Admin token owned by customer "acme" in every test gateway.
pub const ACME_TOKEN: &str = "osbgw_test_acme_owner_token";
/// Admin token owned by customer "globex" in every test gateway.
pub const GLOBEX_TOKEN: &str = "osbgw_test_globex_owner_token";

/// Location `eu` and platform `cf-eu` of customer acme (password
/// [`PLATFORM_PW`]): the head of a test registry.
pub const CF_EU_REGISTRY_HEAD: &str = r#"locations = ["eu"]

[[platforms]]
id = "cf-eu"
customer = "acme"
username = "cf-eu"
password_hash = "{HASH}"
locations = ["eu"]
"#;

/// The broker password tests put in `env:BROKER_PW`.
pub const BROKER_PW: &str = "broker-pw-Zq9";

/// argon2 hash of [`PLATFORM_PW`], made once per test binary.
pub fn platform_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| osb_gateway::config::credentials::hash_password(PLATFORM_PW))
}

pub struct TestGateway {
    pub handle: Option<GatewayHandle>,
    pub dir: TempDir,
    pub addr: SocketAddr,
    /// CA that signed the gateway's own certificate, when it serves TLS.
    pub ca: Option<TestCa>,
}

/// Options for [`TestGateway::start`].
#[derive(Default)]
pub struct Options {
    /// Serve TLS (and run in production mode).
    pub tls: bool,
    /// Extra top-level TOML for gateway.toml (before any table).
    pub top: String,
    /// Extra tables for gateway.toml.
    pub tables: String,
    /// Extra keys of gateway.toml's `[listen]` table.
    pub listen: String,
    /// Files written into the gateway's directory before it starts.
    pub files: Vec<(String, String)>,
}

impl TestGateway {
    /// Development mode, plain HTTP; `{HASH}` in the registry is the platform hash.
    pub async fn dev(registry: &str) -> TestGateway {
        Self::start(registry, Options::default()).await.unwrap()
    }

    pub async fn start(registry: &str, opts: Options) -> Result<TestGateway, StartError> {
        let dir = tempfile::tempdir().unwrap();
        let mut gw = String::new();
        if !opts.tls {
            gw.push_str("development_mode = true\n");
        }
        gw.push_str(&opts.top);
        gw.push_str("\n[listen]\naddress = \"127.0.0.1:0\"\n");
        gw.push_str(&opts.listen);
        gw.push('\n');
        let ca = if opts.tls {
            let ca = TestCa::new("gateway test CA");
            ca.issue().write(dir.path(), "gateway");
            gw.push_str("tls_cert = \"gateway.crt\"\ntls_key = \"gateway.key\"\n");
            Some(ca)
        } else {
            None
        };
        if !opts.tables.contains("[shutdown]") {
            gw.push_str("\n[shutdown]\ngrace_period = \"5s\"\n");
        }
        if !opts.tables.contains("[admin]") {
            gw.push_str(&format!(
                "\n[admin]\naddress = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"operator\"\n[[admin.tokens]]\nname = \"acme-owner\"\nsha256 = \"{}\"\nrole = \"owner\"\ncustomer = \"acme\"\n[[admin.tokens]]\nname = \"globex-owner\"\nsha256 = \"{}\"\nrole = \"owner\"\ncustomer = \"globex\"\n",
                osb_gateway::config::credentials::token_sha256_hex(OPERATOR_TOKEN),
                osb_gateway::config::credentials::token_sha256_hex(ACME_TOKEN),
                osb_gateway::config::credentials::token_sha256_hex(GLOBEX_TOKEN),
            ));
        }
        if opts.tls && !opts.tables.contains("[upstream]") {
            // NB: production mode keeps private registrations off loopback
            // by default; the test brokers live there, as an operator's
            // brokers live on a network it allows.
            gw.push_str("\n[upstream]\nprivate_allow_networks = [\"127.0.0.0/8\"]\n");
        }
        if !opts.tables.contains("[registry]") {
            // Tests reload explicitly unless they test the watcher.
            gw.push_str("\n[registry]\nwatch = false\n");
        }
        if !opts.tables.contains("[catalog]") {
            // Tests count the requests brokers see: no timer refreshes
            // unless a test asks for them.
            gw.push_str("\n[catalog]\nrefresh = false\n");
        }
        gw.push_str(&opts.tables);
        for (name, text) in &opts.files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("gateway.toml"), gw).unwrap();
        std::fs::write(
            dir.path().join("registry.toml"),
            registry.replace("{HASH}", platform_hash()),
        )
        .unwrap();
        let handle = Self::spawn_in(dir.path()).await?;
        Ok(TestGateway {
            addr: handle.addr,
            handle: Some(handle),
            dir,
            ca,
        })
    }

    async fn spawn_in(dir: &std::path::Path) -> Result<GatewayHandle, StartError> {
        let env: HashMap<&str, &str> = [("BROKER_PW", BROKER_PW)].into();
        let lookup = move |k: &str| env.get(k).map(|v| v.to_string());
        let cfg = GatewayConfig::load(&dir.join("gateway.toml"), &lookup)?;
        Gateway::spawn_with_env(cfg, std::sync::Arc::new(lookup)).await
    }

    /// Stops the gateway and starts a new one from the same files (a
    /// process restart, as far as the registry and data directory go).
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let handle = Self::spawn_in(self.dir.path()).await.unwrap();
        self.addr = handle.addr;
        self.handle = Some(handle);
    }

    /// Rewrites the registry file (`{HASH}` is the platform hash).
    pub fn write_registry(&self, registry: &str) {
        // NB: write then rename, as configuration management would, so a
        // watcher never reads a half-written file.
        let tmp = self.dir.path().join("registry.toml.tmp");
        std::fs::write(&tmp, registry.replace("{HASH}", platform_hash())).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("registry.toml")).unwrap();
    }

    pub fn reloader(&self) -> std::sync::Arc<osb_gateway::registry::Reloader> {
        self.handle.as_ref().unwrap().reloader.clone()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        let port = self.handle.as_ref().unwrap().admin_addr.unwrap().port();
        format!("{scheme}://127.0.0.1:{port}{path}")
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())
    }

    pub async fn shutdown(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

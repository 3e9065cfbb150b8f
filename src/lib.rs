//! osb-gateway: a sidecar between Open Service Broker platforms and
//! registered service brokers.
//!
//! It routes `/{location}/{broker_id}/v2/...` to the right broker endpoint,
//! authenticates platforms and injects the broker's credentials, enforces
//! HTTPS toward brokers, and streams bodies both ways.
//!
//! Module arrows go one way: `proxy` uses `registry`, `upstream`, `osb` and
//! `body`; `registry` uses `config` and `upstream`; nothing uses `proxy`.
//! [`Gateway::spawn`] is what `main` and the integration tests both run.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod body;
pub mod capture;
pub mod config;
pub mod osb;
pub mod proxy;
pub mod registry;
pub mod store;
pub mod telemetry;
pub mod upstream;

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use capture::{CaptureHandle, CapturePaths};
use config::{ConfigError, GatewayConfig, RegistrySource};
use registry::{BuildContext, RegistryErrors, RegistryFile, RouteTable, Routes};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The gateway configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The registry is invalid.
    #[error("{0}")]
    Registry(#[from] RegistryErrors),
    /// The capture directories could not be opened.
    #[error("cannot open the capture store under {dir}: {source}")]
    Capture {
        /// The data directory.
        dir: String,
        /// OS error.
        source: std::io::Error,
    },
    /// TLS material could not be loaded.
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Configured address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// Reads and validates the registry a configuration points at.
///
/// # Errors
/// The file cannot be read, is not valid TOML, or does not validate.
pub fn load_registry(
    cfg: &GatewayConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RouteTable, StartError> {
    let (text, base, name) = match &cfg.registry {
        RegistrySource::File(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new("registry.file", p.display(), format!("cannot read: {e}"))
            })?;
            (
                text,
                p.parent().unwrap_or(Path::new(".")).to_path_buf(),
                p.display().to_string(),
            )
        }
        RegistrySource::Embedded(t) => (
            t.to_string(),
            std::path::PathBuf::from("."),
            "embedded registry".into(),
        ),
    };
    let file: RegistryFile = toml::from_str(&text).map_err(|e| {
        let mut ce = config::toml_error(&e);
        ce.field = format!("{name}: {}", ce.field);
        ce
    })?;
    let cx = BuildContext {
        mode: cfg.mode,
        secret_key: cfg.secret_key.as_ref(),
        base_dir: &base,
        env,
        timeouts: cfg.timeouts,
        pool: cfg.pool,
    };
    Ok(RouteTable::build(&file, &cx)?)
}

/// A running gateway.
pub struct Gateway;

/// Handle on a running gateway: its address, its routes, and shutdown.
pub struct GatewayHandle {
    /// The platform listener's bound address.
    pub addr: SocketAddr,
    /// The live route table.
    pub routes: Routes,
    /// The capture pipeline (metrics, live feed).
    pub capture: CaptureHandle,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Validates everything, binds the listener and starts serving.
    ///
    /// # Errors
    /// Any configuration, registry, TLS or bind problem, before a port is served.
    pub async fn spawn(cfg: GatewayConfig) -> Result<GatewayHandle, StartError> {
        Self::spawn_with_env(cfg, &|k| std::env::var(k).ok()).await
    }

    /// As [`Gateway::spawn`], reading `env:` secrets through `env`.
    ///
    /// # Errors
    /// As [`Gateway::spawn`].
    pub async fn spawn_with_env(
        cfg: GatewayConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GatewayHandle, StartError> {
        let table = load_registry(&cfg, env)?;
        let tls = match &cfg.tls {
            Some(files) => Some(proxy::accept::tls_acceptor(files).map_err(StartError::Tls)?),
            None => None,
        };
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let routes = Routes::new(table);
        let capture = CaptureHandle::start(
            &cfg.capture,
            &CapturePaths::under(&cfg.data_dir),
            &cfg.instance,
        )
        .map_err(|source| StartError::Capture {
            dir: cfg.data_dir.display().to_string(),
            source,
        })?;
        let (shutdown, rx) = watch::channel(false);
        let opts = proxy::accept::ServeOptions {
            tls,
            header_read_timeout: cfg.header_read_timeout,
            grace: cfg.shutdown_grace,
        };
        let task = tokio::spawn(proxy::accept::serve(
            listener,
            proxy::Proxy::new(routes.clone(), capture.tx()),
            opts,
            rx,
        ));
        tracing::info!(
            %addr,
            tls = cfg.tls.is_some(),
            mode = if cfg.mode.is_development() { "development" } else { "production" },
            routes = routes.load().routes().len(),
            "osb-gateway listening"
        );
        Ok(GatewayHandle {
            addr,
            routes,
            capture,
            shutdown,
            task,
        })
    }
}

impl GatewayHandle {
    /// Stops accepting, waits for requests in flight (up to the grace
    /// period), then stores or spools every captured record.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        self.capture.shutdown().await;
    }
}

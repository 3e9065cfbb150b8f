//! osb-gateway: a sidecar between Open Service Broker platforms and
//! registered service brokers.
//!
//! It routes `/{location}/{broker_id}/v2/...` to the right broker endpoint,
//! authenticates platforms and injects the broker's credentials, enforces
//! HTTPS toward brokers, and streams bodies both ways.
//!
//! Module arrows go one way (see `docs/ARCHITECTURE.md`): `proxy` uses
//! `registry`, `upstream`, `osb`, `capture` and `body`; `capture` uses
//! `store`; `admin` uses the others; nothing uses `proxy` or `admin`, and
//! both are served by `server`. [`Gateway::spawn`] is what the binary and
//! the integration tests both run.

// NB: the other lints are in Cargo.toml's [lints]; forbid, unlike deny,
// cannot be lifted by any module of the library.
#![forbid(unsafe_code)]

pub mod admin;
pub mod body;
pub mod capture;
pub mod catalog;
pub mod config;
pub mod demo;
pub mod digest;
pub mod metrics;
pub mod osb;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod timefmt;
pub mod upstream;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use capture::{CaptureHandle, CapturePaths};
use config::{ConfigErrors, GatewayConfig};
use registry::{Env, RegistryErrors, Reloader, RouteTable, Routes};
use std::sync::Arc;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The gateway configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigErrors),
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
    registry::load(cfg, env).map_err(|e| match e {
        registry::LoadError::File(c) => StartError::Config(c.into()),
        registry::LoadError::Invalid(r) => StartError::Registry(r),
    })
}

/// A running gateway.
pub struct Gateway;

/// Handle on a running gateway: its address, its routes, and shutdown.
pub struct GatewayHandle {
    /// The platform listener's bound address.
    pub addr: SocketAddr,
    /// The admin listener's bound address, when enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The live route table.
    pub routes: Routes,
    /// The capture pipeline (metrics, live feed).
    pub capture: CaptureHandle,
    /// Validate-then-swap reloads of the registry.
    pub reloader: Arc<Reloader>,
    /// The catalog cache and refresher.
    pub catalogs: Arc<catalog::Catalogs>,
    /// Request counters by route.
    pub requests: Arc<metrics::RequestMetrics>,
    /// Both listeners' certificates (reloaded on SIGHUP and file change).
    pub certificates: server::Certificates,
    watcher: Option<JoinHandle<()>>,
    cert_watcher: Option<JoinHandle<()>>,
    refresher: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Validates everything, binds the listener and starts serving.
    ///
    /// # Errors
    /// Any configuration, registry, TLS or bind problem, before a port is served.
    pub async fn spawn(cfg: GatewayConfig) -> Result<GatewayHandle, StartError> {
        Self::spawn_with_env(cfg, Arc::new(|k: &str| std::env::var(k).ok())).await
    }

    /// As [`Gateway::spawn`], reading `env:` secrets through `env`.
    ///
    /// # Errors
    /// As [`Gateway::spawn`].
    pub async fn spawn_with_env(
        mut cfg: GatewayConfig,
        env: Env,
    ) -> Result<GatewayHandle, StartError> {
        let _ = metrics::process::start_time();
        let requests = Arc::new(metrics::RequestMetrics::default());
        let loaded = registry::load_for_serving(&cfg, &*env, &requests).map_err(|e| match e {
            registry::LoadError::File(c) => StartError::Config(c.into()),
            registry::LoadError::Invalid(r) => StartError::Registry(r),
        })?;
        if cfg.secret_key.is_none()
            && cfg.mode.is_development()
            && matches!(cfg.registry, config::RegistrySource::Embedded(_))
        {
            // NB: the embedded registry lives in memory, so passwords set
            // through the admin API need a key only for this process's life.
            cfg.secret_key = Some(config::SecretKey::generate());
            tracing::info!("no secret key configured: using a temporary one for passwords set through the admin API (the embedded registry is not written to disk)");
        }
        let certs = server::Certificates::load(&cfg).map_err(|e| StartError::Tls(e.join("; ")))?;
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
        let routes = Routes::new(loaded.snapshot);
        let capture = CaptureHandle::start(
            &cfg.capture,
            &CapturePaths::under(&cfg.data_dir),
            &cfg.instance,
        )
        .map_err(|source| StartError::Capture {
            dir: cfg.data_dir.display().to_string(),
            source,
        })?;
        let cfg = Arc::new(cfg);
        let reloader = Arc::new(Reloader::new(
            routes.clone(),
            cfg.clone(),
            env,
            requests.clone(),
            loaded.stamp,
        ));
        let watcher = cfg
            .registry_watch
            .map(|every| tokio::spawn(reloader.clone().watch(every)));
        let catalogs = Arc::new(catalog::Catalogs::default());
        {
            let c = catalogs.clone();
            capture.set_enricher(Arc::new(move |r| c.enrich(r)));
        }
        let refresher = cfg.catalog_refresh.then(|| {
            tokio::spawn(
                catalogs
                    .clone()
                    .run_timer(reloader.clone(), std::time::Duration::from_secs(1)),
            )
        });
        let cert_watcher = (!certs.all().is_empty() && !cfg.tls_watch.is_zero())
            .then(|| tokio::spawn(server::tls::watch(certs.clone(), cfg.tls_watch)));
        let (shutdown, rx) = watch::channel(false);
        let platform_stats = Arc::new(server::ListenerStats::default());
        let admin_stats = Arc::new(server::ListenerStats::default());
        let opts = server::ServeOptions {
            tls: certs.listen.as_ref().map(server::Certs::acceptor),
            header_read_timeout: cfg.header_read_timeout,
            limits: cfg.connections,
            grace: cfg.shutdown_grace,
            on_grace_over: Some({
                let tx = capture.tx();
                Arc::new(move || tx.grace_over())
            }),
            stats: platform_stats.clone(),
        };
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let admin_addr = if cfg.admin.enabled {
            let l = TcpListener::bind(cfg.admin.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: cfg.admin.listen,
                    source,
                })?;
            let a = l.local_addr().map_err(|source| StartError::Bind {
                addr: cfg.admin.listen,
                source,
            })?;
            let admin = admin::Admin::new(admin::AdminParts {
                routes: routes.clone(),
                reloader: reloader.clone(),
                capture: capture.metrics(),
                catalogs: catalogs.clone(),
                requests: requests.clone(),
                logs: Arc::new(store::LogStore::for_capture(
                    &cfg.capture,
                    CapturePaths::under(&cfg.data_dir).local,
                )),
                subscribe: {
                    let tx = capture.tx();
                    Arc::new(move || tx.subscribe())
                },
                tokens: cfg.admin.tokens.clone(),
                ready: ready.clone(),
                certificates: certs.clone(),
                listeners: vec![
                    ("platform", platform_stats.clone()),
                    ("admin", admin_stats.clone()),
                ],
            });
            let opts = server::ServeOptions {
                tls: certs.admin.as_ref().map(server::Certs::acceptor),
                header_read_timeout: cfg.header_read_timeout,
                limits: cfg.connections,
                grace: cfg.shutdown_grace,
                on_grace_over: None,
                stats: admin_stats.clone(),
            };
            tokio::spawn(server::serve(l, admin, opts, rx.clone()));
            Some(a)
        } else {
            None
        };
        // NB: the policy is shared by every clone of the configuration (the
        // reloader's too), so the routes built from now on see this.
        cfg.upstream_policy
            .set_own_listeners(std::iter::once(addr).chain(admin_addr).collect());
        let task = tokio::spawn(server::serve(
            listener,
            proxy::Proxy::new(routes.clone(), capture.tx(), requests.clone()),
            opts,
            rx,
        ));
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            %addr,
            admin = admin_addr.map(tracing::field::display),
            tls = cfg.tls.is_some(),
            mode = if cfg.mode.is_development() { "development" } else { "production" },
            routes = routes.load().routes().len(),
            "osb-gateway listening"
        );
        Ok(GatewayHandle {
            addr,
            admin_addr,
            routes,
            capture,
            reloader,
            catalogs,
            requests,
            certificates: certs,
            watcher,
            cert_watcher,
            refresher,
            shutdown,
            task,
        })
    }
}

impl GatewayHandle {
    /// Stops accepting, waits for requests in flight (up to the grace
    /// period), then stores or spools every captured record.
    pub async fn shutdown(self) {
        for w in [&self.watcher, &self.cert_watcher].into_iter().flatten() {
            w.abort();
        }
        if let Some(r) = &self.refresher {
            r.abort();
        }
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        self.capture.shutdown().await;
    }
}

//! The `osb-gateway` program: `serve`, `config check`, `secret ...`,
//! `brokers ...`, `reload`, `logs ...`, `instances ...`. The library does
//! the work; this binary parses the command line, owns the allocator and
//! the runtime, and prints. One file per command group under `cli/`.

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // the one place: mmap/mremap/munmap for huge blocks
mod alloc;
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use osb_gateway::config::{duration, GatewayConfig};
use osb_gateway::{telemetry, Gateway, StartError};

use cli::{brokers, config, instances, logs, secret, AdminArgs, EX_USAGE};

// NB: glibc malloc serves the proxy's 4 KB-1 MB body buffers from its slow
// path (past the tcache), consolidates on free, and keeps one arena per
// thread that touched it; mimalloc's per-thread free lists make those
// allocations cheap (malloc was 17% of the capture path; see README
// "Performance"). Huge blocks bypass it: see `alloc`.
#[cfg(target_os = "linux")]
#[global_allocator]
static GLOBAL: alloc::Allocator = alloc::Allocator;
#[cfg(not(target_os = "linux"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "osb-gateway", version, about = "Gateway between Open Service Broker platforms and service brokers", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without --config it is a complete demo: embedded
    /// development defaults (plain HTTP on 127.0.0.1:8080, admin API and
    /// console on 127.0.0.1:8081) and the sample broker in the same
    /// process, routed for the demo platform (demo:demo).
    Serve {
        /// Gateway configuration file (see config/gateway.example.toml).
        #[arg(long, short, env = "OSB_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// Platform listener address, overriding the file's listen.address.
        #[arg(long, env = "OSB_GATEWAY_LISTEN", value_name = "HOST:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Admin listener address, overriding the file's admin.address.
        #[arg(long, env = "OSB_GATEWAY_ADMIN_LISTEN", value_name = "HOST:PORT")]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Run the sample broker alone (basic auth broker:broker-secret), the
    /// one `serve` without --config starts by itself.
    SampleBroker {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9090", value_name = "HOST:PORT")]
        listen: std::net::SocketAddr,
    },
    /// Validate configuration files.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Make secrets for registry files.
    Secret {
        #[command(subcommand)]
        command: secret::SecretCommand,
    },
    /// Manage brokers through the admin API (token in OSB_GATEWAY_ADMIN_TOKEN).
    Brokers {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: brokers::BrokersCommand,
    },
    /// Tail, search and show the communication logs (admin API).
    Logs {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: logs::LogsCommand,
    },
    /// Service instances whose last operation failed or is stuck (admin API).
    Instances {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: instances::InstancesCommand,
    },
    /// Ask a running gateway to reload its registry (operator token).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Exit 0 when a running gateway is ready (its admin /readyz answers
    /// 200): a container health check with no extra tools in the image.
    Health {
        #[command(flatten)]
        admin: AdminArgs,
        /// Ask /healthz (the process answers) instead of /readyz.
        #[arg(long)]
        live: bool,
        /// Longest wait for the answer.
        #[arg(long, default_value = "3s", value_parser = duration::parse)]
        timeout: std::time::Duration,
    },
    /// Print a shell completion script: `osb-gateway completions bash >
    /// /etc/bash_completion.d/osb-gateway`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `osb-gateway man | man -l -`.
    Man,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // NB: --help and --version print to stdout and succeed; every
            // usage error exits 64, as the README documents (clap says 2).
            let _ = e.print();
            return match e.use_stderr() {
                true => ExitCode::from(EX_USAGE),
                false => ExitCode::SUCCESS,
            };
        }
    };
    match cli.command {
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "osb-gateway", &mut out);
            write_out(&out)
        }
        Command::Man => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => write_out(&out),
                Err(e) => {
                    eprintln!("osb-gateway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve {
            config,
            listen,
            admin_listen,
        } => serve(config, listen, admin_listen),
        Command::SampleBroker { listen } => sample_broker(listen),
        Command::Config { command } => config::run(command),
        Command::Secret { command } => secret::run(command),
        Command::Brokers { admin, command } => brokers::brokers(&admin, command),
        Command::Reload { admin } => brokers::reload(&admin),
        Command::Health {
            admin,
            live,
            timeout,
        } => cli::health::health(&admin, live, timeout),
        Command::Logs { admin, command } => logs::logs(&admin, command),
        Command::Instances { admin, command } => instances::instances(&admin, command),
    }
}

/// Writes generated text to stdout; a closed pipe (`| head`) is not an error.
fn write_out(bytes: &[u8]) -> ExitCode {
    use std::io::Write as _;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("osb-gateway: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn serve(
    config: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    admin_listen: Option<std::net::SocketAddr>,
) -> ExitCode {
    let mut cfg = match &config {
        Some(path) => match GatewayConfig::load(path, &env) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("osb-gateway: invalid configuration: {e}");
                return ExitCode::from(EX_USAGE);
            }
        },
        None => GatewayConfig::embedded(&env),
    };
    if let Some(a) = listen {
        cfg.listen = a;
    }
    if let Some(a) = admin_listen {
        cfg.admin.listen = a;
    }
    // NB: held to the end of `serve`: dropping it flushes queued log lines.
    let _log_guard = telemetry::init(cfg.log_format, &cfg.log_level, &cfg.instance);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("osb-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let grace = cfg.shutdown_grace;
        let demo = match config {
            Some(_) => None,
            None => match start_demo_broker(&mut cfg).await {
                Ok(task) => Some(task),
                Err(e) => {
                    eprintln!("osb-gateway: cannot start the sample broker: {e}");
                    return ExitCode::FAILURE;
                }
            },
        };
        let handle = match Gateway::spawn(cfg).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("osb-gateway: {e}");
                return match e {
                    StartError::Bind { .. } => ExitCode::FAILURE,
                    _ => ExitCode::from(EX_USAGE),
                };
            }
        };
        if demo.is_some() {
            let admin = handle.admin_addr.map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!("no --config given: running the demo (development mode, plain HTTP, sample registry and broker); not for production");
            tracing::info!(
                "try: curl -s -u demo:demo -H 'X-Broker-API-Version: 2.17' http://{}/private/sample/v2/catalog   console: http://{admin}/console/ (token demo-admin-token)",
                handle.addr
            );
        }
        let reloader = handle.reloader.clone();
        let certificates = handle.certificates.clone();
        let sighup = tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    return;
                };
                while hup.recv().await.is_some() {
                    // NB: a refused reload is logged by the reloader; the old routes keep serving.
                    let _ = reloader.reload("SIGHUP").await;
                    certificates.reload("SIGHUP").await;
                }
            }
        });
        wait_for_signal().await;
        sighup.abort();
        if let Some(d) = demo {
            d.abort();
        }
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down");
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Starts the sample broker on 127.0.0.1:9090 (a free port when 9090 is
/// taken) and points the embedded registry at it, so the demo needs no
/// second command and never fails on a port clash.
async fn start_demo_broker(
    cfg: &mut GatewayConfig,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:9090").await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    let addr = listener.local_addr()?;
    let registry = osb_gateway::config::EMBEDDED_REGISTRY
        .replace("http://127.0.0.1:9090", &format!("http://{addr}"));
    cfg.registry = osb_gateway::config::RegistrySource::Embedded(registry.into());
    tracing::info!(%addr, "sample broker started (basic auth broker:***)");
    Ok(tokio::spawn(osb_gateway::demo::serve(listener)))
}

fn sample_broker(listen: std::net::SocketAddr) -> ExitCode {
    let _log_guard = telemetry::init(
        osb_gateway::config::LogFormat::Plain,
        "info",
        "sample-broker",
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("osb-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("osb-gateway: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("sample broker on http://{listen} (basic auth broker:***)");
        tokio::select! {
            _ = osb_gateway::demo::serve(listener) => {}
            _ = wait_for_signal() => {}
        }
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

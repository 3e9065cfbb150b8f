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
    /// Run the gateway. Without --config it runs on embedded development
    /// defaults: plain HTTP on 127.0.0.1:8080, routing to the sample broker
    /// (`cargo run --example sample_broker`) for the demo platform.
    Serve {
        /// Gateway configuration file (see config/gateway.example.toml).
        #[arg(long, short, env = "OSB_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
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
        Command::Serve { config } => serve(config),
        Command::Config { command } => config::run(command),
        Command::Secret { command } => secret::run(command),
        Command::Brokers { admin, command } => brokers::brokers(&admin, command),
        Command::Reload { admin } => brokers::reload(&admin),
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

fn serve(config: Option<PathBuf>) -> ExitCode {
    let cfg = match &config {
        Some(path) => match GatewayConfig::load(path, &env) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("osb-gateway: invalid configuration: {e}");
                return ExitCode::from(EX_USAGE);
            }
        },
        None => GatewayConfig::embedded(&env),
    };
    telemetry::init(cfg.log_format, &cfg.log_level);
    if config.is_none() {
        tracing::warn!("no --config given: running on embedded development defaults (plain HTTP, sample registry); not for production");
    }
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
        tracing::info!(grace = %duration::format(grace), "shutting down");
        handle.shutdown().await;
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

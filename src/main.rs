//! `osb-gateway` command line: `serve`, `config check`, `secret ...`,
//! `brokers ...`, `reload`.

mod admin_cli;
#[cfg(target_os = "linux")]
mod alloc;
mod logs_cli;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use osb_gateway::config::{duration, GatewayConfig, SecretKey, SECRET_KEY_ENV};
use osb_gateway::{load_registry, telemetry, Gateway, StartError};

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

/// Exit code for bad configuration (sysexits EX_USAGE), as linkerd does.
const EX_USAGE: u8 = 64;

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
        command: ConfigCommand,
    },
    /// Make secrets for registry files.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Manage brokers through the admin API (token in OSB_GATEWAY_ADMIN_TOKEN).
    Brokers {
        #[command(flatten)]
        admin: admin_cli::AdminArgs,
        #[command(subcommand)]
        command: admin_cli::BrokersCommand,
    },
    /// Tail, search and show the communication logs (admin API).
    Logs {
        #[command(flatten)]
        admin: admin_cli::AdminArgs,
        #[command(subcommand)]
        command: logs_cli::LogsCommand,
    },
    /// Service instances whose last operation failed or is stuck (admin API).
    Instances {
        #[command(flatten)]
        admin: admin_cli::AdminArgs,
        #[command(subcommand)]
        command: logs_cli::InstancesCommand,
    },
    /// Ask a running gateway to reload its registry (operator token).
    Reload {
        #[command(flatten)]
        admin: admin_cli::AdminArgs,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a gateway configuration and its registry, then print the
    /// effective routes with secrets masked. Exits 64 when invalid.
    Check {
        /// Gateway configuration file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Print a new random key for enc:v1: values (store it in
    /// OSB_GATEWAY_SECRET_KEY or the file named by secrets.key_file).
    Keygen,
    /// Encrypt a broker password read from standard input into an enc:v1:
    /// value, with the key from OSB_GATEWAY_SECRET_KEY or --key-file.
    Encrypt {
        /// File holding the base64 key (else OSB_GATEWAY_SECRET_KEY).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Hash a platform password read from standard input (argon2id) for a
    /// registry's `password_hash`.
    Hash,
    /// Print a new random admin token and the SHA-256 to put in
    /// `[[admin.tokens]]` (the token itself is shown once; store it safely).
    Token,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(&file),
        Command::Secret { command } => secret(command),
        Command::Brokers { admin, command } => admin_cli::brokers(&admin, command),
        Command::Reload { admin } => admin_cli::reload(&admin),
        Command::Logs { admin, command } => logs_cli::logs(&admin, command),
        Command::Instances { admin, command } => logs_cli::instances(&admin, command),
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

fn config_check(file: &std::path::Path) -> ExitCode {
    let cfg = match GatewayConfig::load(file, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let table = match load_registry(&cfg, &env) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Some(tls) = &cfg.tls {
        if let Err(e) = osb_gateway::proxy::accept::tls_acceptor(tls) {
            eprintln!("invalid TLS configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    }
    println!("configuration OK: {}", file.display());
    println!(
        "mode: {}   listen: {} ({})",
        if cfg.mode.is_development() {
            "development"
        } else {
            "production"
        },
        cfg.listen,
        if cfg.tls.is_some() {
            "TLS"
        } else {
            "plain HTTP"
        }
    );
    match (&cfg.capture.clickhouse, cfg.capture.enabled) {
        (_, false) => println!("capture: off"),
        (Some(ch), true) => println!(
            "capture: ClickHouse {} {}.{} (spool under {})",
            ch.url,
            ch.database,
            ch.table,
            cfg.data_dir.display()
        ),
        (None, true) => println!(
            "capture: local store under {}",
            cfg.data_dir.join("captures").display()
        ),
    }
    println!();
    let routes = table.routes();
    let rows: Vec<[String; 8]> = routes
        .iter()
        .map(|(r, approved)| {
            [
                r.broker.to_string(),
                r.location.to_string(),
                r.endpoint.url().to_string(),
                if r.development_mode {
                    "development".into()
                } else {
                    "verified".into()
                },
                if *approved { "yes".into() } else { "no".into() },
                r.username.clone(),
                r.password_source.clone(),
                format!(
                    "{}/{}/{}",
                    duration::format(r.timeouts.connect),
                    duration::format(r.timeouts.response),
                    duration::format(r.timeouts.idle)
                ),
            ]
        })
        .collect();
    print_table(
        &[
            "BROKER",
            "LOCATION",
            "ENDPOINT",
            "TLS",
            "APPROVED",
            "USER",
            "PASSWORD",
            "CONNECT/RESPONSE/IDLE",
        ],
        &rows,
    );
    println!();
    let platforms: Vec<[String; 4]> = table
        .platforms()
        .iter()
        .map(|p| {
            let mut locs: Vec<_> = p.locations.iter().cloned().collect();
            locs.sort();
            [
                p.id.to_string(),
                p.customer.clone(),
                p.username.clone(),
                locs.join(","),
            ]
        })
        .collect();
    print_table(&["PLATFORM", "CUSTOMER", "USER", "LOCATIONS"], &platforms);
    ExitCode::SUCCESS
}

fn print_table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.to_vec()).collect();
    print!("{}", admin_cli::table(head, &rows));
}

fn read_stdin_secret() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err("standard input is empty: pipe the secret in, e.g. `printf %s \"$PW\" | osb-gateway secret ...`".into());
    }
    Ok(s)
}

fn secret(cmd: SecretCommand) -> ExitCode {
    let result = match cmd {
        SecretCommand::Keygen => Ok(SecretKey::generate().to_base64()),
        SecretCommand::Token => {
            let token = osb_gateway::admin::new_token();
            Ok(format!(
                "token:  {token}\nsha256: {}",
                osb_gateway::admin::token_sha256_hex(&token)
            ))
        }
        SecretCommand::Hash => {
            read_stdin_secret().map(|p| osb_gateway::proxy::auth::hash_password(&p))
        }
        SecretCommand::Encrypt { key_file } => {
            let key = match key_file {
                Some(p) => std::fs::read_to_string(&p)
                    .map_err(|e| format!("--key-file {}: {e}", p.display()))
                    .and_then(|t| SecretKey::from_base64(&t).map_err(|e| format!("--key-file {}: {e}", p.display()))),
                None => env(SECRET_KEY_ENV)
                    .ok_or_else(|| format!("no key: set {SECRET_KEY_ENV} or pass --key-file (make one with `osb-gateway secret keygen`)"))
                    .and_then(|t| SecretKey::from_base64(&t).map_err(|e| format!("{SECRET_KEY_ENV}: {e}"))),
            };
            key.and_then(|k| read_stdin_secret().map(|p| k.encrypt(&p)))
        }
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("osb-gateway: {e}");
            ExitCode::from(EX_USAGE)
        }
    }
}

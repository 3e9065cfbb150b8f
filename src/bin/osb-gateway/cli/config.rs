//! `osb-gateway config check`: validates a gateway file and its registry
//! and prints the effective routes, secrets masked. Needs no gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use osb_gateway::config::{duration, GatewayConfig};
use osb_gateway::{load_registry, StartError};

use super::{lenient_env, table, EX_USAGE};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a gateway configuration and its registry, then print the
    /// effective routes with secrets masked. Exits 64 when invalid.
    Check {
        /// Gateway configuration file.
        file: PathBuf,
    },
    /// Print the effective settings (every default filled in, secrets
    /// masked) as TOML, or JSON with --json. Without a file: the embedded
    /// development defaults `serve` runs on.
    Dump {
        /// Gateway configuration file.
        file: Option<PathBuf>,
        /// JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `config` subcommand.
pub fn run(cmd: ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Check { file } => check(&file),
        ConfigCommand::Dump { file, json } => dump(file.as_deref(), json),
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn check(file: &std::path::Path) -> ExitCode {
    let mut problems: Vec<String> = Vec::new();
    let cfg = match GatewayConfig::load(file, &env) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.extend(e.0.iter().map(ToString::to_string));
            // NB: go on with placeholders for unset variables, so the
            // registry and the TLS files are checked in this same run.
            GatewayConfig::load(file, &lenient_env).ok()
        }
    };
    let Some(cfg) = cfg else {
        return refused(&problems);
    };
    let table = match load_registry(&cfg, &env) {
        Ok(t) => Some(t),
        Err(StartError::Registry(r)) => {
            problems.extend(r.0.iter().map(ToString::to_string));
            None
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    if let Err(e) = osb_gateway::server::Certificates::load(&cfg) {
        problems.extend(e);
    }
    let Some(table) = table.filter(|_| problems.is_empty()) else {
        return refused(&problems);
    };
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
            "capture: ClickHouse {}{} {}.{} (spool under {})",
            ch.urls
                .iter()
                .map(|u| osb_gateway::config::mask_userinfo(u))
                .collect::<Vec<_>>()
                .join(", "),
            ch.cluster
                .as_deref()
                .map(|c| format!(" (cluster {c})"))
                .unwrap_or_default(),
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

fn dump(file: Option<&std::path::Path>, json: bool) -> ExitCode {
    // NB: secrets are masked in the dump: unset variables need not stop it.
    let cfg = match file {
        Some(f) => match GatewayConfig::load(f, &lenient_env) {
            Ok(c) => c,
            Err(e) => return refused(&e.0.iter().map(ToString::to_string).collect::<Vec<_>>()),
        },
        None => GatewayConfig::embedded(&env),
    };
    let v = cfg.effective();
    let text = match json {
        true => serde_json::to_string_pretty(&v).map_err(|e| e.to_string()),
        false => toml::to_string(&v).map_err(|e| e.to_string()),
    };
    match text {
        Ok(t) => {
            print!("{t}");
            if json {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("osb-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints every problem at once, and what to fix first.
fn refused(problems: &[String]) -> ExitCode {
    eprintln!(
        "configuration refused ({} problem{}):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        eprintln!("  - {p}");
    }
    ExitCode::from(EX_USAGE)
}

fn print_table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.to_vec()).collect();
    print!("{}", table(head, &rows));
}

//! `osb-gateway config check`: validates a gateway file and its registry
//! and prints the effective routes, secrets masked. Needs no gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use osb_gateway::config::SECRET_KEY_ENV;
use osb_gateway::config::{duration, GatewayConfig};
use osb_gateway::{load_registry, StartError};

use super::{table, EX_USAGE};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a gateway configuration and its registry, then print the
    /// effective routes with secrets masked. Exits 64 when invalid.
    Check {
        /// Gateway configuration file.
        file: PathBuf,
    },
}

/// Runs a `config` subcommand.
pub fn run(cmd: ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Check { file } => check(&file),
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Placeholder an unset environment variable stands for while `check`
/// goes on past it, so that one run reports everything (the variable is
/// reported as missing, with the field that needs it).
const UNSET: &str = "(unset)";

fn check(file: &std::path::Path) -> ExitCode {
    let mut problems: Vec<String> = Vec::new();
    let cfg = match GatewayConfig::load(file, &env) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.extend(e.0.iter().map(ToString::to_string));
            // NB: go on with placeholders for unset variables (never for
            // the secret key: a made-up key would fail every enc:v1:
            // value with a misleading message), so the registry and the
            // TLS files are checked in this same run.
            let lenient = |k: &str| match k {
                SECRET_KEY_ENV => env(k),
                _ => env(k).or_else(|| Some(UNSET.to_string())),
            };
            GatewayConfig::load(file, &lenient).ok()
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
